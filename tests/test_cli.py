"""The `portablelayers` command: help texts, `train` end to end in a subprocess on the
backend under test, and its one-line errors (missing backend, device, data)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from support import write_idx

from portablelayers import cli, datasets

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")
# Tests of the command line itself, the same on every backend: run in the numpy session only.
ONCE = pytest.mark.skipif(BACKEND != "numpy", reason="backend-independent; runs under numpy")
TRAIN_OPTIONS = ["--net", "--dataset", "--data-dir", "--download", "--backend", "--device",
                 "--dtype", "--epochs", "--batch-size", "--optimizer", "--lr", "--hidden-size",
                 "--seed", "--plot", "--save", "--quiet"]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "portablelayers", *args], capture_output=True,
                          text=True, timeout=timeout)


# --- help -----------------------------------------------------------------------------------

def test_top_level_help():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout and "train" in result.stdout


def test_train_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in TRAIN_OPTIONS:
        assert option in text, option
    for choice in [*cli.NETS, *cli.DATASETS, *cli.BACKENDS, *cli.OPTIMIZER_NAMES]:
        assert choice in text, choice
    assert "portablelayers[torch]" in text and "(default: 20)" in text


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().err


def test_demo_still_works(capsys):
    assert cli.main(["demo"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("220.00000000000003")


# --- train end to end -----------------------------------------------------------------------

def test_train_end_to_end(tmp_path):
    if BACKEND == "cupy":
        pytest.importorskip("cupy")
    plot, save = tmp_path / "curves.png", tmp_path / "params.npz"
    result = run_cli("train", "--backend", BACKEND, "--epochs", "2", "--hidden-size", "16",
                     "--batch-size", "100", "--plot", str(plot), "--save", str(save))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # 10% of the 1,497 training images held out for validation by default.
    assert lines[0].startswith(f"TwoLayerNet on bundled 8x8 digits: 1,347 training, 150 "
                               f"validation and 300 test images; backend {BACKEND}, float32, "
                               f"adam lr 0.01")
    assert "\nepoch 2/2: train loss " in result.stdout
    assert lines[-1].startswith("test accuracy: ")
    accuracy = float(lines[-1].split()[2])
    assert 0.5 < accuracy <= 1.0  # 2 epochs already learn the digits well past chance
    assert "Traceback" not in result.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(save) as saved:
        assert saved["W1"].shape == (64, 16) and saved["W2"].shape == (16, 10)
        assert saved["W1"].dtype == np.float32


def test_float64_on_jax_is_float64(tmp_path):
    # JAX keeps 64-bit types off by default: --dtype float64 must turn them on, not train
    # in float32 under a float64 label. A fresh process, as a user's (no x64 from tests).
    if BACKEND != "jax":
        pytest.skip("JAX's 64-bit switch")
    from portablelayers.checkpoint import load_arrays, load_meta

    path = tmp_path / "run.npz"
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    result = subprocess.run([sys.executable, "-m", "portablelayers", "train", "--backend",
                             "jax", "--dtype", "float64", "--epochs", "1", "--hidden-size",
                             "8", "--quiet", "--save", str(path)], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert "float64" not in result.stderr  # no "requested float64 ... truncated" warnings
    assert load_meta(path)["dtype"] == "float64"
    assert load_arrays(path)["W1"].dtype == np.float64
    evaluated = subprocess.run([sys.executable, "-m", "portablelayers", "evaluate", str(path),
                                "--backend", "jax"], capture_output=True, text=True,
                               timeout=300, env=env)
    assert evaluated.returncode == 0 and "float64" not in evaluated.stderr, evaluated.stderr


def test_train_conv_net_in_process(capsys):
    if BACKEND == "cupy":
        pytest.importorskip("cupy")
    code = cli.main(["train", "--backend", BACKEND, "--net", "simple-conv", "--epochs", "1",
                     "--hidden-size", "8", "--batch-size", "1497", "--dtype", "float64",
                     "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("test accuracy: ") and len(out.splitlines()) == 1


@ONCE
def test_training_skips_the_setup_in_garbage_collection_and_leaves_nothing_frozen(
        monkeypatch, capsys):
    from portablelayers.train import Trainer

    frozen_while_training = []
    train = Trainer.train

    def recording_train(self, **kwargs):
        frozen_while_training.append(gc.get_freeze_count())
        return train(self, **kwargs)

    monkeypatch.setattr(Trainer, "train", recording_train)
    assert gc.get_freeze_count() == 0
    assert cli.main(["train", "--epochs", "1", "--hidden-size", "8", "--quiet"]) == 0
    assert frozen_while_training[0] > 0  # the imports' and the run's objects
    assert gc.get_freeze_count() == 0  # an in-process caller's garbage is collected again


# --- one-line errors, exit code 2 -----------------------------------------------------------

@pytest.mark.parametrize("backend, module, extra", [
    ("torch", "torch", "torch"), ("jax", "jax.numpy", "jax"), ("dask", "dask.array", "dask"),
    ("cupy", "cupy", "cupy"), ("array_api_strict", "array_api_strict", "array_api_strict")])
def test_missing_backend_names_the_extra(monkeypatch, capsys, backend, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    assert cli.main(["train", "--backend", backend]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("portablelayers train: error: backend")
    assert f"pip install 'portablelayers[{extra}]'" in err


def test_unusable_backend(monkeypatch, capsys):
    def broken(name):
        raise RuntimeError("no CUDA-capable device is detected")

    monkeypatch.setattr("portablelayers._backend.resolve_namespace", broken)
    assert cli.main(["train", "--backend", "cupy"]) == 2
    err = capsys.readouterr().err
    assert err == ("portablelayers train: error: backend 'cupy' is installed but cannot run "
                   "here: RuntimeError: no CUDA-capable device is detected\n")


def test_missing_backend_in_a_subprocess_has_no_traceback():
    code = ("import sys; sys.modules['torch'] = None; from portablelayers.cli import main; "
            "sys.exit(main(['train', '--backend', 'torch']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "portablelayers[torch]" in result.stderr


def test_unknown_device(capsys):
    if BACKEND == "cupy":
        pytest.importorskip("cupy")
    assert cli.main(["train", "--backend", BACKEND, "--device", "warp-drive"]) == 2
    err = capsys.readouterr().err
    assert "unknown device 'warp-drive'" in err and ("'cuda:1'" in err or "available:" in err)
    assert "Traceback" not in err


def _device_name(dev):
    """How a user names a device the backend lists ('cpu', 'cuda:0', 'gpu:0', 'device1')."""
    if BACKEND == "jax":
        return f"{dev.platform}:{dev.id}"
    if BACKEND == "cupy":
        return str(dev.id)
    text = str(dev)
    return text.split("'")[1] if "'" in text else text


def test_every_listed_device_resolves():
    if BACKEND == "cupy":
        pytest.importorskip("cupy")
    xp = cli._resolve_backend(BACKEND)  # array-api-compat's: CuPy itself lists no devices
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        devices = [d for d in xp.__array_namespace_info__().devices() if d is not None]
    for dev in devices:
        resolved = cli._resolve_device(BACKEND, _device_name(dev))
        assert resolved == dev or str(resolved) == str(dev)
    assert cli._resolve_device(BACKEND, None) is None


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "expected a positive integer, got 0"),
    (["--lr", "nan"], "expected a positive finite number"),
    (["--net", "resnet"], "invalid choice: 'resnet'"),
])
def test_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err


@ONCE
def test_version():
    import portablelayers

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"portablelayers {portablelayers.__version__}\n"


@ONCE
def test_help_names_each_default_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default: 0.01") == 1  # --lr names its own, once
    assert "(default: digits)" in text and "(default: 0)" in text


@ONCE
@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
    (["--save", "{tmp}/no/such/folder/m.npz"], "--save {tmp}/no/such/folder/m.npz: the "
                                               "folder {tmp}/no/such/folder does not exist"),
    (["--plot", "{tmp}"], "--plot {tmp}: is a folder; give a file name"),
])
def test_mistakes_are_one_line_before_training(tmp_path, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    message = message.format(tmp=tmp_path)
    if message.startswith("argument"):  # argparse's own check names the option
        message += " (see portablelayers train --help)"
    # 50 epochs (unless the mistake is --epochs): a mistake found after training would time out
    epochs = [] if "--epochs" in argv else ["--epochs", "50"]
    result = run_cli("train", *argv, *epochs, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""  # nothing trained: the mistake is found first
    assert result.stderr == f"portablelayers train: error: {message}\n"


@ONCE
def test_a_failing_plot_keeps_the_saved_weights(tmp_path, monkeypatch, capsys):
    from portablelayers.train import Trainer

    def broken(self, path, title=None):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Trainer, "plot", broken)
    save, plot = tmp_path / "m.npz", tmp_path / "p.png"
    code = cli.main(["train", "--epochs", "1", "--hidden-size", "4", "--quiet", "--save",
                     str(save), "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert code == 1
    assert err == f"portablelayers train: error: cannot write {plot}: Permission denied\n"
    assert out.startswith("test accuracy:")
    assert {"W1", "W2", "b1", "b2"} <= set(datasets_names(save))
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary left


def datasets_names(path):
    from portablelayers.checkpoint import load_arrays

    return list(load_arrays(path))


@ONCE
def test_a_killed_save_leaves_a_temporary_the_next_save_removes(tmp_path):
    path = tmp_path / "m.npz"
    code = ("import os, signal, numpy as np\n"
            "from portablelayers import checkpoint\n"
            "from portablelayers.nets import TwoLayerNet\n"
            "def killed(f, **arrays):\n"
            "    f.write(b'PK half a zip'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
            "checkpoint.np.savez = killed\n"
            f"TwoLayerNet(3, 2, 2, seed=0).save_params({str(path)!r})\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert result.returncode == -9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".m.npz.pid") and left[0].endswith(".tmp")
    live = tmp_path / f".m.npz.pid{os.getpid()}.abcd.tmp"  # a save in progress, here
    live.write_bytes(b"")
    from portablelayers.nets import TwoLayerNet

    TwoLayerNet(3, 2, 2, seed=0).save_params(path)
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", live.name])


def test_optimizer_is_case_insensitive():
    args = cli.build_parser().parse_args(["train", "--optimizer", "AdaGrad"])
    assert args.optimizer == "adagrad"


# --- MNIST from a folder --------------------------------------------------------------------

def test_mnist_missing_files_explained(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "t10k-images-idx3-ubyte.gz" in err and str(tmp_path) in err
    assert "download=True" in err or "--download" in err


def test_mnist_test_set_only_is_split(tmp_path, monkeypatch, capsys):
    if BACKEND == "cupy":
        pytest.importorskip("cupy")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = (np.arange(12) % 10).astype(np.uint8)
    table = dict(datasets.MNIST_FILES)
    for key, array in (("test_img", images), ("test_label", labels)):
        name = table[key][0]
        write_idx(tmp_path / name, array)
        table[key] = (name, datasets._md5(tmp_path / name))
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    monkeypatch.setattr(cli, "MNIST_HOLDOUT_TRAIN", 9)
    code = cli.main(["train", "--backend", BACKEND, "--dataset", "mnist", "--data-dir",
                     str(tmp_path), "--epochs", "1", "--hidden-size", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "holds only MNIST's test set" in err and "first 9 images" in err
    assert "8 training, 1 validation and 3 test images" in out
    assert out.splitlines()[-1].startswith("test accuracy:")


@ONCE
def test_evaluate_scores_a_model_on_the_mnist_images_it_did_not_train_on(tmp_path,
                                                                          monkeypatch, capsys):
    # A model trained with only the test files there (their first 9 images trained) is
    # scored on the other 3 even once the training files are there too; one trained on the
    # training files is scored on every test image, also where only those are there.
    table = dict(datasets.MNIST_FILES)
    only_test, full = tmp_path / "only-test", tmp_path / "full"
    for folder, keys in ((only_test, ("test",)), (full, ("test", "train"))):
        folder.mkdir()
        for split in keys:
            n = 12 if split == "test" else 20
            gen = np.random.default_rng(1 if split == "test" else 2)
            for key, array in (
                    (f"{split}_img", gen.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                    (f"{split}_label", (np.arange(n) % 10).astype(np.uint8))):
                name = table[key][0]
                write_idx(folder / name, array)
                table[key] = (name, datasets._md5(folder / name))
    monkeypatch.setattr(datasets, "MNIST_FILES", table)
    monkeypatch.setattr(cli, "MNIST_HOLDOUT_TRAIN", 9)
    common = ["--dataset", "mnist", "--epochs", "1", "--hidden-size", "4", "--quiet"]
    for trained_in, model in ((only_test, "holdout.npz"), (full, "official.npz")):
        assert cli.main(["train", *common, "--data-dir", str(trained_in), "--save",
                         str(tmp_path / model)]) == 0
    capsys.readouterr()
    for model, folder, images in (("holdout.npz", full, "3 test images"),
                                  ("holdout.npz", only_test, "3 test images"),
                                  ("official.npz", only_test, "12 test images"),
                                  ("official.npz", full, "12 test images")):
        assert cli.main(["evaluate", str(tmp_path / model), "--data-dir", str(folder)]) == 0
        out, err = capsys.readouterr()
        assert images in out.splitlines()[0], (model, folder.name, out)
        if model == "holdout.npz":
            assert "the model trained on the first 9 images of MNIST's test set" in err


# --- the network and optimizer options, the plot's title ------------------------------------

@ONCE
def test_network_options_reach_the_network_and_optimizer(tmp_path, capsys):
    from portablelayers import load_model
    from portablelayers.checkpoint import load_meta

    path = tmp_path / "m.npz"
    assert cli.main(["train", "--net", "multi-layer", "--hidden-size", "8", "--epochs", "1",
                     "--weight-decay", "0.1", "--dropout", "0.3", "--batchnorm",
                     "--clip-norm", "2", "--quiet", "--save", str(path)]) == 0
    net = load_model(path)
    assert type(net).__name__ == "MultiLayerNetExtend" and net.weight_decay_lambda == 0.1
    assert net.use_batchnorm and [layer.dropout_ratio for name, layer in net.layers.items()
                                  if name.startswith("Dropout")] == [0.3, 0.3]
    assert load_meta(path)["optimizer"]["hyper"]["clip_norm"] == 2.0
    assert cli.main(["train", "--net", "multi-layer", "--hidden-size", "8", "--epochs", "1",
                     "--dropout", "0", "--quiet", "--save", str(path)]) == 0
    assert [layer.dropout_ratio for name, layer in load_model(path).layers.items()
            if name.startswith("Dropout")] == [0.0, 0.0]  # 0 is a ratio, not "the default"
    assert cli.main(["train", "--optimizer", "adamw", "--weight-decay", "0.05", "--epochs", "1",
                     "--hidden-size", "4", "--quiet", "--save", str(path)]) == 0
    assert load_meta(path)["optimizer"] == {"class": "AdamW", "hyper": {
        "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.05, "eps": 1e-7,
        "clip_norm": None}}


@ONCE
def test_patience_and_best(tmp_path, capsys):
    from portablelayers.checkpoint import load_arrays, load_meta

    best, run = tmp_path / "best.npz", tmp_path / "run.npz"
    # A rate so high the validation loss soon stops falling: early stopping must end it.
    code = cli.main(["train", "--lr", "0.5", "--epochs", "30", "--patience", "2", "--best",
                     str(best), "--save", str(run), "--history", str(tmp_path / "h.json")])
    out = capsys.readouterr().out
    assert code == 0
    import json

    history = json.loads((tmp_path / "h.json").read_text())
    val = history["val_loss"]
    b = history["best_epoch"]
    assert val[b - 1] == min(val) and len(val) == b + 2 < 30  # stopped 2 epochs after it
    assert f"early stop: no lower validation loss for 2 epochs; keeping epoch {b}'s weights" \
        in out
    # Early stopping keeps the best weights: --best and the final run hold the same network.
    kept, final = load_arrays(best), load_arrays(run)
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(kept[name], final[name])
    assert load_meta(best)["training"] is None and load_meta(run)["training"]["stopped_early"]


@ONCE
def test_resuming_with_the_default_hidden_size_named_and_a_run_that_stopped_early(
        tmp_path, capsys):
    run = str(tmp_path / "run.npz")
    assert cli.main(["train", "--epochs", "1", "--quiet", "--save", run]) == 0
    # The size the run had, by default, given by name: the same run, so it goes on.
    assert cli.main(["train", "--resume", run, "--epochs", "2", "--hidden-size", "100",
                     "--quiet"]) == 0
    assert cli.main(["train", "--lr", "0.5", "--epochs", "30", "--patience", "1", "--quiet",
                     "--save", run]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", run, "--epochs", "60"]) == 2
    err = capsys.readouterr().err
    assert "the run stopped early after epoch" in err and "start a new run" in err
    assert "give --epochs" not in err  # more epochs cannot undo an early stop


@ONCE
def test_a_resumed_run_that_stops_early_keeps_a_best_epoch_from_before_the_save(tmp_path,
                                                                              capsys):
    from portablelayers.checkpoint import load_arrays

    options = ["train", "--lr", "0.5", "--patience", "2", "--quiet"]
    full = tmp_path / "full.npz"
    assert cli.main([*options, "--epochs", "30", "--save", str(full),
                     "--history", str(tmp_path / "h.json")]) == 0
    import json

    best = json.loads((tmp_path / "h.json").read_text())["best_epoch"]
    # The same run saved one epoch after its best epoch, then resumed: it stops early one
    # epoch later and must go back to the best epoch, which only the saved run had seen.
    run = tmp_path / "run.npz"
    assert cli.main([*options, "--epochs", str(best + 1), "--save", str(run)]) == 0
    assert "training/best/W1" in load_arrays(run)
    assert cli.main(["train", "--resume", str(run), "--epochs", "30", "--quiet"]) == 0
    got, expected = load_arrays(run), load_arrays(full)
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    capsys.readouterr()


@ONCE
def test_a_ctrl_c_before_the_first_step_saves_without_a_plot(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    from portablelayers.train import Trainer

    train = Trainer.train

    def stopped_at_once(self, **kwargs):
        self.request_stop()  # as a Ctrl-C before the first step
        return train(self, **kwargs)

    monkeypatch.setattr(Trainer, "train", stopped_at_once)
    run, plot = tmp_path / "run.npz", tmp_path / "p.png"
    assert cli.main(["train", "--epochs", "1", "--quiet", "--save", str(run), "--plot",
                     str(plot)]) == 130
    err = capsys.readouterr().err
    assert "interrupted after step 0 of" in err and "error" not in err
    assert run.is_file() and not plot.exists()


@ONCE
def test_ctrl_c_in_the_final_measure_keeps_the_trained_run(tmp_path, monkeypatch, capsys):
    # Every step done: one Ctrl-C lets the final test measure finish (the run is saved as
    # usual); a second one stops the measure, and the run is still saved.
    import signal

    from portablelayers.checkpoint import load_meta
    from portablelayers.train import Trainer

    evaluate = Trainer._evaluate

    def final_measure_with_ctrl_c(presses):
        def measured(self, x, *args):
            if self.current_iter == self.max_iter and x is self.x_test:  # the final one
                for _ in range(presses):
                    signal.raise_signal(signal.SIGINT)
            return evaluate(self, x, *args)
        return measured

    for presses, code in ((1, 0), (2, 130)):
        monkeypatch.setattr(Trainer, "_evaluate", final_measure_with_ctrl_c(presses))
        run = tmp_path / f"run{presses}.npz"
        assert cli.main(["train", "--epochs", "1", "--hidden-size", "8", "--quiet", "--save",
                         str(run)]) == code
        err = capsys.readouterr().err
        assert run.is_file() and load_meta(run)["training"]["iter"] == 14
        if presses == 2:
            assert "interrupted in the final test measure, after all 14 steps" in err
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@ONCE
def test_a_run_file_from_before_an_option_existed_resumes_with_its_default(tmp_path,
                                                                          capsys):
    # A file written before --precision (or --quiet was turned off) existed lacks it: the
    # option's default fills in, and the switches of the command are this command's.
    from portablelayers.checkpoint import load_arrays, load_meta, save_arrays

    run, old = str(tmp_path / "run.npz"), str(tmp_path / "old.npz")
    assert cli.main(["train", "--epochs", "1", "--hidden-size", "8", "--quiet", "--save",
                     run]) == 0
    meta = load_meta(run)
    del meta["extra"]["options"]["precision"]
    save_arrays(old, load_arrays(run), meta=meta)
    straight = str(tmp_path / "straight.npz")
    assert cli.main(["train", "--epochs", "2", "--hidden-size", "8", "--quiet", "--save",
                     straight]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", old, "--epochs", "2"]) == 0  # not --quiet now
    out = capsys.readouterr().out
    assert "epoch 2/2: train loss" in out
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(load_arrays(old)[name], load_arrays(straight)[name])
    assert load_meta(old)["extra"]["options"]["precision"] == "highest"
    # A run file without its optimizer's description: one line naming the file.
    meta["optimizer"] = None
    save_arrays(old, load_arrays(run), meta=meta)
    assert cli.main(["train", "--resume", old, "--epochs", "2", "--quiet"]) == 2
    assert f"--resume {old}: the run holds no optimizer description" in (
        capsys.readouterr().err)


@ONCE
def test_plot_title_and_validation_loss(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: drawn.append(self))
    assert cli.main(["train", "--epochs", "2", "--hidden-size", "4", "--quiet", "--plot",
                     str(tmp_path / "p.png"), "--backend", "numpy"]) == 0
    (fig,) = drawn
    assert fig.get_suptitle().startswith("TwoLayerNet on 8x8 digits, backend numpy, adam lr")
    loss_axes = fig.axes[0]
    assert loss_axes.get_legend_handles_labels()[1] == ["training (per step)",
                                                        "training (epoch mean)", "validation"]
    assert fig.axes[1].get_legend_handles_labels()[1] == ["training", "validation"]
