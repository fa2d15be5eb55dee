"""sparsecode.distributed on a real Dask cluster of worker processes: encodes equal the
in-process ones exactly, training steps equal in-process steps on the same data order, a
worker killed mid-job loses nothing."""

import os
import signal
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sparsecode
from sparsecode import MPSAE
from sparsecode.dictionary import mod_update, normalize_atoms
from sparsecode.io import read_codes, write_activations

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

# the encodes are bit-identical to in-process ones: CI also runs these with other BLAS kernels
pytestmark = pytest.mark.blas_sensitive

from sparsecode.distributed import batch_plan, connect, encode, fit, mod_pass  # noqa: E402
from sparsecode.distributed.encode import parts_dir  # noqa: E402
from sparsecode.distributed.learn import split_shards  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with connect("local:2") as c:
        yield c


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    D = rng.standard_normal((48, 16))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = rng.standard_normal((3000, 48)) * (rng.random((3000, 48)) < 0.08)
    X = (Z @ D + 0.05 * rng.standard_normal((3000, 16))).astype(np.float32)
    return X, D.astype(np.float32)


@pytest.fixture(scope="module")
def h5file(tmp_path_factory, data):
    """The data as a compressed float16 file (read by the workers, never pickled)."""
    X, _ = data
    path = tmp_path_factory.mktemp("acts") / "acts.h5"
    write_activations(path, X, dtype="float16", compression="gzip")
    return str(path), X.astype(np.float16).astype(np.float32)


def _kill_one_worker(client):
    pids = client.run(os.getpid)
    os.kill(next(iter(pids.values())), signal.SIGKILL)


# ----------------------------------------------------------------------------- plans


@given(n=st.integers(1, 500), bs=st.integers(1, 120), per=st.integers(1, 9),
       seed=st.integers(0, 3), shards=st.integers(1, 5))
