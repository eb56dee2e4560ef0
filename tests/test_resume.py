"""Resuming: a run stopped after any step, saved, and loaded into fresh objects ends with
the weights of an uninterrupted run of the same seed (exactly on NumPy)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from conftest import BACKEND
from support import make, to_numpy

from portablelayers.models import build_optimizer, load_model, restore_optimizer, save_checkpoint
from portablelayers.nets import MultiLayerNetExtend
from portablelayers.train import Trainer, TrainingInterrupted

EPOCHS, BATCH = 3, 5  # 23 samples: 5 steps an epoch, the last one partial


def data(xp, n, seed):
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((n, 6))
    t = np.argmax(x @ gen.standard_normal((6, 3)), axis=1)
    return make(xp, x, "float64"), make(xp, t, "int64")


def make_run(xp, network=None, optimizer="adam"):
    (x, t), (xv, tv), (xt, tt) = data(xp, 23, 0), data(xp, 8, 1), data(xp, 9, 2)
    if network is None:  # dropout and batch norm: state that moves every step
        network = MultiLayerNetExtend(6, [7, 5], 3, use_batchnorm=True, use_dropout=True,
                                      dropout_ratio=0.2, xp=xp, dtype=xp.float64, seed=4)
    return Trainer(network, x, t, xt, tt, epochs=EPOCHS, mini_batch_size=BATCH,
                   optimizer=optimizer, optimizer_param={"lr": 0.05}, verbose=False, seed=9,
                   x_val=xv, t_val=tv)


def arrays(net):
    return {name: to_numpy(value) for name, value in {**dict(net.params),
                                                      **dict(net.state)}.items()}


def assert_same(got, expected):
    assert set(got) == set(expected)
    for name, value in expected.items():
        if BACKEND == "numpy":
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        else:  # the same operations; compiled programs may fuse them differently
            np.testing.assert_allclose(got[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


def stop_after(trainer, k, how="request"):
    """Make trainer stop once k steps are done (request_stop, or a real SIGINT)."""
    original = trainer.train_step

    def step():
        original()
        if trainer.current_iter == k:
            if how == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                trainer.request_stop()

    trainer.train_step = step


def interrupted_run(xp, k):
    """make_run's Trainer, stopped after step k."""
    trainer = make_run(xp)
    stop_after(trainer, k)
    with pytest.raises(TrainingInterrupted):
        trainer.train()
    return trainer


