"""XLA's CPU code for SimpleConvNet's 2x2 max pool, beside elementwise passes over the same
array: where JAX's compiled SimpleConvNet step loses its time on a CPU.

SimpleConvNet's convolution gives 100x30x24x24 values (batch 100), as a product of shape
(100, 30, 576) that the layer reshapes; the pool halves each side. Under `jax.jit` on a
CPU the rows time, in one process and in turns:

- bias and ReLU over the product as it comes (rows of 576 values): the pace of one pass;
- the same, made 4-D as the layers see it: XLA's loops run along the 24-wide minor axis;
- the maxima of each pair of rows: half the pool, with no step along the minor axis;
- the pool's forward in four forms, ours first; each pairs columns too, stepping by 2 along
  the minor axis, and each is checked against ours before it is timed;
- ours forward and backward (winner masks recomputed, the gradient laid out on the input
  grid, its columns interleaved).

The table gives ms per call and the ratio to the first row. The script imports
portablelayers before JAX's first array, so XLA compiles with the LLVM option that
`vectorize_short_loops` adds to XLA_FLAGS (vectorized loops along the pool's 12-wide rows);
PORTABLELAYERS_VECTORIZE_SHORT_LOOPS=0 shows XLA's default, as the performance guide's
tables before that option were measured.

    python benchmarks/xla_pool.py               # one thread (XLA's pool too)
    python benchmarks/xla_pool.py --threads 2
    python benchmarks/xla_pool.py --widths 8 12 16 32 48 64   # the first pass, other rows
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

SHAPE = (100, 30, 24, 24)  # SimpleConvNet's convolution output, batch 100


def forms(widths=()):
    """name -> (function of (conv output, bias, pooled gradient), the name it must equal);
    `widths`: more rows of bias and ReLU, made 4-D with rows of each width."""
    import jax
    import jax.numpy as jnp

    from portablelayers import Pooling

    def relu(h, b):
        # As Convolution gives it: its product (N, FN, out_h*out_w) plus the bias, made 4-D
        return jnp.reshape(jnp.maximum(h + b, 0), SHAPE)

    def ours_forward(h, b, _):
        return Pooling(2, 2).forward(relu(h, b))

    def ours_forward_backward(h, b, dout):
        pool = Pooling(2, 2)
        pool.forward(relu(h, b))
        return pool.backward(dout)

    def slices_max(h, b, _):
        r = relu(h, b)
        return jnp.maximum(jnp.maximum(r[:, :, 0::2, 0::2], r[:, :, 0::2, 1::2]),
                           jnp.maximum(r[:, :, 1::2, 0::2], r[:, :, 1::2, 1::2]))

    def row_pairs(h, b, _):
        # half the pool: the maximum of each pair of rows, no step along the minor axis
        r = relu(h, b)
        return jnp.maximum(r[:, :, 0::2, :], r[:, :, 1::2, :])

    def reshape_max(h, b, _):
        n, c, y, x = SHAPE
        return jnp.max(jnp.reshape(relu(h, b), (n, c, y // 2, 2, x // 2, 2)), axis=(3, 5))

    def reduce_window(h, b, _):
        return jax.lax.reduce_window(relu(h, b), -jnp.inf, jax.lax.max, (1, 1, 2, 2),
                                     (1, 1, 2, 2), "VALID")

    def rows_of(width):
        n, c, y, x = SHAPE
        return lambda h, b, _: jnp.reshape(jnp.maximum(h + b, 0), (n, c, y * x // width, width))

    return {
        "bias + ReLU, rows of 576": (lambda h, b, _: jnp.maximum(h + b, 0), None),
        "bias + ReLU, made 4-D: rows of 24": (lambda h, b, _: relu(h, b), None),
        **{f"bias + ReLU, rows of {width}": (rows_of(width), None) for width in widths},
        "row pairs' maxima only": (row_pairs, None),
        "pool forward: ours (Pooling)": (ours_forward, None),
        "pool forward: four strided slices": (slices_max, "pool forward: ours (Pooling)"),
        "pool forward: reshape, max": (reshape_max, "pool forward: ours (Pooling)"),
        "pool forward: lax.reduce_window": (reduce_window, "pool forward: ours (Pooling)"),
        "pool forward + backward: ours": (ours_forward_backward, None),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for XLA's CPU pool (PJRT_NPROC; default 1)")
    parser.add_argument("--repeats", type=int, default=15, help="timed turns of each form")
    parser.add_argument("--calls", type=int, default=20, help="calls in one timed turn")
    parser.add_argument("--widths", type=int, nargs="*", default=[],
                        help="more rows: bias and ReLU with rows of these widths (each must "
                             "divide 576), e.g. 8 12 16 32 48 64")
    args = parser.parse_args(argv)
    os.environ["PJRT_NPROC"] = str(args.threads)  # read when JAX makes its first array
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    from portablelayers.compiled import xla_options
    from portablelayers.threads import thread_info

    rng = np.random.default_rng(0)
    n, c, y, x = SHAPE
    h = jax.device_put(rng.standard_normal((n, c, y * x), dtype=np.float32))
    b = jax.device_put(rng.standard_normal((c, 1), dtype=np.float32))
    dout = jax.device_put(rng.standard_normal((n, c, y // 2, x // 2), dtype=np.float32))
    compiled, results = {}, {}
    for name, (fn, same_as) in forms(args.widths).items():
        compiled[name] = jax.jit(fn, compiler_options=xla_options(h.device))
        results[name] = compiled[name](h, b, dout).block_until_ready()
        if same_as is not None:
            assert np.array_equal(results[name], results[same_as]), name

    def turn(fn):
        start = time.perf_counter()
        for _ in range(args.calls):
            out = fn(h, b, dout)
        out.block_until_ready()
        return (time.perf_counter() - start) / args.calls * 1e3

    times = {name: [] for name in compiled}
    for r in range(args.repeats):
        for name in (list(compiled) if r % 2 else list(compiled)[::-1]):
            times[name].append(turn(compiled[name]))
    base = statistics.median(times["bias + ReLU, rows of 576"])
    pool = thread_info().get("xla:cpu", "?")  # the pool that runs, counted, not the option
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {pool} XLA thread(s), "
          f"input {'x'.join(map(str, SHAPE))} float32; medians of {args.repeats} turns")
    print(f"{'form':40s} {'ms':>8s} {'/ first row':>14s}")
    for name, ts in times.items():
        ms = statistics.median(ts)
        print(f"{name:40s} {ms:8.3f} {ms / base:13.2f}x")
    return times


if __name__ == "__main__":
    main()
