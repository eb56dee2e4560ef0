"""The book's Trainer (common/trainer.py): mini-batch training of a network with an optimizer.

    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=20,
                      mini_batch_size=100, optimizer="Adam", optimizer_param={"lr": 0.001},
                      seed=0)
    trainer.train()
    trainer.plot("curves.png")

Unlike the book, each epoch visits every training sample once (a fresh shuffle without
replacement, the last partial batch included), the loss logged per step is the batch's loss
before its update, and accuracies are measured at the end of each epoch. Batches are taken
on the data's own device; only the loss and the accuracies come to the host, for the log.
Each step is one `compile_step` call: compiled on JAX and on torch CUDA tensors by default
(`compile="auto"`), eager elsewhere (with `client=`, a data-parallel `DistributedStep`);
labels are checked once, on the whole data sets, when the Trainer is made. A compiled run
reads its losses back once per epoch, not per step (every step while a progress bar shows).
tqdm (progress bar) and matplotlib (`plot`) are optional: `pip install 'portablelayers[train]'`.
"""

from __future__ import annotations

import math
import numbers
import shutil
import signal
import sys
import threading
import time
import warnings

import numpy as np  # the host generator that shuffles sample indices; never touches data

from . import guards
from ._backend import (
    device,
    from_host,
    namespace,
    read_scalars,
    static_shape,
    takes_argument,
)
from .compiled import NonFiniteLoss, compile_step, compiled_kind

__all__ = ["OPTIMIZERS", "Trainer", "TrainingInterrupted", "compile_step"]

# An epoch whose mean training loss exceeds the first step's by this factor is diverging.
DIVERGENCE_FACTOR = 2.0
_BEST = "best/"  # training_arrays(): the names of the best epoch's weights


class TrainingInterrupted(KeyboardInterrupt):
    """`Trainer.train` stopped at a request (Ctrl-C, `request_stop()`) after a whole step.

    The network, the optimizer and `training_state()` are those of step `iteration`, so
    the run can be saved and resumed exactly.

    Parameters
    ----------
    epoch : int
        Epochs completed.
    iteration : int
        Steps completed (0: stopped before the first).
    max_iter : int
        Steps the whole run would take.
    """

    def __init__(self, epoch, iteration, max_iter):
        super().__init__(f"stopped after step {iteration} of {max_iter} (epoch {epoch} "
                         "complete)" if iteration else "stopped before the first step")
        self.epoch, self.iteration, self.max_iter = epoch, iteration, max_iter

# The book's optimizer names (lower case) -> class names in portablelayers.optim.
OPTIMIZERS = {
    "sgd": "SGD",
    "momentum": "Momentum",
    "nesterov": "Nesterov",
    "adagrad": "AdaGrad",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
}


def make_optimizer(optimizer, optimizer_param=None):
    """An optimizer from its book name (case-insensitive) and keyword arguments; an object
    with an `update(params, grads)` method is returned as it is."""
    if not isinstance(optimizer, str):
        if not callable(getattr(optimizer, "update", None)):
            raise TypeError(f"optimizer must be a name ({', '.join(OPTIMIZERS)}) or an object "
                            f"with update(params, grads), got {type(optimizer).__name__}")
        return optimizer
    key = optimizer.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of "
                         f"{', '.join(OPTIMIZERS)}")
    from . import optim

    return getattr(optim, OPTIMIZERS[key])(**(optimizer_param or {}))


def _positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return int(value)


def _json_floats(values):
    """Strict JSON has no NaN or inf (an optimizer without `lr` logs NaN; a diverged run's
    losses): those as the strings "nan", "inf", "-inf"."""
    return [v if not isinstance(v, float) or math.isfinite(v) else str(v) for v in values]


_STATE_KEYS = {  # training_state()'s entries and their types
    "iter": numbers.Integral, "epoch": numbers.Integral, "batch_size": numbers.Integral,
    "train_size": numbers.Integral, "iter_per_epoch": numbers.Integral, "rng_epoch": dict,
    "rng": dict, "history": dict, "stopped_early": bool, "diverged": bool,
    "elapsed": numbers.Real}
_STEP_HISTORY = ("train_loss",)
_EPOCH_HISTORY = ("epoch_train_loss", "train_acc", "lr", "epoch_time")