@pytest.mark.parametrize("k", [7, 10])  # mid-epoch; at an epoch's end
def test_resumed_run_ends_with_the_uninterrupted_weights(xp, tmp_path, k):
    reference = make_run(xp)
    reference.train()
    expected = arrays(reference.network)

    first = make_run(xp)
    stop_after(first, k)
    with pytest.raises(TrainingInterrupted) as info:
        first.train()
    assert (info.value.iteration, info.value.epoch) == (k, k // 5)
    path = tmp_path / "run.npz"
    save_checkpoint(path, first.network, first.optimizer, training=first.training_state(),
                    training_arrays=first.training_arrays())

    # A new process would do this: everything from the file.
    net, ckpt = load_model(path, xp=xp, with_checkpoint=True)
    optimizer = build_optimizer(ckpt.meta["optimizer"])
    restore_optimizer(optimizer, net.params, ckpt.optimizer_arrays)
    second = make_run(xp, network=net, optimizer=optimizer)
    second.load_training_state(ckpt.training, ckpt.training_arrays)
    second.train()
    assert_same(arrays(net), expected)
    assert second.best_epoch == reference.best_epoch
    np.testing.assert_allclose(second.history["train_loss"], reference.history["train_loss"],
                               rtol=1e-9)
    assert len(second.history["train_loss"]) == EPOCHS * 5
    assert second.history["val_acc"] == pytest.approx(reference.history["val_acc"])
    assert second.final_test_acc == pytest.approx(reference.final_test_acc)


def test_a_resumed_run_that_stops_early_goes_back_to_a_best_epoch_before_the_stop(
        xp, tmp_path):
    # Validation labels that training gets wrong more and more: epoch 1 is the best, and
    # patience 1 stops the run after epoch 2. Saved in epoch 2 and resumed, the run must
    # still end with epoch 1's weights, which only the saved run had seen.
    def run(network=None, optimizer="adam"):
        (x, t), (xv, tv), (xt, tt) = data(xp, 23, 0), data(xp, 8, 1), data(xp, 9, 2)
        if network is None:
            network = MultiLayerNetExtend(6, [7, 5], 3, use_batchnorm=True, xp=xp,
                                          dtype=xp.float64, seed=4)
        return Trainer(network, x, t, xt, tt, epochs=EPOCHS, mini_batch_size=BATCH,
                       optimizer=optimizer, optimizer_param={"lr": 0.05}, verbose=False,
                       seed=9, x_val=xv, t_val=(tv + 2) % 3, patience=1)

    reference = run()
    reference.train()
    assert (reference.best_epoch, reference.stopped_early) == (1, True)
    expected = arrays(reference.network)

    first = run()
    stop_after(first, 7)  # in epoch 2
    with pytest.raises(TrainingInterrupted):
        first.train()
    path = tmp_path / "run.npz"
    save_checkpoint(path, first.network, first.optimizer, training=first.training_state(),
                    training_arrays=first.training_arrays())
    net, ckpt = load_model(path, xp=xp, with_checkpoint=True)
    optimizer = build_optimizer(ckpt.meta["optimizer"])
    restore_optimizer(optimizer, net.params, ckpt.optimizer_arrays)
    second = run(network=net, optimizer=optimizer)
    second.load_training_state(ckpt.training, ckpt.training_arrays)
    second.train()
    assert (second.best_epoch, second.stopped_early) == (1, True)
    assert_same(arrays(net), expected)
    assert second.final_test_acc == pytest.approx(reference.final_test_acc)


def test_a_history_with_nan_and_inf_is_saved_and_read_back(xp, tmp_path):
    # Strict JSON has no NaN: an optimizer of one's own without `lr` logs NaN rates, and
    # a diverging run logs inf losses; the checkpoint must still be written and read.
    class Plain:
        def update(self, params, grads):
            for key in params:
                params[key] = params[key] - 0.1 * grads[key]

    (x, t), (xt, tt) = data(xp, 23, 0), data(xp, 9, 2)
    net = MultiLayerNetExtend(6, [7], 3, xp=xp, dtype=xp.float64, seed=4)
    trainer = Trainer(net, x, t, xt, tt, epochs=2, mini_batch_size=BATCH, optimizer=Plain(),
                      verbose=False, seed=9)
    for _ in range(5):  # one epoch
        trainer.train_step()
    trainer.test_loss_list[-1] = float("inf")
    path = tmp_path / "run.npz"
    save_checkpoint(path, net, training=trainer.training_state())
    again = Trainer(net, x, t, xt, tt, epochs=2, mini_batch_size=BATCH, optimizer=Plain(),
                    verbose=False, seed=9)
    again.load_training_state(load_model(path, xp=xp, with_checkpoint=True)[1].training)
    assert np.isnan(again.history["lr"][0]) and again.history["test_loss"] == [float("inf")]
    assert again.history["train_loss"] == trainer.history["train_loss"]


def test_sigint_stops_after_a_whole_step(xp):
    trainer = make_run(xp)
    stop_after(trainer, 3, how="signal")
    with pytest.raises(TrainingInterrupted) as info:
        trainer.train(stop_on_interrupt=True)
    assert info.value.iteration == 3 and trainer.current_iter == 3
    assert len(trainer.train_loss_list) == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_training_state_is_json_and_checked(xp):
    import json

    trainer = interrupted_run(xp, 2)
    state = json.loads(json.dumps(trainer.training_state()))
    other = make_run(xp)
    other.batch_size = 4
    with pytest.raises(ValueError, match="the saved run has batch_size 5, this Trainer 4"):
        other.load_training_state(state)


def test_a_state_that_does_not_fit_changes_nothing(xp):
    # Each damaged state is refused with a ValueError that says what is wrong, and the
    # Trainer is left as it was (no half-loaded run).
    import copy
    import json

    trainer = interrupted_run(xp, 7)
    state = json.loads(json.dumps(trainer.training_state()))
    best = trainer.training_arrays()
    assert best  # epoch 1 was measured: its weights are the best so far

    def damaged(change):
        bad = copy.deepcopy(state)
        change(bad)
        return bad

    cases = [
        (damaged(lambda s: s["history"].pop("val_loss")), "history 'val_loss' should be 1"),
        (damaged(lambda s: s["history"]["train_loss"].pop()), "'train_loss' should be 7"),
        (damaged(lambda s: s.update(iter=-2)), "at step -2, outside"),
        (damaged(lambda s: s.update(epoch=0)), "epoch 0 does not follow from step 7"),
        (damaged(lambda s: s.update(rng={"bit_generator": "MT19937"})), "'rng' is not a "
                                                                         "generator state"),
        (damaged(lambda s: s.pop("elapsed")), "'elapsed' is missing"),
        (damaged(lambda s: s.update(stopped_early="no")), "'stopped_early' is str"),
        (damaged(lambda s: s.update(best_epoch=5)), "best_epoch 5 is not an epoch from 1"),
        ([state], "a dict was expected, got list"),
    ]
    other = make_run(xp)
    before = (other.current_iter, other.current_epoch, other.history,
              other._rng.bit_generator.state)
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            other.load_training_state(bad, best)
    wrong_best = {name: value[..., :1] if value.ndim else value
                  for name, value in best.items()}
    with pytest.raises(ValueError, match="best-epoch weights and the network do not match: "
                                         ".*W1 has shape"):
        other.load_training_state(state, wrong_best)
    assert (other.current_iter, other.current_epoch, other.history,
            other._rng.bit_generator.state) == before
    other.load_training_state(state, best)  # the undamaged state goes in
    assert (other.current_iter, other.best_epoch) == (7, trainer.best_epoch)


def test_a_best_epoch_without_its_weights_is_tracked_anew(xp):
    # An older run file has the best epoch's number but not its weights: an early stop
    # could not go back to them, so the best epoch starts again from the resumed step.
    trainer = interrupted_run(xp, 7)
    assert trainer.best_epoch == 1
    other = make_run(xp)
    with pytest.warns(RuntimeWarning, match="best epoch \\(1\\) came without its weights"):
        other.load_training_state(trainer.training_state())
    assert other.best_epoch is None and other.best_params is None
    other.train()
    assert other.best_epoch in (2, 3) and other.best_params is not None
