"""`portablelayers evaluate` and `predict` on a model trained here: numbers against an
independent computation from load_model, a PNG the test writes, .npy arrays, and the
one-line mistakes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from portablelayers import Affine, SigmoidWithLoss, cli, load_model
from portablelayers.datasets import load_digits
from portablelayers.inference import confusion_matrix, evaluate, load_input, predict_proba
from portablelayers.nets import Sequential, TwoLayerNet

BACKEND = os.environ.get("PORTABLELAYERS_BACKEND", "numpy")
pytestmark = pytest.mark.skipif(BACKEND != "numpy",
                                reason="the command line itself: runs in the numpy session")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli_run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "portablelayers", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=ENV)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SimpleConvNet trained 2 epochs on the digits, and what train printed."""
    folder = tmp_path_factory.mktemp("model")
    result = cli_run("train", "--net", "simple-conv", "--hidden-size", "16", "--epochs", "2",
                     "--save", "m.npz", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, result.stdout


def test_evaluate_prints_what_the_model_scores(trained):
    folder, train_out = trained
    result = cli_run("evaluate", "m.npz", cwd=folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("SimpleConvNet from m.npz on bundled 8x8 digits: 300 test images; "
                        "backend numpy")
    # The same numbers as train's final test line.
    final = next(ln for ln in train_out.splitlines() if ln.startswith("test loss "))
    loss, acc = float(final.split()[2].rstrip(",")), float(final.split()[5])
    assert lines[1] == f"loss {loss:.4f}, accuracy {acc:.4f}"
    # The confusion matrix against one computed here from the model's scores.
    net = load_model(folder / "m.npz")
    _, (x_test, t_test) = load_digits(flatten=False)
    predicted = np.argmax(net.predict(x_test), axis=1)
    expected = np.zeros((10, 10), dtype=int)
    for true, guess in zip(t_test, predicted, strict=True):
        expected[true, guess] += 1
    rows = [[int(n) for n in ln.split()[1:]] for ln in lines[4:14]]
    np.testing.assert_array_equal(rows, expected)
    assert lines[3].split() == [str(c) for c in range(10)]


def test_evaluate_reports_the_loss_training_reported_with_weight_decay_too(tmp_path,
                                                                         capsys):
    # The network's loss has a weight-decay term: evaluate must not report another number.
    path = str(tmp_path / "wd.npz")
    assert cli.main(["train", "--net", "multi-layer", "--weight-decay", "0.1", "--epochs",
                     "1", "--hidden-size", "8", "--save", path]) == 0
    final = next(ln for ln in capsys.readouterr().out.splitlines()
                 if ln.startswith("test loss "))
    assert cli.main(["evaluate", path]) == 0
    reported = capsys.readouterr().out.splitlines()[1]
    assert reported == f"loss {final.split()[2].rstrip(',')}, accuracy {final.split()[5]}"


def test_evaluate_takes_labels_as_indices_a_column_or_one_hot_rows():
    # A column (N, 1) is class indices, not one-hot rows of width 1 (whose argmax is 0).
    net = TwoLayerNet(64, 10, 10, weight_init_std=0.5, seed=0)
    _, (x, t) = load_digits()
    x, t = x[:60], t[:60]
    predicted = np.argmax(net.predict(x), axis=1)
    expected = float(np.mean(predicted == t))
    assert 0.0 < expected < 1.0
    loss, accuracy, matrix = evaluate(net, x, t, batch_size=25)
    assert accuracy == expected
    for labels in (t[:, None], np.eye(10, dtype=np.float32)[t]):
        other = evaluate(net, x, labels, batch_size=25)
        assert other[0] == pytest.approx(loss, rel=1e-6) and other[1] == accuracy
        np.testing.assert_array_equal(other[2], matrix)


def test_evaluate_a_binary_classifier_by_its_logits_sign():
    # One output (SigmoidWithLoss): the probabilities are the sigmoid's P(0) and P(1), the
    # prediction 1 where the logit is above 0, and the matrix 2 x 2.
    rng = np.random.default_rng(4)
    W, b = rng.standard_normal((4, 1)), np.array([0.1])
    net = Sequential(Affine(W, b), SigmoidWithLoss())
    x = rng.standard_normal((30, 4))
    t = (rng.random((30, 1)) < 0.5).astype(np.float64)
    logits = (x @ W + b)[:, 0]
    p = predict_proba(net, x, batch_size=7)
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-logits)), rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    loss, accuracy, matrix = evaluate(net, x, t, batch_size=7)
    predicted, truth = (logits > 0).astype(int), t[:, 0].astype(int)
    assert 0.0 < accuracy == float(np.mean(predicted == truth)) < 1.0
    assert accuracy == net.accuracy(x, t)
    expected = np.zeros((2, 2), dtype=int)
    np.add.at(expected, (truth, predicted), 1)
    np.testing.assert_array_equal(matrix, expected)
    bce = -np.mean(truth * np.log(p[:, 1]) + (1 - truth) * np.log(p[:, 0]))
    assert loss == pytest.approx(bce, rel=1e-6)


