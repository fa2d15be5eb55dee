"""Training speed: sparsecode against overcomplete, PyTorch, scikit-learn and SPAMS.

Part ``sae`` -- MP-SAE training throughput (samples/s) on d=384, 4096 atoms, k=32 MP steps,
batches of 4096 float32 signals from ``make_sparse_signals(n, 384, 4096, 32)``:

    sparsecode    ``MPSAE.partial_fit``: one step = exact gradient of the unrolled MP (Numba)
                  + Adam, dead-atom bookkeeping included
    overcomplete  ``MpSAE`` trained by its own ``train_sae`` loop, one batch per call
                  (forward encode + decode, MSE, backward, gradient clipping, Adam)
    PyTorch       a plain autograd MP-SAE written below (tied unit-norm atoms, pre-bias,
                  k unrolled MP steps with a dense ``r @ D.T`` each, MSE, backward, Adam)

The first step of each is a warm-up (initialisation, compilation, allocator); the model is
initialised on batch 0 and timed on other batches (MPSAE starts its atoms from signals of
the first batch, which that batch would then code with one atom each).  sparsecode steps
are timed ``--repeats`` times, the PyTorch ones ``--torch-steps`` times (seconds each);
medians are reported.  Also timed, to place the step against its flops: the GEMM
``X D^T``, the Gram ``D D^T`` and the MP-SAE kernel alone (``mpsae_grad`` given the Gram).

Part ``dl`` -- dictionary learning on P1 (d=64, 256 atoms, 20000 signals, 8-sparse, 1%
noise, float32), at 8 non-zeros per signal, everyone starting from the same 256 random
signals (``init_dictionary(X, 256, random_state=0)``):

    sparsecode MOD, K-SVD  full batch: ``omp(X, D, k=8)`` then the update, dead and
                           duplicated atoms resampled (the loop of sparsecode.dictionary)
    sparsecode online      minibatches of 1000: ``omp``, ``OnlineStats.update`` with
                           forgetting 0.8, ``online_update`` (sphere), resampling as above
    scikit-learn           ``MiniBatchDictionaryLearning.partial_fit`` (its own L1 coding,
                           alpha=1, fit_algorithm="cd", batches of 256: the fastest of a small
                           sweep), scored through transform_algorithm="omp",
                           transform_n_nonzero_coefs=8
    SPAMS                  ``trainDL`` mode=3 (``||alpha||_0 <= lambda1``, coded by ORMP),
                           lambda1=8, batchsize=512 (the fastest of 256/512/1024); one run
                           from scratch per point of its curve (2 epochs, then 1.25x more
                           each point): trainDL keeps its last two epochs of statistics in
                           buffers a returned model does not carry, and a continued run
                           converged worse

Every curve point is the relative error ``||X - Z D||^2 / ||X||^2`` of ``sparsecode.omp(X,
D, k=8)`` on the learnt atoms (normalised), so everyone is scored the same way; evaluation
time is excluded.  The time to reach a target error is the training time of the first
point at or below it.

Output: one JSON object per line (printed, and appended to ``--out``), then a table.
Ratios are anchor time / sparsecode time (> 1 means sparsecode is faster).

    python benchmarks/bench_train.py [--parts sae dl] [--threads 1 2] [--repeats 5]
        [--torch-steps 2] [--torch-threads 1 2] [--sklearn-budget 60] [--preload-scipy]
        [--quick] [--out FILE]

Every row records the package commit and the 1-minute load average: the 2-thread figures
on a 2-core machine depend on other jobs and on thread-pool settings (see
docs/benchmarks.md).
"""

import argparse
import json
import os
import statistics
import time
import warnings

import _overcomplete  # benchmarks/_overcomplete.py (the script's folder is on sys.path)
import numba
import numpy as np
from _provenance import blas_env, load_average, package_commit
from threadpoolctl import threadpool_limits