def _check_training_state(trainer, state):
    """ValueError naming the first thing in `state` that `training_state()` would not have
    written for a run like `trainer`'s, so that loading it changes nothing or everything."""
    def refuse(why):
        raise ValueError(f"not a training state this Trainer can go on from: {why}")

    if not isinstance(state, dict):
        refuse(f"a dict was expected, got {type(state).__name__}")
    for key, kind in _STATE_KEYS.items():
        if key not in state:
            refuse(f"{key!r} is missing")
        value = state[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            refuse(f"{key!r} is {type(value).__name__} {value!r}")
    for key, mine in (("train_size", trainer.train_size), ("batch_size", trainer.batch_size),
                      ("iter_per_epoch", trainer.iter_per_epoch)):
        if state[key] != mine:
            raise ValueError(f"the saved run has {key} {state[key]}, this Trainer {mine}")
    step, epoch = state["iter"], state["epoch"]
    if not 0 <= step <= trainer.max_iter:
        raise ValueError(f"the saved run is at step {step}, outside this Trainer's 0 to "
                         f"{trainer.max_iter} ({trainer.epochs} epochs)")
    if epoch != step // trainer.iter_per_epoch:
        refuse(f"epoch {epoch} does not follow from step {step} at "
               f"{trainer.iter_per_epoch} steps an epoch")
    history = state["history"]
    measured = ("val_loss", "val_acc") if trainer.x_val is not None else (
        "test_loss", "test_acc")
    unmeasured = ("test_loss", "test_acc") if trainer.x_val is not None else (
        "val_loss", "val_acc")
    lengths = {**{key: step for key in _STEP_HISTORY},
               **{key: epoch for key in (*_EPOCH_HISTORY, *measured)},
               **{key: 0 for key in unmeasured}}
    for key, length in lengths.items():
        values = history.get(key)
        if not isinstance(values, list) or len(values) != length or not all(
                isinstance(v, numbers.Real) or v in ("nan", "inf", "-inf") for v in values):
            refuse(f"history {key!r} should be {length} numbers, got "
                   f"{_described(values)}")
    best_epoch, best_loss = state.get("best_epoch"), state.get("best_val_loss")
    if best_epoch is not None and (not isinstance(best_epoch, numbers.Integral)
                                   or not 1 <= best_epoch <= epoch):
        refuse(f"best_epoch {best_epoch!r} is not an epoch from 1 to {epoch}")
    if best_loss is not None and not isinstance(best_loss, numbers.Real):
        refuse(f"best_val_loss is {type(best_loss).__name__} {best_loss!r}")
    for key in ("rng_epoch", "rng"):
        try:  # on a scratch generator: NumPy checks the state
            np.random.default_rng().bit_generator.state = state[key]
        except (TypeError, ValueError, KeyError) as exc:
            refuse(f"{key!r} is not a generator state NumPy takes ({exc})")


def _described(values):
    """A short description of a history entry, for an error."""
    if isinstance(values, list):
        return f"a list of {len(values)}"
    return "nothing" if values is None else type(values).__name__


def _floats(values):
    """`_json_floats` undone."""
    return [float(v) if isinstance(v, str) else v for v in values]


def _fmt(loss):
    """A loss to 4 decimals; a huge one (a diverging run) to 4 significant digits."""
    return f"{loss:.4f}" if abs(loss) < 1e4 else f"{loss:.4g}"


class Trainer:
    """The book's Trainer: trains a network in whole epochs and measures it after each.

    It trains `network` (with `params`, `gradient(x, t)`, `loss(x, t)`,
    `accuracy(x, t)`) on (x_train, t_train), one shuffled epoch at a time.

    `optimizer` is a book name ('SGD', 'Momentum', 'Nesterov', 'AdaGrad', 'RMSprop', 'Adam',
    'AdamW'; any case) built with `optimizer_param`, or an optimizer object. With a
    validation set (`x_val`, `t_val`) each epoch is measured on it (loss and accuracy),
    early stopping (`patience`: epochs without a lower validation loss) and the best epoch
    (`best_params`) follow it, and the test set is used once, at the end; without one, each
    epoch is measured on the test set, as the book does. `lr_schedule(epoch) -> lr` (epoch
    counted from 0; see portablelayers.schedules) sets the optimizer's `lr` at the start of
    each epoch. `evaluate_sample_num_per_epoch` limits the per-epoch measures to the first
    samples (the final test always uses the whole test set). `seed` fixes the shuffling.
    `verbose` prints per-epoch lines (loss, accuracies to 4 digits, samples/s); `progress`
    (None: when `verbose` and stderr is a terminal) shows a tqdm bar; `file` takes the lines
    instead of stdout. The per-epoch losses and accuracies are computed in batches of
    `evaluate_batch_size` (default: `mini_batch_size`; an eager network's accuracy() only
    where it accepts a batch size). Results are in `history`; `training_state()` /
    `load_training_state()` carry a run across processes (with the network's and optimizer's
    arrays: see portablelayers.models.save_checkpoint), and a resumed run ends with the
    weights of an uninterrupted one. With `client` (a `dask.distributed.Client`, "local:N"
    or a scheduler address) and the data as Dask arrays chunked along the samples, each step
    is data-parallel on the cluster's workers (portablelayers.distributed.DistributedStep).

    Parameters
    ----------
    network : Sequential
        A network with `params`, `gradient(x, t)`, `loss(x, t)` and `accuracy(x, t)`.
    x_train, t_train : array
        Training images and labels (class indices or one-hot), one library.
    x_test, t_test : array
        Test images and labels.
    epochs : int, default 20
        Passes over the training set.
    mini_batch_size : int, default 100
        Samples per step (the last batch of an epoch may be smaller).
    optimizer : str or optimizer, default 'SGD'
        A book name (any case) or an object with ``update(params, grads)``.
    optimizer_param : dict, optional
        Keyword arguments of a named optimizer; ``{"lr": 0.01}`` when None (the book's).
    evaluate_sample_num_per_epoch : int, optional
        Measure each epoch on the first samples only.
    verbose : bool, default True
        Print one line per epoch.
    seed : int, optional
        Seed of the shuffling.
    progress : bool, optional
        Show a tqdm bar (None: when `verbose` and stderr is a terminal).
    file : file-like, optional
        Where the lines go instead of stdout.
    evaluate_batch_size : int, optional
        Batch size of the per-epoch loss and accuracy measures (default:
        `mini_batch_size`).
    compile : {'auto', True, False}, default 'auto'
        Compile each step (see `compile_step`).
    x_val, t_val : array, optional
        A validation set, given together.
    lr_schedule : callable, optional
        ``lr_schedule(epoch) -> lr``, applied at the start of each epoch.
    patience : int, optional
        Stop after this many epochs without a lower validation loss (needs `x_val`).
    precision : {'highest', 'default'}, default 'highest'
        Full float32 products, or the library's default (TF32 on NVIDIA GPUs).
    client : dask.distributed.Client or str, optional
        Train data-parallel on this cluster ("local:N" or an address also work).
    compiler_options : dict, optional
        XLA options for a JAX step's programs (see `compile_step`).

    Raises
    ------
    TypeError
        For a network without the methods above, or an `lr_schedule` that is not callable.
    ValueError
        For data of different lengths or libraries, labels out of range, non-finite data,
        a bad size, an unknown optimizer name, `compile=True` where no compiler applies,
        `compiler_options` for a step that is not JAX's, `patience` without a validation
        set, or only one of `x_val` and `t_val`.

    Examples
    --------
    >>> from portablelayers.datasets import load_digits
    >>> from portablelayers.nets import TwoLayerNet
    >>> from portablelayers.train import Trainer
    >>> (x_train, t_train), (x_test, t_test) = load_digits()
    >>> trainer = Trainer(TwoLayerNet(64, 50, 10, seed=0), x_train, t_train, x_test, t_test,
    ...                   epochs=2, optimizer="Adam", seed=0, verbose=False)
    >>> final_accuracy = trainer.train()
    >>> len(trainer.test_acc_list), final_accuracy > 0.7
    (2, True)
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20,
                 mini_batch_size=100, optimizer="SGD", optimizer_param=None,
                 evaluate_sample_num_per_epoch=None, verbose=True, *, seed=None,
                 progress=None, file=None, evaluate_batch_size=None, compile="auto",
                 x_val=None, t_val=None, lr_schedule=None, patience=None,
                 precision="highest", client=None, compiler_options=None):
        # Every check comes before any state is set.
        for method in ("gradient", "accuracy"):
            if not callable(getattr(network, method, None)):
                raise TypeError(f"network must have a {method}() method, got "
                                f"{type(network).__name__}")
        if not hasattr(network, "params"):
            raise TypeError(f"network must have params, got {type(network).__name__}")
        if (x_val is None) != (t_val is None):
            raise ValueError("give both x_val and t_val, or neither")
        has_val = x_val is not None
        namespace(x_train, t_train, x_test, t_test, *((x_val, t_val) if has_val else ()))
        train_size = self._check_pair("train", x_train, t_train)
        test_size = self._check_pair("test", x_test, t_test)
        val_size = self._check_pair("val", x_val, t_val) if has_val else 0
        epochs = _positive_int("epochs", epochs)
        mini_batch_size = _positive_int("mini_batch_size", mini_batch_size)
        evaluate_sample_num_per_epoch = _positive_int(
            "evaluate_sample_num_per_epoch", evaluate_sample_num_per_epoch, allow_none=True)
        # Accuracy is measured in batches of the training batch size by default: the same
        # array shapes as training (JAX compiles each new shape once).
        evaluate_batch_size = _positive_int("evaluate_batch_size", evaluate_batch_size,
                                            allow_none=True) or mini_batch_size
        patience = _positive_int("patience", patience, allow_none=True)
        if patience is not None and not has_val:
            raise ValueError("patience (early stopping) needs a validation set: x_val, t_val")
        if lr_schedule is not None and not callable(lr_schedule):
            raise TypeError(f"lr_schedule must be callable(epoch) -> lr, got "
                            f"{type(lr_schedule).__name__}")
        if optimizer_param is None:
            optimizer_param = {"lr": 0.01}  # the book's default
        optimizer = make_optimizer(optimizer, optimizer_param)
        compiled_kind(x_train, compile)  # ValueError for compile=True where none applies
        compiler_options = guards.compiler_options("Trainer", compiler_options)
        if client is not None:  # data-parallel on a dask.distributed cluster
            from .distributed import DistributedStep

            if compiler_options:
                raise ValueError("compiler_options are XLA's, for a JAX step; a "
                                 "data-parallel step runs eagerly on the workers")

            step = DistributedStep(network, optimizer, client, x_train, t_train)
        else:
            # Eager steps refuse a non-finite loss before its update (they read each loss
            # anyway); compiled ones read nothing, and their losses are checked when read.
            step = compile_step(network, optimizer, compile, like=x_train, check=False,
                                precision=precision, check_finite=True,
                                compiler_options=compiler_options)
        # Labels out of range, or NaN or inf in the inputs (which would train the
        # parameters into NaN), are found here, in one read: no step reads data again.
        sets = {"train": (x_train, t_train), "test": (x_test, t_test)}
        if has_val:
            sets["val"] = (x_val, t_val)
        step.check_data(sets, labels=callable(getattr(network, "predict", None)))
        step.hold_sets(sets)  # evaluated every epoch: one program for all (JAX)
        self._sets = sets

        self.network = network
        self.verbose = verbose
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.x_val, self.t_val = x_val, t_val
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.evaluate_batch_size = evaluate_batch_size
        self.optimizer = optimizer
        self.lr_schedule, self.patience = lr_schedule, patience
        self.train_size, self._test_size, self._val_size = train_size, test_size, val_size
        self.iter_per_epoch = math.ceil(train_size / mini_batch_size)
        self.max_iter = epochs * self.iter_per_epoch
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []  # per epoch, without a validation set (the book's)
        self.test_loss_list = []
        self.val_acc_list, self.val_loss_list = [], []
        self.epoch_loss_list = []  # mean training loss of each epoch's steps
        self.lr_list = []  # the learning rate of each epoch
        self.epoch_time_list = []  # seconds since training began, at the end of each epoch
        self.final_test_acc = self.final_test_loss = None
        self.best_epoch, self.best_val_loss = None, math.inf
        self.best_params = None  # host copies of params and state at the best epoch
        self.stopped_early = False
        self.diverged = False
        self.progress, self.file = progress, file
        self._compile, self._compiler_options = compile, compiler_options
        self._rng = np.random.default_rng(seed)
        self._rng_epoch = self._rng.bit_generator.state  # before this epoch's shuffle
        self._order = None  # this epoch's sample order, on the data's device
        self._start = None
        self._elapsed_before = 0.0  # seconds trained in earlier processes (resumed runs)
        self._epoch_start = None
        self._bar = None
        self._samples_seen = 0
        self._stop_requested = False
        self.step = step
        self._pending = []  # (step number, loss array) not yet read back (compiled runs)

    @staticmethod
    def _check_pair(kind, x, t):
        n, m = static_shape(x)[:1], static_shape(t)[:1]
        if not n or n[0] is None or n != m:
            raise ValueError(f"x_{kind} and t_{kind} must hold the same known number of "
                             f"samples, got shapes {static_shape(x)} and {static_shape(t)}")
        if n[0] == 0:
            raise ValueError(f"x_{kind} has no samples")
        return n[0]

    # --- the book's interface ------------------------------------------------------------

    def train_step(self):
        """One mini-batch: gradient, update, log; ends the epoch after its last batch."""
        xp = namespace(self.x_train)
        step_in_epoch = self.current_iter % self.iter_per_epoch
        if step_in_epoch == 0 or self._order is None:
            # A new epoch (or one resumed midway): its order of all samples, from the
            # generator as it was when the epoch began.
            if step_in_epoch == 0:
                self._rng_epoch = self._rng.bit_generator.state
                self._begin_epoch()
            else:
                self._rng.bit_generator.state = self._rng_epoch
            order = self._rng.permutation(self.train_size)
            self._order = from_host(xp, order, device(self.x_train))
        if self._start is None:
            self._start = time.perf_counter()
        if self._epoch_start is None:
            self._epoch_start = (time.perf_counter(), step_in_epoch)
        start = step_in_epoch * self.batch_size
        stop = min(start + self.batch_size, self.train_size)
        try:
            loss = self.step.train_on(self.x_train, self.t_train, self._order, start, stop)
        except NonFiniteLoss as exc:
            raise FloatingPointError(
                f"the training loss became {exc.value} at step {self.current_iter + 1} "
                f"(epoch {self.current_epoch + 1}, batch {step_in_epoch + 1} of "
                f"{self.iter_per_epoch}); the update was not applied, so the parameters "
                "and the network's state are those of the step before. The data were "
                "checked finite when the Trainer was made, so training diverged: try a "
                "smaller learning rate or clip_norm in optimizer_param") from None
        self.current_iter += 1
        self._pending.append((self.current_iter, loss))
        # Eager steps (and any run with a progress bar) read each loss now; a compiled run
        # reads its losses at the end of the epoch, so steps are not held up by host reads.
        last_of_epoch = step_in_epoch == self.iter_per_epoch - 1
        if self.step.kind == "eager" or self._bar is not None or last_of_epoch:
            try:
                self._read_losses()
            except FloatingPointError:
                if last_of_epoch:  # the epoch's steps are done: so is its record
                    self._end_epoch()
                raise
        if self._bar is not None:
            self._bar.set_description(f"epoch {self.current_epoch + 1}/{self.epochs}",
                                      refresh=False)
            seen = self._samples_seen = self._samples_seen + (stop - start)
            rate = seen / max(time.perf_counter() - self._start, 1e-9)
            self._bar.set_postfix_str(f"loss={self.train_loss_list[-1]:.4f}, "
                                      f"{rate:,.0f} samples/s", refresh=False)
            self._bar.update(1)

        if last_of_epoch:
            self._end_epoch()

    def train(self, *, stop_on_interrupt=False):
        """Runs every epoch (or until early stopping), then returns (and prints) the
        accuracy on the whole test set.

        With `stop_on_interrupt`, Ctrl-C (SIGINT) ends the step in progress and raises
        TrainingInterrupted, with the network and optimizer those of a whole step (so the
        run can be saved and resumed); a second Ctrl-C interrupts at once. Once every step
        is done, a Ctrl-C lets the final measure finish."""
        self._bar = self._progress_bar()
        previous = None
        if stop_on_interrupt and threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            while self.current_iter < self.max_iter and not self.stopped_early:
                if self._stop_requested:
                    self._stop_requested = False
                    if self._pending:
                        self._read_losses()
                    raise TrainingInterrupted(self.current_epoch, self.current_iter,
                                              self.max_iter)
                self.train_step()
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if self.stopped_early and self.best_params is not None:
                self.restore_best()
            # Still under the stop handler: a Ctrl-C now, with every step done, lets the
            # measure finish (a second one interrupts it).
            self.final_test_loss, self.final_test_acc = self._evaluate(
                self.x_test, self.t_test, self._test_size)
        finally:
            self._stop_requested = False  # a request after the last step has nothing left
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        self._print(f"test loss {_fmt(self.final_test_loss)}, test acc "
                    f"{self.final_test_acc:.4f}")
        return self.final_test_acc

    def request_stop(self):
        """Make train() stop after the step in progress (raising TrainingInterrupted)."""
        self._stop_requested = True

    def _on_sigint(self, signum, frame):
        if self._stop_requested:  # the second Ctrl-C: now
            raise KeyboardInterrupt
        self._stop_requested = True

    def restore_best(self):
        """The network's parameters and state back to those of the best epoch."""
        from .checkpoint import load_params_from_arrays

        params = self.network.params
        if hasattr(params, "rebind"):  # Sequential: checked, cast, all or nothing
            load_params_from_arrays(self.network, self.best_params)
            return
        for name, value in self.best_params.items():  # a network of plain dicts
            like = params[name]  # a copy: training on must not rewrite the best weights
            params[name] = namespace(like).asarray(value, dtype=like.dtype,
                                                   device=device(like), copy=True)

    # --- carrying a run across processes --------------------------------------------------

    def training_state(self):
        """What the loop needs to go on exactly (JSON-able): position, shuffling
        generator, history, best epoch. The network's and the optimizer's arrays, and
        `training_arrays()`, are saved beside it (portablelayers.models.save_checkpoint)."""
        if self._pending:
            self._read_losses()
        elapsed = self._elapsed_before + (
            time.perf_counter() - self._start if self._start is not None else 0.0)
        return {
            "iter": self.current_iter, "epoch": self.current_epoch, "epochs": self.epochs,
            "batch_size": self.batch_size, "train_size": self.train_size,
            "iter_per_epoch": self.iter_per_epoch,
            "rng_epoch": self._rng_epoch, "rng": self._rng.bit_generator.state,
            "history": {key: _json_floats(values) if isinstance(values, list) else values
                        for key, values in self.history.items()},
            "best_epoch": self.best_epoch,
            "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
            "stopped_early": self.stopped_early, "diverged": self.diverged,
            "elapsed": elapsed,
        }

    def training_arrays(self):
        """The arrays the loop needs to go on besides the network's and the optimizer's:
        the best epoch's weights (`best_params`) as "best/<name>" -> NumPy array; {} before
        there is a best epoch."""
        if self.best_params is None:
            return {}
        return {f"{_BEST}{name}": value for name, value in self.best_params.items()}

    def load_training_state(self, state, arrays=None):
        """Go on from `training_state()`'s dict, and `training_arrays()`'s arrays (without
        them, a run that stops early after resuming cannot go back to a best epoch from
        before): the next step is the one after the saved one. The training set and batch
        size must be those of the saved run.

        Raises ValueError, before anything changes, for a state or best-epoch arrays that
        do not fit this Trainer (a missing key, a value of the wrong type, a history of
        other lengths, a generator state NumPy refuses, weights of other names or shapes).
        """
        from .checkpoint import check_network_arrays

        _check_training_state(self, state)
        best = {name[len(_BEST):]: value for name, value in (arrays or {}).items()
                if name.startswith(_BEST)}
        if best:  # put back only when the run stops early, maybe hours later: check now
            check_network_arrays(self.network, best, "the saved best-epoch weights")
        self.best_params = best or None
        self.current_iter, self.current_epoch = state["iter"], state["epoch"]
        self._rng_epoch = state["rng_epoch"]
        self._rng.bit_generator.state = state["rng"]
        self._order = None  # a run resumed mid-epoch shuffles from _rng_epoch again
        history = {key: _floats(values) if isinstance(values, list) else values
                   for key, values in state["history"].items()}
        self.train_loss_list = list(history["train_loss"])
        self.epoch_loss_list = list(history["epoch_train_loss"])
        self.train_acc_list = list(history["train_acc"])
        self.test_acc_list = list(history["test_acc"])
        self.test_loss_list = list(history["test_loss"])
        self.val_acc_list = list(history["val_acc"])
        self.val_loss_list = list(history["val_loss"])
        self.lr_list = list(history["lr"])
        self.epoch_time_list = list(history["epoch_time"])
        self.best_epoch = state["best_epoch"]
        self.best_val_loss = (math.inf if state["best_val_loss"] is None
                              else state["best_val_loss"])
        if self.best_epoch is not None and self.best_params is None:
            # An older run file, or no arrays given: that epoch's weights cannot be put back,
            # so an early stop would keep the last ones while saying otherwise.
            warnings.warn(f"the saved run's best epoch ({self.best_epoch}) came without its "
                          "weights (training_arrays()); the best epoch is tracked anew "
                          "from here", RuntimeWarning, stacklevel=2)
            self.best_epoch, self.best_val_loss = None, math.inf
        self.stopped_early, self.diverged = state["stopped_early"], state["diverged"]
        self._elapsed_before = state["elapsed"]
        if self.lr_schedule is not None and self.current_iter % self.iter_per_epoch:
            self._set_lr(self.lr_schedule(self.current_epoch))  # as it was this epoch

    # --- results -------------------------------------------------------------------------

    @property
    def history(self):
        """What training recorded: the loss per step; per epoch the learning rate, the
        mean training loss, the accuracies (and losses) on the training, validation or
        test set, and the elapsed seconds; the final test loss and accuracy."""
        return {
            "train_loss": list(self.train_loss_list),
            "epoch_train_loss": list(self.epoch_loss_list),
            "train_acc": list(self.train_acc_list),
            "val_loss": list(self.val_loss_list),
            "val_acc": list(self.val_acc_list),
            "test_loss": list(self.test_loss_list),
            "test_acc": list(self.test_acc_list),
            "lr": list(self.lr_list),
            "epoch_time": list(self.epoch_time_list),
            "best_epoch": self.best_epoch,
            "final_test_loss": self.final_test_loss,
            "final_test_acc": self.final_test_acc,
        }

    def epoch_rows(self):
        """The per-epoch history as rows (dicts) with the same keys: for CSV."""
        columns = {"epoch": list(range(1, len(self.epoch_loss_list) + 1)),
                   "lr": self.lr_list, "train_loss": self.epoch_loss_list,
                   "train_acc": self.train_acc_list, "val_loss": self.val_loss_list,
                   "val_acc": self.val_acc_list, "test_loss": self.test_loss_list,
                   "test_acc": self.test_acc_list, "seconds": self.epoch_time_list}
        columns = {k: v for k, v in columns.items() if v}
        return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(),
                                                                           strict=True)]

    def plot(self, path, title=None):
        """Writes a PNG of the losses (per step; per epoch on the validation or test set)
        and the accuracies per epoch to `path`, under `title`."""
        if not self.train_loss_list:
            raise RuntimeError("nothing to plot: call train() first")
        try:
            from matplotlib.figure import Figure  # a bare Figure draws with Agg, no GUI
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            raise ImportError("plot() needs matplotlib: pip install "
                              "'portablelayers[train]'") from None
        fig = Figure(figsize=(10, 4), layout="constrained")
        if title:
            fig.suptitle(title)
        ax_loss, ax_acc = fig.subplots(1, 2)
        if self.val_acc_list:
            held, held_name = (self.val_loss_list, self.val_acc_list), "validation"
        else:
            held, held_name = (self.test_loss_list, self.test_acc_list), "test"
        steps = np.arange(1, len(self.train_loss_list) + 1) / self.iter_per_epoch
        ax_loss.plot(steps, self.train_loss_list, lw=0.6, alpha=0.6,
                     label="training (per step)")
        epochs = np.arange(1, len(self.train_acc_list) + 1)
        if self.epoch_loss_list:
            ax_loss.plot(epochs, self.epoch_loss_list, "o-", label="training (epoch mean)")
        if held[0]:
            ax_loss.plot(epochs, held[0], "s--", label=held_name)
        ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
        ax_loss.legend(loc="upper right")
        ax_acc.plot(epochs, self.train_acc_list, "o-", label="training")
        ax_acc.plot(epochs, held[1], "s--", label=held_name)
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy per epoch")
        ax_acc.legend(loc="lower right")
        for ax in (ax_loss, ax_acc):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        fig.savefig(path, format="png", dpi=100)
        return path

    # --- helpers -------------------------------------------------------------------------

    def _read_losses(self):
        """The pending losses to the host, into the log; FloatingPointError at the first
        that is not finite."""
        values = read_scalars([loss for _, loss in self._pending])
        steps = [step for step, _ in self._pending]
        self._pending = []
        # Every loss logged first (one per step taken), even past a non-finite one.
        self.train_loss_list.extend(values)
        for step, loss in zip(steps, values, strict=True):
            if not math.isfinite(loss):
                epoch, batch = divmod(step - 1, self.iter_per_epoch)
                raise FloatingPointError(
                    f"the training loss became {loss} at step {step} (epoch {epoch + 1}, "
                    f"batch {batch + 1} of {self.iter_per_epoch}). The data were checked "
                    "finite when the Trainer was made, so training diverged: try a smaller "
                    "learning rate or clip_norm in optimizer_param, and check the network's "
                    "initial weights. That step's update has been applied, so the "
                    "parameters may hold NaN or inf now: reload them from a checkpoint "
                    "before training on")

    def _set_lr(self, lr):
        lr = float(lr)
        if not (math.isfinite(lr) and lr >= 0.0):
            raise ValueError(f"lr_schedule gave {lr!r} for epoch {self.current_epoch + 1}")
        if lr == self.optimizer.lr:
            return
        self.optimizer.lr = lr
        if self.step.kind not in ("eager", "dask.distributed") and "lr" not in getattr(
                self.optimizer, "state", {}):
            # The package's optimizers keep lr as an array a compiled step reads; another
            # optimizer's Python lr is a constant there: compile the step anew.
            self.step = compile_step(self.network, self.optimizer, self._compile,
                                     like=self.x_train, check=False, check_finite=True,
                                     compiler_options=self._compiler_options)
            self.step.hold_sets(self._sets)

    def _begin_epoch(self):
        if self.lr_schedule is not None:
            self._set_lr(self.lr_schedule(self.current_epoch))
        self._epoch_start = None

    def _end_epoch(self):
        self.current_epoch += 1
        n = self.iter_per_epoch
        epoch_losses = self.train_loss_list[-n:]
        self.epoch_loss_list.append(sum(epoch_losses) / len(epoch_losses))
        now = time.perf_counter()  # the epoch's throughput: its steps, not the measures
        began, first_step = self._epoch_start or (now, 0)
        rate = min(self.train_size, (n - first_step) * self.batch_size) / max(now - began,
                                                                               1e-9)
        self._epoch_start = None
        self.lr_list.append(float(getattr(self.optimizer, "lr", math.nan)))
        x_train, t_train = self.x_train, self.t_train
        k = self.evaluate_sample_num_per_epoch
        if k is not None:
            # Slice stops must lie within the axis (the standard leaves others unspecified).
            x_train, t_train = x_train[:min(k, self.train_size), ...], t_train[
                :min(k, self.train_size), ...]
        train_acc = self._accuracy(x_train, t_train)
        self.train_acc_list.append(train_acc)
        if self.x_val is not None:
            name, (x, t, size) = "val", (self.x_val, self.t_val, self._val_size)
        else:
            name, (x, t, size) = "test", (self.x_test, self.t_test, self._test_size)
        if k is not None:
            x, t, size = x[:min(k, size), ...], t[:min(k, size), ...], min(k, size)
        held_loss, held_acc = self._evaluate(x, t, size)
        getattr(self, f"{name}_loss_list").append(held_loss)
        getattr(self, f"{name}_acc_list").append(held_acc)
        self.epoch_time_list.append(self._elapsed_before + time.perf_counter() - self._start)
        self._print(f"epoch {self.current_epoch}/{self.epochs}: train loss "
                    f"{_fmt(self.epoch_loss_list[-1])} acc {train_acc:.4f}, {name} loss "
                    f"{_fmt(held_loss)} acc {held_acc:.4f}, {rate:,.0f} samples/s")
        self._check_divergence()
        if self.x_val is not None:
            self._track_best(held_loss)

    def _check_divergence(self):
        first = self.train_loss_list[0]
        last = self.epoch_loss_list[-1]
        if self.diverged or not last > DIVERGENCE_FACTOR * max(first, 1e-12):
            return
        self.diverged = True
        lr = getattr(self.optimizer, "lr", None)
        warnings.warn(
            f"the training loss is diverging: epoch {self.current_epoch}'s mean loss "
            f"{last:.4g} is over {DIVERGENCE_FACTOR:g} times the first step's {first:.4g}"
            + (f"; try a learning rate below {lr:g}" if lr else ""),
            RuntimeWarning, stacklevel=4)

    def _track_best(self, val_loss):
        from .checkpoint import network_arrays

        if val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = val_loss, self.current_epoch
            self.best_params = network_arrays(self.network)
        elif self.patience is not None and (
                self.current_epoch - self.best_epoch >= self.patience):
            self.stopped_early = True
            self._print(f"early stop: no lower validation loss for {self.patience} epochs; "
                        f"keeping epoch {self.best_epoch}'s weights")

    def _evaluate(self, x, t, size):
        """(mean loss, accuracy) of the network on (x, t), in inference mode."""
        return self._mean_loss(x, t, size), self._accuracy(x, t)

    def _mean_loss(self, x, t, size):
        if hasattr(self.step, "mean_loss"):  # computed where the data are (DistributedStep)
            return self.step.mean_loss(x, t, self.evaluate_batch_size)
        loss = self.network.loss
        flag = takes_argument(loss, "train_flg")
        total, b = 0.0, self.evaluate_batch_size
        for start in range(0, size, b):
            stop = min(start + b, size)
            xb, tb = x[start:stop, ...], t[start:stop, ...]
            value = loss(xb, tb, train_flg=False) if flag else loss(xb, tb)
            total += float(value) * (stop - start)
        return total / size

    def _accuracy(self, x, t):
        return self.step.accuracy(x, t, self.evaluate_batch_size)

    def _print(self, line):
        if not self.verbose:
            return
        if self._bar is not None:
            self._bar.write(line, file=self.file or sys.stdout)
        else:
            print(line, file=self.file or sys.stdout)

    def _progress_bar(self):
        """A tqdm bar when asked for, or by default when stderr is a terminal."""
        show = self.progress
        if show is None:
            show = self.verbose and sys.stderr.isatty()
        if not show:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None  # plain per-epoch lines instead
        # A terminal that reports no size (some ptys) gets 100 columns, not an empty bar.
        size = shutil.get_terminal_size((100, 20))
        return tqdm(total=self.max_iter, initial=self.current_iter, unit="step",
                    file=sys.stderr, ncols=size.columns, nrows=size.lines)