def test_batch_plan_visits_every_row_once(n, bs, per, seed, shards):
    plan = batch_plan(n, bs, pieces_per_batch=per, seed=seed, epoch=1)
    rows = np.concatenate([np.arange(a, b) for batch in plan for a, b in batch])
    assert np.array_equal(np.sort(rows), np.arange(n))
    assert all(sum(b - a for a, b in batch) <= per * -(-bs // per) for batch in plan)
    assert plan == batch_plan(n, bs, pieces_per_batch=per, seed=seed, epoch=1)
    for batch in plan:
        groups = split_shards(batch, shards)
        assert len(groups) <= shards
        flat = [r for g in groups for a, b in g for r in range(a, b)]
        assert flat == [r for a, b in batch for r in range(a, b)]


def test_batch_plan_changes_with_epoch_and_drops_last():
    a = batch_plan(1000, 100, seed=0, epoch=0)
    assert a != batch_plan(1000, 100, seed=0, epoch=1)
    # pieces of ceil(100 / 8) = 13 rows, 8 per batch; the file's last piece has 10 rows
    sizes = [sum(e - s for s, e in b) for b in batch_plan(1050, 100, drop_last=True)]
    assert sorted(set(sizes)) == [101, 104] and sizes.count(101) == 1
    full = [sum(e - s for s, e in b) for b in batch_plan(1050, 100)]
    assert len(full) == len(sizes) + 1 and full[-1] < 100


# ----------------------------------------------------------------------------- encode


@pytest.mark.parametrize("solver,options", [("mp", {}), ("mp", {"selection": "positive"}),
                                            ("omp", {}), ("gp", {"variant": "acgp"})])
def test_encode_equals_in_process(client, data, solver, options):
    X, D = data
    dX = da.from_array(X, chunks=(411, 8))  # odd row blocks, split columns
    idx, val = encode(dX, D, solver=solver, k=6, **options)
    idx, val = client.compute([idx, val], sync=True)
    ref = getattr(sparsecode, solver)(X, D, k=6, **options)
    assert np.array_equal(idx, ref.indices)
    assert np.array_equal(val, ref.values)


def test_encode_fixes_the_gram_choice_for_all_blocks(client, data):
    X, D = data
    # 3000 rows x k=1 >= 48 atoms: in one call the Gram path; blocks of 20 rows alone
    # would not take it
    idx, val = encode(X, D, k=1, block_rows=20)
    idx, val = client.compute([idx, val], sync=True)
    ref = sparsecode.mp(X, D, k=1)
    assert np.array_equal(idx, ref.indices) and np.array_equal(val, ref.values)


def test_encode_hdf5_float16_gzip_with_a_model(client, h5file, data):
    path, Xh = h5file
    X, _ = data
    model = MPSAE(48, 5, batch_size=500, max_steps=6, progress=False, random_state=0).fit(X)
    idx, val = encode((path, "activations"), model, block_rows=700)
    idx, val = client.compute([idx, val], sync=True)
    ref = model.transform(Xh)
    assert np.array_equal(idx, ref.indices) and np.array_equal(val, ref.values)
    # another solver and a tol stop on the model's atoms
    idx, val = client.compute(list(encode((path, "activations"), model, solver="omp", k=3,
                                          tol=0.2, block_rows=700)), sync=True)
    ref = model.transform(Xh, solver="omp", k=3, tol=0.2)
    assert np.array_equal(idx[:, :ref.indices.shape[1]], ref.indices)
    assert np.array_equal(val[:, :ref.values.shape[1]], ref.values)


def test_encode_to_file_equals_in_process_and_cleans_up(client, h5file, data, tmp_path):
    path, Xh = h5file
    _, D = data
    out = tmp_path / "codes.h5"
    s = encode((path, "activations"), D, solver="omp", k=4, out=out, client=client,
               block_rows=256, settings={"note": "test"})
    ref = sparsecode.omp(Xh, D, k=4)
    got = read_codes(out)
    assert np.array_equal(got.indices, ref.indices) and np.array_equal(got.values, ref.values)
    assert s["n_rows"] == 3000 and s["blocks"] == 12 and s["blocks_resumed"] == 0
    assert s["nnz"] == int((ref.indices >= 0).sum())
    err = float(((Xh - ref.decode(D)) ** 2).sum())
    assert s["error"] == pytest.approx(err, rel=1e-4)
    assert not parts_dir(out).exists() and sorted(os.listdir(tmp_path)) == ["codes.h5"]
    with pytest.raises(FileExistsError, match="exists"):
        encode((path, "activations"), D, k=4, out=out, client=client)


def test_encode_interrupted_then_resumed_keeps_the_parts(client, h5file, data, tmp_path):
    path, Xh = h5file
    _, D = data
    out = tmp_path / "codes.h5"
    calls = []

    def stop():
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(KeyboardInterrupt):
        encode((path, "activations"), D, k=4, out=out, client=client, block_rows=100,
               stop=stop)
    assert not out.exists()
    written = len(list(parts_dir(out).glob("part-*[0-9].h5")))
    assert written >= 2
    with pytest.raises(FileExistsError, match="resume"):
        encode((path, "activations"), D, k=4, out=out, client=client, block_rows=100)
    with pytest.raises(ValueError, match="another job"):
        encode((path, "activations"), D, k=5, out=out, client=client, block_rows=100,
               resume=True)
    s = encode((path, "activations"), D, k=4, out=out, client=client, block_rows=100,
               resume=True)
    assert s["blocks_resumed"] >= 2
    ref = sparsecode.mp(Xh, D, k=4)
    got = read_codes(out)
    assert np.array_equal(got.indices, ref.indices) and np.array_equal(got.values, ref.values)
    assert not parts_dir(out).exists()


def test_encode_survives_a_killed_worker(client, h5file, data, tmp_path):
    path, Xh = h5file
    _, D = data
    out = tmp_path / "codes.h5"
    killed = []

    def kill_once():  # polled as blocks finish: kill a worker while others are pending
        if not killed:
            killed.append(1)
            _kill_one_worker(client)
        return False

    encode((path, "activations"), D, solver="omp", k=5, out=out, client=client,
           block_rows=50, stop=kill_once)
    assert killed
    ref = sparsecode.omp(Xh, D, k=5)
    got = read_codes(out)
    assert np.array_equal(got.indices, ref.indices) and np.array_equal(got.values, ref.values)
    client.wait_for_workers(2, timeout=60)


def test_encode_rejects_bad_input(client, data, tmp_path):
    X, D = data
    with pytest.raises(ValueError, match="features"):
        encode(X[:, :8], D, k=2)
    with pytest.raises(TypeError, match="path, dataset"):
        encode(("a", "b", "c"), D, k=2)
    with pytest.raises(ValueError, match="solver"):
        encode(X, D, solver="lasso", k=2)
    with pytest.raises(FileNotFoundError):
        encode((str(tmp_path / "missing.h5"), "x"), D, k=2)


# ----------------------------------------------------------------------------- learning


def _in_process(model, X, plan, total):
    first = np.concatenate([X[a:b] for a, b in plan[0][0]])
    model.start(first, total_steps=total)
    for epoch in plan:
        for batch in epoch:
            model.partial_fit(np.concatenate([X[a:b] for a, b in batch]))
    return model


@pytest.mark.parametrize("update,solver", [("adam", "mp"), ("adam", "omp"), ("mod", "omp"),
                                           ("online", "mp")])
def test_fit_equals_in_process_steps(client, data, update, solver):
    X, _ = data
    kw = dict(update=update, solver=solver, batch_size=400, random_state=3, progress=False,
              log_every=1, dead_window=800, forget=0.9)
    dist = fit(MPSAE(48, 4, **kw), X, client=client, n_epochs=2)
    plan = [batch_plan(3000, 400, seed=3, epoch=e) for e in range(2)]
    ref = _in_process(MPSAE(48, 4, **kw), X, plan, dist.engine_.total_steps)
    assert dist.n_steps_ == ref.n_steps_ == 16
    assert ref.engine_.n_checks > 0  # dead atoms were looked for (and resampled) on the way
    np.testing.assert_allclose(dist.components_, ref.components_, atol=2e-5)
    np.testing.assert_allclose(dist.bias_, ref.bias_, atol=2e-5)
    for a, b in zip(dist.history_, ref.history_, strict=True):
        assert a["fvu"] == pytest.approx(b["fvu"], rel=1e-4, abs=1e-6)


def test_fit_reads_hdf5_on_the_workers_and_survives_a_killed_worker(client, h5file):
    path, Xh = h5file
    killed = []

    def kill_at_step_3(record):
        if record["step"] == 3 and not killed:
            killed.append(1)
            _kill_one_worker(client)

    kw = dict(batch_size=500, n_epochs=1, random_state=1, progress=False, log_every=1, max_steps=8)
    dist = fit(MPSAE(32, 3, callback=kill_at_step_3, **kw), (path, "activations"),
               client=client)
    assert killed
    plan = [batch_plan(3000, 500, seed=1, epoch=0)]
    ref = _in_process(MPSAE(32, 3, **kw), Xh, plan, 6)
    np.testing.assert_allclose(dist.components_, ref.components_, atol=2e-5)
    client.wait_for_workers(2, timeout=60)


def test_fit_refuses_ksvd(client, data):
    with pytest.raises(ValueError, match="ksvd"):
        fit(MPSAE(16, 2, update="ksvd"), data[0], client=client)


def test_mod_pass_sums_statistics_over_blocks(client, data):
    X, D = data
    D0 = D + 0.3 * np.random.default_rng(0).standard_normal(D.shape).astype(np.float32)
    new, err = mod_pass(X, D0, k=4, block_rows=333, client=client)
    codes = sparsecode.omp(X, D0, k=4)
    ref = normalize_atoms(mod_update(X, codes, D=D0))
    np.testing.assert_allclose(new, ref, atol=1e-5)
    assert err == pytest.approx(0.5 * float(((X - codes.decode(D0)) ** 2).sum()), rel=1e-4)


def test_partial_fit_under_incremental(data):
    from dask_ml.wrappers import Incremental

    X, _ = data
    kw = dict(update="online", forget=1.0, random_state=0, progress=False)
    inc = Incremental(MPSAE(32, 4, **kw), shuffle_blocks=False)
    inc.fit(da.from_array(X, chunks=(750, 16)))
    ref = MPSAE(32, 4, **kw)
    for s in range(0, 3000, 750):
        ref.partial_fit(X[s:s + 750])
    assert inc.estimator_.n_steps_ == 4
    np.testing.assert_array_equal(inc.estimator_.components_, ref.components_)


# ----------------------------------------------------------------------------- threads


def test_encode_in_a_thread_while_the_client_is_busy(client, data):
    """Two encodes at once from two client threads give the same codes."""
    X, D = data
    out = {}

    def run(name):
        i, v = encode(X, D, k=3, block_rows=500)
        out[name] = client.compute([i, v], sync=True)

    threads = [threading.Thread(target=run, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.array_equal(out["a"][0], out["b"][0])
    assert np.array_equal(out["a"][1], out["b"][1])
    ref = sparsecode.mp(X, D, k=3)
    assert np.array_equal(out["a"][0], ref.indices)
    assert np.array_equal(out["a"][1], ref.values)


# ----------------------------------------------------------------------------- command


def test_cli_train_and_encode_on_a_local_cluster(h5file, tmp_path, capsys):
    from sparsecode.cli import main
    from sparsecode.io import load_model, model_position

    path, Xh = h5file
    model = str(tmp_path / "m.h5")
    assert main(["train", path, "--dataset", "activations", "--atoms", "32", "--k", "3",
                 "--out", model, "--batch-size", "400", "--max-steps", "5", "--quiet",
                 "--scheduler", "local:2"]) == 0
    m = load_model(model)
    assert m.n_steps_ == 5 and model_position(model)["order"] == "pieces"
    c1, c2 = str(tmp_path / "c1.h5"), str(tmp_path / "c2.h5")
    assert main(["encode", model, path, "--out", c1, "--quiet", "--batch-size", "700",
                 "--scheduler", "local:2"]) == 0
    assert main(["encode", model, path, "--out", c2, "--quiet"]) == 0
    a, b = read_codes(c1), read_codes(c2)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.values, b.values)
    out = capsys.readouterr().err
    # --batch-size 700 is rounded up to whole row groups: 768 rows, 4 blocks of 3,000 rows
    assert "in 4 blocks" in out and out.count("wrote") == 3
    # a run in the reader's order cannot be resumed on the cluster, and no --scheduler
    # value but an address or local:N is taken
    assert main(["train", path, "--dataset", "activations", "--atoms", "32", "--k", "3",
                 "--out", model, "--overwrite", "--scheduler", "local:0", "--quiet"]) == 2
    assert "local:N" in capsys.readouterr().err


def test_fit_until_converged_holds_the_last_rows_out_and_stops_by_the_same_rule(data):
    import math

    from sparsecode.sae.stopping import held_out_fvu

    X, _ = data
    model = MPSAE(48, 4, solver="omp", update="mod", progress=False, random_state=0)
    with connect("local:2") as client:  # its own: the module's may be losing a worker
        dist = fit(model, X, client=client)
        capped = MPSAE(48, 4, solver="omp", update="mod", max_epochs=2, progress=False,
                       random_state=0)
        with pytest.warns(sparsecode.ConvergenceWarning, match="max_epochs"):
            fit(capped, X, client=client)
    assert dist.stop_reason_ == "converged"
    checks = [h["validation_fvu"] for h in dist.history_ if not math.isnan(h["validation_fvu"])]
    st = dist.engine_.stopper
    assert len(checks) == st.n_checks >= st.n_iter_no_change + 1 and st.best == min(checks)
    # the held-out rows are the last 10%, never trained on: 2700 rows, in batches
    assert dist.n_samples_seen_ == 2700 * (dist.n_steps_ // len(batch_plan(2700, 4096)))
    assert checks[-1] == pytest.approx(held_out_fvu(dist.engine_, X[2700:]), rel=1e-9)
    assert capped.stop_reason_ == "max_epochs" and capped.n_steps_ == 2