import sparsecode
import sparsecode.dictionary
import sparsecode.sae
from sparsecode.datasets import make_sparse_signals

SAE = dict(n_features=384, n_atoms=4096, k=32, batch=4096)
DL = dict(n_features=64, n_atoms=256, n_samples=20000, k=8)
QUICK_SAE = dict(n_features=32, n_atoms=256, k=4, batch=256)
QUICK_DL = dict(n_features=16, n_atoms=32, n_samples=2000, k=3)
# fixed target errors of part dl; the error SPAMS ends at (x 1.05) is added as a target
TARGETS = (0.10, 0.05)
# thread-pool settings that change the 2-thread results (recorded with every row)
ENV_KEYS = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "NUMBA_THREADING_LAYER",
            "OMP_NUM_THREADS")
ROWS = []
OUT = None
PRELOAD = []
COMMIT = None


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
    row["env"] = {key: os.environ[key] for key in ENV_KEYS if key in os.environ}
    if PRELOAD:
        row["env"]["preload_scipy"] = True
    ROWS.append(row)
    line = json.dumps(row)
    print(line, flush=True)
    if OUT is not None:
        with open(OUT, "a") as f:
            f.write(line + "\n")


def set_threads(threads):
    numba.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def overcomplete_stepper(sae, n_features, n_atoms, k):
    """One training step of overcomplete's MpSAE, as its ``train_sae`` runs it."""
    import torch

    model = sae.MpSAE(n_features, n_atoms, k=k)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)

    def criterion(x, x_hat, pre_codes, codes, dictionary):
        return (x - x_hat).square().mean()

    def step(xb):
        sae.train_sae(model, [xb], criterion, optimizer, nb_epochs=1, clip_grad=1.0,
                      monitoring=0)

    return step


def torch_stepper(D0, b0, k):
    """One training step of a plain PyTorch autograd MP-SAE."""
    import torch

    class PlainMPSAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W = torch.nn.Parameter(torch.from_numpy(D0.copy()))
            self.b = torch.nn.Parameter(torch.from_numpy(b0.copy()))

        def forward(self, x):
            D = self.W / self.W.norm(dim=1, keepdim=True)  # tied unit-norm atoms
            r = x - self.b
            for _ in range(k):
                c = r @ D.T  # dense correlations, every step
                j = c.detach().abs().argmax(dim=1, keepdim=True)
                r = r - c.gather(1, j) * D[j[:, 0]]
            return x - r  # x_hat = z D + b

    model = PlainMPSAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(xb):
        optimizer.zero_grad()
        loss = (xb - model(xb)).square().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def time_steps(step, batches, n_steps):
    """Warm-up step on ``batches[0]``, then ``n_steps`` timed steps cycling over the
    others; returns the list of step times."""
    step(batches[0])
    times = []
    for s in range(n_steps):
        xb = batches[1 + s % (len(batches) - 1)]
        t0 = time.perf_counter()
        step(xb)
        times.append(time.perf_counter() - t0)
    return times


