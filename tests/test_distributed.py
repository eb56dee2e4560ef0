"""Data-parallel training on a dask.distributed LocalCluster of 2 worker processes
(portablelayers.distributed): the gradient, the training run and the accuracy against the
single-process NumPy ones, one client-worker round trip a step, a worker killed mid-run,
an unreachable scheduler, data read from files by the workers, the CLI, and CuPy chunks on
GPU workers where a GPU is present.

Run in the dask session only (PORTABLELAYERS_BACKEND=dask): one cluster for the module.
"""

from __future__ import annotations

import os
import signal
import struct
import time
import warnings

import numpy as np
import pytest

if os.environ.get("PORTABLELAYERS_BACKEND", "numpy") != "dask":
    pytest.skip("data-parallel tests run in the dask session (PORTABLELAYERS_BACKEND=dask)",
                allow_module_level=True)
distributed = pytest.importorskip("distributed", reason="needs the dask extra's distributed")

from portablelayers import Affine, SigmoidWithLoss, datasets  # noqa: E402
from portablelayers.distributed import DistributedStep, connect, worker_pids  # noqa: E402
from portablelayers.nets import (  # noqa: E402
    MultiLayerNet,
    MultiLayerNetExtend,
    Sequential,
    SimpleConvNet,
    TwoLayerNet,
)
from portablelayers.optim import SGD, Adam  # noqa: E402
from portablelayers.schedules import Cosine  # noqa: E402
from portablelayers.train import Trainer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def client():
    client = connect("local:2")
    client.wait_for_workers(2, timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def digits():
    return datasets.load_digits()


@pytest.fixture(scope="module")
def images():
    return datasets.load_digits(flatten=False)


def _close(a, b, what, atol=2e-6):
    """Equal to float32 rounding: sums over workers add in another order (and Adam's
    division by sqrt(v) amplifies that over a run: those compare with a larger atol)."""
    scale = max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol * scale, err_msg=what)


def _chunked(client, arrays, rows):
    return datasets.to_dask(arrays, client, chunk_rows=rows)


def _assert_same_gradient(step, network, x, t, order, start, stop):
    bx, bt = step.batch(step.x, step.t, order, start, stop)
    loss, grads = step.loss_and_gradient(bx, bt)
    index = order[start:stop]
    ref_loss, ref_grads = network.loss_and_gradient(x[index], t[index])
    assert set(grads) == set(ref_grads)
    _close(loss, float(ref_loss), "loss")
    for name in grads:
        assert grads[name].dtype == ref_grads[name].dtype
        _close(grads[name], ref_grads[name], name)


@pytest.mark.parametrize("make", [
    lambda: TwoLayerNet(64, 50, 10, seed=1),
    lambda: MultiLayerNet(64, [30, 20], 10, weight_decay_lambda=0.1, seed=2),
], ids=["two-layer", "multi-layer-weight-decay"])
def test_gradient_equals_single_process(client, digits, make):
    (x, t), _ = digits
    xd, td = _chunked(client, (x, t), 400)  # 4 chunks (400, 400, 400, 297) on 2 workers
    network = make()
    step = DistributedStep(network, SGD(0.1), client, xd, td)
    try:
        assert len(step.workers) == 2
        rows = sorted(r[1] for r in step.replica_info())
        assert sum(rows) == x.shape[0] and rows[0] >= 600  # both hold about half
        order = np.random.default_rng(0).permutation(x.shape[0])
        _assert_same_gradient(step, network, x, t, order, 0, 100)
        _assert_same_gradient(step, network, x, t, order, 1400, 1497)  # a partial batch
        first = np.arange(0, 50)  # a batch held by one chunk: one worker does it all
        _assert_same_gradient(step, network, x, t, first, 0, 50)
    finally:
        step.close()


