"""Pursuit speed: sparsecode against scikit-learn, SPAMS and overcomplete on the same data.

Problems (k-sparse signals from a unit-norm Gaussian dictionary, 1% noise, float32):

    P1  d=64,  256 atoms,   20000 signals, k=8
    P2  d=384, 4096 atoms,  8192 signals,  k=32
    P3  d=768, 16384 atoms, 4096 signals,  k=64

    P4  d=2304, 16384 atoms, 8192 signals, k=64   } Zipf-like and uniform supports,
    P5  d=2304, 65536 atoms, 2048 signals, k=64   } two threads (see _wide.py)

Every timing of P1-P3 is the median of ``--repeats`` runs after one warm-up run, at 1 and at 2
threads (BLAS, Numba and SPAMS limited alike).  scikit-learn's ``orthogonal_mp_gram``
loops over signals in Python and copies the Gram per signal, so it is timed on a subset
and reported per signal.  SPAMS' ``omp`` uses the ORMP selection rule (it picks the atom
that most reduces the residual after re-fitting), so its supports can differ from OMP's.

Output: one JSON object per line; ratios are anchor time / sparsecode time per signal
(> 1 means sparsecode is faster).

    python benchmarks/bench_pursuit.py [--problems P1 P2 P3] [--threads 1 2] [--repeats 5]
    python benchmarks/bench_pursuit.py --problems P4 P5 [--usage zipf uniform]
        [--storages float32 float16 "float16 whole"]
"""

import argparse
import json
import statistics
import time

import _wide  # benchmarks/ is on sys.path
import numba
import numpy as np
from _provenance import (  # benchmarks/ is on sys.path
    blas_env,
    cpu_model,
    load_average,
    package_commit,
)
from threadpoolctl import threadpool_limits

import sparsecode
from sparsecode.datasets import make_sparse_signals, support_recovery

COMMIT = package_commit()

PROBLEMS = {
    "P1": dict(n_features=64, n_atoms=256, n_samples=20000, k=8),
    "P2": dict(n_features=384, n_atoms=4096, n_samples=8192, k=32),
    "P3": dict(n_features=768, n_atoms=16384, n_samples=4096, k=64),
}
# signals given to scikit-learn (it copies the Gram for every signal)
SKLEARN_SUBSET = {"P1": 2000, "P2": 128, "P3": 8}


def median_time(fn, repeats):
    fn()  # warm-up: compilation, caches, thread pools
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def emit(**row):
    row["commit"] = COMMIT
    row["loadavg_1min"] = load_average()
    row["blas_env"] = blas_env()
    row["cpu"] = cpu_model()
    print(json.dumps(row), flush=True)


def run_sklearn(G, X, D, k):
    from sklearn.linear_model import orthogonal_mp_gram

    Xy = (X @ D.T).T
    return orthogonal_mp_gram(G, Xy, n_nonzero_coefs=k)


def run_spams(Xf, Df, k, threads):
    import spams

    return spams.omp(Xf, Df, L=k, eps=0.0, numThreads=threads)


def overcomplete_encoder(D):
    """overcomplete's MpSAE of the same shape, or None if not installed.

    Its encode runs exactly k steps whatever the atoms, so its time does not depend on
    whether our dictionary values were loaded into it.
    """
    import _overcomplete  # benchmarks/_overcomplete.py (the script's folder is on sys.path)

    sae = _overcomplete.import_sae()
    if sae is None:
        return None
    import torch

    MpSAE = sae.MpSAE
    K, d = D.shape
    model = MpSAE(d, K, k=1)
    with torch.no_grad():
        W = model.get_dictionary()
        W.copy_(torch.from_numpy(D))
    model.eval()
    return model