def bench_sae(p, threads, repeats, torch_steps, with_torch):
    from sparsecode.sae import MPSAE, mpsae_grad

    d, K, k, B = p["n_features"], p["n_atoms"], p["k"], p["batch"]
    X, _, _ = make_sparse_signals(4 * B, d, K, k, noise=0.01, dtype=np.float32,
                                  random_state=0)
    batches = [X[i * B:(i + 1) * B] for i in range(4)]
    base = dict(part="sae", threads=threads, batch=B, n_features=d, n_atoms=K, k=k,
                dtype="float32")
    set_threads(threads)
    with threadpool_limits(limits=threads):
        sc = {}
        for unit, resample in ((True, True), (False, True), (True, False)):
            model = MPSAE(K, k, batch_size=B, lr=1e-3, unit_atoms=unit,
                          resample_dead=resample, progress=False, random_state=0)
            times = time_steps(model.partial_fit, batches, repeats)
            t = statistics.median(times)
            sc[unit, resample] = t
            emit(**base, library="sparsecode",
                 solver=f"MPSAE.partial_fit (unit_atoms={unit}, resample_dead={resample})",
                 seconds=t, samples_per_s=B / t, steps_timed=len(times),
                 min_seconds=min(times), max_seconds=max(times))
            if unit and resample:
                D = np.ascontiguousarray(model.components_)
                b = model.bias_.copy()

        # the pieces of a step, on the trained unit-norm atoms
        Xb = batches[1]
        t_gemm = median_time(lambda: Xb @ D.T, repeats)
        t_gram = median_time(lambda: D @ D.T, repeats)
        G = D @ D.T
        t_kernel = median_time(lambda: mpsae_grad(Xb, D, b, k=k, gram=G), repeats)
        Xc = Xb - b
        t_mp = median_time(lambda: sparsecode.mp(Xc, D, k=k, gram=G), repeats)
        rate = 2.0 * B * K * d / t_gemm
        flops = {
            "correlation GEMM 2BKd": 2.0 * B * K * d,
            "Gram D D^T 2K^2d (full GEMM)": 2.0 * K * K * d,
            "MP updates 2BkK": 2.0 * B * k * K,
            "backward 12Bkd": 12.0 * B * k * d,
        }
        emit(**base, library="numpy", solver="gemm X D^T", seconds=t_gemm, gflops=rate / 1e9)
        emit(**base, library="numpy", solver="gram D D^T", seconds=t_gram,
             gflops=2.0 * K * K * d / t_gram / 1e9)
        emit(**base, library="sparsecode", solver="mpsae_grad (Gram given)", seconds=t_kernel,
             samples_per_s=B / t_kernel)
        emit(**base, library="sparsecode", solver="mp, forward only (Gram given)", seconds=t_mp,
             samples_per_s=B / t_mp)
        model_s = sum(flops.values()) / rate
        emit(**base, library="model", solver="flops at the GEMM rate", seconds=model_s,
             flops={key: v / 1e9 for key, v in flops.items()}, gemm_gflops=rate / 1e9,
             gram_row_bytes=4.0 * B * k * K, step_over_model=sc[True, True] / model_s)

        if not with_torch:
            return
        import torch

        torch.set_num_threads(threads)
        sae = _overcomplete.import_sae()
        tb = [torch.from_numpy(np.ascontiguousarray(x)) for x in batches]
        anchors = []
        if sae is not None:
            anchors.append(("overcomplete", "MpSAE + train_sae step",
                            overcomplete_stepper(sae, d, K, k)))
        anchors.append(("pytorch", "plain autograd MP-SAE step", torch_stepper(D, b, k)))
        for library, solver, step in anchors:
            times = time_steps(step, tb, torch_steps)
            t = statistics.median(times)
            emit(**base, library=library, solver=solver, seconds=t, samples_per_s=B / t,
                 steps_timed=len(times), min_seconds=min(times), max_seconds=max(times),
                 speedup=t / sc[True, True])


# ---------------------------------------------------------------------------- part dl


class Curve:
    """Training clock that stops while the current atoms are scored."""

    def __init__(self, X, k):
        self.X, self.k = X, k
        self.xx = float(np.einsum("ij,ij->", X, X, dtype=np.float64))
        self.points = []
        self.seconds = 0.0

    def error(self, D):
        from sparsecode.dictionary import normalize_atoms

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero atoms stay zero
            D = normalize_atoms(np.asarray(D, dtype=self.X.dtype))
        codes = sparsecode.omp(self.X, D, k=self.k)
        R = self.X - codes.decode(D)
        return float(np.einsum("ij,ij->", R, R, dtype=np.float64)) / self.xx

    def add(self, seconds, D):
        self.points.append((seconds, self.error(D)))
        return self.points[-1][1]