def test_evaluate_refuses_labels_out_of_range_and_predicts_as_accuracy():
    # A label -1 would land in the last row of the matrix and out of the loss; C would be
    # an IndexError: both are refused, naming the range.
    net = TwoLayerNet(64, 10, 3, weight_init_std=0.5, seed=0)
    _, (x, _) = load_digits()
    x = x[:4]
    for labels in ([0, 1, 2, -1], [0, 1, 2, 3]):
        with pytest.raises(ValueError, match=r"must lie in \[0, 3\) for this network"):
            evaluate(net, x, np.array(labels))
    with pytest.raises(ValueError, match="one label per sample"):
        evaluate(net, x, np.array([0, 1]))
    # A logit just above 0 is class 1 for evaluate as for accuracy (its probabilities
    # round to 0.5 and 0.5).
    binary = Sequential(Affine(np.ones((1, 1)), np.zeros(1)), SigmoidWithLoss())
    x1, t1 = np.array([[1e-17]]), np.array([[1.0]])
    assert evaluate(binary, x1, t1)[1] == binary.accuracy(x1, t1) == 1.0


def test_evaluate_a_model_of_other_classes_is_one_line(tmp_path, capsys):
    from portablelayers.models import save_checkpoint

    save_checkpoint(tmp_path / "five.npz", TwoLayerNet(64, 8, 5, seed=0))
    assert cli.main(["evaluate", str(tmp_path / "five.npz")]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("five.npz on --dataset digits: class-index labels must lie "
                                "in [0, 5) for this network, got values from 0 to 9")
    assert len(err.strip().splitlines()) == 1


def test_predict_a_png_the_test_writes(trained):
    Image = pytest.importorskip("PIL.Image")
    folder, _ = trained
    net = load_model(folder / "m.npz")
    _, (x_test, _) = load_digits(flatten=False)
    scores = net.predict(x_test[:3])
    for i in range(3):
        # Dark ink on white paper, 8 times the size: what a user would draw or scan.
        ink = np.kron(x_test[i, 0], np.ones((8, 8)))
        Image.fromarray(np.round(255 * (1.0 - ink)).astype(np.uint8)).save(folder / f"{i}.png")
        np.save(folder / f"{i}.npy", x_test[i])
    result = cli_run("predict", "m.npz", "0.png", "1.png", "2.png", "0.npy", cwd=folder)
    assert result.returncode == 0, result.stderr
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    lines = result.stdout.splitlines()
    for i, line in enumerate(lines[:3]):
        cls = int(np.argmax(p[i]))
        name, rest = line.split(": ")
        assert name == f"{i}.png" and rest.startswith(f"{cls} (p=")
        assert float(rest.split("p=")[1].rstrip(")")) == pytest.approx(p[i, cls], abs=0.01)
    assert lines[3] == f"0.npy: {int(np.argmax(p[0]))} (p={p[0].max():.3f})"


def test_an_image_is_prepared_like_the_training_digits(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    _, (x_test, _) = load_digits(flatten=False)
    ink = np.kron(x_test[5, 0], np.ones((5, 5)))  # 40x40, dark on white, in RGB
    rgb = np.repeat(np.round(255 * (1.0 - ink)).astype(np.uint8)[:, :, None], 3, axis=2)
    Image.fromarray(rgb).save(tmp_path / "d.png")
    got = load_input(tmp_path / "d.png", (1, 8, 8))
    assert got.shape == (1, 8, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got, x_test[5], atol=1 / 255)
    Image.fromarray(np.round(255 * ink).astype(np.uint8)).save(tmp_path / "b.png")
    np.testing.assert_allclose(load_input(tmp_path / "b.png", (1, 8, 8)), x_test[5],
                               atol=1 / 255)  # bright on dark is taken as it is


def test_an_image_of_another_shape_is_padded_not_stretched(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    _, (x_test, _) = load_digits(flatten=False)
    ink = np.kron(x_test[5, 0], np.ones((5, 5)))  # 40x40 dark on white
    tall = np.pad(1.0 - ink, ((20, 20), (0, 0)), constant_values=1.0)  # 80x40 paper above/below
    Image.fromarray(np.round(255 * tall).astype(np.uint8)).save(tmp_path / "tall.png")
    got = load_input(tmp_path / "tall.png", (1, 8, 8))
    # Padded to 80x80 then shrunk 10x: the digit's 8x8 cells, 2x2 at a time, in the middle.
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[2:6, 2:6] = x_test[5, 0].reshape(4, 2, 4, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(got[0], expected, atol=1 / 255)
    np.save(tmp_path / "nan.npy", np.full(64, np.nan))
    with pytest.raises(ValueError, match="NaN or inf"):
        load_input(tmp_path / "nan.npy", (1, 8, 8))


def test_strokes_on_a_transparent_ground_of_either_shade(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    _, (x_test, _) = load_digits(flatten=False)
    ink = np.kron(x_test[5, 0], np.ones((5, 5)))
    for shade in (0, 255):  # black strokes, and white ones (once composited onto white)
        rgba = np.zeros((40, 40, 4), dtype=np.uint8)
        rgba[..., :3] = shade
        rgba[..., 3] = np.round(255 * ink).astype(np.uint8)
        Image.fromarray(rgba, mode="RGBA").save(tmp_path / f"s{shade}.png")
        np.testing.assert_allclose(load_input(tmp_path / f"s{shade}.png", (1, 8, 8)),
                                   x_test[5], atol=2 / 255, err_msg=f"strokes {shade}")


def test_16_bit_and_float_images_keep_their_gray_levels(tmp_path):
    # Pillow's 8-bit conversion clips these at 255: every gray became ink or paper.
    Image = pytest.importorskip("PIL.Image")
    _, (x_test, _) = load_digits(flatten=False)
    ink = np.kron(x_test[5, 0], np.ones((5, 5)))  # bright ink on dark, [0, 1]
    Image.fromarray(np.round(65535 * ink).astype(np.uint16)).save(tmp_path / "d16.png")
    Image.fromarray(ink.astype(np.float32), mode="F").save(tmp_path / "f.tiff")
    Image.fromarray((255 * ink).astype(np.float32), mode="F").save(tmp_path / "f255.tiff")
    for name in ("d16.png", "f.tiff", "f255.tiff"):
        np.testing.assert_allclose(load_input(tmp_path / name, (1, 8, 8)), x_test[5],
                                   atol=1e-4, err_msg=name)


def test_confusion_matrix():
    m = confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2], 3)
    np.testing.assert_array_equal(m, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    # -1 would be counted as the last class (NumPy's negative index), 3 an IndexError.
    for t in ([0, 1, 1, -1], [0, 1, 1, 3]):
        with pytest.raises(ValueError, match=r"t must lie in \[0, 3\)"):
            confusion_matrix(t, [0, 2, 1, 2], 3)


def test_a_npy_input_must_be_prepared(tmp_path):
    # (H, W), (C, H, W) or (C*H*W,), finite in float32, values in [0, 1]: raw pixels, a
    # 4x16 array or 1e39 (inf in float32) would give a confident wrong answer.
    cases = {"raw255.npy": (np.full((8, 8), 200.0), r"values from 200 to 200; prepared "
                                                    r"inputs lie in \[0, 1\]"),
             "wide.npy": (np.zeros((4, 16)), r"shape \(4, 16\); the model takes 1x8x8"),
             "huge.npy": (np.full(64, 1e39), "NaN or inf \\(in float32\\)")}
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(ValueError, match=message):
            load_input(tmp_path / name, (1, 8, 8))
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "text.npy").write_text("not an array")
    for name in ("empty.npy", "text.npy"):
        with pytest.raises(ValueError, match=f"{name}: not a .npy array of numbers$"):
            load_input(tmp_path / name, (1, 8, 8))
    np.save(tmp_path / "ok.npy", np.full((1, 8, 8), 0.5))
    assert load_input(tmp_path / "ok.npy", (1, 8, 8)).shape == (1, 8, 8)


def test_an_image_is_read_as_a_viewer_shows_it(tmp_path):
    # A camera stores pixels rotated and says so in EXIF (Orientation 6: turn 90 degrees
    # clockwise); a float image with NaN or inf is refused.
    Image = pytest.importorskip("PIL.Image")
    _, (x_test, _) = load_digits(flatten=False)
    ink = np.kron(x_test[5, 0], np.ones((5, 5)))
    upright = Image.fromarray(np.round(255 * (1.0 - ink)).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.png", exif=exif)
    np.testing.assert_allclose(load_input(tmp_path / "phone.png", (1, 8, 8)), x_test[5],
                               atol=1 / 255)
    bad = ink.astype(np.float32)
    bad[3, 3] = np.inf
    Image.fromarray(bad, mode="F").save(tmp_path / "inf.tiff")
    with pytest.raises(ValueError, match="inf.tiff: holds NaN or inf"):
        load_input(tmp_path / "inf.tiff", (1, 8, 8))


@pytest.mark.parametrize("args, code, message", [
    (["evaluate", "none.npz"], 2, "MODEL none.npz: no such file"),
    (["evaluate", "params.npz"], 2, "params.npz holds parameters only, not the network's "
                                    "architecture"),
    (["predict", "m.npz", "missing.png"], 2, "FILE missing.png: no such file"),
    (["predict", "m.npz", "bad.npy"], 1, "bad.npy: an array of shape (3,); the model takes "
                                         "1x8x8 inputs: shape (8, 8) or (1, 8, 8) or (64,)"),
    (["predict", "m.npz", "junk.png"], 1, "junk.png: not an image Pillow can read"),
    (["evaluate", "junk.png"], 2, "MODEL junk.png: not a .npz model (portablelayers train "
                                  "--save writes one)"),
])
def test_mistakes_are_one_line(trained, args, code, message, monkeypatch, capsys):
    folder, _ = trained
    monkeypatch.chdir(folder)
    from portablelayers.nets import TwoLayerNet

    TwoLayerNet(2, 2, 2).save_params(folder / "params.npz")
    np.save(folder / "bad.npy", np.zeros(3))
    (folder / "junk.png").write_bytes(b"not a png")
    assert cli.main(args) == code
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"portablelayers {args[0]}: error: ")
    assert message in err and err.count("\n") == 1


def test_images_without_pillow_name_the_extra(trained, monkeypatch, capsys):
    folder, _ = trained
    monkeypatch.setitem(sys.modules, "PIL", None)
    (folder / "x.png").write_bytes(b"\x89PNG")
    assert cli.main(["predict", str(folder / "m.npz"), str(folder / "x.png")]) == 2
    assert "pip install 'portablelayers[images]'" in capsys.readouterr().err
