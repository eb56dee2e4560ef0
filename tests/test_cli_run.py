"""`portablelayers train` as a user runs it, in subprocesses: Ctrl-C (a real SIGINT) saves
the run and resuming it ends with the weights of an uninterrupted run; history files; the
divergence warning; resume mistakes. Backend-independent: run in the numpy session."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from portablelayers import load_model
from portablelayers.checkpoint import META_KEY

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")
pytestmark = pytest.mark.skipif(BACKEND != "numpy",
                                reason="the command line itself: runs in the numpy session")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
# Dropout and batch norm (state that moves each step), small batches: ~0.3 s an epoch.
RUN = ["train", "--net", "multi-layer", "--dropout", "0.2", "--batchnorm", "--hidden-size",
       "16", "--batch-size", "4", "--epochs", "5", "--seed", "3"]


def cli(*args, cwd=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "portablelayers", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=ENV)


def interrupt(args, cwd):
    """Start `portablelayers *args` (not --quiet), send SIGINT once its first epoch line is
    out: in the second of its epochs."""
    proc = subprocess.Popen([sys.executable, "-m", "portablelayers", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/"):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def weights(path):
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files if k != META_KEY}


def test_ctrl_c_saves_and_resume_ends_with_the_uninterrupted_weights(tmp_path):
    full = cli(*RUN, "--quiet", "--save", str(tmp_path / "full.npz"))
    assert full.returncode == 0, full.stderr

    code, out, err = interrupt([*RUN, "--save", "run.npz"], cwd=tmp_path)
    assert code == 130, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("portablelayers train: interrupted after step ")
    assert err.endswith("; saved to run.npz; resume with: portablelayers train --resume "
                        "run.npz\n")
    step = int(err.split("after step ")[1].split()[0])
    assert 337 <= step < 2 * 337  # 1,347 / 4 -> 337 steps an epoch; stopped in the second

    resumed = cli("train", "--resume", "run.npz", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    got, expected = weights(tmp_path / "run.npz"), weights(tmp_path / "full.npz")
    assert set(got) == set(expected) and "step1" in got and "optimizer/iter" in got
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    net = load_model(tmp_path / "run.npz")  # and it is a model too
    assert type(net).__name__ == "MultiLayerNetExtend"


def test_ctrl_c_without_save_names_where_it_saved(tmp_path):
    code, _, err = interrupt([*RUN], cwd=tmp_path)
    assert code == 130
    assert "saved to portablelayers-run.npz; resume with: portablelayers train --resume " \
           "portablelayers-run.npz" in err
    assert (tmp_path / "portablelayers-run.npz").is_file()
    # Going on past the original 5 epochs: --epochs is the total.
    more = cli("train", "--resume", "portablelayers-run.npz", "--epochs", "6",
               "--history", "h.json", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    history = json.loads((tmp_path / "h.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1, 2, 3, 4, 5, 6]
    assert len(history["train_loss"]) == 6 * 337


def test_history_csv_and_plain_epoch_lines(tmp_path):
    result = cli("train", "--epochs", "2", "--hidden-size", "8", "--history", "h.csv",
                 "--lr-schedule", "step", "--lr-step-size", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "h.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.01, 0.001])
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2
    for line, row in zip(lines, rows, strict=True):
        # "epoch 1/2: train loss 1.2345 acc 0.8000, val loss 0.9876 acc 0.8133, 1,234 samples/s"
        assert line.startswith(f"epoch {row['epoch']}/2: train loss "
                               f"{float(row['train_loss']):.4f} acc "
                               f"{float(row['train_acc']):.4f}, val loss "
                               f"{float(row['val_loss']):.4f} acc {float(row['val_acc']):.4f}, ")
        assert line.endswith(" samples/s")


def test_diverging_loss_is_one_warning_line(tmp_path):
    result = cli("train", "--lr", "1e6", "--epochs", "2", "--quiet", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr.startswith("portablelayers train: warning: the training loss is "
                                    "diverging: epoch 1's mean loss ")
    assert result.stderr.count("\n") == 1 and "try a learning rate below 1e+06" in result.stderr


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory):
    """A folder with run.npz (one epoch, finished) and params.npz (parameters only)."""
    folder = tmp_path_factory.mktemp("runs")
    first = cli("train", "--epochs", "1", "--hidden-size", "4", "--quiet", "--save", "run.npz",
                cwd=folder)
    assert first.returncode == 0, first.stderr
    from portablelayers.nets import TwoLayerNet

    TwoLayerNet(2, 2, 2).save_params(folder / "params.npz")
    return folder


def test_a_reader_that_stops_early_is_no_error(saved_runs):
    # `portablelayers evaluate run.npz | head -1`: the pipe closes before the output ends.
    proc = subprocess.Popen([sys.executable, "-m", "portablelayers", "evaluate", "run.npz"],
                            cwd=saved_runs, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


@pytest.mark.parametrize("args, message", [
    (["--resume", "missing.npz"], "--resume missing.npz: no such file"),
    (["--resume", "run.npz", "--lr", "0.5"], "--lr cannot change when resuming (the run in "
                                             "run.npz has 0.01); start a new run to change it"),
    (["--resume", "run.npz"], "--resume run.npz: the run trained all 1 epochs; give --epochs "
                              "above 1 to go on"),
    (["--resume", "params.npz"], "--resume params.npz: not a run saved by portablelayers "
                                 "train --save (it holds no training state)"),
    (["--net", "two-layer", "--dropout", "0.5"], "--dropout applies to --net multi-layer"),
    (["--weight-decay", "0.1"], "--weight-decay applies to --net multi-layer (an L2 term) or "
                                "to --optimizer adamw (decoupled), not two-layer with adam"),
    (["--patience", "2", "--val-split", "0"], "--patience needs a validation set"),
    (["--history", "h.txt"], "--history h.txt: the name must end in .json or .csv"),
    (["--compile", "on"], "--compile on: no compiled step for numpy arrays on cpu (numpy has "
                          "no compiler); use --compile auto or off"),
    (["--save", "a.npz", "--best", "a.npz"], "--save and --best both name a.npz: each output "
                                             "needs a file of its own"),
    (["--resume", "run.npz", "--epochs", "2", "--plot", "run.npz"],
     "--save and --plot both name run.npz: each output needs a file of its own (--save "
     "defaults to the --resume file)"),
    (["--resume", "run.npz", "--hidden-size", "5"], "--hidden-size cannot change when "
                                                    "resuming (the run in run.npz has 4)"),
])
def test_mistakes_are_one_line(saved_runs, args, message):
    result = cli("train", *args, cwd=saved_runs)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("portablelayers train: error: ")
    assert message in result.stderr and result.stderr.count("\n") == 1