def bench_problem(name, threads, repeats, with_overcomplete):
    p = PROBLEMS[name]
    k = p["k"]
    X, D, truth = make_sparse_signals(p["n_samples"], p["n_features"], p["n_atoms"], k,
                                      noise=0.01, dtype=np.float32, random_state=0)
    n = X.shape[0]
    base = dict(problem=name, threads=threads, n_samples=n, n_features=p["n_features"],
                n_atoms=p["n_atoms"], k=k, dtype="float32")
    numba.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        t_gram = median_time(lambda: sparsecode.gram(D), repeats)
        G = sparsecode.gram(D)
        t_gemm = median_time(lambda: X @ D.T, repeats)
        emit(**base, solver="gemm X D^T", seconds=t_gemm, signals_per_s=n / t_gemm)
        emit(**base, solver="gram D D^T", seconds=t_gram)

        results = {}
        for solver, fn in [
            ("sparsecode.omp", lambda: sparsecode.omp(X, D, k=k, gram=G)),
            ("sparsecode.mp", lambda: sparsecode.mp(X, D, k=k, gram=G)),
            ("sparsecode.gp", lambda: sparsecode.gp(X, D, k=k, gram=G)),
            ("sparsecode.acgp", lambda: sparsecode.gp(X, D, k=k, variant="acgp", gram=G)),
        ]:
            t = median_time(fn, repeats)
            results[solver] = t
            extra = {}
            if solver == "sparsecode.mp":
                extra["ratio_time_vs_gemm"] = t / t_gemm
            emit(**base, solver=solver, seconds=t, signals_per_s=n / t,
                 support_recovery=support_recovery(fn(), truth), **extra)
        t_omp = results["sparsecode.omp"] / n  # per signal

        Xf, Df = np.asfortranarray(X.T), np.asfortranarray(D.T)
        t = median_time(lambda: run_spams(Xf, Df, k, threads), repeats)
        emit(**base, solver="spams.omp (ORMP)", seconds=t, signals_per_s=n / t,
             omp_speedup=(t / n) / t_omp)

        m = SKLEARN_SUBSET[name]
        t = median_time(lambda: run_sklearn(G, X[:m], D, k), max(1, repeats))
        emit(**base, solver="sklearn.orthogonal_mp_gram", signals_timed=m, seconds=t,
             signals_per_s=m / t, omp_speedup=(t / m) / t_omp)

        if with_overcomplete:
            import torch

            torch.set_num_threads(threads)
            model = overcomplete_encoder(D)
            if model is not None:
                model.k = k
                xt = torch.from_numpy(X)

                def enc():
                    with torch.no_grad():
                        return model.encode(xt)

                t = median_time(enc, repeats)
                emit(**base, solver="overcomplete MpSAE.encode", seconds=t, signals_per_s=n / t,
                     mp_speedup=t / results["sparsecode.mp"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=["P1", "P2", "P3"],
                    choices=list(PROBLEMS) + list(_wide.WIDE))
    ap.add_argument("--usage", nargs="+", default=["zipf", "uniform"],
                    choices=["zipf", "uniform"], help="P4/P5: atom usage of the supports")
    ap.add_argument("--solvers", nargs="+", default=["mp", "omp"], help="P4/P5 solvers")
    ap.add_argument("--storages", nargs="+", default=["float32", "float16", "float16 whole"],
                    choices=["float32", "float16", "float16 whole"],
                    help="P4/P5 Gram storages (see _wide.bench_wide)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--overcomplete", nargs="*", default=["P2"],
                    help="problems on which to time overcomplete's MpSAE (needs torch)")
    args = ap.parse_args(argv)
    sparsecode.warmup(["float32"])
    for name in args.problems:
        if name in _wide.WIDE:
            numba.set_num_threads(2)
            with threadpool_limits(limits=2):
                for usage in args.usage:
                    _wide.bench_wide(name, usage, emit, solvers=args.solvers,
                                     storages=args.storages)
            continue
        for threads in args.threads:
            bench_problem(name, threads, args.repeats, name in args.overcomplete)


if __name__ == "__main__":
    main()