def test_convnet_gradient_equals_single_process(client, images):
    (x, t), _ = images
    xd, td = _chunked(client, (x, t), 750)

    def make():
        return SimpleConvNet((1, 8, 8), {"filter_num": 6, "filter_size": 3, "pad": 1,
                                         "stride": 1}, hidden_size=20, seed=3)

    network, reference = make(), make()
    step = DistributedStep(network, SGD(0.1), client, xd, td)
    try:
        order = np.random.default_rng(1).permutation(x.shape[0])
        _assert_same_gradient(step, reference, x, t, order, 0, 200)
        # A step with arrays the client holds: split among the workers, same update.
        loss = step(x[order[:64]], t[order[:64]])
        ref_loss, grads = reference.loss_and_gradient(x[order[:64]], t[order[:64]])
        SGD(0.1).update(reference.params, grads)
        _close(float(loss), float(ref_loss), "loss")
        for name in reference.params:
            _close(network.params[name], reference.params[name], name)
    finally:
        step.close()


def test_trainer_matches_single_process(client, digits):
    """Same seed, same global batches: the same per-step losses and the same accuracy as
    one NumPy process, and no scheduler traffic while steps run."""
    (x, t), (xt, tt) = digits
    runs = {}
    for where in ("numpy", "cluster"):
        network = TwoLayerNet(64, 50, 10, seed=0)
        data = ((x, t, xt, tt) if where == "numpy" else
                _chunked(client, (x, t, xt, tt), 750))
        trainer = Trainer(network, *data, epochs=3, mini_batch_size=100, optimizer="Adam",
                          optimizer_param={"lr": 0.01}, seed=0, verbose=False,
                          lr_schedule=Cosine(0.01, 3),
                          client=None if where == "numpy" else client)
        runs[where] = trainer
        if where == "cluster":
            assert trainer.step.kind == "dask.distributed"
            trainer.train_step()
            time.sleep(0.5)  # earlier computations' results released
            before = client.run_on_scheduler(lambda dask_scheduler:
                                             dask_scheduler.transition_counter)
            for _ in range(5):
                trainer.train_step()
            after = client.run_on_scheduler(lambda dask_scheduler:
                                            dask_scheduler.transition_counter)
            assert after == before, "training steps went through the scheduler"
            assert trainer.step.round_trips == 6  # one (parallel) round trip a step
        trainer.train()
    one, many = runs["numpy"], runs["cluster"]
    np.testing.assert_allclose(many.train_loss_list, one.train_loss_list, rtol=1e-4)
    assert len(many.train_loss_list) == 3 * 15
    assert many.lr_list == one.lr_list and len(set(many.lr_list)) == 3
    assert many.step.kind == "dask.distributed"  # kept when the schedule changed lr
    assert many.final_test_acc == pytest.approx(one.final_test_acc, abs=1 / 300)
    assert many.final_test_acc > 0.85
    np.testing.assert_allclose(many.test_acc_list, one.test_acc_list, atol=1 / 300)
    np.testing.assert_allclose(many.test_loss_list, one.test_loss_list, rtol=1e-4)
    np.testing.assert_allclose(many.train_acc_list, one.train_acc_list, atol=1 / 1497)
    for name in one.network.params:  # 45 Adam steps
        _close(many.network.params[name], one.network.params[name], name, atol=1e-4)


def test_a_binary_classifiers_accuracy_on_the_workers(client):
    # One output and SigmoidWithLoss, 0.0 / 1.0 targets in a column: class 1 where the
    # logit is above 0, as one process computes it.
    rng = np.random.default_rng(3)
    W, b = rng.standard_normal((4, 1)), np.array([0.1])
    x = rng.standard_normal((37, 4))
    t = (rng.random((37, 1)) < 0.5).astype(np.float64)
    expected = float(np.mean(((x @ W + b) > 0) == (t == 1.0)))
    assert 0.0 < expected < 1.0
    network = Sequential(Affine(W, b), SigmoidWithLoss())
    xd, td = _chunked(client, (x, t), 10)
    step = DistributedStep(network, SGD(0.0), client, xd, td)
    try:
        assert step.accuracy(xd, td, 4) == pytest.approx(expected, abs=1e-12)
        assert network.accuracy(x, t) == expected
    finally:
        step.close()


