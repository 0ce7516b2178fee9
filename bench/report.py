#!/usr/bin/env python
"""Every table, the plot and the target list of the performance section, from the JSON files
that the bench_*.py scripts wrote (no benchmarking here).

    python bench/report.py [--results bench/results/<machine>] [--out RESULTS/report.md]
                           [--threads 2]

Writes the markdown to --out (default: report.md in the results folder) and rnn.png next to
it; a result file that is missing leaves its section out.
"""
import argparse
import functools
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DECODE_STEPS = 100
EQUAL_IMPLS = ("fusedrnn", "torch", "mxnet_fused", "mxnet_unrolled")
VARLEN_IMPLS = ("fusedrnn", "fusedrnn_padded", "torch_packed", "torch_padded", "mxnet_fused")
DECODE_IMPLS = ("fusedrnn", "gluon_cell", "torch_cell")
LABELS = {"fusedrnn": "fusedrnn", "torch": "PyTorch", "mxnet_fused": "MXNet fused",
          "mxnet_unrolled": "MXNet unrolled cells", "fusedrnn_padded": "fusedrnn, padded",
          "torch_packed": "PyTorch packed", "torch_padded": "PyTorch padded",
          "gluon_cell": "gluon.rnn cell", "torch_cell": "PyTorch cell", "mxnet": "MXNet"}
COLORS = {"torch": "tab:orange", "torch_padded": "tab:orange", "torch_packed": "tab:red",
          "mxnet_fused": "tab:blue", "mxnet_unrolled": "tab:purple",
          "fusedrnn_padded": "tab:green", "gluon_cell": "tab:blue", "torch_cell": "tab:orange"}


# --------------------------------------------------------------------------- headers
def _workers(h, threads):
    """The worker processes' details of a result for this thread count."""
    return [w for k, w in h.get("workers", {}).items()
            if not k.startswith("sgemm:") and (":" not in k or k.endswith(f":{threads}"))]


def _plural(n):
    return f"{n} thread{'s' * (n != 1)}"


def machine_line(h, threads, peak=None):
    """Who measured what where: machine, load, versions, the MXNet engine, the BLAS kernel,
    how the libraries were kept apart, and the command."""
    ws = _workers(h, threads)
    isa = next((w["fusedrnn"].get("instruction_set") for w in ws if w.get("fusedrnn")), None)
    blas = next((i["architecture"] for w in ws for i in w.get("threadpool_info", [])
                 if "scipy_openblas" in (i.get("filepath") or "")), None)
    v = h.get("versions", {})
    parts = [f"{h.get('cpu_model') or 'CPU not recorded'}"
             + (f", {h['cores']} cores" if h.get("cores") else "")
             + "".join(f", {k} {_size(v)}" for k, v in h.get("caches", {}).items()
                       if k in ("L2", "L3"))
             + f", {_plural(threads)}, float32, {h['date'][:10]}"]
    if h.get("loadavg"):
        parts.append(f"load average {h['loadavg'][0]:.1f} at the start")
    libs = [f"fusedrnn {v.get('fusedrnn', '?')}" + (f" ({isa})" if isa else "")]
    if v.get("torch"):
        libs.append(f"torch {v['torch']}")
    libs.append(f"mxnet {v.get('mxnet') or '1.9.1'} with {h['mxnet_engine']}")
    parts.append(", ".join(libs))
    if blas:
        parts.append(f"OpenBLAS kernel {blas}")
    if peak:
        parts.append(f"sgemm peak {peak:.0f} GFLOP/s")
    line = "; ".join(parts) + "."
    if h.get("fairness"):
        line += " " + h["fairness"]
    if h.get("converted"):
        line += " " + h["converted"]
    return line + f" Command: `{h['command']}`."


def _size(text):
    """/sys's cache size ("1024K") as people write it ("1 MB" per core)."""
    kb = int(text.rstrip("KkMm")) * (1024 if text[-1] in "Mm" else 1)
    return f"{kb // 1024} MB" if kb >= 1024 and kb % 1024 == 0 else f"{kb} KB"


