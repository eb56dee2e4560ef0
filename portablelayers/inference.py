"""Using a trained model: inputs from files, predictions, and the measures of a test set.

Host-side, like datasets.py: files are read and reports computed with NumPy; only the
network's forward pass runs on its backend.

Inputs are prepared as the training images were (portablelayers train: the 8x8 digits
are 0..16 divided by 16, MNIST 0..255 divided by 255; the digit bright on a dark
ground). An image (PNG, JPEG, anything Pillow reads; `pip install
'portablelayers[images]'`) is converted to grayscale, scaled to [0, 1], inverted when its
border is brighter than its middle (a dark digit on white paper), and resized to the
model's input (Pillow's area-averaging BOX filter, which keeps thin strokes when shrinking
a large image to 8x8). A `.npy` array is taken as already prepared: values in [0, 1], of
shape (H, W), (1, H, W) or (H*W,) for the model's H and W.
"""

from __future__ import annotations

import math
import os

import numpy as np  # noqa: TID251 (host-side: files, images, reports)

from ._backend import device, namespace, takes_argument
from .functions import class_indices, predicted_classes

__all__ = ["confusion_matrix", "evaluate", "load_input", "predict_proba"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm")


def load_input(path, shape) -> np.ndarray:
    """The file at `path` as one float32 input of `shape` (C, H, W).

    It is prepared as the training images were (see the module's docstring).

    Parameters
    ----------
    path : str or path-like
        A `.npy` array (taken as prepared) or an image Pillow reads.
    shape : tuple of int
        The model's input shape (C, H, W).

    Returns
    -------
    numpy.ndarray
        The float32 input, of shape `shape`.

    Raises
    ------
    ValueError
        For a file that cannot be used: unreadable, NaN or inf, a `.npy` array of another
        shape than (H, W), (C, H, W) or (C*H*W,), or with values outside [0, 1].
    ImportError
        When an image needs Pillow and it is not installed.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from portablelayers.inference import load_input
    >>> path = os.path.join(tempfile.mkdtemp(), "input.npy")
    >>> np.save(path, np.full((2, 2), 0.5))
    >>> load_input(path, (1, 2, 2))
    array([[[0.5, 0.5],
            [0.5, 0.5]]], dtype=float32)
    """
    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError):  # NumPy's own words suggest pickle.load()
            raise ValueError(f"{path}: not a .npy array of numbers") from None
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{path}: holds {array.dtype}, not numbers")
        channels, height, width = shape
        accepted = [(height, width), (channels, height, width), (channels * height * width,)]
        if array.shape not in accepted or (channels != 1 and array.ndim == 2):
            raise ValueError(f"{path}: an array of shape {array.shape}; the model takes "
                             f"{'x'.join(map(str, shape))} inputs: shape "
                             f"{' or '.join(map(str, accepted[channels != 1:]))}")
        with np.errstate(over="ignore"):  # refused just below
            array = array.astype(np.float32)
        if not np.all(np.isfinite(array)):  # after the cast: 1e39 is inf in float32
            raise ValueError(f"{path}: holds NaN or inf (in float32)")
        if array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(f"{path}: values from {array.min():g} to {array.max():g}; "
                             "prepared inputs lie in [0, 1] (8-bit pixels: divide by 255)")
        return np.reshape(array, shape)
    return _load_image(path, shape)


def _load_image(path, shape):
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise ImportError(f"{path}: reading images needs Pillow: pip install "
                          "'portablelayers[images]'") from None
    channels, height, width = shape
    if channels != 1:
        raise ValueError(f"the model takes {channels}-channel inputs; images are read as "
                         "grayscale")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)  # a camera's rotation, as viewers show it
            if image.mode in ("RGBA", "LA", "P"):  # transparent: composite onto a ground
                rgba = image.convert("RGBA")
                # that the opaque strokes stand out from: white, or black for light strokes
                pixels = np.asarray(rgba, dtype=np.float64)
                alpha = pixels[..., 3]
                light = (np.sum(pixels[..., :3].mean(axis=-1) * alpha)
                         > 127.5 * np.sum(alpha)) if alpha.any() else False
                ground = (0, 0, 0, 255) if light else (255, 255, 255, 255)
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, ground), rgba)
            if image.mode.startswith("I") or image.mode == "F":
                gray = _deep_gray(image)  # 16- and 32-bit: "L" would clip them at 255
            else:
                gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not an image Pillow can read ({exc})") from None
    if not np.all(np.isfinite(gray)):  # float images: one inf would make every pixel NaN
        raise ValueError(f"{path}: holds NaN or inf")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    h, w = gray.shape
    middle = gray[h // 4: h - h // 4 or None, w // 4: w - w // 4 or None]
    if border.mean() > middle.mean():  # dark ink on a light ground: make the ink bright
        gray = 1.0 - gray
    if h * width != w * height:  # padded with ground to the model's shape, not stretched
        ground = float(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))
        rows, cols = max(h, math.ceil(w * height / width)), max(w, math.ceil(h * width / height))
        top, left = (rows - h) // 2, (cols - w) // 2
        gray = np.pad(gray, ((top, rows - h - top), (left, cols - w - left)),
                      constant_values=ground)
    resized = Image.fromarray(gray, mode="F").resize((width, height), Image.Resampling.BOX)
    out = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return out[np.newaxis, :, :]


