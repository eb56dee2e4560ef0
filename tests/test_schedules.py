"""Learning-rate schedules: their values against the formulas, their descriptions, and the
Trainer applying them per epoch (compiled steps read the new rate, with the eager result)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support import make, to_numpy

from portablelayers import schedules
from portablelayers.nets import TwoLayerNet
from portablelayers.train import Trainer


def test_step():
    s = schedules.Step(0.1, step_size=2, gamma=0.5)
    assert [s(e) for e in range(5)] == [0.1, 0.1, 0.05, 0.05, 0.025]


def test_cosine():
    s = schedules.Cosine(1.0, epochs=4, min_lr=0.2)
    expected = [0.2 + 0.4 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert [s(e) for e in range(4)] == pytest.approx(expected)
    assert s(0) == 1.0 and s(4) == pytest.approx(0.2) and s(9) == pytest.approx(0.2)


def test_warmup_rises_linearly_then_follows():
    s = schedules.Warmup(schedules.Step(0.3, step_size=3), epochs=2)
    assert [s(e) for e in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.03, 0.03])
    assert schedules.Warmup(0.5, 0)(0) == 0.5


def test_descriptions_round_trip():
    for s in (schedules.Constant(0.1), schedules.Step(0.1, 3, 0.5),
              schedules.Cosine(0.2, 7, 0.01), schedules.Warmup(schedules.Cosine(0.2, 7), 2)):
        again = schedules.from_description(s.describe())
        assert repr(again) == repr(s) and [again(e) for e in range(9)] == [s(e)
                                                                             for e in range(9)]


@pytest.mark.parametrize("make_schedule, match", [
    (lambda: schedules.Step(0.1, 0), "step_size must be a positive int"),
    (lambda: schedules.Step(0.1, float("inf")), "step_size must be a positive int"),
    (lambda: schedules.Cosine(0.1, float("inf")), "epochs must be a positive int"),
    (lambda: schedules.Cosine(0.1, 5, min_lr=0.2), r"min_lr must be in \[0, lr\]"),
    (lambda: schedules.Constant(-1.0), "lr must be >= 0"),
    (lambda: schedules.from_description({"kind": "cyclic"}), "unknown schedule 'cyclic'"),
])
def test_bad_schedules(make_schedule, match):
    with pytest.raises(ValueError, match=match):
        make_schedule()


def _run(xp, compile, schedule):
    gen = np.random.default_rng(0)
    x = make(xp, gen.standard_normal((20, 4)), "float64")
    t = make(xp, gen.integers(0, 3, 20), "int64")
    net = TwoLayerNet(4, 5, 3, weight_init_std=0.5, xp=xp, dtype=xp.float64, seed=1)
    trainer = Trainer(net, x, t, x, t, epochs=4, mini_batch_size=10, optimizer="momentum",
                      optimizer_param={"lr": 0.3}, verbose=False, seed=2, compile=compile,
                      lr_schedule=schedule)
    trainer.train()
    return trainer, {k: to_numpy(v) for k, v in net.params.items()}


def test_trainer_sets_lr_each_epoch_and_compiled_steps_follow(xp):
    schedule = schedules.Step(0.3, step_size=1, gamma=0.5)
    trainer, params = _run(xp, "auto", schedule)
    assert trainer.history["lr"] == [0.3, 0.15, 0.075, 0.0375]
    assert trainer.optimizer.lr == 0.0375
    # The same run stepped eagerly: a compiled step must not keep the first epoch's rate.
    _, eager = _run(xp, False, schedule)
    _, constant = _run(xp, False, None)
    for name in params:
        np.testing.assert_allclose(params[name], eager[name], rtol=1e-9, atol=1e-12)
    assert not np.allclose(params["W1"], constant["W1"])  # the schedule made a difference


def test_a_schedule_must_be_callable(xp):
    x = make(xp, np.zeros((4, 2)), "float64")
    t = make(xp, np.zeros(4), "int64")
    with pytest.raises(TypeError, match="lr_schedule must be callable"):
        Trainer(TwoLayerNet(2, 2, 2, xp=xp, dtype=xp.float64), x, t, x, t, lr_schedule=0.1)


def test_a_warmup_around_a_plain_function_says_it_cannot_be_rebuilt():
    # describe() has only a repr for a function; rebuilding it must say so, not complain
    # about a learning rate it never was.
    from portablelayers.schedules import Warmup, from_description

    description = Warmup(lambda epoch: 0.1, epochs=2).describe()
    with pytest.raises(ValueError, match="cannot be rebuilt from its description"):
        from_description(description)
    assert from_description(Warmup(0.3, epochs=2).describe())(1) == Warmup(0.3, epochs=2)(1)