def _peak(h, threads):
    s = h.get("workers", {}).get(f"sgemm:{threads}")
    return max(s["sgemm_peak_gflops"].values()) if s and s["sgemm_peak_gflops"] else None


def fmt_ms(r):
    if r is None:
        return "-"
    if "median_ms" not in r:
        return "error"
    return f"{r['median_ms']:.2f} ({r['p25_ms']:.2f}-{r['p75_ms']:.2f})"


def fmt_x(v):
    return "-" if v is None else f"{v:.2f}x"


def ratio(r, impl):
    return r.get("ratio_vs_fusedrnn", {}).get(impl)


# --------------------------------------------------------------------------- layers (rnn.json)
def row_label(r):
    shape = f"{r['T']},{r['N']},{r['I']},{r['H']}"
    if r["kind"] == "decode":
        return f"{r['mode'].upper()} cell N={r['N']} H={r['H']}"
    mode = {"rnn_tanh": "RNN"}.get(r["mode"], r["mode"].upper())
    return f"{mode} {shape}" + (f" {r['batch']}" if r["kind"] == "varlen" else "")


def memory_ratio(r):
    m = r.get("memory_mib") or {}
    if m.get("fusedrnn") and m.get("mxnet_fused") is not None:
        return m["mxnet_fused"] / m["fusedrnn"]
    return None


def _is(kind, phase, modes=None, where=lambda r: True):
    return lambda r: (r["kind"] == kind and r["phase"] == phase and
                      (modes is None or r["mode"] in modes) and where(r))


LG = ("lstm", "gru")
# (text, rows it covers, figure, goal, strict): met when every figure >= goal (> if strict).
TARGETS = [
    ("training >= 1.5x PyTorch on every LSTM and GRU shape", _is("equal", "train", LG),
     functools.partial(ratio, impl="torch"), 1.5, False),
    ("training >= 2x MXNet fused on every LSTM and GRU shape", _is("equal", "train", LG),
     functools.partial(ratio, impl="mxnet_fused"), 2.0, False),
    ("training >= 4x MXNet unrolled cells on every LSTM and GRU shape",
     _is("equal", "train", LG), functools.partial(ratio, impl="mxnet_unrolled"), 4.0, False),
    ("inference >= 1.3x PyTorch on every shape", _is("equal", "infer"),
     functools.partial(ratio, impl="torch"), 1.3, False),
    ("LSTM inference >= 1.0x PyTorch on every shape", _is("equal", "infer", ("lstm",)),
     functools.partial(ratio, impl="torch"), 1.0, False),
    ("batch-1 latency (N=1 rows, inference) >= 2x MXNet fused",
     _is("equal", "infer", where=lambda r: r["N"] == 1),
     functools.partial(ratio, impl="mxnet_fused"), 2.0, False),
    ("GEMM-bound shapes (H >= 512) training >= 80% of the measured sgemm peak",
     _is("equal", "train", where=lambda r: r["H"] >= 512),
     lambda r: 100 * r["fusedrnn_peak_frac"] if "fusedrnn_peak_frac" in r else None, 80.0,
     False),
    ("variable length, 40% padding: >= 1.5x faster than the same batch padded",
     lambda r: r["kind"] == "varlen" and r["batch"] == "pad40",
     functools.partial(ratio, impl="fusedrnn_padded"), 1.5, False),
    ("variable length, 40% padding: faster than PyTorch packed",
     lambda r: r["kind"] == "varlen" and r["batch"] == "pad40",
     functools.partial(ratio, impl="torch_packed"), 1.0, True),
    ("decoding loop: fusedrnn cells >= 3x faster than gluon.rnn cells",
     lambda r: r["kind"] == "decode", functools.partial(ratio, impl="gluon_cell"), 3.0, False),
    ("decoding loop at H = 512: within 15% of reading the weights once a step (floor / "
     "fusedrnn >= 0.87)", lambda r: r["kind"] == "decode" and r["H"] == 512,
     functools.partial(ratio, impl="weights_read"), 0.87, False),
    ("memory: fusedrnn training peak <= MXNet fused's (MXNet fused / fusedrnn >= 1)",
     lambda r: "memory_mib" in r and r["mode"] in LG, memory_ratio, 1.0, False),
]


