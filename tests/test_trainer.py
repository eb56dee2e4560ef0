"""The Trainer: its training loop against a hand-written NumPy reference, its epochs,
batches and shuffling, its output, history, plot and errors, on every backend.

Trainer is a driver, not a layer: it reads the losses to the host on purpose (stacked and
read for the log), so its methods are not tagged with lazy_xp_function; the layers it drives are
tagged in their own test modules.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from array_api_compat import is_dask_array
from support import make, to_numpy

from portablelayers import optim
from portablelayers._backend import device
from portablelayers.nets import MultiLayerNet, TwoLayerNet
from portablelayers.train import Trainer


def toy_data(xp, n=25, d=6, classes=3, seed=0, dtype="float64"):
    """Small separable-ish data: n samples of d features, labels from a random linear map."""
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((n, d))
    t = np.argmax(x @ gen.standard_normal((d, classes)), axis=1)
    return make(xp, x, dtype), make(xp, t, "int64"), x, t


# --- Against an independent NumPy reference ----------------------------------------------

def reference_two_layer_sgd(params, x, t, x_test, t_test, epochs, batch_size, lr, seed):
    """The training loop the Trainer promises, written out in NumPy: a fresh permutation
    per epoch, every batch (the last partial one too), loss before each update, SGD."""
    W1, b1, W2, b2 = (params[k].copy() for k in ("W1", "b1", "W2", "b2"))
    gen = np.random.default_rng(seed)

    def scores(inp):
        return np.maximum(inp @ W1 + b1, 0.0) @ W2 + b2

    def accuracy(inp, lab):
        return float(np.mean(np.argmax(scores(inp), axis=1) == lab))

    losses, train_acc, test_acc = [], [], []
    n = x.shape[0]
    for _ in range(epochs):
        order = gen.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb, tb = x[idx], t[idx]
            h = np.maximum(xb @ W1 + b1, 0.0)
            s = h @ W2 + b2
            s = s - s.max(axis=1, keepdims=True)
            log_p = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
            one_hot = np.eye(W2.shape[1])[tb]
            losses.append(-np.sum(one_hot * log_p) / len(idx))
            ds = (np.exp(log_p) - one_hot) / len(idx)
            dh = (ds @ W2.T) * (h > 0)
            W2 -= lr * h.T @ ds
            b2 -= lr * ds.sum(axis=0)
            W1 -= lr * xb.T @ dh
            b1 -= lr * dh.sum(axis=0)
        train_acc.append(accuracy(x, t))
        test_acc.append(accuracy(x_test, t_test))
    return losses, train_acc, test_acc, accuracy(x_test, t_test)


def test_matches_numpy_reference(xp):
    x, t, x_np, t_np = toy_data(xp, n=20)
    x_test, t_test, x_test_np, t_test_np = toy_data(xp, n=12, seed=1)
    net = TwoLayerNet(6, 5, 3, weight_init_std=0.5, xp=xp, dtype=xp.float64, seed=3)
    start = {k: np.array(to_numpy(v)) for k, v in net.params.items()}  # copies
    trainer = Trainer(net, x, t, x_test, t_test, epochs=3, mini_batch_size=8,
                      optimizer="SGD", optimizer_param={"lr": 0.5}, verbose=False, seed=7)
    final = trainer.train()

    losses, train_acc, test_acc, final_ref = reference_two_layer_sgd(
        start, x_np, t_np, x_test_np, t_test_np, epochs=3, batch_size=8, lr=0.5, seed=7)
    assert trainer.iter_per_epoch == 3 and trainer.max_iter == 9  # 8 + 8 + 4
    np.testing.assert_allclose(trainer.train_loss_list, losses, rtol=1e-10)
    assert trainer.train_acc_list == pytest.approx(train_acc)
    assert trainer.test_acc_list == pytest.approx(test_acc)
    assert final == pytest.approx(final_ref) and trainer.final_test_acc == final
    assert losses[-1] < losses[0]  # it did learn something
    for value in net.params.values():  # parameters keep dtype and device
        assert value.dtype == xp.float64 and device(value) == device(x)


def test_loss_with_weight_decay_is_the_batch_loss_before_its_update(xp):
    x, t, _, _ = toy_data(xp, n=20)
    kwargs = {"xp": xp, "dtype": xp.float64, "seed": 1}
    net = MultiLayerNet(6, [5], 3, weight_decay_lambda=0.1, **kwargs)
    twin = MultiLayerNet(6, [5], 3, weight_decay_lambda=0.1, **kwargs)
    first = np.random.default_rng(5).permutation(20)[:8]  # the Trainer's first batch
    idx = xp.asarray(first, device=device(x))
    expected = float(twin.loss(xp.take(x, idx, axis=0), xp.take(t, idx, axis=0)))
    trainer = Trainer(net, x, t, x, t, epochs=1, mini_batch_size=8, optimizer="adam",
                      optimizer_param={"lr": 0.01}, verbose=False, seed=5)
    trainer.train()
    assert trainer.train_loss_list[0] == pytest.approx(expected, rel=1e-12)


# --- Epochs, batches, shuffling (a spy network records what it is given) ------------------

class SpyNet:
    """Records the batches and evaluation sets the Trainer passes; `losses[k]` is the loss
    of the k-th step (default 1.0)."""

    def __init__(self, xp, like, losses=None):
        self.xp, self.like = xp, like
        self.params = {"w": xp.zeros((1,), dtype=xp.float64, device=device(like))}
        self.batches, self.evaluated, self.losses = [], [], losses or {}

    def loss(self, x, t):
        value = self.losses.get(len(self.batches), 1.0)
        return self.xp.asarray(value, dtype=self.xp.float64, device=device(self.like))

    def gradient(self, x, t):
        self.batches.append((x, t))
        return {"w": self.xp.ones((1,), dtype=self.xp.float64, device=device(self.like))}

    def accuracy(self, x, t):
        self.evaluated.append(tuple(x.shape))
        return 0.25


def SpyTrainer(*args, **kwargs):  # noqa: N802 (a Trainer, by its name)
    """A Trainer stepping eagerly: a SpyNet records batches in Python lists, which a
    compiled (traced) step cannot, and has no predict() for a compiled accuracy."""
    return Trainer(*args, compile=False, **kwargs)


def indexed_data(xp, n):
    """x[i] = [i, -i], t[i] = i: a batch tells which samples it holds."""
    i = np.arange(n)
    return make(xp, np.stack([i, -i], axis=1), "float64"), make(xp, i, "int64")


def test_each_epoch_visits_every_sample_once(xp):
    x, t = indexed_data(xp, 23)
    spy = SpyNet(xp, x)
    trainer = SpyTrainer(spy, x, t, x, t, epochs=3, mini_batch_size=10, verbose=False, seed=0)
    trainer.train()
    assert len(spy.batches) == 9
    sizes = [int(b[0].shape[0]) for b in spy.batches]
    assert sizes == [10, 10, 3] * 3  # the last partial batch is included
    orders = []
    for epoch in range(3):
        chunks = spy.batches[3 * epoch: 3 * epoch + 3]
        ids = np.concatenate([to_numpy(bx)[:, 0] for bx, _ in chunks]).astype(int)
        labels = np.concatenate([to_numpy(bt) for _, bt in chunks])
        np.testing.assert_array_equal(ids, labels)  # x and t stay paired
        assert sorted(ids) == list(range(23))  # without replacement
        orders.append(ids)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch
    for bx, bt in spy.batches:  # batches stay on the data's device, in its dtype
        assert device(bx) == device(x) and device(bt) == device(x) and bx.dtype == x.dtype
    # SGD lr 0.01 applied to w with gradient 1 at each of the 9 steps.
    np.testing.assert_allclose(to_numpy(spy.params["w"]), [-0.09], rtol=1e-12)
    if is_dask_array(spy.params["w"]):  # persisted each step: no graph of all the steps
        assert len(spy.params["w"].__dask_graph__()) == 1
    assert trainer.history["train_loss"] == [1.0] * 9
    assert trainer.history["train_acc"] == [0.25] * 3
    times = trainer.history["epoch_time"]
    assert len(times) == 3 and times == sorted(times) and times[0] >= 0.0


def test_same_seed_same_history(xp):
    x, t, _, _ = toy_data(xp, n=20)

    def run(seed):
        net = TwoLayerNet(6, 5, 3, weight_init_std=0.3, xp=xp, dtype=xp.float64, seed=0)
        trainer = Trainer(net, x, t, x, t, epochs=2, mini_batch_size=8, optimizer="momentum",
                          optimizer_param={"lr": 0.1}, verbose=False, seed=seed)
        trainer.train()
        history = trainer.history
        del history["epoch_time"]
        return history

    first = run(11)
    assert run(11) == first
    assert run(12)["train_loss"] != first["train_loss"]


def test_evaluate_sample_num_per_epoch(xp):
    x, t = indexed_data(xp, 30)
    x_test, t_test = indexed_data(xp, 12)
    spy = SpyNet(xp, x)
    SpyTrainer(spy, x, t, x_test, t_test, epochs=2, mini_batch_size=30,
            evaluate_sample_num_per_epoch=5, verbose=False, seed=0).train()
    # Per epoch: the first 5 training and test samples; at the end: the whole test set.
    assert spy.evaluated == [(5, 2), (5, 2), (5, 2), (5, 2), (12, 2)]


def test_evaluate_sample_num_larger_than_the_sets(xp):
    x, t = indexed_data(xp, 30)
    x_test, t_test = indexed_data(xp, 12)
    spy = SpyNet(xp, x)
    SpyTrainer(spy, x, t, x_test, t_test, epochs=1, mini_batch_size=30,
            evaluate_sample_num_per_epoch=20, verbose=False, seed=0).train()
    assert spy.evaluated == [(20, 2), (12, 2), (12, 2)]  # each set at most whole


def test_batch_larger_than_training_set(xp):
    x, t = indexed_data(xp, 4)
    spy = SpyNet(xp, x)
    trainer = SpyTrainer(spy, x, t, x, t, epochs=2, mini_batch_size=100, verbose=False)
    trainer.train()
    assert trainer.iter_per_epoch == 1 and [int(b[0].shape[0]) for b in spy.batches] == [4, 4]


# --- Divergence and bad arguments ---------------------------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_names_the_step(xp, bad):
    x, t = indexed_data(xp, 20)
    spy = SpyNet(xp, x, losses={4: bad})
    trainer = SpyTrainer(spy, x, t, x, t, epochs=3, mini_batch_size=8, verbose=False, seed=0)
    with pytest.raises(FloatingPointError, match=r"became (nan|inf) at step 5 \(epoch 2, "
                                                 r"batch 2 of 3\)"):
        trainer.train()
    # One logged loss per step taken: an eager step refuses the bad one (4 steps); a lazy
    # (Dask) step cannot read it first, so it was taken and its loss is logged too.
    assert trainer.train_loss_list[:4] == [1.0] * 4
    assert len(trainer.train_loss_list) == trainer.current_iter in (4, 5)
    if trainer.current_iter == 5:
        assert not math.isfinite(trainer.train_loss_list[4])


@pytest.mark.parametrize("name, cls", [("SGD", optim.SGD), ("momentum", optim.Momentum),
                                       ("Nesterov", optim.Nesterov), ("ADAGRAD", optim.AdaGrad),
                                       ("rmsprop", optim.RMSprop), ("Adam", optim.Adam),
                                       ("adamw", optim.AdamW)])
def test_optimizer_names_case_insensitive(xp, name, cls):
    x, t = indexed_data(xp, 4)
    trainer = SpyTrainer(SpyNet(xp, x), x, t, x, t, optimizer=name,
                      optimizer_param={"lr": 0.125}, verbose=False)
    assert type(trainer.optimizer) is cls and trainer.optimizer.lr == 0.125


def test_optimizer_object_and_default_lr(xp):
    x, t = indexed_data(xp, 4)
    adam = optim.Adam(lr=0.5)
    assert SpyTrainer(SpyNet(xp, x), x, t, x, t, optimizer=adam).optimizer is adam
    assert SpyTrainer(SpyNet(xp, x), x, t, x, t).optimizer.lr == 0.01  # the book's default


@pytest.mark.parametrize("kwargs, error, match", [
    ({"optimizer": "lbfgs"}, ValueError, "unknown optimizer 'lbfgs'; expected one of sgd"),
    ({"optimizer": 3}, TypeError, "optimizer must be a name"),
    ({"epochs": 0}, ValueError, "epochs must be a positive int, got 0"),
    ({"mini_batch_size": 2.5}, ValueError, "mini_batch_size must be a positive int"),
    ({"evaluate_sample_num_per_epoch": -1}, ValueError, "evaluate_sample_num_per_epoch"),
    ({"optimizer_param": {"lr": -1.0}}, ValueError, "lr must be >= 0"),
])
def test_bad_arguments(xp, kwargs, error, match):
    x, t = indexed_data(xp, 4)
    with pytest.raises(error, match=match):
        SpyTrainer(SpyNet(xp, x), x, t, x, t, **kwargs)


def test_bad_data_and_network(xp):
    x, t = indexed_data(xp, 6)
    with pytest.raises(ValueError, match=r"x_train and t_train must hold the same"):
        SpyTrainer(SpyNet(xp, x), x, t[:5], x, t)
    with pytest.raises(ValueError, match=r"x_test and t_test"):
        SpyTrainer(SpyNet(xp, x), x, t, x[:2, ...], t)
    with pytest.raises(TypeError, match="network must have a gradient"):
        Trainer(object(), x, t, x, t)
    other = np.zeros((6, 2))
    if isinstance(x, np.ndarray):  # on NumPy, mix with another library
        other = pytest.importorskip("array_api_strict").asarray(other)
    with pytest.raises(TypeError, match="same array library"):
        SpyTrainer(SpyNet(xp, x), x, t, other, t)


# --- Output, history, plot ----------------------------------------------------------------

def test_quiet_when_not_a_terminal(xp, capsys):
    x, t = indexed_data(xp, 10)
    SpyTrainer(SpyNet(xp, x), x, t, x, t, epochs=2, mini_batch_size=5, seed=0).train()
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.rsplit(", ", 1)[0] for line in lines[:2]] == [
        "epoch 1/2: train loss 1.0000 acc 0.2500, test loss 1.0000 acc 0.2500",
        "epoch 2/2: train loss 1.0000 acc 0.2500, test loss 1.0000 acc 0.2500",
    ]
    for line in lines[:2]:  # throughput: 10 samples in a positive time
        assert line.endswith(" samples/s") and int(line.split(", ")[-1].split()[0]
                                                   .replace(",", "")) > 0
    assert lines[2:] == ["test loss 1.0000, test acc 0.2500"]
    assert err == ""  # no progress bar when stderr is not a terminal
    SpyTrainer(SpyNet(xp, x), x, t, x, t, epochs=1, verbose=False).train()
    assert capsys.readouterr() == ("", "")


def test_progress_bar(xp, capsys):
    pytest.importorskip("tqdm")
    x, t = indexed_data(xp, 10)
    SpyTrainer(SpyNet(xp, x), x, t, x, t, epochs=2, mini_batch_size=5, seed=0,
            progress=True).train()
    out, err = capsys.readouterr()
    assert "epoch 2/2" in err and "4/4" in err and "loss=1.0000" in err
    assert "samples/s" in err and "step/s" in err
    assert "epoch 2/2: train loss 1.0000 acc 0.2500" in out


def test_plot_writes_png(xp, tmp_path):
    pytest.importorskip("matplotlib")
    x, t, _, _ = toy_data(xp, n=20)
    net = TwoLayerNet(6, 5, 3, xp=xp, dtype=xp.float64, seed=0)
    trainer = Trainer(net, x, t, x, t, epochs=2, mini_batch_size=8, verbose=False, seed=0)
    with pytest.raises(RuntimeError, match="call train"):
        trainer.plot(tmp_path / "early.png")
    trainer.train()
    path = trainer.plot(tmp_path / "curves.png")
    data = (tmp_path / "curves.png").read_bytes()
    assert path == tmp_path / "curves.png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = np.frombuffer(data[16:24], dtype=">u4")  # the IHDR chunk
    assert (width, height) == (1000, 400)


def test_optional_packages_load_lazily():
    code = ("import sys, portablelayers.train, portablelayers.cli, portablelayers.datasets; "
            "bad = [m for m in ('tqdm', 'matplotlib') if m in sys.modules]; "
            "print(*bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_progress_without_tqdm_falls_back_to_lines(xp, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    x, t = indexed_data(xp, 10)
    SpyTrainer(SpyNet(xp, x), x, t, x, t, epochs=1, progress=True).train()
    out, err = capsys.readouterr()
    assert out.startswith("epoch 1/1: train loss 1.0000 acc 0.2500") and err == ""


def test_plot_without_matplotlib_names_the_extra(xp, monkeypatch, tmp_path):
    x, t = indexed_data(xp, 10)
    trainer = SpyTrainer(SpyNet(xp, x), x, t, x, t, epochs=1, verbose=False)
    trainer.train()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'portablelayers\[train\]'"):
        trainer.plot(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --- Validation, early stopping, divergence ----------------------------------------------

def test_with_a_validation_set_the_test_set_is_used_once(xp):
    x, t = indexed_data(xp, 30)
    x_val, t_val = indexed_data(xp, 7)
    x_test, t_test = indexed_data(xp, 12)
    spy = SpyNet(xp, x)
    trainer = SpyTrainer(spy, x, t, x_test, t_test, epochs=2, mini_batch_size=30, verbose=False,
                      seed=0, x_val=x_val, t_val=t_val)
    trainer.train()
    # Per epoch: training and validation sets; the test set once, at the end.
    assert spy.evaluated == [(30, 2), (7, 2), (30, 2), (7, 2), (12, 2)]
    history = trainer.history
    assert history["val_acc"] == [0.25, 0.25] and history["test_acc"] == []
    assert history["val_loss"] == [1.0, 1.0] and history["final_test_acc"] == 0.25
    assert [row["epoch"] for row in trainer.epoch_rows()] == [1, 2]
    assert set(trainer.epoch_rows()[0]) == {"epoch", "lr", "train_loss", "train_acc",
                                            "val_loss", "val_acc", "seconds"}


def test_validation_loss_is_the_networks_mean_loss(xp):
    x, t, x_np, t_np = toy_data(xp, n=20)
    x_val, t_val, xv_np, tv_np = toy_data(xp, n=7, seed=3)
    net = TwoLayerNet(6, 5, 3, weight_init_std=0.5, xp=xp, dtype=xp.float64, seed=3)
    trainer = Trainer(net, x, t, x, t, epochs=1, mini_batch_size=8, optimizer="sgd",
                      verbose=False, seed=0, x_val=x_val, t_val=t_val, evaluate_batch_size=3)
    trainer.train()
    W1, b1, W2, b2 = (to_numpy(net.params[k]) for k in ("W1", "b1", "W2", "b2"))
    s = np.maximum(xv_np @ W1 + b1, 0) @ W2 + b2
    log_p = s - s.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    expected = -log_p[np.arange(7), tv_np].mean()  # batches of 3, 3, 1 weighted by size
    assert trainer.history["val_loss"] == [pytest.approx(expected, rel=1e-10)]
    assert trainer.history["epoch_train_loss"] == [pytest.approx(
        np.mean(trainer.train_loss_list), rel=1e-12)]


def test_patience_stops_and_keeps_the_best_epoch(xp):
    x, t = indexed_data(xp, 10)
    # One step an epoch; the validation loss after epoch e is losses[e] (SpyNet's count).
    spy = SpyNet(xp, x, losses={1: 0.9, 2: 0.5, 3: 0.6, 4: 0.7, 5: 0.1})
    trainer = SpyTrainer(spy, x, t, x, t, epochs=8, mini_batch_size=10, verbose=False, seed=0,
                      optimizer="sgd", optimizer_param={"lr": 1.0}, x_val=x, t_val=t,
                      patience=2)
    trainer.train()
    assert trainer.stopped_early and trainer.current_epoch == 4 and trainer.best_epoch == 2
    assert trainer.history["val_loss"] == [0.9, 0.5, 0.6, 0.7]
    # w falls by 1 a step: -2 after epoch 2, the best; -4 when it stopped.
    np.testing.assert_array_equal(to_numpy(spy.params["w"]), [-2.0])
    # The restored weights are a copy: updating them leaves the best epoch's as they were.
    trainer.optimizer.update(spy.params, {"w": xp.ones_like(spy.params["w"])})
    np.testing.assert_array_equal(to_numpy(trainer.best_params["w"]), [-2.0])
    with pytest.raises(ValueError, match="patience .* needs a validation set"):
        SpyTrainer(spy, x, t, x, t, patience=2)


def test_a_diverging_loss_warns_once(xp):
    x, t = indexed_data(xp, 10)
    spy = SpyNet(xp, x, losses={0: 2.0, 1: 50.0, 2: 60.0, 3: 70.0})
    trainer = SpyTrainer(spy, x, t, x, t, epochs=3, mini_batch_size=10, verbose=False, seed=0,
                      optimizer_param={"lr": 0.5})
    with pytest.warns(RuntimeWarning, match=r"the training loss is diverging: epoch 2's mean "
                                            r"loss 50 is over 2 times the first step's 2; try "
                                            r"a learning rate below 0.5") as record:
        trainer.train()
    assert len(record) == 1 and trainer.diverged


def test_a_falling_loss_does_not_warn(xp):
    x, t = indexed_data(xp, 10)
    spy = SpyNet(xp, x, losses={0: 2.0, 1: 1.5, 2: 3.9})  # below twice the first
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpyTrainer(spy, x, t, x, t, epochs=3, mini_batch_size=10, verbose=False).train()


def test_validation_split_holds_out_a_seeded_fraction():
    from portablelayers.datasets import validation_split

    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    t = np.arange(20)
    (xa, ta), (xv, tv) = validation_split(x, t, 0.25, seed=3)
    assert len(tv) == 5 and len(ta) == 15
    assert sorted([*ta, *tv]) == list(range(20))  # disjoint, all kept
    np.testing.assert_array_equal(xa[:, 0], 2 * ta)  # pairs kept; the rest in order
    assert list(ta) == sorted(ta)
    expected = np.sort(np.random.default_rng(3).permutation(20)[:5])
    np.testing.assert_array_equal(tv, expected)
    (_, _), (_, again) = validation_split(x, t, 0.25, seed=3)
    np.testing.assert_array_equal(again, tv)
    assert len(validation_split(x[:2], t[:2], 0.01)[1][1]) == 1  # at least one each
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        validation_split(x, t, 1.0)


def test_after_a_non_finite_loss_the_record_matches_the_steps_taken(xp):
    # The error's advice: reload the parameters and train on. The log must then hold one
    # loss per step taken and one row per epoch, as an uninterrupted run's.
    x, t, _, _ = toy_data(xp, n=40, d=4, dtype="float32")
    net = TwoLayerNet(4, 5, 3, weight_init_std=0.5, xp=xp, seed=0)
    good = {name: to_numpy(value).copy() for name, value in net.params.items()}
    trainer = Trainer(net, x, t, x, t, epochs=3, mini_batch_size=10, verbose=False, seed=0,
                      optimizer="sgd", optimizer_param={"lr": 0.1})
    for _ in range(3):
        trainer.train_step()
    net.params["W1"] = net.params["W1"] * 0 + 3e38  # the next step's loss overflows
    with pytest.raises(FloatingPointError, match="training loss became"):
        trainer.train()
    assert len(trainer.train_loss_list) == trainer.current_iter
    assert len(trainer.epoch_rows()) == trainer.current_epoch == trainer.current_iter // 4
    for name, value in good.items():
        net.params[name] = make(xp, value, "float32")
    trainer.train()
    assert len(trainer.train_loss_list) == trainer.current_iter == 12
    assert len(trainer.epoch_rows()) == trainer.current_epoch == 3


def test_a_diverging_eager_step_stops_before_its_update(xp):
    # An lr so large that the loss overflows: the eager step refuses the non-finite loss
    # before updating, so the parameters are those of the last finite step.
    if xp.__name__ in ("jax.numpy",) or is_dask_array(xp.zeros(1)):
        pytest.skip("compiled (JAX) and lazy (Dask) steps read no values inside a step")
    x, t, _, _ = toy_data(xp, n=20, dtype="float32")
    net = TwoLayerNet(6, 8, 3, weight_init_std=1.0, xp=xp, seed=0)
    trainer = Trainer(net, x, t, x, t, epochs=50, mini_batch_size=5, optimizer="sgd",
                      optimizer_param={"lr": 1e30}, verbose=False, seed=0, compile=False)
    with pytest.raises(FloatingPointError, match=r"became (nan|inf) at step \d+ \(epoch \d+, "
                                                 r"batch \d+ of 4\); the update was not "
                                                 r"applied"):
        trainer.train()
    for name in net.params:
        assert np.all(np.isfinite(to_numpy(net.params[name]))), name
