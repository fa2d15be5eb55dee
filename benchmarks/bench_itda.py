"""ITDA speed and quality: ``sparsecode.ITDA`` against a plain NumPy implementation of the
same algorithm, and against MP-SAE and MOD dictionaries of the same size.

Data: token activations of a real transformer (the hidden state after layer 3 of
all-MiniLM-L6-v2 on English documentation prose, 400,071 rows of d = 384, made by
``benchmarks/make_minilm_activations.py``), read into memory as float32.  The last 5% of
the rows are held out; every method learns on the first 95% (in file order) and is
scored on the held-out rows.

The NumPy reference follows the estimator's batch semantics exactly: per batch of
``--batch-size`` rows, ``k`` steps of matching pursuit on the dictionary as it was at the
start of the batch, each step one GEMM of correlations ``C = R @ D.T``, the argmax of
``|C|`` per row and the residual update; the rows whose relative error
``||r||^2 / ||x||^2`` exceeds ``--threshold`` are candidates, taken in batch order, each
encoded again by the same MP (one row) on the dictionary as it is then (``np.vstack``
grows it by one atom at a time) and added as ``x / ||x||`` if still over the threshold.

Timings: 2 threads (BLAS and Numba), float32, after a warm-up, wall clock (CPU time of
the process too, for the reference and sparsecode).  The machine may be shared, so the
first pass runs the NumPy reference and sparsecode in lockstep, chunk by chunk
(``--curve-batches`` batches each, so the batches are those of one pass): each chunk is
processed by the reference, then by sparsecode, under about the same load; the reference
covers the first ``--baseline-rows`` training rows (whole chunks; default all) and
sparsecode then goes on alone.  The speed ratio is the reference's time over
sparsecode's on those rows in that pass (also reported against the median of
sparsecode's ``--repeats`` passes).  sparsecode's time is the median of its ``--repeats``
full passes; its curve gives, per chunk, the rows processed, the atoms and the seconds
per 1,000 rows (median over the passes).  Both implementations must end with the same
number of atoms and the same held-out FVU (``k``-step MP on each dictionary, by
``sparsecode.mp``).

MP-SAE (Adam through the unrolled MP encoder, one epoch, batch 1024, lr 1e-3) and
classic dictionary learning (full-batch MOD with OMP codes, ``--classic-iters``
iterations) get as many atoms as ITDA found, the same ``k`` and the same rows.

Output: one JSON object per line on stdout and appended to ``--out`` (default
``benchmarks/results/itda.jsonl``), each with the package commit, the load average and the
BLAS variables; a summary table at the end.

``--scan T1 T2 ...`` only runs sparsecode on the first ``--scan-rows`` training rows with
each threshold (to choose one; 0.2 gives about 2,900 atoms on the 380,067 training rows);
``--self-check`` compares the NumPy reference with a row-by-row float64 implementation (and
with sparsecode, if importable) on small random data and writes no file.

Exact commands of the recorded runs (from the repository root, the package's virtual
environment active; the data set first, see ``make_minilm_activations.py``)::

    python benchmarks/bench_itda.py --self-check
    python benchmarks/bench_itda.py --data /work/data/minilm_l3.h5 \\
        --scan 0.2 0.22 0.25 0.3 --scan-rows 400000
    python benchmarks/bench_itda.py --data /work/data/minilm_l3.h5 --threshold 0.2
"""

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numba
import numpy as np
from _provenance import blas_env, load_average, package_commit  # benchmarks/ is on sys.path
from threadpoolctl import threadpool_limits

HERE = Path(__file__).parent
COMMIT = package_commit()


# ----------------------------------------------------------------------- NumPy reference


def numpy_mp_residuals(X, D, k):
    """Residuals of ``k`` matching-pursuit steps of the rows of ``X`` on unit atoms ``D``:
    per step one GEMM of correlations, argmax of their magnitudes, residual update."""
    R = X.copy()
    if len(D) == 0:
        return R
    rows = np.arange(len(X))
    for _ in range(k):
        C = R @ D.T
        j = np.abs(C).argmax(axis=1)
        R -= C[rows, j][:, None] * D[j]
    return R


