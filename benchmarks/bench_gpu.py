"""GPU benchmarks: sparsecode's CuPy kernels against PyTorch anchors on the same GPU.

Three parts (``--parts``; each skips its anchor with a message when it is not installed):

``mp``     sparsecode.mp against plain PyTorch MP (problems G1, G2 below).
``omp``    sparsecode.omp against ``orthogonal-matching-pursuit-gpu`` (``run_omp``, its
           batched PyTorch OMP, ``alg="v0"``) at O1 d=256, 1024 atoms, 65536 signals, k=32
           and O2 d=768, 16384 atoms, 16384 signals, k=64 (target >= 3x).  k-sparse signals
           of the dictionary plus 1% noise; supports are compared on 512 signals.
``wide``   the SAE widths of bench_pursuit.py on the device (P4: d=2304, 16384 atoms, 8192
           signals; P5: 65536 atoms, 2048 signals; k=64, Zipf-like supports from
           benchmarks/_wide.py): MP and OMP with a whole float32 Gram and a float16 one
           (``gram(D, dtype="float16")``), each over the one GEMM ``X D^T``, and the
           Gram's build time (once per model, reported apart).
``train``  MPSAE training steps (update="adam", MP encoder) against overcomplete's
           ``MpSAE`` (Adam, the same k) at T1 d=768, 16384 atoms, k=64, batch 8192:
           steps per second after warm-up (target >= 10x).

MP problems (float32, unit-norm Gaussian dictionary, Gaussian signals, exactly k steps):

    G1  d=768,  16384 atoms, 65536 signals, k=64
    G2  d=2304, 32768 atoms, 16384 signals, k=64

The anchor is the algorithm of overcomplete's ``MpSAE.encode`` written as plain PyTorch
without its dense one-hot codes: every step recomputes ``corr = r @ D.T`` (one GEMM),
takes ``idx = argmax(corr)`` (the signed rule), ``coef = corr[idx]`` and updates
``r -= coef * D[idx]``.  sparsecode runs the same rule (``selection="signed"``) on the
Gram path: one GEMM ``X D^T``, then per step one Gram row per signal.  Rows:

* ``torch MP`` and ``sparsecode.mp`` (Gram precomputed, as in a training loop or a chunked
  encode) and ``sparsecode.mp + gram`` (building ``G = D D^T`` included), with
  ``speedup`` = torch time / sparsecode time (target >= 10);
* ``gram update phase``: the pursuit kernel alone on one launch of signals, and the
  bandwidth it achieves: Gram-row bytes moved per step (``n_atoms * 4`` per signal)
  over its time, against the device's peak (``memoryClockRate * busWidth * 2``).  Bytes
  are counted as if every Gram row came from device memory (rows read again by other
  signals may hit in L2, which can push the figure above what DRAM delivered);
  ``logical_GBps`` adds the correlation row read and written, which stays in shared
  memory when it fits.

Every timing is the median of ``--repeats`` (>= 5) runs after one warm-up, each ended by
a device synchronisation.  TF32 is off for both (PyTorch's and CuPy's default).  Output:
one JSON object per line.

    python benchmarks/bench_gpu.py [--parts mp omp wide train] [--problems G1 G2]
                                   [--repeats 5] [--quick]
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np

PROBLEMS = {
    "G1": dict(n_features=768, n_atoms=16384, n_samples=65536, k=64),
    "G2": dict(n_features=2304, n_atoms=32768, n_samples=16384, k=64),
}


OMP_PROBLEMS = {
    "O1": dict(n_features=256, n_atoms=1024, n_samples=65536, k=32),
    "O2": dict(n_features=768, n_atoms=16384, n_samples=16384, k=64),
}
TRAIN_PROBLEMS = {
    "T1": dict(n_features=768, n_atoms=16384, n_samples=8192, k=64),  # n_samples: the batch
}


def quick(p):
    """``--quick``: the same shapes shrunk (fewer signals, atoms and steps)."""
    return dict(n_features=p["n_features"], n_atoms=p["n_atoms"] // 4,
                n_samples=p["n_samples"] // 16, k=p["k"] // 4)


def device_name(cupy):
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    return props["name"].decode(errors="replace")


def planted_gpu(cupy, n, d, K, k, seed=0):
    """k-term signals of a unit-norm Gaussian dictionary (atoms drawn with replacement)
    plus 1% noise (float32)."""
    rs = cupy.random.RandomState(seed)
    D = rs.standard_normal((K, d), dtype=np.float32)
    D /= cupy.linalg.norm(D, axis=1, keepdims=True)
    idx = rs.randint(0, K, size=(n, k))
    coef = (rs.uniform(1.0, 2.0, size=(n, k)) * (2 * rs.randint(0, 2, size=(n, k)) - 1))
    X = cupy.einsum("nk,nkd->nd", coef.astype(np.float32), D[idx])
    X += 0.01 * rs.standard_normal(X.shape, dtype=np.float32) * \
        cupy.linalg.norm(X, axis=1, keepdims=True) / np.sqrt(d)
    return X, D


def emit(**row):
    print(json.dumps(row), flush=True)


def median_time(fn, repeats, sync):
    fn()  # warm-up: compilation, memory pools, cuBLAS handles
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_mp(x, D, k):
    """Plain PyTorch MP (overcomplete's MpSAE algorithm): ``(indices, values)`` of
    shape (n, k), one entry per step."""
    import torch

    n = x.shape[0]
    r = x.clone()
    idx_all = torch.empty((n, k), dtype=torch.int64, device=x.device)
    val_all = torch.empty((n, k), dtype=x.dtype, device=x.device)
    for t in range(k):
        corr = r @ D.T
        val, idx = torch.max(corr, dim=1)
        r -= val[:, None] * D[idx]
        idx_all[:, t] = idx
        val_all[:, t] = val
    return idx_all, val_all


def peak_bandwidth_GBps(cupy):
    """Peak device-memory bandwidth (GB/s): memory clock (kHz) * bus width (bits) / 8 *
    2 (double data rate), from the device attributes; None when the driver does not
    report them."""
    attrs = cupy.cuda.Device().attributes
    clock_khz = attrs.get("MemoryClockRate")
    bus_bits = attrs.get("GlobalMemoryBusWidth")
    if not clock_khz or not bus_bits:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        clock_khz = clock_khz or props.get("memoryClockRate")
        bus_bits = bus_bits or props.get("memoryBusWidth")
    if not clock_khz or not bus_bits:
        return None
    return clock_khz * 1e3 * (bus_bits / 8) * 2 / 1e9


def gram_update_phase(cupy, X, D, G, k, repeats, sync):
    """Time the Gram-path pursuit kernel alone on one launch of signals."""
    from sparsecode._rules import SIGNED
    from sparsecode.gpu import _driver as gdriver
    from sparsecode.gpu.mp import launch_gram
    from sparsecode.pursuit import _driver

    _, prob = _driver.prepare(X, D, k=k, tol=None, gram=G, backend="gpu",
                              k_may_exceed_atoms=True, rule=SIGNED)
    K, itemsize = prob.n_atoms, prob.dtype.itemsize
    B = min(X.shape[0], gdriver.rows_per_block(K * itemsize))
    Xb = X[:B]
    C0 = gdriver.correlations(Xb, prob)
    stats = gdriver.row_stats(Xb, prob)
    C = cupy.empty_like(C0)
    I = cupy.empty((B, prob.width), dtype=np.int32)
    Z = cupy.empty((B, prob.width), dtype=np.float64)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times, shared = [], None
    for rep in range(repeats + 1):
        C[...] = C0
        I.fill(-1)
        Z.fill(0)
        start.record()
        shared = launch_gram(C, prob, stats, I, Z)
        stop.record()
        stop.synchronize()
        if rep:  # the first is the warm-up
            times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    t = statistics.median(times)
    steps = B * k  # every signal takes k steps (no tol; the signed rule does not stop early)
    gram_bytes = steps * K * itemsize
    return dict(signals=B, seconds=t, steps_per_s=steps / t,
                gram_row_GBps=gram_bytes / t / 1e9,
                logical_GBps=3 * gram_bytes / t / 1e9,
                correlations_in_shared_memory=bool(shared))


def bench_problem(name, p, repeats, cupy, torch):
    import sparsecode

    d, K, n, k = p["n_features"], p["n_atoms"], p["n_samples"], p["k"]
    base = dict(problem=name, n_samples=n, n_features=d, n_atoms=K, k=k, dtype="float32",
                device=device_name(cupy))
    rs = cupy.random.RandomState(0)
    D = rs.standard_normal((K, d), dtype=np.float32)
    D /= cupy.linalg.norm(D, axis=1, keepdims=True)
    X = rs.standard_normal((n, d), dtype=np.float32)
    sync = cupy.cuda.Device().synchronize

    t_gram = median_time(lambda: sparsecode.gram(D), repeats, sync)
    G = sparsecode.gram(D)
    t_gemm = median_time(lambda: X @ D.T, repeats, sync)
    emit(**base, solver="cupy gemm X D^T", seconds=t_gemm)
    emit(**base, solver="sparsecode.gram D D^T", seconds=t_gram)

    def ours():
        return sparsecode.mp(X, D, k=k, selection="signed", gram=G)

    def ours_with_gram():
        return sparsecode.mp(X, D, k=k, selection="signed", gram=sparsecode.gram(D))

    t_ours = median_time(ours, repeats, sync)
    t_ours_g = median_time(ours_with_gram, repeats, sync)
    codes = ours()

    t_torch = None
    if torch is not None:
        xt, Dt = torch.as_tensor(X, device="cuda"), torch.as_tensor(D, device="cuda")
        t_torch = median_time(lambda: torch_mp(xt, Dt, k), repeats, torch.cuda.synchronize)
        ti, _ = torch_mp(xt[:512], Dt, k)
        ti = ti.cpu().numpy()
        ours_i = codes.indices[:512].get()
        first = float(np.mean(ti[:, 0] == ours_i[:, 0]))
        jac = float(np.mean([len(set(a) & set(b[b >= 0])) / len(set(a) | set(b[b >= 0]))
                             for a, b in zip(ti, ours_i, strict=True)]))
        emit(**base, solver="torch MP (r @ D.T every step)", seconds=t_torch,
             signals_per_s=n / t_torch, tf32=bool(torch.backends.cuda.matmul.allow_tf32))
        del xt, Dt
        torch.cuda.empty_cache()
    else:
        first = jac = None
    extra = {} if t_torch is None else dict(first_atom_agreement=first, support_jaccard=jac)
    emit(**base, solver="sparsecode.mp (Gram given)", seconds=t_ours, signals_per_s=n / t_ours,
         speedup=None if t_torch is None else t_torch / t_ours, **extra)
    emit(**base, solver="sparsecode.mp + gram", seconds=t_ours_g, signals_per_s=n / t_ours_g,
         speedup=None if t_torch is None else t_torch / t_ours_g)

    phase = gram_update_phase(cupy, X, D, G, k, repeats, sync)
    peak = peak_bandwidth_GBps(cupy)
    emit(**base, solver="gram update phase (mp_gram kernel)", **phase, peak_GBps=peak,
         fraction_of_peak=None if peak is None else phase["gram_row_GBps"] / peak)


def bench_omp(name, p, repeats, cupy, torch):
    import sparsecode

    d, K, n, k = p["n_features"], p["n_atoms"], p["n_samples"], p["k"]
    base = dict(problem=name, n_samples=n, n_features=d, n_atoms=K, k=k, dtype="float32",
                device=device_name(cupy))
    X, D = planted_gpu(cupy, n, d, K, k)
    sync = cupy.cuda.Device().synchronize
    G = sparsecode.gram(D)
    t_ours = median_time(lambda: sparsecode.omp(X, D, k=k, gram=G), repeats, sync)
    t_ours_g = median_time(lambda: sparsecode.omp(X, D, k=k), repeats, sync)
    codes = sparsecode.omp(X[:512], D, k=k, gram=G)
    t_anchor, agree = None, None
    try:
        from orthogonal_matching_pursuit_gpu import run_omp
    except ImportError:
        print("# bench_gpu: orthogonal-matching-pursuit-gpu is not installed; the OMP anchor "
              "is skipped (pip install orthogonal-matching-pursuit-gpu)", file=sys.stderr)
        run_omp = None
    if run_omp is not None and torch is not None:
        Xt, Dt = torch.as_tensor(X, device="cuda"), torch.as_tensor(D, device="cuda")

        def anchor():
            return run_omp(Dt.T, Xt, k, normalize=False, fit_intercept=False, alg="v0")

        t_anchor = median_time(anchor, repeats, torch.cuda.synchronize)
        dense = run_omp(Dt.T, Xt[:512], k, normalize=False, fit_intercept=False, alg="v0")
        theirs = [set(np.flatnonzero(r).tolist()) for r in dense.cpu().numpy()]
        ours = [set(r[r >= 0].tolist()) for r in codes.indices.get()]
        agree = float(np.mean([a == b for a, b in zip(ours, theirs, strict=True)]))
        emit(**base, solver="orthogonal-matching-pursuit-gpu run_omp v0", seconds=t_anchor,
             signals_per_s=n / t_anchor)
        del Xt, Dt
        torch.cuda.empty_cache()
    for label, t in (("sparsecode.omp (Gram given)", t_ours), ("sparsecode.omp", t_ours_g)):
        emit(**base, solver=label, seconds=t, signals_per_s=n / t,
             speedup=None if t_anchor is None else t_anchor / t, support_agreement=agree)


def bench_wide_gpu(name, p, repeats, cupy, torch):
    import _wide  # benchmarks/ is on sys.path

    import sparsecode
    from sparsecode.datasets import support_recovery

    X, _, D, truth, p = _wide.data(name.removesuffix("-quick"), "zipf")
    n = p["n_samples"] if not name.endswith("-quick") else p["n_samples"] // 16
    X, truth = cupy.asarray(X[:n]), truth[:n]
    D = cupy.asarray(D)
    k = p["k"]
    base = dict(problem=name, n_samples=n, n_features=D.shape[1], n_atoms=D.shape[0], k=k,
                usage="zipf", dtype="float32", device=device_name(cupy))
    sync = cupy.cuda.Device().synchronize
    t_gemm = median_time(lambda: X @ D.T, repeats, sync)
    emit(**base, solver="cupy gemm X D^T", seconds=t_gemm)
    for storage in (None, "float16"):
        t_build = median_time(lambda s=storage: sparsecode.gram(D, dtype=s), repeats, sync)
        G = sparsecode.gram(D, dtype=storage)
        emit(**base, solver="sparsecode.gram", gram=storage or "float32", seconds=t_build,
             gram_GB=G.nbytes / 1e9)
        for solver in ("mp", "omp"):
            fn = getattr(sparsecode, solver)
            t = median_time(lambda f=fn, g=G: f(X, D, k=k, gram=g), repeats, sync)
            codes = fn(X, D, k=k, gram=G)
            host = sparsecode.SparseCodes(codes.indices.get(), codes.values.get(),
                                          codes.n_atoms)
            emit(**base, solver=f"sparsecode.{solver} (Gram given)",
                 gram=storage or "float32", seconds=t, x_gemm=t / t_gemm,
                 support_recovery=support_recovery(host, truth))
        del G
        cupy.get_default_memory_pool().free_all_blocks()


def bench_train(name, p, repeats, cupy, torch):
    from sparsecode import MPSAE

    d, K, n, k = p["n_features"], p["n_atoms"], p["n_samples"], p["k"]
    base = dict(problem=name, batch=n, n_features=d, n_atoms=K, k=k, dtype="float32",
                device=device_name(cupy))
    X, _ = planted_gpu(cupy, n, d, K, 8)
    sync = cupy.cuda.Device().synchronize
    model = MPSAE(K, k, batch_size=n, lr=1e-4, warmup_steps=0, resample_dead=False,
                  progress=False, log_every=10**9, random_state=0).start(X, total_steps=10**6)
    t_ours = median_time(lambda: model.partial_fit(X), repeats, sync)
    sae = import_overcomplete()
    t_anchor = None
    if sae is not None and torch is not None:
        Xt = torch.as_tensor(X, device="cuda")
        anchor = sae.MpSAE(d, K, k=k, device="cuda")
        opt = torch.optim.Adam(anchor.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            _, _, x_hat = anchor(Xt)
            ((x_hat - Xt) ** 2).sum(dim=1).mean().backward()
            opt.step()

        t_anchor = median_time(step, repeats, torch.cuda.synchronize)
        emit(**base, solver="overcomplete MpSAE + torch Adam", seconds=t_anchor,
             samples_per_s=n / t_anchor)
        del Xt, anchor, opt
        torch.cuda.empty_cache()
    emit(**base, solver="sparsecode MPSAE.partial_fit", seconds=t_ours, samples_per_s=n / t_ours,
         speedup=None if t_anchor is None else t_anchor / t_ours)


def import_overcomplete():
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _overcomplete import import_sae

    return import_sae()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["mp", "omp", "wide", "train"],
                    choices=["mp", "omp", "wide", "train"])
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS),
                    help="MP problems")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="shrunk shapes (a smoke run)")
    args = ap.parse_args(argv)
    if args.repeats < 5 and not args.quick:
        ap.error("--repeats must be >= 5 (medians of at least 5 runs)")

    import sparsecode

    if not sparsecode.gpu.available():
        sys.exit("bench_gpu: needs CuPy and a CUDA device; nothing was timed. Install CuPy "
                 f"with {sparsecode.gpu.INSTALL_HINT}.")
    import cupy

    try:
        import torch

        if not torch.cuda.is_available():
            print("# bench_gpu: PyTorch has no CUDA device; the torch MP anchor is skipped",
                  file=sys.stderr)
            torch = None
    except ImportError:
        print("# bench_gpu: PyTorch is not installed; the torch MP anchor is skipped "
              "(pip install torch)", file=sys.stderr)
        torch = None
    runs = []
    if "mp" in args.parts:
        runs += [(bench_problem, name, PROBLEMS[name]) for name in args.problems]
    if "omp" in args.parts:
        runs += [(bench_omp, name, p) for name, p in OMP_PROBLEMS.items()]
    if "wide" in args.parts:
        runs += [(bench_wide_gpu, name, {}) for name in ("P4", "P5")]
    if "train" in args.parts:
        runs += [(bench_train, name, p) for name, p in TRAIN_PROBLEMS.items()]
    for fn, name, p in runs:
        p = quick(p) if args.quick and p else p
        fn(name + ("-quick" if args.quick else ""), p, args.repeats, cupy, torch)
        cupy.get_default_memory_pool().free_all_blocks()


if __name__ == "__main__":
    main()
