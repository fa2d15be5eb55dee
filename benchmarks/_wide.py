"""P4 and P5 of bench_pursuit.py: SAE-width dictionaries (16,384 and 65,536 atoms at
d = 2,304, k = 64), supports drawn with Zipf-like atom usage (rank ``r`` used in
proportion to ``r^-1``, as SAE codes are heavy-tailed) and uniformly (the worst case),
reported apart.

Every solver is timed over the one-GEMM floor ``X D^T`` of the same signals.  The Gram
rows are built once per model: a whole Gram matrix (P4), a GramRows store of 1 GiB of
cached rows (P5) warmed by a first batch of other signals from the same distribution, or
at P5 also the whole float16 Gram matrix (8 GiB, ``sparsecode.gram(D, dtype="float16")``
wrapped once by ``GramRows.from_gram``), then timed on the batch (``excluding a Gram
computed once per model``); its build time, the atoms' coherence (the bound of the
deferred rows, also once per model), and the rows computed and payments made for the
timed batch are reported too.  Peak memory beyond the inputs is the growth of the
process's resident high-water mark (reset before each call).
"""

import time

import numpy as np

import sparsecode
from sparsecode.datasets import make_sparse_signals, support_recovery, zipf_usage

WIDE = {
    "P4": dict(n_features=2304, n_atoms=16384, n_samples=8192, k=64),
    "P5": dict(n_features=2304, n_atoms=65536, n_samples=2048, k=64),
}
# signals timed for the anchors and the slow paths (reported per signal)
SUBSET = {"numpy_mp": 256, "sklearn": 8, "spams": 512}


def _hwm_reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the resident high-water mark
        return True
    except OSError:
        return False


def _status_bytes(field):
    """``VmHWM`` (resident high-water mark) or ``VmRSS`` of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def timed(fn):
    """(seconds, result, peak bytes beyond the resident set before the call or None)."""
    ok = _hwm_reset()
    before = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    t = time.perf_counter() - t0
    return t, out, (_status_bytes("VmHWM") - before) if ok else None


def numpy_mp(X, D, k):
    """Plain batched MP in NumPy: one GEMM per step for all signals."""
    R = X.copy()
    n = X.shape[0]
    rows = np.arange(n)
    I = np.empty((n, k), dtype=np.int64)
    for t in range(k):
        C = R @ D.T
        j = np.abs(C).argmax(axis=1)
        c = C[rows, j]
        I[:, t] = j
        R -= c[:, None] * D[j]
    return I


def data(name, usage_kind):
    p = WIDE[name]
    n, d, K, k = p["n_samples"], p["n_features"], p["n_atoms"], p["k"]
    usage = zipf_usage(K, 1.0, random_state=1) if usage_kind == "zipf" else None
    X, D, truth = make_sparse_signals(2 * n, d, K, k, usage=usage, noise=0.01,
                                      random_state=0)
    return X[:n], X[n:], D, truth, p


def _available_bytes():
    """Free memory by ``/proc/meminfo`` (0 where it cannot be read: the whole float16
    Gram is then skipped)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _whole_half(D, base, floor, emit):
    """A whole float16 Gram matrix, built and wrapped once per model (an input of every
    call after that), or None when it would not fit in memory with room to spare."""
    K = D.shape[0]
    if _available_bytes() < K * K * 2 + (4 << 30):
        emit(**base, solver="gram float16 whole", skipped="not enough memory",
             bytes=K * K * 2)
        return None
    t_build, G16, _ = timed(lambda: sparsecode.gram(D, dtype="float16"))
    emit(**base, solver="gram float16 whole (once per model)", seconds=t_build,
         bytes=G16.nbytes, ratio_time_vs_gemm=t_build / floor)
    t_wrap, store, _ = timed(lambda: sparsecode.GramRows.from_gram(D, G16))
    emit(**base, solver="gram float16 whole: checked and wrapped (once per model)",
         seconds=t_wrap, ratio_time_vs_gemm=t_wrap / floor)
    return store


