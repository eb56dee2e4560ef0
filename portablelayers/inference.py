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

__all__ = ["confusion_matrix", "evaluate", "load_input", "predict_proba"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm")


def load_input(path, shape) -> np.ndarray:
    """The file at `path` as one float32 input of `shape` (C, H, W), prepared as the
    training images were (see the module's docstring). ValueError for a file that cannot
    be used (wrong shape, unreadable), ImportError when an image needs Pillow."""
    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path}: not a .npy array of numbers ({exc})") from None
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{path}: holds {array.dtype}, not numbers")
        if array.size != math.prod(shape):
            raise ValueError(f"{path}: an array of shape {array.shape}; the model takes "
                             f"{'x'.join(map(str, shape))} inputs ({math.prod(shape)} "
                             "values)")
        return np.reshape(array.astype(np.float32), shape)
    return _load_image(path, shape)


def _load_image(path, shape):
    try:
        from PIL import Image, UnidentifiedImageError
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
            if image.mode in ("RGBA", "LA", "P"):  # transparent: composite onto white
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, rgba)
            gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not an image Pillow can read ({exc})") from None
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    h, w = gray.shape
    middle = gray[h // 4: h - h // 4 or None, w // 4: w - w // 4 or None]
    if border.mean() > middle.mean():  # dark ink on a light ground: make the ink bright
        gray = 1.0 - gray
    resized = Image.fromarray(gray, mode="F").resize((width, height), Image.Resampling.BOX)
    out = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    return out[np.newaxis, :, :]


def predict_proba(network, x, batch_size=100) -> np.ndarray:
    """Softmax probabilities (N, classes) of `network` for the inputs `x` (an array of
    the network's backend), in inference mode, on the host."""
    from .checkpoint import to_host

    n = x.shape[0]
    scores = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        scores.append(to_host(network.predict(x[start:stop, ...], train_flg=False)))
    s = np.concatenate(scores).astype(np.float64)
    s -= s.max(axis=1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(axis=1, keepdims=True)


def confusion_matrix(t, predicted, classes) -> np.ndarray:
    """(classes, classes) counts: row = the true class, column = the predicted one."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(t), np.asarray(predicted)), 1)
    return matrix


def evaluate(network, x, t, batch_size=100):
    """(mean cross-entropy loss, accuracy, confusion matrix) of `network` on (x, t); t as
    class indices (host or backend array)."""
    from .checkpoint import to_host

    p = predict_proba(network, x, batch_size)
    t = to_host(t).astype(np.int64)
    if t.ndim == 2:  # one-hot
        t = t.argmax(axis=1)
    loss = float(-np.mean(np.log(np.maximum(p[np.arange(t.shape[0]), t], 1e-300))))
    predicted = p.argmax(axis=1)
    return loss, float(np.mean(predicted == t)), confusion_matrix(t, predicted, p.shape[1])
