"""The `portablelayers` command (also `python -m portablelayers`).

    portablelayers demo                     # the chapter-5 shopping examples
    portablelayers train                    # TwoLayerNet on the bundled 8x8 digits
    portablelayers train --net simple-conv --backend torch --epochs 5 --plot curves.png
    portablelayers train --resume run.npz --epochs 30     # go on with a saved run
    portablelayers evaluate run.npz                       # loss, accuracy, confusion matrix
    portablelayers predict run.npz digit.png              # class and probability per file
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import sys
import time
import warnings
import zipfile

from . import backends
from .backends import BACKENDS as BACKEND_MODULES
from .train import OPTIMIZERS

__all__ = ["build_parser", "main"]

NETS = ("two-layer", "multi-layer", "simple-conv", "deep-conv")
DATASETS = ("digits", "mnist")
BACKENDS = tuple(BACKEND_MODULES)  # numpy, cupy, torch, jax, dask, array_api_strict
OPTIMIZER_NAMES = tuple(OPTIMIZERS)  # the Trainer's book names, lower case
# The hidden layer's width when --hidden-size is not given (the book's DeepConvNet uses 50).
DEFAULT_HIDDEN = {"two-layer": 100, "multi-layer": 100, "simple-conv": 100, "deep-conv": 50}
COMPILE_CHOICES = {"auto": "auto", "on": True, "off": False}  # --compile -> Trainer(compile=)
MNIST_HOLDOUT_TRAIN = 8000  # test-set-only MNIST: the first 8,000 train, the rest are held out


class UsageError(Exception):
    """A problem with the command line or the environment: one line, exit code 2."""


class Failure(Exception):
    """Something failed that the command line was right to ask for: one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `PROG: error: MESSAGE` (no usage block), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _DefaultsOnce(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already names its
    default or there is none to name (None, False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False
                or default is argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: {default})"


def _argument(convert, ok, expected, out_of_range=None, show_value=False):
    """An argparse `type`: `convert(text)`, then `ok(value)`; otherwise one line saying
    what was expected (`out_of_range` for a value that parsed) and what came."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            came = value if show_value else repr(text)
            raise argparse.ArgumentTypeError(f"expected {out_of_range or expected}, got {came}")
        return value

    return parse


_non_negative_int = _argument(int, lambda v: v >= 0, "an integer >= 0", show_value=True)
_positive_int = _argument(int, lambda v: v >= 1, "a positive integer", show_value=True)
_positive_float = _argument(float, lambda v: 0.0 < v < math.inf, "a positive number",
                            "a positive finite number")
_fraction = _argument(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
_non_negative_float = _argument(float, lambda v: 0.0 <= v < math.inf, "a number >= 0",
                                "a finite number >= 0")


def _threads(text):
    if text == "auto":
        return "auto"
    return _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="portablelayers",
        description="Neural-network layers with explicit backward passes on any Array API "
                    "backend.",
    )
    parser.add_argument("--version", action="version", version=f"portablelayers {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser(
        "demo",
        help="run the chapter-5 shopping examples (apples; apples and oranges)",
        description="Run the book's chapter-5 examples on MulLayer and AddLayer and print "
                    "their prices and gradients, exactly as the book's plain Python does.",
    )
    _add_train_parser(sub)
    _add_use_parsers(sub)
    return parser


def _add_model_options(p):
    p.add_argument("model", metavar="MODEL",
                   help="a model saved by portablelayers train --save (or save_checkpoint)")
    p.add_argument("--backend", choices=BACKENDS, default="numpy",
                   help="the array library to run the model on")
    p.add_argument("--device", default=None, help="a device of the backend (default: its "
                                                  "default device)")
    p.add_argument("--batch-size", type=_positive_int, default=100,
                   help="images per forward pass")
    p.add_argument("--threads", type=_threads, default="auto", metavar="N",
                   help="threads for NumPy's BLAS, torch and JAX's CPU runtime ('auto' as for "
                        "train)")


def _add_use_parsers(sub):
    evaluate = sub.add_parser(
        "evaluate", help="measure a saved model on a test set: loss, accuracy, confusion "
                         "matrix",
        description="Load MODEL (its architecture is in the file) and print its loss, "
                    "accuracy and confusion matrix on the test images of the data set it "
                    "was trained on, or of --dataset.",
        formatter_class=_DefaultsOnce, allow_abbrev=False)
    _add_model_options(evaluate)
    evaluate.add_argument("--dataset", choices=DATASETS, default=None,
                          help="the test images to use (default: the model's data set)")
    evaluate.add_argument("--data-dir", metavar="DIR", default=None,
                          help="folder of the MNIST IDX files (as for train)")
    predict = sub.add_parser(
        "predict", help="classify image files (PNG, JPEG, ...) or .npy arrays with a saved "
                        "model",
        description="Print the class and its probability for each FILE. Images of any size "
                    "are read as grayscale, made bright-on-dark like the training digits, "
                    "resized to the model's input and scaled to [0, 1] (needs Pillow: pip "
                    "install 'portablelayers[images]'); a .npy array must already be so "
                    "prepared, of the model's input shape.",
        formatter_class=_DefaultsOnce, allow_abbrev=False)
    _add_model_options(predict)
    predict.add_argument("files", nargs="+", metavar="FILE", help="images or .npy arrays")
    predict.add_argument("--top", type=_positive_int, default=1, metavar="K",
                         help="print the K most probable classes per file")


def _add_train_parser(sub):
    train = sub.add_parser(
        "train",
        help="train one of the book's networks on handwritten digits and report its accuracy",
        description="Train one of the book's networks with the book's Trainer and print the "
                    "accuracy on the test images. With no options it trains TwoLayerNet on "
                    "the 8x8 digits bundled with the package (1,797 images: 1,347 train, "
                    "150 validate, 300 test; no network needed) on NumPy in a few seconds. "
                    "Ctrl-C stops after the step in progress and saves the run (to --save, "
                    "else portablelayers-run.npz); --resume FILE goes on with it.",
        formatter_class=_DefaultsOnce, allow_abbrev=False,
    )
    train.add_argument(
        "--net", choices=NETS, default="two-layer",
        help="the network: TwoLayerNet (Affine-ReLU-Affine), MultiLayerNet (two ReLU hidden "
             "layers, He init), SimpleConvNet (conv-relu-pool-affine-relu-affine) or "
             "DeepConvNet (six 3x3 convolutions, dropout)")
    train.add_argument(
        "--dataset", choices=DATASETS, default="digits",
        help="'digits': the bundled 8x8 digits; 'mnist': the 28x28 MNIST files from "
             "--data-dir. When only MNIST's test files are there, its first 8,000 images "
             "train and the last 2,000 are held out for testing")
    train.add_argument(
        "--data-dir", metavar="DIR", default=None,
        help="folder of the MNIST IDX files (default: $PORTABLELAYERS_MNIST, else "
             "~/.cache/portablelayers/mnist)")
    train.add_argument(
        "--download", action="store_true",
        help="fetch the MNIST files missing from the data folder first (needs network)")
    train.add_argument(
        "--backend", choices=BACKENDS, default="numpy",
        help="the array library to train on; each but numpy is installed by the extra of "
             "the same name, e.g. pip install 'portablelayers[torch]'")
    train.add_argument(
        "--device", default=None,
        help="a device of the backend: 'cpu', 'cuda' or 'cuda:1' for torch; 'cpu', 'gpu' "
             "or 'gpu:0' (also 'cuda:0') for jax; '0' or 'cuda:0' for cupy; default: the "
             "backend's default device")
    train.add_argument(
        "--precision", choices=("highest", "default"), default="highest",
        help="float32 matrix products and convolutions: 'highest' computes them in full "
             "float32 on every device; 'default' lets JAX and torch's cuDNN use TF32 on NVIDIA "
             "GPUs (faster, about 1e-3 relative error); CPUs and CuPy are full float32 "
             "either way")
    train.add_argument(
        "--compile", choices=("auto", "on", "off"), default="auto",
        help="compile each training step whole: 'auto' does on JAX (jax.jit) and on torch "
             "CUDA tensors (a CUDA graph) and runs eagerly elsewhere; 'on' fails where no "
             "compiler applies; 'off' always runs eagerly")
    train.add_argument(
        "--compile-cache", metavar="DIR", default=None,
        help="where JAX keeps compiled steps between runs, so a second run skips XLA's "
             "compilation (default: $XDG_CACHE_HOME/portablelayers/jax, else "
             "~/.cache/portablelayers/jax; 'none' keeps nothing)")
    train.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32",
        help="floating dtype of the weights and images")
    train.add_argument("--epochs", type=_positive_int, default=20,
                       help="passes over the training images")
    train.add_argument("--batch-size", type=_positive_int, default=100,
                       help="images per mini-batch (the last batch of an epoch may be smaller)")
    train.add_argument(
        "--optimizer", type=str.lower, choices=OPTIMIZER_NAMES, default="adam",
        help="the update rule (case-insensitive, as the book's Trainer names them)")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="learning rate (default: 0.01, the book Trainer's; 0.001 for "
                            "deep-conv, the book's rate for it)")
    train.add_argument(
        "--hidden-size", type=_positive_int, default=None,
        help="width of the hidden affine layer(s) (default: 100, or 50 for deep-conv as in "
             "the book)")
    train.add_argument("--seed", type=_non_negative_int, default=0,
                       help="seed of the initial weights and of the shuffling")
    train.add_argument("--plot", metavar="FILE", default=None,
                       help="write a PNG of the loss and accuracy curves to FILE (needs "
                            "matplotlib: pip install 'portablelayers[train]')")
    train.add_argument("--save", metavar="FILE", default=None,
                       help="save the run to FILE (.npz): the network with its architecture "
                            "(portablelayers.load_model(FILE), evaluate, predict), the "
                            "optimizer and the training state (--resume FILE)")
    train.add_argument("--resume", metavar="FILE", default=None,
                       help="go on with the run saved in FILE (by --save or Ctrl-C) up to "
                            "--epochs in all, with its options; saves back to FILE unless "
                            "--save names another. --epochs also sets the length of "
                            "--lr-schedule (step's default step size, cosine's end): more "
                            "epochs on resume stretch the schedule over the new total")
    train.add_argument("--val-split", type=_fraction, default=0.1, metavar="FRACTION",
                       help="the fraction of the training images held out for validation: "
                            "epoch reports, --patience and --best use it and the test images "
                            "are used once, at the end (0: no validation, each epoch is "
                            "measured on the test images, as the book does)")
    train.add_argument("--patience", type=_positive_int, default=None, metavar="EPOCHS",
                       help="stop when the validation loss has not improved for EPOCHS "
                            "epochs, and keep the best epoch's weights")
    train.add_argument("--best", metavar="FILE", default=None,
                       help="save the network of the epoch with the lowest validation loss "
                            "to FILE")
    train.add_argument("--lr-schedule", choices=("constant", "step", "cosine"),
                       default="constant",
                       help="learning rate per epoch: constant; step (divided by 10 every "
                            "--lr-step-size epochs); cosine (from --lr at the first epoch "
                            "towards 0 after the last)")
    train.add_argument("--lr-step-size", type=_positive_int, default=None, metavar="EPOCHS",
                       help="epochs between divisions of the step schedule (default: a third "
                            "of --epochs)")
    train.add_argument("--warmup", type=_non_negative_int, default=0, metavar="EPOCHS",
                       help="raise the learning rate linearly over the first EPOCHS epochs")
    train.add_argument("--weight-decay", type=_non_negative_float, default=None,
                       metavar="LAMBDA",
                       help="L2 weight decay: the loss's 0.5*LAMBDA*sum(W**2) for "
                            "multi-layer; the decoupled decay of --optimizer adamw (default: "
                            "none; adamw's 0.01)")
    train.add_argument("--dropout", type=_fraction, default=None, metavar="RATIO",
                       help="dropout after each hidden layer of multi-layer (default: none)")
    train.add_argument("--batchnorm", action="store_true",
                       help="batch normalisation after each hidden affine layer of "
                            "multi-layer")
    train.add_argument("--clip-norm", type=_positive_float, default=None, metavar="NORM",
                       help="clip the gradients' global L2 norm to NORM (default: no "
                            "clipping)")
    train.add_argument("--history", metavar="FILE", default=None,
                       help="write the per-epoch history to FILE: JSON (.json, with the "
                            "per-step losses) or CSV (.csv, one row an epoch)")
    train.add_argument(
        "--threads", type=_threads, default="auto", metavar="N",
        help="threads for NumPy's BLAS, torch and JAX's CPU runtime ('auto': 1 on machines "
             "of up to 4 cores, else half the cores, at most 8; BLAS threads waiting for busy "
             "cores slow the book's small matrices down many times)")
    train.add_argument("--quiet", action="store_true",
                       help="print only the final test accuracy (no per-epoch lines, no "
                            "progress bar)")
    train.add_argument(
        "--scheduler", metavar="local:N|ADDRESS", default=None,
        help="train data-parallel on a Dask cluster (needs the dask extra): 'local:N' "
             "starts a LocalCluster of N worker processes here, an address such as "
             "tcp://HOST:8786 joins a running scheduler; each step's batch is split among "
             "the workers and their gradients summed (--backend numpy or dask)")


# --- train ---------------------------------------------------------------------------------

def _resolve_backend(name):
    from ._backend import resolve_namespace

    try:
        return resolve_namespace(name)
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:  # installed but unusable here (e.g. CuPy without a GPU)
        raise UsageError(f"backend {name!r} is installed but cannot run here: "
                         f"{type(exc).__name__}: {exc}") from None


def _resolve_backend_and_threads(args):
    """(namespace of --backend, threads set) with --threads applied on both sides of the
    backend's first array: before it, because JAX sizes its CPU pool then; after it,
    because torch, imported by then, takes the setting only once it is there. glibc's
    malloc keeps freed memory from the start (`memory.keep_freed_memory`)."""
    from .memory import keep_freed_memory
    from .threads import set_threads

    keep_freed_memory()
    set_threads(args.threads)
    xp = _resolve_backend(args.backend)
    return xp, set_threads(args.threads)


def _resolve_device(backend, name):
    """The device of `backend` called `name` (None: the default device), as
    `backends.parse_device` names devices; a UsageError saying what exists otherwise."""
    from .backends import parse_device

    try:
        return parse_device(backend, name)
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _load_data(args, flatten, split=None):
    """((x_train, t_train), (x_test, t_test)) as NumPy arrays, a description, and MNIST's
    split: "official" (the train files train, the test files test) or "test-holdout" (only
    the test files there: their first images train, the rest test); None for the digits.
    `split` asks for one (evaluate: the model's own, so that it is never scored on images
    it trained on); by default the folder's files decide."""
    from . import datasets

    if args.dataset == "digits":
        return datasets.load_digits(flatten=flatten), "bundled 8x8 digits", None
    directory = datasets.mnist_dir(args.data_dir)
    if split == "official":  # the test files, whole: the model saw none of them
        x, t = datasets.load_mnist_test(flatten=flatten, path=directory)
        return ((x[:0], t[:0]), (x, t)), f"the MNIST test set in {directory}", split
    if split is None:
        try:
            return (datasets.load_mnist(flatten=flatten, path=directory,
                                        download=args.download),
                    f"MNIST from {directory}", "official")
        except FileNotFoundError:
            if datasets.mnist_file(directory, "test_img") is None or args.download:
                raise
    # Train on the test set's first images, test on the rest.
    x, t = datasets.load_mnist_test(flatten=flatten, path=directory)
    n, rest = MNIST_HOLDOUT_TRAIN, x.shape[0] - MNIST_HOLDOUT_TRAIN
    if split is None:
        print(f"note: {directory} holds only MNIST's test set (no train-*.gz files); "
              f"training on its first {n:,} images and testing on the last {rest:,}",
              file=sys.stderr)
    else:
        print(f"note: the model trained on the first {n:,} images of MNIST's test set; "
              f"evaluating on the last {rest:,}", file=sys.stderr)
    return (datasets.holdout_split(x, t, n), f"the MNIST test set in {directory}",
            "test-holdout")


def _architecture(args, input_dim):
    """(class name, constructor arguments) of the network the options ask for."""
    hidden = args.hidden_size or DEFAULT_HIDDEN[args.net]
    size = input_dim[0] * input_dim[1] * input_dim[2]
    if args.net == "two-layer":
        return "TwoLayerNet", {"input_size": size, "hidden_size": hidden, "output_size": 10,
                               "weight_init_std": 0.01}
    if args.net == "multi-layer":
        kwargs = {"input_size": size, "hidden_size_list": [hidden, hidden], "output_size": 10,
                  "activation": "relu", "weight_init_std": "relu"}
        if args.weight_decay and args.optimizer != "adamw":
            kwargs["weight_decay_lambda"] = args.weight_decay
        if args.dropout is None and not args.batchnorm:
            return "MultiLayerNet", kwargs
        return "MultiLayerNetExtend", {**kwargs, "use_batchnorm": args.batchnorm,
                                       "use_dropout": args.dropout is not None,
                                       "dropout_ratio": 0.5 if args.dropout is None
                                       else args.dropout}
    if args.net == "simple-conv":
        small = input_dim[1] < 16  # 8x8 digits: 3x3 filters with padding keep the image
        conv = ({"filter_num": 30, "filter_size": 3, "pad": 1, "stride": 1} if small else
                {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1})
        return "SimpleConvNet", {"input_dim": tuple(input_dim), "conv_param": conv,
                                 "hidden_size": hidden, "output_size": 10,
                                 "weight_init_std": 0.01}
    return "DeepConvNet", {"input_dim": tuple(input_dim), "hidden_size": hidden,
                           "output_size": 10}


def _check_network_options(args):
    """UsageError for an option the chosen network or optimizer does not take."""
    if args.net != "multi-layer":
        for option, value in (("--dropout", args.dropout), ("--batchnorm", args.batchnorm)):
            if value not in (None, False):
                raise UsageError(f"{option} applies to --net multi-layer (the book's "
                                 f"MultiLayerNetExtend), not {args.net}")
        if args.weight_decay and args.optimizer != "adamw":
            raise UsageError(f"--weight-decay applies to --net multi-layer (an L2 term) or to "
                             f"--optimizer adamw (decoupled), not {args.net} with "
                             f"{args.optimizer}")
    if args.patience is not None and not args.val_split:
        raise UsageError("--patience needs a validation set: --val-split above 0")
    if args.best is not None and not args.val_split:
        raise UsageError("--best needs a validation set: --val-split above 0")
    if args.history and not args.history.lower().endswith((".json", ".csv")):
        raise UsageError(f"--history {args.history}: the name must end in .json or .csv")
    if args.lr_schedule != "step" and args.lr_step_size is not None:
        raise UsageError("--lr-step-size applies to --lr-schedule step")


def _optimizer_param(args):
    param = {"lr": args.lr}
    if args.clip_norm is not None:
        param["clip_norm"] = args.clip_norm
    if args.optimizer == "adamw" and args.weight_decay is not None:
        param["weight_decay"] = args.weight_decay
    return param


def _schedule(args):
    from . import schedules

    if args.lr_schedule == "step":
        after = schedules.Step(args.lr, args.lr_step_size or max(1, args.epochs // 3))
    elif args.lr_schedule == "cosine":
        after = schedules.Cosine(args.lr, args.epochs)
    elif args.warmup:
        after = schedules.Constant(args.lr)
    else:
        return None
    return schedules.Warmup(after, args.warmup) if args.warmup else after


def _build_net(args, input_dim, xp, dev, dtype):
    from .models import build

    name, kwargs = _architecture(args, input_dim)
    return build(name, xp=xp, device=dev, dtype=dtype, seed=args.seed, **kwargs)


def _default_cache():
    import os
    from pathlib import Path

    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "portablelayers" / "jax"


def _check_output(option, path):
    """UsageError unless `path` can be written: its folder exists and is writable and it
    is not itself a folder. Run before any training, so a typo costs nothing."""
    import os

    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the folder {folder} is not writable")


def _check_outputs(args):
    named = {}  # each output its own file: --best over the run would lose its state
    for option in ("save", "plot", "best", "history"):
        path = getattr(args, option, None)
        _check_output(f"--{option}", path)
        if path:
            same = named.setdefault(os.path.realpath(path), option)
            if same != option:
                raise UsageError(f"--{same} and --{option} both name {path}: each output "
                                 "needs a file of its own"
                                 + (" (--save defaults to the --resume file)"
                                    if same == "save" and getattr(args, "resume", None)
                                    else ""))
    if getattr(args, "plot", None):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install "
                             "'portablelayers[train]'") from None


# Options a resumed run may change; the others are the saved run's.
RESUME_MAY_CHANGE = {"epochs", "save", "plot", "history", "quiet", "threads", "compile",
                     "compile_cache", "backend", "device", "resume", "patience", "best",
                     "data_dir", "download", "scheduler"}
# Switches of this command, not of the run: a resume takes them from its own command line.
THIS_COMMAND_ONLY = {"quiet", "download"}
DEFAULT_RUN_FILE = "portablelayers-run.npz"  # where Ctrl-C saves a run without --save


def _resumed_args(args, given, defaults):
    """The saved run's options, with the ones a resume may change taken from `args`; an
    option the saved run's version did not have yet is its default (`defaults`)."""
    from .checkpoint import load_meta

    path = args.resume
    if not os.path.isfile(path):
        raise UsageError(f"--resume {path}: no such file")
    try:
        meta = load_meta(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--resume {path}: {exc}") from None
    saved = ((meta.get("extra") or {}).get("options")) if meta else None
    if not saved or not meta.get("training"):
        raise UsageError(f"--resume {path}: not a run saved by portablelayers train --save "
                         "(it holds no training state)")
    saved = {**{dest: value for dest, value in defaults.items() if dest not in saved},
             **saved}
    for dest in sorted(given - RESUME_MAY_CHANGE):
        mine, theirs = getattr(args, dest), saved.get(dest)
        if dest == "hidden_size" and theirs is None:  # the network's default, as it ran
            theirs = DEFAULT_HIDDEN[saved["net"]]
        if mine != theirs:
            option = "--" + dest.replace("_", "-")
            raise UsageError(f"{option} cannot change when resuming (the run in {path} has "
                             f"{theirs!r}); start a new run to change it")
    merged = dict(saved)
    for dest in RESUME_MAY_CHANGE:
        if dest in given or dest in THIS_COMMAND_ONLY:
            merged[dest] = getattr(args, dest)
    if "save" not in given:
        merged["save"] = path
    merged["resume"] = path
    return argparse.Namespace(**merged), meta


def _connect(args):
    """The dask.distributed client of --scheduler (closed when the command ends); one-line
    UsageErrors for a wrong backend or device, a malformed value, an unreachable
    scheduler."""
    import atexit

    if args.backend not in ("numpy", "dask") or args.device is not None:
        raise UsageError(f"--scheduler trains on the workers' NumPy chunks: give --backend "
                         f"numpy or dask and no --device, not --backend {args.backend}"
                         + (f" --device {args.device}" if args.device else ""))
    try:
        from .distributed import connect

        client = connect(args.scheduler)
    except ImportError as exc:
        raise UsageError(f"--scheduler needs dask.distributed: pip install "
                         f"'portablelayers[dask]' ({exc})") from None
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"--scheduler {args.scheduler}: {exc}") from None
    atexit.register(client.close)
    return client


def train_command(args) -> int:
    from . import datasets
    from .models import build_optimizer, load_model, restore_optimizer
    from .train import Trainer, TrainingInterrupted

    meta = None
    if args.resume:
        args, meta = _resumed_args(args, args._given, args._defaults)
    _check_outputs(args)
    if args.lr is None:
        args.lr = 0.001 if args.net == "deep-conv" else 0.01
    _check_network_options(args)
    xp, threads = _resolve_backend_and_threads(args)
    if args.dtype == "float64":
        backends.allow_float64(args.backend)
    dev = _resolve_device(args.backend, args.device)
    client = _connect(args) if args.scheduler else None
    if client is not None:  # the master network on the client's NumPy; data on the workers
        xp, dev = _resolve_backend("numpy"), None
    if args.compile != "off" and (args.compile_cache or "").lower() != "none":
        from .compiled import keep_compiled

        keep_compiled(args.compile_cache or _default_cache())
    flatten = args.net in ("two-layer", "multi-layer")
    try:
        ((x_train, t_train), (x_test, t_test)), source, args._split = _load_data(args,
                                                                                  flatten)
    except FileNotFoundError as exc:
        raise UsageError(f"{exc} (On the command line: --data-dir DIR, --download.)") from None
    except (ConnectionError, datasets.DataFileError) as exc:
        raise UsageError(str(exc)) from None
    val = None
    if args.val_split:
        (x_train, t_train), val = datasets.validation_split(x_train, t_train, args.val_split,
                                                            seed=args.seed)
    dtype = getattr(xp, args.dtype)
    side = int(round((x_train[0].size) ** 0.5))
    input_dim = (1, side, side)
    sets = [(x_train, t_train), (x_test, t_test), *([val] if val else [])]
    moved = (datasets.to_dask([(x.astype(args.dtype), t) for x, t in sets], client)
             if client is not None else
             datasets.to_backend([(x.astype(args.dtype), t) for x, t in sets], xp, dev))
    (x_train, t_train), (x_test, t_test) = moved[:2]
    x_val, t_val = moved[2] if val else (None, None)

    optimizer = args.optimizer
    if meta is not None:
        try:
            network, ckpt = load_model(args.resume, xp=xp, device=dev, dtype=dtype,
                                       with_checkpoint=True)
            described = ckpt.meta.get("optimizer")
            if not isinstance(described, dict):
                raise ValueError("the run holds no optimizer description")
            optimizer = build_optimizer(described)
            restore_optimizer(optimizer, network.params, ckpt.optimizer_arrays)
        except ValueError as exc:
            raise UsageError(f"--resume {args.resume}: {exc}") from None
    else:
        network = _build_net(args, input_dim, xp, dev, dtype)
    try:
        trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs,
                          mini_batch_size=args.batch_size, optimizer=optimizer,
                          optimizer_param=_optimizer_param(args), verbose=not args.quiet,
                          seed=args.seed, compile=COMPILE_CHOICES[args.compile],
                          x_val=x_val, t_val=t_val, lr_schedule=_schedule(args),
                          patience=args.patience, client=client, precision=args.precision)
        if meta is not None:
            try:
                trainer.load_training_state(meta["training"], ckpt.training_arrays)
            except ValueError as exc:
                raise ValueError(f"--resume {args.resume}: {exc}") from None
    except ValueError as exc:
        # The library names its switch as Python does; here it is the command's option.
        message = str(exc).replace("compile=True", "--compile on").replace(
            "compile='auto' or False", "--compile auto or off")
        raise UsageError(message) from None
    if meta is not None and trainer.stopped_early:
        raise UsageError(f"--resume {args.resume}: the run stopped early after epoch "
                         f"{trainer.current_epoch} (--patience: no lower validation loss) "
                         f"and holds epoch {trainer.best_epoch}'s weights; it is finished, "
                         "start a new run to train further")
    if meta is not None and trainer.current_iter >= trainer.max_iter:
        raise UsageError(f"--resume {args.resume}: the run trained all "
                         f"{trainer.current_epoch} epochs; give --epochs above "
                         f"{trainer.current_epoch} to go on")
    say = (lambda *a: None) if args.quiet else print
    counts = (f"{x_train.shape[0]:,} training, {x_val.shape[0]:,} validation and "
              if val else f"{x_train.shape[0]:,} training and ")
    say(("resuming " + args.resume + f" at epoch {trainer.current_epoch}, step "
         f"{trainer.current_iter}: " if meta is not None else "")
        + f"{type(network).__name__} on {source}: {counts}{x_test.shape[0]:,} test images; "
        f"backend {args.backend}" + (f" ({args.device})" if args.device else "")
        + f", {args.dtype}, {args.optimizer} lr {args.lr}"
        + (f" ({args.lr_schedule}" + (f", warmup {args.warmup}" if args.warmup else "") + ")"
           if args.lr_schedule != "constant" or args.warmup else "")
        + f", batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}, "
          f"steps {trainer.step.kind}, {threads} thread{'s' * (threads > 1)}")
    start = time.perf_counter()
    try:
        with _collector_skipping_setup():
            accuracy = trainer.train(stop_on_interrupt=True)
    except FloatingPointError as exc:
        raise Failure(str(exc)) from None
    except TrainingInterrupted as exc:
        path = args.save or DEFAULT_RUN_FILE
        _save(args, network, trainer, input_dim, path)
        _write_extras(args, network, trainer, input_dim)
        where = f"epoch {exc.epoch} complete" if exc.iteration % trainer.iter_per_epoch == 0 \
            else f"in epoch {exc.epoch + 1}"
        print(f"portablelayers train: interrupted after step {exc.iteration} of "
              f"{exc.max_iter} ({where}); saved to {path}; resume with: portablelayers "
              f"train --resume {path}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if trainer.current_iter < trainer.max_iter and not trainer.stopped_early:
            raise
        # Every step was done (a second Ctrl-C stopped the final measure): keep the run.
        path = args.save or DEFAULT_RUN_FILE
        _save(args, network, trainer, input_dim, path)
        print(f"portablelayers train: interrupted in the final test measure, after all "
              f"{trainer.current_iter} steps; saved to {path}", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    failures = []
    if args.save:  # first: a failing plot must not cost the trained weights
        try:
            _save(args, network, trainer, input_dim)
            say(f"saved the run to {args.save} (portablelayers evaluate/predict read it; "
                f"--resume {args.save} goes on)")
        except OSError as exc:
            failures.append(str(exc))
    failures += _write_extras(args, network, trainer, input_dim, say)
    print(f"test accuracy: {accuracy:.4f} ({x_test.shape[0]:,} test images; "
          f"trained in {seconds:.1f} s)")
    if failures:
        raise Failure("; ".join(failures))
    return 0


@contextlib.contextmanager
def _collector_skipping_setup():
    """The objects made so far (the libraries', the data, the network) frozen while the
    body runs: the garbage collector then no longer walks them every few thousand
    allocations. JAX's tracing allocates many objects, and that walking took a tenth of a
    short JAX run. Unfrozen after, so a caller's later garbage is collected as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _write_extras(args, network, trainer, input_dim, say=lambda *a: None):
    """--best, --history and --plot; returns the failures as lines."""
    failures = []
    if args.best and trainer.best_params is not None:
        try:
            _save(args, network, None, input_dim, args.best, arrays=trainer.best_params)
            say(f"saved the best epoch ({trainer.best_epoch}) to {args.best}")
        except OSError as exc:
            failures.append(str(exc))
    if args.history:
        try:
            _write_history(args.history, trainer)
            say(f"wrote the history to {args.history}")
        except OSError as exc:
            failures.append(f"cannot write {args.history}: {exc.strerror or exc}")
    if args.plot and trainer.train_loss_list:  # nothing to draw before the first step
        try:
            trainer.plot(args.plot, title=_title(args, network))
            say(f"wrote the loss and accuracy curves to {args.plot}")
        except OSError as exc:
            failures.append(f"cannot write {args.plot}: {exc.strerror or exc}")
    return failures


def _title(args, network):
    data = "8x8 digits" if args.dataset == "digits" else "MNIST"
    return (f"{type(network).__name__} on {data}, backend {args.backend}, {args.optimizer} "
            f"lr {args.lr}, batch {args.batch_size}, seed {args.seed}")


def _write_history(path, trainer):
    import csv
    import json

    if path.lower().endswith(".csv"):
        rows = trainer.epoch_rows()
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["epoch"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        with open(path, "w") as f:
            json.dump({"epochs": trainer.epoch_rows(), **trainer.history}, f, indent=1)
            f.write("\n")


def _save(args, network, trainer, input_dim, path=None, arrays=None):
    """The run to `path` (default --save): network and architecture, optimizer and
    training state (with a trainer), the options, and how inputs were prepared (for
    evaluate and predict). `arrays` saves those instead of the network's (--best)."""
    from .models import save_checkpoint

    options = {k: v for k, v in vars(args).items()
               if k != "command" and not k.startswith("_")}  # not _given, _defaults
    scale = 16.0 if args.dataset == "digits" else 255.0
    extra = {"options": options, "dataset": args.dataset,
             "split": getattr(args, "_split", None),  # which MNIST images trained
             "input": {"shape": list(input_dim), "flatten": args.net in ("two-layer",
                                                                           "multi-layer"),
                       "pixel_max": scale, "ink": "bright"}}
    save_checkpoint(path or args.save, network, trainer.optimizer if trainer else None,
                    training=trainer.training_state() if trainer else None, extra=extra,
                    network_arrays=arrays,
                    training_arrays=trainer.training_arrays() if trainer else None)


# --- evaluate, predict ----------------------------------------------------------------------

def _open_model(args):
    """(network, checkpoint, input shape (C, H, W), flatten) of MODEL on the backend asked."""
    from .checkpoint import load_meta
    from .models import load_model

    if not os.path.isfile(args.model):
        raise UsageError(f"MODEL {args.model}: no such file")
    if not zipfile.is_zipfile(args.model):  # the library's message would offer pickles
        raise UsageError(f"MODEL {args.model}: not a .npz model (portablelayers train --save "
                         "writes one)")
    xp, _ = _resolve_backend_and_threads(args)
    dev = _resolve_device(args.backend, args.device)
    try:
        if load_meta(args.model).get("dtype") == "float64":
            backends.allow_float64(args.backend)
        net, ckpt = load_model(args.model, xp=xp, device=dev, with_checkpoint=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    extra = ckpt.meta.get("extra") or {}
    known = extra.get("input") or {}
    kwargs = ckpt.architecture["kwargs"]
    if known.get("shape"):
        shape = tuple(known["shape"])
    elif "input_dim" in kwargs:
        shape = tuple(kwargs["input_dim"])
    else:
        side = math.isqrt(kwargs["input_size"])
        if side * side != kwargs["input_size"]:
            raise UsageError(f"{args.model}: its input of {kwargs['input_size']} values is not "
                             "a square image")
        shape = (1, side, side)
    flatten = known.get("flatten", "input_dim" not in kwargs)
    return net, ckpt, shape, flatten


def evaluate_command(args) -> int:
    from . import datasets
    from .inference import evaluate

    net, ckpt, shape, flatten = _open_model(args)
    extra = ckpt.meta.get("extra") or {}
    args.dataset = args.dataset or extra.get("dataset") or "digits"
    args.download = False
    try:
        (_, (x_test, t_test)), source, _ = _load_data(args, flatten, extra.get("split"))
    except FileNotFoundError as exc:
        raise UsageError(f"{exc} (On the command line: --data-dir DIR.)") from None
    except datasets.DataFileError as exc:
        raise UsageError(str(exc)) from None
    side = int(round(x_test[0].size ** 0.5))
    if (1, side, side) != shape:
        raise UsageError(f"{args.model} takes {'x'.join(map(str, shape))} images; "
                         f"--dataset {args.dataset} has 1x{side}x{side}")
    xp = _resolve_backend(args.backend)
    dev = _resolve_device(args.backend, args.device)
    dtype = ckpt.meta.get("dtype") or "float32"
    x = datasets.to_backend(x_test.astype(dtype), xp, dev)
    try:
        loss, accuracy, matrix = evaluate(net, x, t_test, args.batch_size)
    except ValueError as exc:  # labels the model cannot have been trained for
        raise UsageError(f"{args.model} on --dataset {args.dataset}: {exc}") from None
    print(f"{type(net).__name__} from {args.model} on {source}: {x_test.shape[0]:,} test "
          f"images; backend {args.backend}")
    print(f"loss {loss:.4f}, accuracy {accuracy:.4f}")
    print("confusion matrix (rows: true class, columns: predicted class):")
    width = max(3, len(str(matrix.max())))
    print("     " + " ".join(f"{c:>{width}}" for c in range(matrix.shape[1])))
    for c, row in enumerate(matrix):
        print(f"{c:>4} " + " ".join(f"{n:>{width}}" for n in row))
    return 0


def predict_command(args) -> int:
    import numpy as np  # noqa: TID251 (host-side stacking of the inputs read)

    from . import datasets
    from .inference import load_input, predict_proba

    for path in args.files:
        if not os.path.isfile(path):
            raise UsageError(f"FILE {path}: no such file")
    net, ckpt, shape, flatten = _open_model(args)
    inputs = []
    for path in args.files:
        try:
            inputs.append(load_input(path, shape))
        except ImportError as exc:
            raise UsageError(str(exc)) from None
        except ValueError as exc:
            raise Failure(str(exc)) from None
    x = np.stack(inputs)
    if flatten:
        x = x.reshape(x.shape[0], -1)
    xp = _resolve_backend(args.backend)
    dev = _resolve_device(args.backend, args.device)
    x = datasets.to_backend(x.astype(ckpt.meta.get("dtype") or "float32"), xp, dev)
    p = predict_proba(net, x, args.batch_size)
    for path, probs in zip(args.files, p, strict=True):
        best = np.argsort(-probs, kind="stable")[:args.top]
        print(f"{path}: " + ", ".join(f"{c} (p={probs[c]:.3f})" for c in best))
    return 0


def _given(parser, argv):
    """The dests of the options written in `argv` (for --resume: what the user changes)."""
    given = set()
    for action in parser._actions:
        for option in action.option_strings:
            if any(a == option or a.startswith(option + "=") for a in argv):
                given.add(action.dest)
    return given


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.command in parser._subparsers._group_actions[0].choices:
        sub = parser._subparsers._group_actions[0].choices[args.command]
        args._given = _given(sub, argv[argv.index(args.command) + 1:])
        args._defaults = {action.dest: action.default for action in sub._actions
                          if action.dest != "help"}
    if args.command == "demo":
        from .demo import main as demo_main

        demo_main()
        return 0
    commands = {"train": train_command, "evaluate": evaluate_command,
                "predict": predict_command}
    if args.command in commands:
        return _run(args.command, commands[args.command], args)
    parser.print_help(sys.stderr)
    return 2


def _run(name, command, args):
    """`command(args)`, every failure one line on stderr: exit 2 for a usage error, 1 for
    anything else (PORTABLELAYERS_DEBUG=1 shows the traceback of an unexpected one)."""
    import os

    prog = f"portablelayers {name}"

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
            code = command(args)
            sys.stdout.flush()  # a reader that has gone shows here, not at exit
            return code
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `portablelayers evaluate ... | head`: the reader has gone
        # Python would complain again flushing stdout at exit: point it at nothing first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Failure, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("PORTABLELAYERS_DEBUG"):
            raise
        print(f"{prog}: error: {type(exc).__name__}: {exc} (PORTABLELAYERS_DEBUG=1 shows "
              "where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