def _deep_gray(image):
    """A 16-bit, 32-bit integer or float grayscale image in [0, 1]: a 16-bit mode by its
    full range; otherwise by the range its values show (floats up to 1 as they are, then
    8-bit, 16-bit, or its own maximum)."""
    values = np.asarray(image, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16"):
        scale = 65535.0
    elif image.mode == "F" and top <= 1.0:
        scale = 1.0
    else:
        scale = next((s for s in (255.0, 65535.0) if top <= s), top)
    with np.errstate(invalid="ignore"):  # inf / inf: the caller refuses what is not finite
        return (values / scale).astype(np.float32)


def predict_proba(network, x, batch_size=100) -> np.ndarray:
    """Softmax probabilities (N, classes) of `network` for the inputs `x`, on the host.

    The network predicts in inference mode, `batch_size` samples at a time. A network with
    one score per sample (a binary classifier's logit, as `SigmoidWithLoss` takes it) gives
    the sigmoid's probabilities of classes 0 and 1, (N, 2).

    Parameters
    ----------
    network : object
        A network with `predict(x, train_flg=False)`.
    x : array
        Inputs, an array of the network's backend.
    batch_size : int, default 100
        Samples per forward pass.

    Returns
    -------
    numpy.ndarray
        Probabilities (float64) of shape (N, classes); each row sums to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.inference import predict_proba
    >>> from portablelayers.nets import TwoLayerNet
    >>> p = predict_proba(TwoLayerNet(4, 5, 3, seed=0), np.ones((2, 4), dtype=np.float32))
    >>> p.shape, p.sum(axis=1).round(6)
    ((2, 3), array([1., 1.]))
    """
    return _probabilities(_host_scores(network, x, batch_size))


def _host_scores(network, x, batch_size):
    """The network's scores for `x` in inference mode, as one float64 NumPy array."""
    from .checkpoint import to_host

    n = x.shape[0]
    scores = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        scores.append(to_host(network.predict(x[start:stop, ...], train_flg=False)))
    return np.concatenate(scores).astype(np.float64)


def _probabilities(s):
    """Softmax rows of scores `s`; for one logit a sample, the sigmoid's P(0) and P(1)."""
    if s.ndim == 1 or s.shape[1] == 1:
        s = s.reshape(-1, 1)
        return np.exp(-np.logaddexp(0.0, np.concatenate([s, -s], axis=1)))
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(axis=1, keepdims=True)


def confusion_matrix(t, predicted, classes) -> np.ndarray:
    """(classes, classes) counts: row = the true class, column = the predicted one.

    Parameters
    ----------
    t : array_like
        True class indices.
    predicted : array_like
        Predicted class indices, as many.
    classes : int
        The number of classes.

    Returns
    -------
    numpy.ndarray
        Counts (int64) of shape (classes, classes).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.inference import confusion_matrix
    >>> confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    array([[1, 0, 0],
           [0, 1, 1],
           [0, 0, 1]])
    """
    t, predicted = np.asarray(t), np.asarray(predicted)
    for name, values in (("t", t), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise ValueError(f"confusion_matrix: {name} must lie in [0, {classes}), got "
                             f"values from {values.min()} to {values.max()}")
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (t, predicted), 1)
    return matrix


def evaluate(network, x, t, batch_size=100):
    """The mean loss, accuracy and confusion matrix of `network` on (x, t).

    The loss is the network's own, as training reports it: `network.loss` in inference
    mode (the cross-entropy, plus a weight-decay term where the network has one), averaged
    over the samples; the cross-entropy of the probabilities for a network without `loss`.

    Parameters
    ----------
    network : object
        A network with `predict(x, train_flg=False)`.
    x : array
        Inputs, an array of the network's backend.
    t : array
        Labels: class indices (N,) or (N, 1), or one-hot rows (host or backend array).
    batch_size : int, default 100
        Samples per forward pass.

    Returns
    -------
    loss : float
        The mean loss (see above).
    accuracy : float
        The share of samples predicted right.
    matrix : numpy.ndarray
        The confusion matrix (see `confusion_matrix`).

    Raises
    ------
    ValueError
        For labels of another length than `x`, or outside [0, classes) (a network of one
        output has classes 0 and 1).

    Examples
    --------
    >>> import numpy as np
    >>> from portablelayers.inference import evaluate
    >>> from portablelayers.nets import TwoLayerNet
    >>> net = TwoLayerNet(4, 5, 3, seed=0)
    >>> loss, accuracy, matrix = evaluate(net, np.ones((2, 4), dtype=np.float32),
    ...                                   np.array([0, 2]))
    >>> round(loss, 3), accuracy, matrix.shape
    (1.099, 0.5, (3, 3))
    """
    from .checkpoint import to_host

    scores = _host_scores(network, x, batch_size)
    p = _probabilities(scores)
    t_host = to_host(t)
    t = np.asarray(class_indices(t_host)).astype(np.int64)  # one-hot rows, a column
    if t.shape != (p.shape[0],):
        raise ValueError(f"evaluate needs one label per sample: {p.shape[0]} samples, "
                         f"labels of shape {t_host.shape}")
    if t.size and (t.min() < 0 or t.max() >= p.shape[1]):
        raise ValueError(f"class-index labels must lie in [0, {p.shape[1]}) for this "
                         f"network, got values from {t.min()} to {t.max()}")
    if takes_argument(getattr(network, "loss", None), "train_flg"):
        xp, n = namespace(x), x.shape[0]
        total = 0.0
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            labels = xp.asarray(t_host[start:stop], device=device(x))
            total += float(network.loss(x[start:stop, ...], labels, train_flg=False)) * (
                stop - start)
        loss = total / n
    else:
        loss = float(-np.mean(np.log(np.maximum(p[np.arange(t.shape[0]), t], 1e-300))))
    predicted = np.asarray(predicted_classes(scores))  # as accuracy() predicts
    return loss, float(np.mean(predicted == t)), confusion_matrix(t, predicted, p.shape[1])
