"""Train the same TwoLayerNet with SGD on NumPy and on JAX and compare the loss curves.

The data (a random "teacher" network's labels for random inputs), the initial weights
(one seed) and the mini-batches (one host generator) are identical on both backends, so
the curves may differ only by floating-point rounding: different summation orders in
float32 matrix products, amplified a little by training.

    python examples/compare_numpy_jax.py [--steps 500] [--backends numpy jax]
"""

from __future__ import annotations

import argparse

import numpy as np

from portablelayers._backend import resolve_namespace
from portablelayers.nets import TwoLayerNet
from portablelayers.optim import SGD

INPUT, HIDDEN, CLASSES = 64, 50, 10
SAMPLES, BATCH = 2000, 100


def teacher_data(seed=0):
    """Inputs and the labels a random two-layer tanh network gives them (learnable)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SAMPLES, INPUT))
    W1, W2 = rng.standard_normal((INPUT, 32)), rng.standard_normal((32, CLASSES))
    t = np.argmax(np.tanh(x @ W1 / np.sqrt(INPUT)) @ W2, axis=1)
    return x.astype(np.float32), t


def train(backend, steps, x_np, t_np, seed=0, lr=0.1):
    """Loss after every step on `backend` (a name: "numpy", "jax", "torch", ...)."""
    xp = resolve_namespace(backend)
    x, t = xp.asarray(x_np), xp.asarray(t_np)
    net = TwoLayerNet(INPUT, HIDDEN, CLASSES, weight_init_std=0.1, xp=xp, seed=seed)
    optimizer = SGD(lr=lr)
    batches = np.random.default_rng(seed + 1)  # the same mini-batches on every backend
    losses = []
    for _ in range(steps):
        idx = xp.asarray(batches.choice(SAMPLES, BATCH, replace=False))
        x_batch, t_batch = xp.take(x, idx, axis=0), xp.take(t, idx, axis=0)
        grads = net.gradient(x_batch, t_batch)
        optimizer.update(net.params, grads)  # rebinds params: what JAX needs
        losses.append(float(net.loss(x_batch, t_batch)))
    return np.array(losses), net.accuracy(x, t)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--backends", nargs=2, default=["numpy", "jax"])
    args = parser.parse_args(argv)
    a, b = args.backends

    x, t = teacher_data()
    loss_a, acc_a = train(a, args.steps, x, t)
    loss_b, acc_b = train(b, args.steps, x, t)

    print(f"TwoLayerNet {INPUT}-{HIDDEN}-{CLASSES}, SGD lr=0.1, batch {BATCH}, float32, seed 0")
    print(f"{'step':>6} {a:>12} {b:>12} {'|diff|':>10}")
    for step in range(0, args.steps, 50):
        print(f"{step + 1:>6} {loss_a[step]:>12.6f} {loss_b[step]:>12.6f} "
              f"{abs(loss_a[step] - loss_b[step]):>10.2e}")
    print(f"{args.steps:>6} {loss_a[-1]:>12.6f} {loss_b[-1]:>12.6f} "
          f"{abs(loss_a[-1] - loss_b[-1]):>10.2e}")
    print(f"max |loss difference| over all {args.steps} steps: "
          f"{np.max(np.abs(loss_a - loss_b)):.3e}")
    print(f"training accuracy: {a} {acc_a:.4f}, {b} {acc_b:.4f}")


if __name__ == "__main__":
    main()
