"""GPU matching pursuit: sparsecode's CuPy kernels against plain PyTorch MP on the same GPU.

Problems (float32, unit-norm Gaussian dictionary, Gaussian signals, exactly k steps):

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

    python benchmarks/bench_gpu.py [--problems G1 G2] [--repeats 5] [--quick]
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


def quick(p):
    """``--quick``: the same shapes shrunk (fewer signals, atoms and steps)."""
    return dict(n_features=p["n_features"], n_atoms=p["n_atoms"] // 4,
                n_samples=p["n_samples"] // 16, k=p["k"] // 4)


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
    from sparsecode.gpu import _driver as gdriver
    from sparsecode.gpu.mp import launch_gram
    from sparsecode.pursuit import _driver
    from sparsecode.pursuit._rules import SIGNED

    _, prob = _driver.prepare(X, D, k=k, tol=None, gram=G, backend="gpu",
                              k_may_exceed_atoms=True, name="mp", rule=SIGNED)
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
                device=cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
                .decode(errors="replace"))
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
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
    for name in args.problems:
        p = quick(PROBLEMS[name]) if args.quick else PROBLEMS[name]
        bench_problem(name + ("-quick" if args.quick else ""), p, args.repeats, cupy, torch)
        cupy.get_default_memory_pool().free_all_blocks()


if __name__ == "__main__":
    main()