def bench_wide(name, usage_kind, emit, with_anchors=True, solvers=("mp", "omp"),
               storages=("float32", "float16", "float16 whole"), repeats=3):
    """Time ``solvers`` on ``name`` (P4 or P5) with each Gram storage: ``"float32"`` and
    ``"float16"`` are GramRows stores of ``_config.GRAM_CACHE_BYTES`` (complete at P4,
    cached rows at P5); ``"float16 whole"`` is ``sparsecode.gram(D, dtype="float16")``
    wrapped once (8 GiB at P5; skipped where the float16 store is already complete).  A
    call on a complete store is timed ``repeats`` times (median); a call on cached rows
    once, as a second call would find the first one's rows."""
    warm, X, D, truth, p = data(name, usage_kind)
    n, k, K = X.shape[0], p["k"], p["n_atoms"]
    true_rows = type(truth)(truth.indices[n:], truth.values[n:], K)
    base = dict(problem=name, usage=usage_kind, threads=2, n_samples=n,
                n_features=p["n_features"], n_atoms=K, k=k, dtype="float32",
                distinct_atoms=int(np.unique(true_rows.indices).size))
    floor = min(timed(lambda: X @ D.T)[0] for _ in range(3))
    emit(**base, solver="gemm X D^T", seconds=floor)
    shared = None  # the coherence, shared by the stores of the same atoms
    half_complete = False
    for storage in storages:
        if storage == "float16 whole":
            store = None if half_complete else _whole_half(D, base, floor, emit)
            if store is None:
                continue
        else:
            t_build, store, _ = timed(lambda s=storage: sparsecode.GramRows(D, dtype=s))
            emit(**base, solver=f"gram rows {storage}", seconds=t_build,
                 rows_held=store.capacity, complete=store.complete,
                 ratio_time_vs_gemm=t_build / floor)
            half_complete |= storage == "float16" and store.complete
        if not store.complete:  # once per model, as the rows: the deferred path's bound
            if shared is None:
                t_mu, _, _ = timed(store.coherence)
                emit(**base, solver="coherence (once per model)", seconds=t_mu,
                     ratio_time_vs_gemm=t_mu / floor)
                shared = store.mu, store.mu_groups, store.mu_group
            store.mu, store.mu_groups, store.mu_group = shared
        for solver in solvers:
            fn = getattr(sparsecode, solver)
            fn(warm, D, k=k, gram=store)  # the rows of the frequent atoms
            before, paid = store.rows_computed, store.payments
            runs = [timed(lambda f=fn, s=store: f(X, D, k=k, gram=s))
                    for _ in range(repeats if store.complete else 1)]
            t = float(np.median([r[0] for r in runs]))
            codes = runs[0][1]
            peak = max((r[2] for r in runs if r[2] is not None), default=None)
            emit(**base, solver=f"sparsecode.{solver}", gram=storage, seconds=t,
                 runs_seconds=[r[0] for r in runs],
                 ratio_time_vs_gemm=t / floor, rows_computed=store.rows_computed - before,
                 payments=store.payments - paid, peak_bytes_beyond_inputs=peak,
                 support_recovery=support_recovery(codes, true_rows))
        store = None
    if not with_anchors:
        return
    m = SUBSET["numpy_mp"]
    t, _, _ = timed(lambda: numpy_mp(X[:m], D, k))
    emit(**base, solver="numpy batched MP", signals_timed=m, seconds_per_signal=t / m,
         ratio_time_vs_gemm=(t / m) / (floor / n))
    try:
        import spams
    except ImportError:
        spams = None
    if spams is not None and K * K * 4 <= 4 << 30:  # it builds the whole Gram per call
        m = SUBSET["spams"]
        Xf, Df = np.asfortranarray(X[:m].T), np.asfortranarray(D.T)
        t, _, _ = timed(lambda: spams.omp(Xf, Df, L=k, eps=0.0, numThreads=2))
        emit(**base, solver="spams.omp (ORMP, Gram built per call)", signals_timed=m,
             seconds_per_signal=t / m, ratio_time_vs_gemm=(t / m) / (floor / n))