def test_batchnorm_statistics(client, digits):
    """BatchNormalization normalises per worker: the loss differs from one process's, but
    the running mean (averaged over workers by rows) equals it; Dropout trains."""
    (x, t), _ = digits
    xd, td = _chunked(client, (x, t), 750)

    def make():
        return MultiLayerNetExtend(64, [20], 10, use_batchnorm=True, use_dropout=True,
                                   dropout_ratio=0.2, seed=4)

    network, reference = make(), make()
    step = DistributedStep(network, Adam(0.01), client, xd, td)
    try:
        order = np.arange(x.shape[0])
        index = np.r_[0:50, 750:800]  # 50 rows on each worker
        order = np.r_[index, np.setdiff1d(order, index)]
        loss = float(step(*step.batch(xd, td, order, 0, 100)))
        ref_loss, _ = reference.loss_and_gradient(x[index], t[index])
        assert np.isfinite(loss)
        _close(network.state["running_mean1"], reference.state["running_mean1"],
               "running_mean1")
        assert not np.allclose(network.state["running_var1"], reference.state["running_var1"],
                               rtol=1e-6, atol=0)
        assert int(network.state["step1"]) == int(reference.state["step1"])
    finally:
        step.close()


def test_files_become_chunked_dask_arrays(client, tmp_path, digits):
    """IDX (raw and gzipped) and .npy files read by the workers: the same values as the
    eager loaders, a task graph with no data in it, and the same gradient."""
    import gzip
    import pickle

    (x, t), _ = digits
    pixels = np.asarray(np.round(x * 16), dtype=np.uint8).reshape(-1, 8, 8)
    header = b"\0\0\x08\x03" + struct.pack(">3I", *pixels.shape)
    raw, packed = tmp_path / "images-idx3-ubyte", tmp_path / "images-idx3-ubyte.gz"
    raw.write_bytes(header + pixels.tobytes())
    packed.write_bytes(gzip.compress(header + pixels.tobytes()))
    labels = tmp_path / "labels.npy"
    np.save(labels, t)
    for path in (raw, packed):
        lazy = datasets.dask_from_idx(path, 500, scale=16.0, shape=(64,))
        assert lazy.chunks[0] == (500, 500, 497) and lazy.dtype == np.float32
        assert len(pickle.dumps(dict(lazy.__dask_graph__()))) < 4000  # names, not data
        np.testing.assert_array_equal(lazy.compute(), x)
        np.testing.assert_array_equal(datasets.dask_from_idx(path, 400).compute(),
                                      datasets.load_idx(path))
    lazy_t = datasets.dask_from_npy(labels, 500)
    np.testing.assert_array_equal(lazy_t.compute(), t)
    xd = client.persist(datasets.dask_from_idx(raw, 500, scale=16.0, shape=(64,)))
    network, reference = TwoLayerNet(64, 30, 10, seed=5), TwoLayerNet(64, 30, 10, seed=5)
    step = DistributedStep(network, SGD(0.1), client, xd, lazy_t)
    try:
        order = np.random.default_rng(2).permutation(x.shape[0])
        _assert_same_gradient(step, reference, x, t, order, 0, 300)
    finally:
        step.close()


