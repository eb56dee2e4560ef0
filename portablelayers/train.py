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
(`compile="auto"`), eager elsewhere; labels are checked once, on the whole data sets, when
the Trainer is made. A compiled run reads its losses back once per epoch, not per step.
tqdm (progress bar) and matplotlib (`plot`) are optional: `pip install 'portablelayers[train]'`.
"""

from __future__ import annotations

import math
import numbers
import shutil
import sys
import time

import numpy as np  # the host generator that shuffles sample indices; never touches data

from . import guards
from ._backend import device, namespace, static_shape
from .checkpoint import to_host
from .compiled import compile_step, compiled_kind

__all__ = ["OPTIMIZERS", "Trainer", "compile_step"]

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


class Trainer:
    """Trains `network` (with `params`, `gradient(x, t)`, `loss(x, t)`, `accuracy(x, t)`) on
    (x_train, t_train) and measures it on (x_test, t_test) after every epoch.

    `optimizer` is a book name ('SGD', 'Momentum', 'Nesterov', 'AdaGrad', 'RMSprop',
    'Adam', 'AdamW'; any case) built with `optimizer_param`, or an optimizer object.
    `evaluate_sample_num_per_epoch` limits the per-epoch accuracies to the first samples
    (the final test accuracy always uses the whole test set). `seed` fixes the shuffling.
    `verbose` prints per-epoch lines; `progress` (None: only when stderr is a terminal)
    shows a tqdm bar with epoch, step, loss and throughput; `file` takes the lines instead
    of stdout. Accuracy is computed in batches of `evaluate_batch_size` (default:
    `mini_batch_size`) when the network's accuracy() accepts a batch size. Results are in
    `history`.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20,
                 mini_batch_size=100, optimizer="SGD", optimizer_param=None,
                 evaluate_sample_num_per_epoch=None, verbose=True, *, seed=None,
                 progress=None, file=None, evaluate_batch_size=None, compile="auto"):
        # Every check comes before any state is set.
        for method in ("gradient", "accuracy"):
            if not callable(getattr(network, method, None)):
                raise TypeError(f"network must have a {method}() method, got "
                                f"{type(network).__name__}")
        if not hasattr(network, "params"):
            raise TypeError(f"network must have params, got {type(network).__name__}")
        namespace(x_train, t_train, x_test, t_test)  # TypeError on mixed libraries
        train_size = self._check_pair("train", x_train, t_train)
        test_size = self._check_pair("test", x_test, t_test)
        epochs = _positive_int("epochs", epochs)
        mini_batch_size = _positive_int("mini_batch_size", mini_batch_size)
        evaluate_sample_num_per_epoch = _positive_int(
            "evaluate_sample_num_per_epoch", evaluate_sample_num_per_epoch, allow_none=True)
        # Accuracy is measured in batches of the training batch size by default: the same
        # array shapes as training (JAX compiles each new shape once).
        evaluate_batch_size = _positive_int("evaluate_batch_size", evaluate_batch_size,
                                            allow_none=True) or mini_batch_size
        if optimizer_param is None:
            optimizer_param = {"lr": 0.01}  # the book's default
        optimizer = make_optimizer(optimizer, optimizer_param)
        compiled_kind(x_train, compile)  # ValueError for compile=True where none applies
        step = compile_step(network, optimizer, compile, like=x_train, check=False)
        if callable(getattr(network, "predict", None)):
            # Labels are read here, once: no step reads them again (a host sync each).
            step.check_labels(x_train, t_train)
            step.check_labels(x_test, t_test)
        # NaN or inf in the data would train the parameters into NaN: one read, here.
        guards.finite_data(namespace(x_train), x_train=x_train, x_test=x_test)

        self.network = network
        self.verbose = verbose
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.evaluate_batch_size = evaluate_batch_size
        self.optimizer = optimizer
        self.train_size, self._test_size = train_size, test_size
        self.iter_per_epoch = math.ceil(train_size / mini_batch_size)
        self.max_iter = epochs * self.iter_per_epoch
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []
        self.epoch_time_list = []  # seconds since training began, at the end of each epoch
        self.final_test_acc = None
        self.progress, self.file = progress, file
        self._rng = np.random.default_rng(seed)
        self._order = None  # this epoch's sample order, on the data's device
        self._start = None
        self._bar = None
        self._samples_seen = 0
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
        if step_in_epoch == 0:  # a new epoch: a new order of all samples, cut into batches
            order = self._rng.permutation(self.train_size)
            self._order = xp.asarray(order, device=device(self.x_train))
        if self._start is None:
            self._start = time.perf_counter()
        start = step_in_epoch * self.batch_size
        stop = min(start + self.batch_size, self.train_size)
        x_batch, t_batch = self.step.batch(self.x_train, self.t_train, self._order, start, stop)

        loss = self.step(x_batch, t_batch)
        self.current_iter += 1
        self._pending.append((self.current_iter, loss))
        # Eager steps (and any run with a progress bar) read each loss now; a compiled run
        # reads its losses at the end of the epoch, so steps are not held up by host reads.
        if self.step.kind == "eager" or self._bar is not None or (
                step_in_epoch == self.iter_per_epoch - 1):
            self._read_losses()
        if self._bar is not None:
            self._bar.set_description(f"epoch {self.current_epoch + 1}/{self.epochs}",
                                      refresh=False)
            seen = self._samples_seen = self._samples_seen + (stop - start)
            rate = seen / max(time.perf_counter() - self._start, 1e-9)
            self._bar.set_postfix_str(f"loss={self.train_loss_list[-1]:.4f}, "
                                      f"{rate:,.0f} samples/s", refresh=False)
            self._bar.update(1)

        if step_in_epoch == self.iter_per_epoch - 1:
            self._end_epoch()

    def train(self):
        """Runs every epoch, then returns (and prints) the accuracy on the whole test set."""
        self._bar = self._progress_bar()
        try:
            while self.current_iter < self.max_iter:
                self.train_step()
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        self.final_test_acc = self._accuracy(self.x_test, self.t_test)
        self._print("=============== Final Test Accuracy ===============")
        self._print(f"test acc:{self.final_test_acc}")
        return self.final_test_acc

    # --- results -------------------------------------------------------------------------

    @property
    def history(self):
        """What training recorded: the loss per step, the accuracies and the elapsed
        seconds per epoch, and the final test accuracy."""
        return {
            "train_loss": list(self.train_loss_list),
            "train_acc": list(self.train_acc_list),
            "test_acc": list(self.test_acc_list),
            "epoch_time": list(self.epoch_time_list),
            "final_test_acc": self.final_test_acc,
        }

    def plot(self, path):
        """Writes a PNG of the loss per step and the accuracies per epoch to `path`."""
        if not self.train_loss_list:
            raise RuntimeError("nothing to plot: call train() first")
        try:
            from matplotlib.figure import Figure  # a bare Figure draws with Agg, no GUI
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            raise ImportError("plot() needs matplotlib: pip install "
                              "'portablelayers[train]'") from None
        fig = Figure(figsize=(10, 4), layout="constrained")
        ax_loss, ax_acc = fig.subplots(1, 2)
        steps = np.arange(1, len(self.train_loss_list) + 1)
        ax_loss.plot(steps, self.train_loss_list, lw=0.8)
        ax_loss.set(xlabel="step", ylabel="training loss", title="loss per mini-batch")
        epochs = np.arange(1, len(self.train_acc_list) + 1)
        ax_acc.plot(epochs, self.train_acc_list, "o-", label="train")
        ax_acc.plot(epochs, self.test_acc_list, "s--", label="test")
        ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy per epoch")
        ax_acc.legend(loc="lower right")
        ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
        fig.savefig(path, format="png", dpi=100)
        return path

    # --- helpers -------------------------------------------------------------------------

    def _read_losses(self):
        """The pending losses to the host, into the log; FloatingPointError at the first
        that is not finite."""
        xp = namespace(self._pending[0][1])
        # One read for all of them (each float() of a device array would be a sync).
        values = to_host(xp.stack([loss for _, loss in self._pending])).tolist()
        steps = [step for step, _ in self._pending]
        self._pending = []
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
            self.train_loss_list.append(loss)

    def _end_epoch(self):
        self.current_epoch += 1
        x_train, t_train = self.x_train, self.t_train
        x_test, t_test = self.x_test, self.t_test
        if self.evaluate_sample_num_per_epoch is not None:
            # Slice stops must lie within the axis (the standard leaves others unspecified).
            k = min(self.evaluate_sample_num_per_epoch, self.train_size)
            x_train, t_train = x_train[:k, ...], t_train[:k, ...]
            k = min(self.evaluate_sample_num_per_epoch, self._test_size)
            x_test, t_test = x_test[:k, ...], t_test[:k, ...]
        train_acc = self._accuracy(x_train, t_train)
        test_acc = self._accuracy(x_test, t_test)
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        self.epoch_time_list.append(time.perf_counter() - self._start)
        self._print(f"=== epoch:{self.current_epoch}, train acc:{train_acc}, "
                    f"test acc:{test_acc} ===")

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

