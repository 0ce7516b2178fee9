"""bench/report.py builds its tables, target list and plot from result files (small fixtures
written here; nothing is measured)."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_report():
    spec = importlib.util.spec_from_file_location("bench_report",
                                                  os.path.join(ROOT, "bench", "report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def header(name, **extra):
    return dict({"bench": name, "date": "2026-12-03T10:00:00+00:00",
                 "command": f"python bench/bench_{name}.py --quick", "cpu_model": "Test CPU",
                 "cores": 2, "loadavg": [0.5, 0.5, 0.5], "threads": [2],
                 "versions": {"fusedrnn": "0.1.0", "torch": "2.13.0", "mxnet": "1.9.1"},
                 "mxnet_engine": "ThreadedEnginePerDevice", "fairness": "Fixture.",
                 "workers": {"mxnet:2": {"fusedrnn": {"instruction_set": "avx512"},
                                         "threadpool_info": [{"filepath": "/x/libscipy_openblas.so",
                                                              "architecture": "SkylakeX"}]},
                             "sgemm:2": {"sgemm_peak_gflops": {"numpy": 250.0,
                                                               "scipy_openblas32": 300.0}}}},
                **extra)


def timing(ms):
    return {"median_ms": ms, "p25_ms": ms * 0.9, "p75_ms": ms * 1.1}


def layer_row(kind, phase, impls, **extra):
    f = impls["fusedrnn"]
    row = {"kind": kind, "batch": extra.pop("batch", None), "mode": "lstm", "T": 50, "N": 64,
           "I": 64, "H": 128, "threads": 2, "phase": phase,
           "impls": {k: timing(v) for k, v in impls.items()},
           "ratio_vs_fusedrnn": {k: v / f for k, v in impls.items() if k != "fusedrnn"},
           "fusedrnn_gflops": 150.0, "fusedrnn_peak_frac": 0.5, "padding_fraction": 0.0}
    row.update(extra)
    return row


@pytest.fixture
def results(tmp_path):
    files = {
        "rnn": {"header": header("rnn"), "memory": [], "rows": [
            layer_row("equal", "train", {"fusedrnn": 10.0, "torch": 20.0, "mxnet_fused": 15.0,
                                         "mxnet_unrolled": 60.0},
                      memory_mib={"fusedrnn": 20.0, "torch": 80.0, "mxnet_fused": 40.0,
                                  "mxnet_unrolled": 45.0}),
            layer_row("equal", "infer", {"fusedrnn": 4.0, "torch": 3.0, "mxnet_fused": 4.4,
                                         "mxnet_unrolled": 27.0}),
            layer_row("varlen", "train", {"fusedrnn": 7.0, "fusedrnn_padded": 10.0,
                                          "torch_packed": 60.0, "torch_padded": 10.5,
                                          "mxnet_fused": 18.0},
                      batch="pad40", padding_fraction=0.4),
            dict(layer_row("decode", "infer", {"fusedrnn": 6.6, "gluon_cell": 28.0,
                                               "torch_cell": 7.7}), T=100, I=256, H=256, N=1),
        ]},
        "kernels": {"header": header("kernels"), "rows": [
            dict(layer_row("padded", "train", {"fusedrnn": 9.0, "torch": 9.5, "mxnet": 9.8})),
            dict(layer_row("varlen", "infer", {"fusedrnn": 2.3, "fusedrnn_padded": 3.1,
                                               "torch_packed": 5.4, "torch_padded": 3.0})),
        ]},
        "padding": {"header": header("padding", batch_shape={"T": 100, "N": 32, "I": 128,
                                                             "H": 256, "layers": 2},
                                     epoch={"sequences": 512, "length_min_max": [5, 200]}),
                    "batch": [{"mode": "lstm", "phase": "train", "padding_fraction": 0.38,
                               "padded_ms": 78.9, "post_lengths_ms": 56.8,
                               "post_mask_ms": 57.3, "pre_mask_ms": 57.0,
                               "mxnet_padded_ms": 107.9}],
                    "epoch": [{"strategy": "bucketed", "epoch_ms": 2550.0,
                               "tokens_per_s": 32239.0, "padding_fraction": 0.04}]},
        "unroll": {"header": header("unroll"), "rows": [
            {"mode": "lstm", "T": 2, "N": 1, "H": 256, "phase": "infer", "fused_ms": 0.5,
             "unrolled_ms": 0.3, "ratio": 0.6},
            {"mode": "lstm", "T": 32, "N": 64, "H": 256, "phase": "train", "fused_ms": 1.0,
             "unrolled_ms": 2.0, "ratio": 2.0}]},
        "seams": {"header": header("seams"), "rows": [
            {"case": "LSTM layer", "with_ms": 18.7, "without_ms": 16.2, "overhead": 0.155,
             "gluon_ms": 38.0}]},
        "cell_step": {"header": header("cell_step"), "rows": [
            {"engine": "NaiveEngine", "threads": 2, "mode": "lstm", "N": 1, "H": 256,
             "array_us": 50.0, "operator_us": 100.0}]},
    }
    for name, data in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    return tmp_path


def test_every_section_from_the_result_files(results):
    report = load_report()
    text = report.report(str(results), threads=2, png=str(results / "rnn.png"))
    assert (results / "rnn.png").stat().st_size > 0
    for title in ("## Summary", "## Gluon layers and cells", "## Kernels alone",
                  "## Padding, masks", "## Fused or unrolled", "## The gradient seam",
                  "## One cell step"):
        assert title in text
    # the machine header, with the engine MXNet ran on
    assert "Test CPU, 2 cores, 2 threads" in text
    assert "mxnet 1.9.1 with ThreadedEnginePerDevice" in text
    assert "OpenBLAS kernel SkylakeX; sgemm peak 300 GFLOP/s" in text
    assert "`python bench/bench_rnn.py --quick`" in text
    # tables: figures and ratios as the fixtures give them
    assert "| LSTM | 50, 64, 64, 128 | 10.00 | 2.00x | 1.50x | 6.00x |" in text
    assert ("| LSTM | 50, 64, 64, 128 | train | 10.00 (9.00-11.00) | 20.00 (18.00-22.00) | "
            "15.00 (13.50-16.50) | 60.00 (54.00-66.00) | 2.00x | 1.50x | 6.00x | 150 | 50% | "
            "20 / 80 / 40 / 45 |") in text
    assert "| lstm | 50, 64, 64, 128 | train | 9.00 | 9.50 | 9.80 | 1.06x | 1.09x |" in text
    assert "| 50, 64, 64, 128 | infer | 2.30 | 3.10 | 5.40 | 3.00 |" in text
    assert "| lstm | train | 78.9 | 56.8 | 57.3 | 57.0 | 107.9 |" in text
    assert "| BucketSampler + pad_collate, sequence_length | 4% | 2.55 | 32239 |" in text
    assert "| lstm | 2 | 1 | 256 | infer | 0.500 | 0.300 | 0.60 | unrolled |" in text
    assert "| LSTM layer | 18.70 | 16.20 | +16% | 38.00 | 2.03x |" in text
    assert "| NaiveEngine | 2 | LSTM | 1 | 256 | 50.0 | 100.0 | 2.00x |" in text
    # the target list
    assert ("- **met**: training >= 1.5x PyTorch on every LSTM and GRU shape: 1/1 rows, worst "
            "2.00x (LSTM 50,64,64,128 train)") in text
    assert "- **missed**: inference >= 1.3x PyTorch on every shape: 0/1 rows" in text
    assert "- not measured: batch-1 latency" in text


def test_missing_files_leave_their_sections_out(results):
    report = load_report()
    for name in ("rnn", "kernels", "seams"):
        os.remove(results / f"{name}.json")
    text = report.report(str(results), threads=2, png=str(results / "rnn.png"))
    assert "## Padding, masks" in text and "## Kernels alone" not in text
    assert not (results / "rnn.png").exists()