def relative_errors(X, R):
    xn = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    rn = np.einsum("ij,ij->i", R, R, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(xn > 0, rn / xn, 0.0)


class NumpyITDA:
    """The ITDA estimator's batch semantics, written plainly in NumPy."""

    def __init__(self, k, threshold, batch_size, n_features, max_atoms=None):
        self.k, self.threshold, self.batch_size = k, threshold, batch_size
        self.max_atoms = max_atoms
        self.D = np.empty((0, n_features), dtype=np.float32)
        self.sources = []
        self.n_rows_seen = 0

    def partial_fit(self, X):
        for b0 in range(0, len(X), self.batch_size):
            self._batch(X[b0:b0 + self.batch_size])
        return self

    def _batch(self, Xb):
        err = relative_errors(Xb, numpy_mp_residuals(Xb, self.D, self.k))
        for i in np.flatnonzero(err > self.threshold):
            if self.max_atoms is not None and len(self.D) >= self.max_atoms:
                break
            x = Xb[i:i + 1]
            if relative_errors(x, numpy_mp_residuals(x, self.D, self.k))[0] > self.threshold:
                norm = np.sqrt(np.einsum("ij,ij->", x, x, dtype=np.float64))
                self.D = np.vstack([self.D, (x / norm).astype(np.float32)])
                self.sources.append(self.n_rows_seen + int(i))
        self.n_rows_seen += len(Xb)


def rowwise_itda(X, k, threshold, batch_size):
    """Row-by-row float64 ITDA (no GEMM), to check :class:`NumpyITDA` on small data."""
    D, sources = [], []

    def err_of(x, atoms):
        r = x.astype(np.float64).copy()
        for _ in range(k if atoms else 0):
            c = [float(a @ r) for a in atoms]
            j = int(np.argmax(np.abs(c)))
            r -= c[j] * atoms[j]
        xx = float(x.astype(np.float64) @ x.astype(np.float64))
        return float(r @ r) / xx if xx > 0 else 0.0

    for b0 in range(0, len(X), batch_size):
        start = list(D)
        cands = [i for i in range(b0, min(b0 + batch_size, len(X)))
                 if err_of(X[i], start) > threshold]
        for i in cands:
            if err_of(X[i], D) > threshold:
                D.append(X[i].astype(np.float64) / np.linalg.norm(X[i].astype(np.float64)))
                sources.append(i)
    return np.array(D), sources


# ----------------------------------------------------------------------- helpers


def emit(out, **row):
    row["commit"] = COMMIT
    row["loadavg_1min"] = load_average()
    row["blas_env"] = blas_env()
    row["threads"] = numba.get_num_threads()
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def heldout_fvu(X_test, D, k):
    import sparsecode
    from sparsecode.metrics import fvu

    D = np.ascontiguousarray(D, dtype=np.float32)
    codes = sparsecode.mp(X_test, D, k=k, gram=sparsecode.gram(D))
    return fvu(X_test, codes.decode(D))


def load_rows(path, dataset, n_rows):
    import h5py

    with h5py.File(path, "r") as f:
        ds = f[dataset]
        n = ds.shape[0] if n_rows is None else min(n_rows, ds.shape[0])
        return np.ascontiguousarray(ds[:n], dtype=np.float32)


def warm_up(d, args):
    from sparsecode import ITDA

    rng = np.random.default_rng(0)
    Xw = rng.standard_normal((3 * args.batch_size, d)).astype(np.float32)
    ITDA(k=args.k, threshold=0.5, batch_size=args.batch_size).fit(Xw).score(Xw[:100])
    NumpyITDA(args.k, 0.5, args.batch_size, d).partial_fit(Xw[:args.batch_size])


# ----------------------------------------------------------------------- modes


def self_check(args):
    """The NumPy reference against a row-by-row float64 ITDA (and sparsecode if present)."""
    rng = np.random.default_rng(1)
    d, n = 32, 600
    # signals near a few hidden directions, so that atoms get reused
    basis = rng.standard_normal((48, d))
    Z = rng.standard_normal((n, 48)) * (rng.random((n, 48)) < 0.1)
    X = (Z @ basis + 0.05 * rng.standard_normal((n, d))).astype(np.float32)
    X[5] = 0.0  # a zero row: relative error 0, never an atom
    ok = True
    for bs in (1, 7, 64):
        for thr in (0.05, 0.3):
            ref = NumpyITDA(4, thr, bs, d).partial_fit(X)
            D64, src64 = rowwise_itda(X, 4, thr, bs)
            same = ref.sources == src64
            line = (f"batch {bs:3d} threshold {thr}: numpy {len(ref.sources)} atoms, rowwise "
                    f"{len(src64)}, same sources {same}")
            try:
                from sparsecode import ITDA

                sc = ITDA(k=4, threshold=thr, batch_size=bs).fit(X)
                same_sc = list(sc.atom_sources_) == ref.sources
                line += f"; sparsecode {sc.n_atoms_} atoms, same sources {same_sc}"
                ok &= same_sc
            except ImportError:
                line += "; sparsecode.ITDA not importable"
            print(line)
            ok &= same
    print("self-check", "passed" if ok else "FAILED")
    return 0 if ok else 1


def scan(X_train, args):
    from sparsecode import ITDA

    Xs = X_train[:args.scan_rows]
    for thr in args.scan:
        t0 = time.perf_counter()
        m = ITDA(k=args.k, threshold=thr, batch_size=args.batch_size).fit(Xs)
        dt = time.perf_counter() - t0
        emit(args.out, kind="threshold scan", k=args.k, threshold=thr, rows=len(Xs),
             batch_size=args.batch_size, atoms=int(m.n_atoms_), seconds=dt)


def run(X, args):
    from sparsecode import ITDA, MPSAE
    from sparsecode.metrics import fvu

    n, d = X.shape
    n_test = math.ceil(args.holdout * n)
    X_train, X_test = X[:n - n_test], X[n - n_test:]
    base = dict(data=args.data, dataset=args.dataset, n_train=len(X_train),
                n_test=len(X_test), n_features=d, k=args.k, threshold=args.threshold,
                batch_size=args.batch_size, dtype="float32")
    chunk = args.curve_batches * args.batch_size
    warm_up(d, args)

    # Pass 1: the NumPy reference and sparsecode in lockstep, chunk by chunk (the machine's
    # load is then about the same for both), on the first nb rows (whole chunks);
    # sparsecode goes on alone over the rest.  Then more sparsecode passes for a median.
    nb = len(X_train) if args.baseline_rows is None else min(
        len(X_train), math.ceil(args.baseline_rows / chunk) * chunk)
    ref = NumpyITDA(args.k, args.threshold, args.batch_size, d)
    ref_curve, t_ref, cpu_ref, cpu_sc_prefix = [], 0.0, 0.0, 0.0
    passes = []
    for rep in range(args.repeats):
        model = ITDA(k=args.k, threshold=args.threshold, batch_size=args.batch_size)
        curve = []
        for c0 in range(0, len(X_train), chunk):
            Xc = X_train[c0:c0 + chunk]
            if rep == 0 and c0 < nb:
                t0, p0 = time.perf_counter(), time.process_time()
                ref.partial_fit(Xc)
                dt = time.perf_counter() - t0
                cpu_ref += time.process_time() - p0
                t_ref += dt
                ref_curve.append((ref.n_rows_seen, len(ref.D), dt, len(Xc)))
            t0, p0 = time.perf_counter(), time.process_time()
            model.partial_fit(Xc)
            dt = time.perf_counter() - t0
            if rep == 0 and c0 < nb:
                cpu_sc_prefix += time.process_time() - p0
            curve.append((model.n_rows_seen_, model.n_atoms_, dt, len(Xc)))
            if rep == 0 and c0 < nb:
                print(f"  {model.n_rows_seen_} rows: numpy reference {len(ref.D)} atoms, "
                      f"{t_ref:.0f} s; sparsecode {model.n_atoms_} atoms, "
                      f"{sum(c[2] for c in curve):.1f} s", flush=True)
        passes.append(curve)
        if rep == 0:
            m_sc_prefix = model if nb == len(X_train) else None
            if m_sc_prefix is None:  # the prefix's dictionary, for the comparison
                m_sc_prefix = ITDA(k=args.k, threshold=args.threshold,
                                   batch_size=args.batch_size).fit(X_train[:nb])
    n_pref = len(ref_curve)
    times = [sum(c[2] for c in curve) for curve in passes]
    prefix_times = [sum(c[2] for c in curve[:n_pref]) for curve in passes]
    t_sc = statistics.median(times)
    t_sc_prefix = prefix_times[0]  # in lockstep with the reference
    ratio = t_ref / t_sc_prefix
    ratio_median = t_ref / statistics.median(prefix_times)
    fvu_sc = heldout_fvu(X_test, model.components_, args.k)
    emit(args.out, **base, kind="itda", impl="sparsecode.ITDA", rows=len(X_train),
         atoms=int(model.n_atoms_), seconds=t_sc, seconds_all=times,
         rows_per_s=len(X_train) / t_sc, heldout_fvu=fvu_sc,
         heldout_fvu_score=1.0 - model.score(X_test))
    for i, (rows, atoms, _, m) in enumerate(passes[0]):
        secs = statistics.median(c[i][2] for c in passes)
        emit(args.out, **base, kind="curve", impl="sparsecode.ITDA", rows_processed=rows,
             atoms=atoms, chunk_rows=m, chunk_seconds=secs, seconds_all=[c[i][2] for c in passes],
             seconds_per_1000_rows=1000 * secs / m)

    fvu_ref = heldout_fvu(X_test, ref.D, args.k)
    fvu_scp = heldout_fvu(X_test, m_sc_prefix.components_, args.k)
    src_sc = np.asarray(m_sc_prefix.atom_sources_)
    src_ref = np.asarray(ref.sources)
    m_common = min(len(src_sc), len(src_ref))
    diverge = next((i for i in range(m_common) if src_sc[i] != src_ref[i]), m_common)
    shared = len(np.intersect1d(src_sc, src_ref))
    emit(args.out, **base, kind="itda", impl="numpy reference (GEMM per MP step)", rows=nb,
         atoms=len(ref.D), seconds=t_ref, cpu_seconds=cpu_ref, rows_per_s=nb / t_ref,
         heldout_fvu=fvu_ref)
    emit(args.out, **base, kind="itda ratio", rows=nb, numpy_seconds=t_ref,
         sparsecode_seconds=t_sc_prefix, speed_ratio=ratio,
         sparsecode_seconds_median=statistics.median(prefix_times),
         speed_ratio_vs_median=ratio_median, numpy_cpu_seconds=cpu_ref,
         sparsecode_cpu_seconds=cpu_sc_prefix, cpu_ratio=cpu_ref / cpu_sc_prefix,
         numpy_atoms=len(ref.D), sparsecode_atoms=int(m_sc_prefix.n_atoms_),
         numpy_heldout_fvu=fvu_ref, sparsecode_heldout_fvu=fvu_scp, same_atom_sources=shared,
         first_different_atom=diverge)
    for rows, atoms, dt, m in ref_curve:
        emit(args.out, **base, kind="curve", impl="numpy reference", rows_processed=rows,
             atoms=atoms, chunk_rows=m, chunk_seconds=dt, seconds_per_1000_rows=1000 * dt / m)

    # MP-SAE and MOD with as many atoms
    n_atoms = int(model.n_atoms_)
    results = [("sparsecode.ITDA", n_atoms, t_sc, fvu_sc),
               ("numpy reference ITDA" + ("" if nb == len(X_train) else f" ({nb} rows)"),
                len(ref.D), t_ref, fvu_ref)]
    others = [
        ("MPSAE adam, 1 epoch", dict(update="adam", solver="mp", batch_size=1024,
                                     n_epochs=1, lr=1e-3)),
        (f"MPSAE mod+omp, {args.classic_iters} full-batch iterations",
         dict(update="mod", solver="omp", batch_size=None, n_epochs=args.classic_iters)),
    ]
    if args.skip_learning:
        others = []
    for name, kw in others:
        sae = MPSAE(n_atoms, args.k, progress=False, random_state=0, **kw)
        t0 = time.perf_counter()
        sae.fit(X_train)
        dt = time.perf_counter() - t0
        X_hat = sae.inverse_transform(sae.transform(X_test))
        f = fvu(X_test, X_hat)
        emit(args.out, **base, kind="learning", impl=name, rows=len(X_train), atoms=n_atoms,
             seconds=dt, heldout_fvu=f, params={k: v for k, v in kw.items()})
        results.append((name, n_atoms, dt, f))

    print(f"\nrows {len(X_train)} train, {len(X_test)} held out; d {d}; k {args.k}; threshold "
          f"{args.threshold}; batch {args.batch_size}; threads {numba.get_num_threads()}")
    print(f"sparsecode.ITDA: {t_sc:.2f} s (median of {args.repeats}), {n_atoms} atoms")
    print(f"on the first {nb} rows, in lockstep: numpy reference {t_ref:.1f} s, sparsecode "
          f"{t_sc_prefix:.2f} s, ratio {ratio:.1f}x (vs sparsecode's median "
          f"{ratio_median:.1f}x; CPU time {cpu_ref / cpu_sc_prefix:.1f}x); atoms {len(ref.D)} vs "
          f"{m_sc_prefix.n_atoms_}; held-out FVU {fvu_ref:.5f} vs {fvu_scp:.5f}; "
          f"{shared} atom sources shared, first difference at atom {diverge}")
    print(f"\n{'rows':>8}{'atoms':>7}{'s/1000 rows':>13}   (sparsecode, median)"
          f"{'numpy s/1000':>15}")
    for i, (rows, atoms, _, m) in enumerate(passes[0]):
        secs = statistics.median(c[i][2] for c in passes)
        extra = f"{1000 * ref_curve[i][2] / ref_curve[i][3]:15.3f}" if i < len(ref_curve) else ""
        print(f"{rows:8d}{atoms:7d}{1000 * secs / m:13.4f}{'':23}{extra}")
    print(f"\n{'method':<48}{'atoms':>7}{'seconds':>10}{'held-out FVU':>14}")
    for name, a, t, f in results:
        print(f"{name:<48}{a:7d}{t:10.1f}{f:14.4f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/work/data/minilm_l3.h5")
    ap.add_argument("--dataset", default="acts")
    ap.add_argument("--rows", type=int, default=None, help="use only the first rows")
    ap.add_argument("--holdout", type=float, default=0.05)
    ap.add_argument("--k", type=int, default=40)
    ap.add_argument("--threshold", type=float, default=0.2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-rows", type=int, default=None)
    ap.add_argument("--baseline-repeats", type=int, default=1)
    ap.add_argument("--curve-batches", type=int, default=20)
    ap.add_argument("--classic-iters", type=int, default=3)
    ap.add_argument("--skip-learning", action="store_true", help="no MP-SAE / MOD")
    ap.add_argument("--scan", type=float, nargs="+", default=None)
    ap.add_argument("--scan-rows", type=int, default=100_000)
    ap.add_argument("--self-check", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "itda.jsonl"))
    args = ap.parse_args(argv)
    numba.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        if args.self_check:
            return self_check(args)
        X = load_rows(args.data, args.dataset, args.rows)
        if args.scan:
            n_test = math.ceil(args.holdout * len(X))
            warm_up(X.shape[1], args)
            return scan(X[:len(X) - n_test], args)
        run(X, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