def plateaued(points, floor=0.1, rel=0.01, patience=3):
    """True once the error is below ``floor`` and the last ``patience`` points improved
    the best by less than ``rel``."""
    errs = [e for _, e in points]
    if len(errs) <= patience or min(errs) > floor:
        return False
    before = min(errs[:-patience])
    return min(errs[-patience:]) > before * (1 - rel)


def replace_waste(D, usage, X, codes, rng, stats=None):
    """Resample dead and duplicated atoms (the loop of sparsecode.dictionary)."""
    from sparsecode.dictionary import coherent_atoms, resample_dead

    waste = usage.dead() | coherent_atoms(D, 0.99, usage=usage.counts)
    if waste.any():
        R = X - codes.decode(D)
        D = resample_dead(D, waste, X, np.einsum("ij,ij->i", R, R), random_state=rng)
        usage.reset(waste)
        if stats is not None:
            stats.forget_atoms(waste)
    return D


def run_batch(method, X, D0, k, budget, max_iter):
    from sparsecode.dictionary import DeadAtoms, ksvd_update, mod_update, normalize_atoms

    curve = Curve(X, k)
    D = D0.copy()
    usage = DeadAtoms(D.shape[0], window=X.shape[0])
    rng = np.random.default_rng(0)
    for _ in range(max_iter):
        t0 = time.perf_counter()
        codes = sparsecode.omp(X, D, k=k)
        usage.update(codes)
        if method == "mod":
            D, codes = normalize_atoms(mod_update(X, codes, D=D), codes)
        else:
            D, codes = ksvd_update(X, codes, D)
        D = replace_waste(D, usage, X, codes, rng)
        curve.seconds += time.perf_counter() - t0
        curve.add(curve.seconds, D)
        if curve.seconds > budget or plateaued(curve.points):
            break
    return curve


def run_online(X, D0, k, budget, batch, forget, check_every):
    from sparsecode.dictionary import DeadAtoms, OnlineStats, online_update

    n = X.shape[0]
    curve = Curve(X, k)
    D = D0.copy()
    stats = OnlineStats(D.shape[0], X.shape[1])
    usage = DeadAtoms(D.shape[0], window=n)
    rng = np.random.default_rng(0)
    steps = 0
    while curve.seconds <= budget and not plateaued(curve.points):
        order = rng.permutation(n)
        for s in range(0, n, batch):
            t0 = time.perf_counter()
            Xb = X[order[s:s + batch]]
            codes = sparsecode.omp(Xb, D, k=k)
            usage.update(codes)
            stats.update(Xb, codes, forget=forget)
            D = online_update(D, stats.A, stats.B, constraint="sphere")
            D = replace_waste(D, usage, Xb, codes, rng, stats)
            curve.seconds += time.perf_counter() - t0
            steps += 1
            if steps % check_every == 0:
                curve.add(curve.seconds, D)
    return curve


def run_sklearn(X, D0, k, budget, batch, alpha, check_every):
    from sklearn.decomposition import MiniBatchDictionaryLearning

    n = X.shape[0]
    curve = Curve(X, k)
    model = MiniBatchDictionaryLearning(
        n_components=D0.shape[0], alpha=alpha, batch_size=batch, dict_init=D0,
        fit_algorithm="cd", transform_algorithm="omp", transform_n_nonzero_coefs=k,
        random_state=0)
    rng = np.random.default_rng(0)
    steps = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Objective did not converge" from its coder
        while curve.seconds <= budget and not plateaued(curve.points):
            order = rng.permutation(n)
            for s in range(0, n, batch):
                t0 = time.perf_counter()
                model.partial_fit(X[order[s:s + batch]])
                curve.seconds += time.perf_counter() - t0
                steps += 1
                if steps % check_every == 0:
                    curve.add(curve.seconds, model.components_)
                if curve.seconds > budget:
                    break
        # its own scoring of the last atoms: transform with OMP, 8 non-zeros
        Z = model.transform(X)
    R = X - Z @ model.components_
    own = float(np.einsum("ij,ij->", R, R, dtype=np.float64)) / curve.xx
    return curve, own