def evaluate_targets(rows, threads):
    out = []
    for text, select, figure, goal, strict in TARGETS:
        got = [(figure(r), r) for r in rows if r["threads"] == threads and select(r)]
        if not got:
            out.append({"target": text, "status": "not measured"})
            continue
        missing = [r for v, r in got if v is None]
        values = [(v, r) for v, r in got if v is not None]
        ok = [v > goal if strict else v >= goal for v, _ in values]
        worst = min(values, key=lambda p: p[0]) if values else None
        out.append({"target": text, "met": bool(values) and all(ok) and not missing,
                    "passed": sum(ok), "count": len(got), "missing": len(missing),
                    "worst": worst[0] if worst else None, "goal": goal,
                    "worst_row": (row_label(worst[1]) + " " + worst[1]["phase"]) if worst
                    else None})
    return out




def rnn_tables(data, threads=2):
    """The layers' tables (full length, variable lengths, decoding), errors and targets."""
    h = data["header"]
    rows = [r for r in data["rows"] if r["threads"] == threads]
    if not rows:
        return f"No rows for {_plural(threads)} in this result."
    lines = [machine_line(h, threads, _peak(h, threads)) + " Median ms per call (p25-p75); "
             "\"vs X\" = X's median / fusedrnn's (> 1: fusedrnn is faster).", ""]
    eq = [r for r in rows if r["kind"] == "equal"]
    if eq:
        lines += ["Full-length batches, one layer (T, N, I, H = steps, batch, input, hidden); "
                  "memory: peak MiB added by 3 training steps (fusedrnn / PyTorch / MXNet fused "
                  "/ MXNet unrolled cells).", "",
                  "| mode | T, N, I, H | phase | fusedrnn ms | PyTorch ms | MXNet fused ms | "
                  "MXNet unrolled ms | vs PyTorch | vs MXNet fused | vs MXNet unrolled | "
                  "GFLOP/s | % of peak | memory MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in eq:
            mem = r.get("memory_mib")
            mem = " / ".join("-" if mem.get(k) is None else f"{mem[k]:.0f}"
                             for k in EQUAL_IMPLS) if mem else ""
            lines.append(f"| {row_label(r).split()[0]} | {r['T']}, {r['N']}, {r['I']}, {r['H']} "
                         f"| {r['phase']} | " +
                         " | ".join(fmt_ms(r["impls"].get(k)) for k in EQUAL_IMPLS) + " | " +
                         " | ".join(fmt_x(ratio(r, k)) for k in EQUAL_IMPLS[1:]) +
                         f" | {r.get('fusedrnn_gflops', 0):.0f} | "
                         f"{100 * r.get('fusedrnn_peak_frac', 0):.0f}% | {mem} |")
    vl = [r for r in rows if r["kind"] == "varlen"]
    if vl:
        lines += ["", "Variable lengths: uniform = lengths uniform in [T/4, T], pad40 = exactly "
                  "40% padding; fusedrnn gets sequence_length, the others compute the padding "
                  "(PyTorch packed skips it); GFLOP/s counts real tokens.", "",
                  "| mode | T, N, I, H | batch | padding | phase | fusedrnn, lengths | "
                  "fusedrnn, padded | PyTorch packed | PyTorch padded | MXNet fused | "
                  "vs fusedrnn padded | vs PyTorch packed | vs PyTorch padded | vs MXNet fused "
                  "| GFLOP/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in vl:
            lines.append(f"| {row_label(r).split()[0]} | {r['T']}, {r['N']}, {r['I']}, "
                         f"{r['H']} | {r['batch']} | {100 * r['padding_fraction']:.0f}% | "
                         f"{r['phase']} | " +
                         " | ".join(fmt_ms(r["impls"].get(k)) for k in VARLEN_IMPLS) + " | " +
                         " | ".join(fmt_x(ratio(r, k)) for k in VARLEN_IMPLS[1:]) +
                         f" | {r.get('fusedrnn_gflops', 0):.0f} |")
    dec = [r for r in rows if r["kind"] == "decode"]
    if dec:
        lines += ["", f"Decoding loop: {DECODE_STEPS} single steps of a cell, inference, output "
                  "fed back as the next input (I = H); ms per loop.", "",
                  "| cell | N | H | fusedrnn cell | gluon.rnn cell | PyTorch cell | "
                  "vs gluon.rnn cell | vs PyTorch cell | fusedrnn us per step | "
                  "weights read (floor) | fusedrnn / floor |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in dec:
            f = r["impls"].get("fusedrnn", {})
            us = f"{f['median_ms'] * 1e3 / DECODE_STEPS:.0f}" if "median_ms" in f else "-"
            floor = ratio(r, "weights_read")
            lines.append(f"| {r['mode'].upper()} | {r['N']} | {r['H']} | " +
                         " | ".join(fmt_ms(r["impls"].get(k)) for k in DECODE_IMPLS) + " | " +
                         " | ".join(fmt_x(ratio(r, k)) for k in DECODE_IMPLS[1:]) + f" | {us} | "
                         + fmt_ms(r["impls"].get("weights_read")) + " | "
                         + (f"{1 / floor:.2f}" if floor else "-") + " |")
    errors = sorted({(k, v["error"]) for r in rows for k, v in r["impls"].items()
                     if "error" in v})
    errors += sorted({(m["impl"], "memory: " + m["error"]) for m in data.get("memory", [])
                      if "error" in m})
    if errors:
        lines += [""] + [f"- error, {LABELS.get(k, k)}: {e}" for k, e in errors]
    lines += ["", f"Targets ({_plural(threads)}, float32):", ""]
    for t in evaluate_targets(rows, threads):
        if t.get("status"):
            lines.append(f"- not measured: {t['target']}")
            continue
        unit = "%" if "sgemm" in t["target"] else "x"
        worst = "-" if t["worst"] is None else f"{t['worst']:.{0 if unit == '%' else 2}f}{unit}"
        lines.append(f"- **{'met' if t['met'] else 'missed'}**: {t['target']}: "
                     f"{t['passed']}/{t['count']} rows, worst {worst} ({t['worst_row']})" +
                     (f", {t['missing']} without a figure" if t["missing"] else ""))
    return "\n".join(lines)



def _bars(ax, rows, impls, title, targets=(), segments=(), labels=None):
    """Log-scale bars of baseline / fusedrnn per row, drawn from the 1x line (up: fusedrnn is
    faster); targets: (value, impl) lines; segments: (value, impl, row indices) for targets
    that cover some rows only."""
    import numpy as np
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
    width = 0.8 / len(impls)
    x = np.arange(len(rows))
    seen = [1.0] + [t[0] for t in targets] + [s[0] for s in segments]
    for j, impl in enumerate(impls):
        vals = [ratio(r, impl) for r in rows]
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, [v - 1 if v else 0 for v in vals], width, bottom=1, label=LABELS[impl],
               color=COLORS[impl])
        for p, v in zip(pos, vals):
            if v:
                seen.append(v)
                ax.text(p, v, f"{v:.2g}", ha="center", va="bottom" if v >= 1 else "top",
                        fontsize=6)
    ax.axhline(1.0, color="black", lw=1)
    for value, impl in targets:
        ax.axhline(value, color=COLORS[impl], ls="--", lw=1,
                   label=f"target {value:g}x vs {LABELS[impl]}")
    for value, impl, idx in segments:
        for i in idx:
            ax.hlines(value, i - 0.45, i + 0.45, color=COLORS[impl], ls=":", lw=2)
    ax.set_yscale("log")
    ax.set_ylim(min(seen) / 1.3, max(seen) * 2.2)  # room for the legend
    ax.yaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 4, 6, 10,
                                             20, 30, 50, 100]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(x)
    ax.set_xticklabels(labels or [row_label(r).replace(" ", "\n", 1) for r in rows],
                       fontsize=7 if labels is None else 6)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("baseline time / fusedrnn time")
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    ax.grid(axis="y", which="both", alpha=0.3)


def plot(data, path, threads=2):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in data["rows"] if r["threads"] == threads]
    eq = {p: [r for r in rows if r["kind"] == "equal" and r["phase"] == p]
          for p in ("train", "infer")}
    dec = [r for r in rows if r["kind"] == "decode"]
    vl = [r for r in rows if r["kind"] == "varlen"]
    fig = plt.figure(figsize=(16, 12))
    gs = fig.add_gridspec(3, 3)
    baselines = EQUAL_IMPLS[1:]
    if eq["train"]:
        _bars(fig.add_subplot(gs[0, :]), eq["train"], baselines,
              f"Training (forward + backward), full-length batches, {_plural(threads)}",
              [(1.5, "torch"), (2.0, "mxnet_fused"), (4.0, "mxnet_unrolled")])
    if eq["infer"]:
        n1 = [i for i, r in enumerate(eq["infer"]) if r["N"] == 1]
        _bars(fig.add_subplot(gs[1, :]), eq["infer"], baselines,
              f"Inference, full-length batches, {_plural(threads)} (dotted: batch-1 target "
              "2x vs MXNet fused)", [(1.3, "torch")], [(2.0, "mxnet_fused", n1)])
    if dec:
        _bars(fig.add_subplot(gs[2, 0]), dec, DECODE_IMPLS[1:],
              f"Decoding loop, {DECODE_STEPS} cell steps, inference", [(3.0, "gluon_cell")],
              labels=[f"{r['mode'].upper()}\nN={r['N']}\nH={r['H']}" for r in dec])
    if vl:
        pad40 = [i for i, r in enumerate(vl) if r["batch"] == "pad40"]
        _bars(fig.add_subplot(gs[2, 1:]), vl, VARLEN_IMPLS[1:],
              "Variable lengths, fusedrnn with sequence_length (T,N; I,H = 256,256 or 64,128); "
              "dotted: 40%-padding targets", (),
              [(1.5, "fusedrnn_padded", pad40), (1.0, "torch_packed", pad40)],
              labels=[f"{r['mode'].upper()} {r['T']},{r['N']}\n{r['batch']}\n{r['phase']}"
                      for r in vl])
    h = data["header"]
    fig.suptitle(f"fusedrnn speedup over each baseline (baseline time / fusedrnn time; > 1: "
                 f"fusedrnn faster). {h['cpu_model']}, {_plural(threads)}, float32, "
                 f"MXNet {h['mxnet_engine']}, {h['date'][:10]}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)




def summary_table(data, threads=2):
    """The README's short table: training, full-length batches."""
    lines = ["| mode | T, N, I, H | fusedrnn ms | vs PyTorch | vs MXNet fused | "
             "vs MXNet unrolled cells |", "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        if r["kind"] == "equal" and r["phase"] == "train" and r["threads"] == threads:
            f = r["impls"].get("fusedrnn", {})
            fused = f"{f['median_ms']:.2f}" if "median_ms" in f else "-"
            lines.append(f"| {row_label(r).split()[0]} | {r['T']}, {r['N']}, {r['I']}, {r['H']} "
                         f"| {fused} | " + " | ".join(fmt_x(ratio(r, k)) for k in EQUAL_IMPLS[1:])
                         + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- kernels.json
def kernels_tables(data, threads=2):
    h = data["header"]
    rows = [r for r in data["rows"] if r["threads"] == threads]
    if not rows:
        return f"No rows for {_plural(threads)} in this result."

    def ms(r, impl):
        got = r["impls"].get(impl, {})
        return f"{got['median_ms']:.2f}" if "median_ms" in got else "-"

    lines = [machine_line(h, threads, _peak(h, threads)) + " Median ms per call; \"vs X\" = "
             "X's time / fusedrnn's (> 1: fusedrnn is faster).", "",
             "| mode | T, N, I, H | phase | fusedrnn ms | PyTorch ms | MXNet ms | vs PyTorch | "
             "vs MXNet |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "padded":
            lines.append(f"| {r['mode']} | {r['T']}, {r['N']}, {r['I']}, {r['H']} | "
                         f"{r['phase']} | {ms(r, 'fusedrnn')} | {ms(r, 'torch')} | "
                         f"{ms(r, 'mxnet')} | {fmt_x(ratio(r, 'torch'))} | "
                         f"{fmt_x(ratio(r, 'mxnet'))} |")
    lines += ["", "Variable lengths (uniform in [T/4, T]), LSTM:", "",
              "| T, N, I, H | phase | fusedrnn, lengths | fusedrnn, padded | PyTorch, packed | "
              "PyTorch, padded |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "varlen":
            lines.append(f"| {r['T']}, {r['N']}, {r['I']}, {r['H']} | {r['phase']} | " +
                         " | ".join(ms(r, k) for k in ("fusedrnn", "fusedrnn_padded",
                                                       "torch_packed", "torch_padded")) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- padding.json
def padding_tables(data):
    h = data["header"]
    b = h["batch_shape"]
    lines = [machine_line(h, h["threads"][0]), "",
             f"One batch: T={b['T']}, N={b['N']}, I={b['I']}, H={b['H']}, {b['layers']} layers, "
             f"{100 * data['batch'][0]['padding_fraction']:.0f}% padding; median ms per call.",
             "", "| mode | phase | padded, no lengths | post-padded, sequence_length | "
             "post-padded, mask | pre-padded, mask | MXNet gluon.rnn, padded |",
             "|---|---|---|---|---|---|---|"]
    for r in data["batch"]:
        lines.append(f"| {r['mode']} | {r['phase']} | {r['padded_ms']:.1f} | "
                     f"{r['post_lengths_ms']:.1f} | {r['post_mask_ms']:.1f} | "
                     f"{r['pre_mask_ms']:.1f} | {r['mxnet_padded_ms']:.1f} |")
    e = h["epoch"]
    lines += ["", f"One training epoch (forward + backward), {e['sequences']} sequences of "
              f"{e['length_min_max'][0]}-{e['length_min_max'][1]} steps, batch 32, "
              f"{b['layers']}-layer LSTM H={b['H']}:", "",
              "| batches | padding | epoch s | real tokens / s |", "|---|---|---|---|"]
    names = {"padded_global": "random, padded to the longest sequence, no lengths",
             "padded_batch": "random, padded per batch, sequence_length",
             "bucketed": "BucketSampler + pad_collate, sequence_length"}
    for r in data["epoch"]:
        lines.append(f"| {names[r['strategy']]} | {100 * r['padding_fraction']:.0f}% | "
                     f"{r['epoch_ms'] / 1e3:.2f} | {r['tokens_per_s']:.0f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- unroll.json
def unroll_table(data):
    """Every row with T > 1 where the per-step graph was faster by more than 10%, what
    fusedrnn.choose_unroll picks there, and the range of the ratio. (At T = 1 both paths are
    the same single operator: those rows show the run-to-run noise.)"""
    from fusedrnn import choose_unroll
    h, rows = data["header"], data["rows"]
    lines = [machine_line(h, h["threads"][0]), "",
             "| mode | T | N | H | phase | fused ms | unrolled ms | unrolled / fused | auto |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["ratio"] < 0.9 and r["T"] > 1:
            auto = choose_unroll(r["mode"], r["T"], r["N"], r["H"], r["phase"] == "train")
            lines.append(f"| {r['mode']} | {r['T']} | {r['N']} | {r['H']} | {r['phase']} | "
                         f"{r['fused_ms']:.3f} | {r['unrolled_ms']:.3f} | {r['ratio']:.2f} | "
                         f"{'unrolled' if auto else 'fused'} |")
    for phase in ("train", "infer"):
        rest = sorted(r["ratio"] for r in rows if r["phase"] == phase and r["T"] > 1)
        if rest:
            lines.append(f"\n{phase}, T > 1: unrolled / fused from {rest[0]:.2f} to "
                         f"{rest[-1]:.2f} (median {rest[len(rest) // 2]:.2f}) over "
                         f"{len(rest)} shapes.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- seams.json
def seams_table(data):
    h = data["header"]
    lines = [machine_line(h, h["threads"][0]), "",
             "| case | with the seam ms | without ms | seam's cost | gluon.rnn ms | "
             "gluon.rnn / with |", "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['case']} | {r['with_ms']:.2f} | {r['without_ms']:.2f} | "
                     f"{100 * r['overhead'] + 0.0:+.0f}% | {r['gluon_ms']:.2f} | "
                     f"{r['gluon_ms'] / r['with_ms']:.2f}x |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- cell_step.json
def cell_step_table(data):
    h = data["header"]
    lines = [machine_line(h, h["threads"][-1]), "",
             "| engine | threads | cell | N | H | array step us | operator us | "
             "operator / array |", "|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        op = r.get("operator_us")
        lines.append(f"| {r['engine']} | {r['threads']} | {r['mode'].upper()} | {r['N']} | "
                     f"{r['H']} | {r['array_us']:.1f} | " +
                     ("-" if op is None else f"{op:.1f}") + " | " +
                     ("-" if op is None else f"{op / r['array_us']:.2f}x") + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- keras.json
def keras_table(data):
    h = data["header"]
    n = h["threads"][0]
    lines = [machine_line(h, n, _peak(h, n)), "",
             "| model | phase | fused ms | stock unroll=True ms | stock / fused | "
             "stock unroll=False ms (outputs zeros) | fusedrnn Gluon ms | fused LSTM GFLOP/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        i = r["impls"]
        lstms = " + ".join(f"LSTM {u}" for u in r["lstm_sizes"])
        lines.append(f"| {r['model']} ({lstms}, T {r['maxlen']}, N {r['batch']}) | "
                     f"{r['phase']} | {fmt_ms(i.get('fused'))} | "
                     f"{fmt_ms(i.get('stock_unroll'))} | "
                     f"{fmt_x(r['ratio_vs_fused'].get('stock_unroll'))} | "
                     f"{fmt_ms(i.get('stock_foreach'))} | {fmt_ms(i.get('gluon'))} | "
                     f"{r['fused_lstm_gflops']:.0f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- regularisers.json
REGULARISED = {  # model -> (what it is, the fused implementation's stock counterparts)
    "deepar": ("GluonTS DeepAR's RNN: 2 x LSTMCell(40), ZoneoutCell(zoneout_states=0.1), "
               "residual, T 72, N 32", ["stock", "fused_no_zoneout", "stock_no_zoneout"]),
    "lm": ("word LM: 2 x LSTMCell(200) in VariationalDropoutCell(0.2, 0.2, 0.2), vocab 2000, "
           "T 35, N 32", ["stock"]),
    "keras": ("Keras LSTM(128, recurrent_dropout=0.2), the seed's model", [
        "stock_without_recurrent_dropout"]),
}


def regularisers_table(data):
    h = data["header"]
    lines = [machine_line(h, h["threads"][0]), "",
             "| model | train step, fused ms | compared with | its ms | it / fused |",
             "|---|---|---|---|---|"]
    for r in data["rows"]:
        what, others = REGULARISED[r["model"]]
        i = r["impls"]
        for k, other in enumerate(others):
            first = k == 0
            lines.append(f"| {what if first else ''} | "
                         f"{fmt_ms(i['fused']) if first else ''} | {other.replace('_', ' ')} | "
                         f"{fmt_ms(i.get(other))} | {fmt_x(r['ratio_vs_fused'].get(other))} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- clients.json
CLIENT_MODELS = {  # model -> what it is (the sizes the bench script records in its header)
    "standard_lstm_lm_200": "StandardRNN, standard_lstm_lm_200: 2 x LSTM(200)",
    "awd_lstm_lm_600": "AWDRNN, awd_lstm_lm_600: 3 x LSTM(600/200), weight drop",
    "deepar": "DeepAR default: 2 x LSTMCell(40), zoneout 0.1, residual",
}
CLIENT_PHASES = {"train_hybridized": "train step, hybridized",
                 "train_imperative": "train step, imperative", "train": "train step, batch 32",
                 "predict": "predict({series} series, {num_samples} samples)"}


def clients_table(data):
    h = data["header"]
    lm, versions = h["lm"], h["client_versions"]
    lines = [machine_line(h, h["threads"][0]) + f" gluonnlp {versions.get('gluonnlp')}, "
             f"gluonts {versions.get('gluonts')}; LM vocabulary {lm['vocab']}, T {lm['bptt']}, "
             f"N {lm['batch']}.", "",
             "| client | model | phase | stock ms | fusedrnn ms | speedup |",
             "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        i = r["impls"]
        phase = CLIENT_PHASES.get(r["phase"], r["phase"]).format(**r)
        lines.append(f"| {r['client']} | {CLIENT_MODELS.get(r['model'], r['model'])} | "
                     f"{phase} | {fmt_ms(i.get('stock'))} | {fmt_ms(i.get('fusedrnn'))} | "
                     f"{fmt_x(r.get('speedup'))} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the report
SECTIONS = [  # (result file, title, markdown, regenerating command)
    ("rnn", "Gluon layers and cells vs MXNet and PyTorch", rnn_tables,
     "python bench/bench_rnn.py"),
    ("kernels", "Kernels alone", kernels_tables, "python bench/bench_kernels.py"),
    ("kernels_avx2", "Kernels alone, AVX2 code on the same machine", kernels_tables,
     "FUSEDRNN_DISABLE_AVX512=1 python bench/bench_kernels.py --out "
     "bench/results/<machine>/kernels_avx2.json"),
    ("padding", "Padding, masks and bucketing (Gluon layers)", padding_tables,
     "python bench/bench_padding.py"),
    ("unroll", "Fused or unrolled (`unroll='auto'`)", unroll_table,
     "python bench/bench_unroll.py"),
    ("seams", "The gradient seam's cost", seams_table, "python bench/bench_seams.py"),
    ("cell_step", "One cell step in a decoding loop, by MXNet engine", cell_step_table,
     "python bench/bench_cell_step.py"),
    ("keras", "Keras (keras-mxnet) on fused ops", keras_table, "python bench/bench_keras.py"),
    ("regularisers", "Regularised recurrences (zoneout, variational and Keras dropout)",
     regularisers_table, "python bench/bench_regularisers.py"),
    ("clients", "Client libraries: GluonNLP and GluonTS, stock and fused", clients_table,
     "python bench/bench_clients.py"),
]


def report(results, threads=2, png=None):
    """The markdown of every result file found in `results`; draws rnn.png to `png`."""
    data = {}
    for name, *_ in SECTIONS:
        path = os.path.join(results, name + ".json")
        if os.path.exists(path):
            with open(path) as f:
                data[name] = json.load(f)
    out = ["# Performance", "",
           "Made by `python bench/report.py` from the result files next to it; each section "
           "names the command that measured it."]
    if "rnn" in data:
        out += ["", "## Summary", "", f"Training, full-length batches, one layer, "
                f"{_plural(threads)}; \"vs X\" = X's time / fusedrnn's (> 1: fusedrnn is "
                "faster).", "", summary_table(data["rnn"], threads)]
        if png:
            plot(data["rnn"], png, threads)
            out += ["", f"![fusedrnn speedups per shape]({os.path.basename(png)})"]
    for name, title, markdown, command in SECTIONS:
        if name in data:
            takes_threads = name in ("rnn", "kernels", "kernels_avx2")
            out += ["", f"## {title}", "", f"```bash\n{command}\n```", "",
                    markdown(data[name], threads) if takes_threads else markdown(data[name])]
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=None,
                   help="a folder of result files (default: this machine's, "
                        "bench/results/<machine>)")
    p.add_argument("--out", help="markdown file (default: report.md in --results)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.results is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _common import machine_folder
        args.results = machine_folder()
    out = args.out or os.path.join(args.results, "report.md")
    text = report(args.results, args.threads,
                  png=os.path.join(os.path.dirname(os.path.abspath(out)), "rnn.png"))
    with open(out, "w") as f:
        f.write(text)
    print("wrote", out)


if __name__ == "__main__":
    main()
