"""The main job, fusedrnn.demo, in tiny configurations that train in seconds.

The saved files are checked against mxnet.gluon.rnn (an independent implementation reading
them), continuing from --load against the saved run's final validation loss, and --compare
against the same model trained by gluon.rnn on the same batches."""
import os
import subprocess
import sys

import matplotlib.image
import mxnet as mx
import numpy as np
import pytest

from fusedrnn import demo

TINY = ["--corpus-chars", "2500", "--hidden", "19", "--layers", "2", "--batch-size", "16",
        "--sample-chars", "40", "--epochs", "1", "--no-progress"]


def tiny(*extra):
    return demo.run(TINY + [str(a) for a in extra])


def test_corpus_is_fixed_by_the_seed():
    lines, _, files = demo.gather_corpus(20000, seed=3)
    assert files > 0 and sum(map(len, lines)) >= 20000
    assert demo.gather_corpus(20000, seed=3)[0] == lines
    assert demo.gather_corpus(20000, seed=4)[0] != lines
    assert len(set(lines)) == len(lines)
    assert all(2 <= len(line) <= 160 and set(line) <= set(demo.VOCAB[1:]) for line in lines)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_runs_are_reproducible_and_learn(cell):
    a = tiny("--cell", cell, "--seed", 5, "--epochs", 2, "--lr", 0.01)
    b = tiny("--cell", cell, "--seed", 5, "--epochs", 2, "--lr", 0.01)
    la, lb = a["logs"]["fusedrnn"], b["logs"]["fusedrnn"]
    assert la["batch_loss"] == lb["batch_loss"] and la["val_loss"] == lb["val_loss"]
    assert a["samples"] == b["samples"]
    assert la["val_loss"][-1] < la["val_loss"][0] - 0.5    # starts near ln(96) = 4.56
    assert [len(s) for s in a["samples"]] == [40] * len(demo.TEMPERATURES)
    assert all(set(s) <= set(demo.VOCAB) for s in a["samples"])
    c = tiny("--cell", cell, "--seed", 6, "--epochs", 2, "--lr", 0.01)
    assert c["logs"]["fusedrnn"]["batch_loss"] != la["batch_loss"]


def batch_of(sequences, count=7):
    picked = sequences[:count]
    inputs, _, lengths, _, _ = demo._batch(picked, range(len(picked)))
    return inputs, lengths


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_saved_file_loads_into_a_gluon_rnn_model(tmp_path, cell):
    path = str(tmp_path / "model.params")
    result = tiny("--cell", cell, "--save", path)
    trained = result["model"]
    reference = demo.build_model(cell, hidden=19, layers=2, impl="gluon")
    reference.load_parameters(path)
    assert type(reference.rnn).__module__.startswith("mxnet.gluon.rnn")
    # Equal lengths: gluon.rnn and fusedrnn compute the same thing.
    x = mx.nd.array(np.random.default_rng(0).integers(0, len(demo.VOCAB), (5, 11)))
    np.testing.assert_allclose(reference(x)[0].asnumpy(), trained(x)[0].asnumpy(),
                               rtol=1e-4, atol=1e-5)
    # Variable lengths: gluon.rnn computes the padding, whose outputs the loss never reads.
    assert demo.evaluate(reference, result["val_seqs"]) == pytest.approx(
        result["logs"]["fusedrnn"]["val_loss"][-1], rel=1e-5)


def test_load_continues_training(tmp_path):
    path = str(tmp_path / "model.params")
    first = tiny("--save", path, "--lr", 0.01, "--epochs", 2)["logs"]["fusedrnn"]
    second = tiny("--load", path, "--lr", 0.01)["logs"]["fusedrnn"]
    assert second["val_loss"][0] == pytest.approx(first["val_loss"][-1], rel=1e-6)
    assert second["val_loss"][-1] < second["val_loss"][0]
    assert second["batch_loss"][0] < first["batch_loss"][0] - 0.3
    # --epochs 0 only samples from the loaded model.
    only = tiny("--load", path, "--epochs", 0)["logs"]["fusedrnn"]
    assert only["batch_loss"] == [] and only["val_loss"] == pytest.approx(first["val_loss"][-1:])


def test_compare_trains_gluon_rnn_on_the_same_batches(capsys):
    result = tiny("--compare", "--epochs", 2)
    out = capsys.readouterr().out
    for text in ("fusedrnn.LSTM", "gluon.rnn.LSTM", "training characters/s",
                 "final validation loss", "as fast on the same batches"):
        assert text in out
    f, g = result["logs"]["fusedrnn"], result["logs"]["gluon"]
    assert f["batch_tokens"] == g["batch_tokens"]
    assert f["val_loss"][0] == pytest.approx(g["val_loss"][0], rel=1e-6)
    np.testing.assert_allclose(f["batch_loss"], g["batch_loss"], rtol=1e-3)
    np.testing.assert_allclose(f["val_loss"], g["val_loss"], rtol=1e-3)
    assert f["tokens_per_s"] > 0 and g["tokens_per_s"] > 0


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "loss.png"
    tiny("--plot", str(path), "--compare")
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # not a blank canvas


@pytest.mark.parametrize("args, option", [
    (["--cell", "rnn"], "--cell"),
    (["--epochs", "-1"], "--epochs"),
    (["--epochs", "two"], "--epochs"),
    (["--hidden", "0"], "--hidden"),
    (["--layers", "1.5"], "--layers"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "nan"], "--lr"),
    (["--threads", "0"], "--threads"),
    (["--plot", "loss.jpg"], "--plot"),
    (["--plot", "/no/such/folder/loss.png"], "--plot"),
    (["--save", "/no/such/folder/model.params"], "--save"),
    (["--load", "/no/such/file.params"], "--load"),
    (["--prompt", "caf\u00e9"], "--prompt"),
    (["--corpus-chars", "0"], "--corpus-chars"),
])
def test_bad_options_exit_with_a_message_naming_the_option(capsys, args, option):
    with pytest.raises(SystemExit) as exc:
        demo.run(TINY + args)
    assert exc.value.code == 2
    assert option in capsys.readouterr().err


def test_unreadable_load_file_is_a_clear_error(tmp_path, capsys):
    garbage = tmp_path / "garbage.params"
    garbage.write_bytes(b"not a parameter file" * 10)
    with pytest.raises(SystemExit) as exc:
        tiny("--load", str(garbage))
    assert exc.value.code == 2
    assert f"argument --load: cannot load {garbage}" in capsys.readouterr().err

    other = str(tmp_path / "other.params")
    tiny("--save", other, "--hidden", 23)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        tiny("--load", other)
    assert exc.value.code == 2
    assert "--hidden 19" in capsys.readouterr().err  # says which shape it expected

    with pytest.raises(SystemExit):
        tiny("--load", str(tmp_path))  # a folder
    assert "--load" in capsys.readouterr().err


def test_command_line_entry_points(tmp_path):
    # `python -m fusedrnn.demo` and the `fusedrnn-demo` script of the installed package.
    done = subprocess.run([sys.executable, "-m", "fusedrnn.demo", *TINY, "--sample-chars", "5"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "epoch 1: training loss" in done.stdout and "temperature 0.5" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "fusedrnn.demo", "--hidden", "-3"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "--hidden" in bad.stderr and "Traceback" not in bad.stderr
    script = os.path.join(os.path.dirname(sys.executable), "fusedrnn-demo")
    shown = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "--compare" in shown.stdout