def run_spams(X, D0, k, budget, batch, threads, first_epochs, growth=1.25):
    import spams

    n = X.shape[0]
    curve = Curve(X, k)
    Xf, Df = np.asfortranarray(X.T), np.asfortranarray(D0.T)
    spent = 0.0
    epochs = first_epochs
    while spent <= budget and not plateaued(curve.points):
        it = max(1, int(round(epochs * n / batch)))
        t0 = time.perf_counter()
        D = spams.trainDL(Xf, D=Df, mode=3, lambda1=float(k), K=D0.shape[0], batchsize=batch,
                          iter=it, numThreads=threads, verbose=False)
        t = time.perf_counter() - t0
        spent += t
        curve.add(t, np.ascontiguousarray(D.T))
        epochs *= growth
    return curve


def time_to(points, target):
    for t, e in points:
        if e <= target:
            return t
    return None


def bench_dl(p, threads, quick, sklearn_budget):
    from sparsecode.dictionary import init_dictionary

    d, K, n, k = p["n_features"], p["n_atoms"], p["n_samples"], p["k"]
    X, _, _ = make_sparse_signals(n, d, K, k, noise=0.01, dtype=np.float32, random_state=0)
    D0 = init_dictionary(X, K, random_state=0)
    base = dict(part="dl", threads=threads, n_samples=n, n_features=d, n_atoms=K, k=k,
                dtype="float32")
    budget = 2.0 if quick else 15.0
    set_threads(threads)
    with threadpool_limits(limits=threads):
        # warm-up: every kernel once on a slice
        Xw = X[: max(4 * K, 200)]
        run_batch("mod", Xw, D0, k, 0.0, 1)
        run_batch("ksvd", Xw, D0, k, 0.0, 1)
        run_online(Xw, D0, k, 0.0, batch=Xw.shape[0] // 2, forget=0.8, check_every=1)
        run_spams(Xw, D0, k, 0.0, batch=64, threads=threads, first_epochs=1)

        ob = max(n // 20, 50)
        curves = {
            ("sparsecode", "MOD"): run_batch("mod", X, D0, k, budget, 200),
            ("sparsecode", "K-SVD"): run_batch("ksvd", X, D0, k, budget, 200),
            ("sparsecode", "online"): run_online(X, D0, k, budget, batch=ob, forget=0.8,
                                                 check_every=2),
            ("spams", "trainDL mode=3"): run_spams(X, D0, k, 4 * budget, batch=512,
                                                   threads=threads, first_epochs=2),
        }
        sk_curve, sk_own = run_sklearn(X, D0, k, sklearn_budget, batch=256, alpha=1.0,
                                       check_every=max(1, n // 256 // 4))
        curves[("scikit-learn", "MiniBatchDictionaryLearning")] = sk_curve

    # targets: fixed errors, and the error the best anchor ends at (x 1.05, so that the
    # anchor's own end-of-run noise does not make its final error unreachable)
    best_anchor = min(c.points[-1][1] for (lib, _), c in curves.items() if lib != "sparsecode")
    targets = {str(t): t for t in TARGETS}
    targets["best anchor"] = 1.05 * best_anchor
    reach = {key: {name: time_to(c.points, tg) for name, tg in targets.items()}
             for key, c in curves.items()}
    for (library, method), c in curves.items():
        extra = {}
        if library != "sparsecode":
            extra["speedup"] = {}
            for name in targets:
                ours = [reach[key][name] for key in curves if key[0] == "sparsecode"]
                ours = [t for t in ours if t is not None]
                theirs = reach[(library, method)][name]
                if not ours:
                    extra["speedup"][name] = None
                elif theirs is None:  # not reached: a lower bound
                    extra["speedup"][name] = f">{c.points[-1][0] / min(ours):.1f}"
                else:
                    extra["speedup"][name] = theirs / min(ours)
        if library == "scikit-learn":
            extra["final_error_own_transform"] = sk_own
        emit(**base, library=library, solver=method, seconds=c.points[-1][0],
             final_error=c.points[-1][1], best_error=min(e for _, e in c.points),
             targets=targets, time_to_target=reach[(library, method)],
             curve=[[round(t, 4), round(e, 5)] for t, e in c.points], **extra)


# ---------------------------------------------------------------------------- report


def table():
    print()
    print("| part | threads | library | what | median s | samples/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in ROWS:
        if r["part"] != "sae":
            continue
        sps = f"{r['samples_per_s']:,.0f}" if "samples_per_s" in r else ""
        ratio = ""
        if "speedup" in r:
            ratio = f"sparsecode {r['speedup']:.0f}x faster"
        elif "gflops" in r:
            ratio = f"{r['gflops']:.0f} GFLOP/s"
        elif "step_over_model" in r:
            ratio = f"step = {r['step_over_model']:.1f}x the model"
        print(f"| sae | {r['threads']} | {r['library']} | {r['solver']} | {r['seconds']:.4f} "
              f"| {sps} | {ratio} |")
    dl = [r for r in ROWS if r["part"] == "dl"]
    if dl:
        targets = list(dl[0]["time_to_target"])
        print()
        print("| threads | library | method | final error | "
              + " | ".join(f"s to {t}" for t in targets) + " | best anchor's final x 1.05 |")
        print("|---|---|---|---|" + "---|" * (len(targets) + 1))
        for r in dl:
            cells = []
            for t in targets:
                v = r["time_to_target"][t]
                cell = "not reached" if v is None else f"{v:.2f}"
                s = r.get("speedup", {}).get(t)
                if isinstance(s, float):
                    cell += f" ({s:.1f}x)"
                elif isinstance(s, str):
                    cell += f" ({s}x)"
                cells.append(cell)
            print(f"| {r['threads']} | {r['library']} | {r['solver']} | "
                  f"{r['final_error']:.4f} | " + " | ".join(cells)
                  + f" | {r['targets']['best anchor']:.4f} |")


def main(argv=None):
    global OUT, COMMIT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["sae", "dl"], choices=["sae", "dl"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5, help="timed sparsecode steps")
    ap.add_argument("--torch-steps", type=int, default=2,
                    help="timed PyTorch steps (after one warm-up step)")
    ap.add_argument("--torch-threads", nargs="*", type=int, default=None,
                    help="thread counts at which to time the PyTorch anchors (default: all)")
    ap.add_argument("--sklearn-budget", type=float, default=60.0,
                    help="seconds of scikit-learn training before it is stopped")
    ap.add_argument("--preload-scipy", action="store_true",
                    help="import scipy's BLAS before sparsecode first limits BLAS threads, so "
                         "that its cached thread-pool controller includes that library")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--out", default=None,
                    help="append JSON lines here (default benchmarks/results/train.jsonl; "
                         "none with --quick)")
    args = ap.parse_args(argv)
    OUT = args.out if args.out or args.quick else "benchmarks/results/train.jsonl"
    COMMIT = package_commit()
    sae_p, dl_p = (QUICK_SAE, QUICK_DL) if args.quick else (SAE, DL)
    sklearn_budget = 2.0 if args.quick else args.sklearn_budget
    torch_threads = args.threads if args.torch_threads is None else args.torch_threads
    if args.preload_scipy:
        import scipy.linalg.cython_blas  # noqa: F401 - the BLAS Numba's kernels call

        PRELOAD.append(True)
    sparsecode.warmup(["float32"])
    for threads in args.threads:
        if "sae" in args.parts:
            bench_sae(sae_p, threads, args.repeats, args.torch_steps, threads in torch_threads)
        if "dl" in args.parts:
            bench_dl(dl_p, threads, args.quick, sklearn_budget)
    table()


if __name__ == "__main__":
    main()