def test_unreachable_scheduler_is_one_line(monkeypatch, capsys):
    start = time.perf_counter()
    with pytest.raises(OSError) as info:
        connect("tcp://127.0.0.1:9", timeout=1)
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in str(info.value)
    assert "\n" not in str(info.value) and time.perf_counter() - start < 30
    from portablelayers import cli
    from portablelayers import distributed as module

    monkeypatch.setattr(module, "connect", lambda spec: connect(spec, timeout=1))
    assert cli.main(["train", "--scheduler", "tcp://127.0.0.1:9", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("portablelayers train: error: --scheduler tcp://127.0.0.1:9: "
                          "cannot reach") and "\n" not in err
    assert cli.main(["train", "--scheduler", "local:2", "--backend", "torch"]) == 2
    assert "--backend numpy or dask" in capsys.readouterr().err


def test_cli_joins_a_running_scheduler(client, capsys, tmp_path):
    """`--scheduler ADDRESS` trains as one process does, and a run saved after one epoch
    on the cluster and resumed there ends as the uninterrupted single-process run."""
    from portablelayers import cli

    def run(*argv):
        assert cli.main(["train", "--quiet", "--seed", "3", *argv]) == 0
        made = distributed.default_client() if "--scheduler" in argv else client
        if made is not client:  # the command's own client (closed at exit otherwise)
            made.close()
        return capsys.readouterr().out.split("(")[0]  # "test accuracy: 0.xxxx "

    alone = run("--epochs", "2")
    assert run("--epochs", "2", "--scheduler", client.scheduler.address) == alone
    saved = str(tmp_path / "run.npz")
    run("--epochs", "1", "--save", saved, "--scheduler", client.scheduler.address)
    assert run("--epochs", "2", "--resume", saved, "--scheduler",
               client.scheduler.address) == alone


def _gpu_present():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # not installed, no driver, no device
        return False


@pytest.mark.skipif(not _gpu_present(), reason="needs CuPy and an NVIDIA GPU")
def test_gpu_workers(client, digits):
    """CuPy chunks: each replica computes on the GPU; the gradient is NumPy's."""
    import cupy

    (x, t), _ = digits
    xd, td = _chunked(client, (x, t), 750)
    xd, td = client.persist([xd.map_blocks(cupy.asarray), td.map_blocks(cupy.asarray)])
    network, reference = TwoLayerNet(64, 50, 10, seed=7), TwoLayerNet(64, 50, 10, seed=7)
    step = DistributedStep(network, SGD(0.1), client, xd, td)
    try:
        assert all("cupy" in info[2] for info in step.replica_info())
        order = np.random.default_rng(4).permutation(x.shape[0])
        _assert_same_gradient(step, reference, x, t, order, 0, 200)
        assert 0.0 <= step.accuracy(xd, td, 100) <= 1.0
    finally:
        step.close()


def test_a_killed_worker_does_not_lose_the_run(client, digits):
    """Kill one worker process mid-run: the step notices, the chunks it held are recomputed
    from their source, replicas are made on the workers left, and the run ends with the
    weights of an undisturbed single-process run. (Last: it disturbs the cluster.)"""
    (x, t), _ = digits
    xd, td = _chunked(client, (x, t), 750)
    network, reference = TwoLayerNet(64, 50, 10, seed=6), TwoLayerNet(64, 50, 10, seed=6)
    optimizer, ref_optimizer = Adam(0.01), Adam(0.01)
    step = DistributedStep(network, optimizer, client, xd, td)
    order = np.random.default_rng(3).permutation(x.shape[0])
    try:
        for i in range(12):
            start = (i % 14) * 100
            stop = min(start + 100, x.shape[0])
            if i == 5:
                victim = step.workers[-1]
                os.kill(worker_pids(client)[victim], signal.SIGKILL)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loss = step(*step.batch(xd, td, order, start, stop))
            if i == 5:
                assert any("lost worker" in str(w.message) for w in caught)
                assert victim not in step.workers
            ref_loss, grads = reference.loss_and_gradient(x[order[start:stop]],
                                                          t[order[start:stop]])
            ref_optimizer.update(reference.params, grads)
            _close(float(loss), float(ref_loss), f"loss of step {i}")
        assert step.recoveries == 1
        for name in reference.params:  # 12 Adam steps
            _close(network.params[name], reference.params[name], name, atol=2e-5)
        assert step.accuracy(xd, td, 100) == pytest.approx(reference.accuracy(x, t))
    finally:
        step.close()


def test_a_trainer_run_survives_a_killed_worker(client, digits):
    """The Trainer's run with a worker killed after 5 steps: the same per-step losses and
    accuracy as one NumPy process (the nanny's restarted worker, once back, gets a replica
    at the start of an epoch)."""
    (x, t), (xt, tt) = digits
    client.wait_for_workers(2, timeout=60)
    runs = {}
    for where in ("numpy", "cluster"):
        data = ((x, t, xt, tt) if where == "numpy" else
                _chunked(client, (x, t, xt, tt), 750))
        trainer = Trainer(TwoLayerNet(64, 50, 10, seed=8), *data, epochs=3,
                          mini_batch_size=100, optimizer="Adam", optimizer_param={"lr": 0.01},
                          seed=1, verbose=False, client=None if where == "numpy" else client)
        if where == "cluster":
            for _ in range(5):
                trainer.train_step()
            os.kill(worker_pids(client)[trainer.step.workers[0]], signal.SIGKILL)
        trainer.train()
        runs[where] = trainer
    one, many = runs["numpy"], runs["cluster"]
    assert many.step.recoveries == 1
    np.testing.assert_allclose(many.train_loss_list, one.train_loss_list, rtol=1e-4)
    assert many.final_test_acc == pytest.approx(one.final_test_acc, abs=1 / 300)
