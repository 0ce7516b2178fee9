#!/usr/bin/env python
"""Markdown tables from a bench_kernels.py result (the README's performance section).

    python bench/report.py [bench/results/kernels.json] [--threads 2]
"""
import argparse
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ms(row, impl):
    return row["impls"][impl]["median_ms"]


def full_length_table(rows, threads):
    lines = ["| mode | T, N, I, H | phase | fusedrnn ms | PyTorch ms | MXNet ms | vs PyTorch | vs MXNet |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "padded" or r["threads"] != threads:
            continue
        ratio = r["ratio_vs_fusedrnn"]
        lines.append(f"| {r['mode']} | {r['T']}, {r['N']}, {r['I']}, {r['H']} | {r['phase']} | "
                     f"{ms(r, 'fusedrnn'):.2f} | {ms(r, 'torch'):.2f} | {ms(r, 'mxnet'):.2f} | "
                     f"{ratio['torch']:.2f}x | {ratio['mxnet']:.2f}x |")
    return "\n".join(lines)


def varlen_table(rows, threads):
    lines = ["| T, N, I, H | phase | fusedrnn, lengths | fusedrnn, padded | PyTorch, packed | "
             "PyTorch, padded |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "varlen" or r["threads"] != threads:
            continue
        lines.append(f"| {r['T']}, {r['N']}, {r['I']}, {r['H']} | {r['phase']} | "
                     f"{ms(r, 'fusedrnn'):.2f} | {ms(r, 'fusedrnn_padded'):.2f} | "
                     f"{ms(r, 'torch_packed'):.2f} | {ms(r, 'torch_padded'):.2f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("result", nargs="?",
                   default=os.path.join(ROOT, "bench", "results", "kernels.json"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    with open(args.result) as f:
        data = json.load(f)
    h = data["header"]
    blas = [i for i in h["workers"][str(args.threads)]["threadpool_info"]
            if "scipy_openblas" in i["filepath"]]
    print(f"{h['cpu_model']}, {h['cores']} cores, {args.threads} threads, {h['date'][:10]}; "
          f"fusedrnn {h['versions']['fusedrnn']}, torch {h['versions']['torch']}, "
          f"mxnet {h['versions']['mxnet']}; OpenBLAS kernel "
          f"{blas[0]['architecture'] if blas else '?'}. Median ms per call, float32; "
          f"\"vs X\" = X's time / fusedrnn's (> 1: fusedrnn is faster).\n")
    print(full_length_table(data["rows"], args.threads))
    print("\nVariable lengths (uniform in [T/4, T]), LSTM:\n")
    print(varlen_table(data["rows"], args.threads))


if __name__ == "__main__":
    main()
