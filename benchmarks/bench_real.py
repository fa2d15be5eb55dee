"""Training on real activations: sparsecode against sparsify, overcomplete and
scikit-learn, on the same rows, in one run.

Data: an activation file made by ``benchmarks/make_minilm_activations.py`` (default: the
residual stream after layer 5 of all-MiniLM-L6-v2 on English prose, about 300k tokens of
d = 384); the last ``--test-fraction`` of its rows are the test rows, never trained on.
At each ``k`` (default 8 and 32) and ``--atoms`` (3,072), every method trains on the
other rows and encodes the test rows; reported: the test FVU ``sum ||x - x_hat||^2 / sum
||x - mean||^2``, the samples trained on, and the seconds to fit and to encode.

sparsecode (each with its defaults, ``MPSAE(atoms, k, solver=, update=, selection=)``,
training until its held-out rows stop improving, capped by ``--max-time``):
    mpsae-abs, mpsae-positive, mpsae-signed   Adam through unrolled MP, each selection rule
    topk                                      tied TopK SAE (Adam)
    omp-online, omp-mod, omp-ksvd, gp-online  classic updates with OMP / GP codes
Anchors (each trained until ``--anchor-time`` seconds or ``--anchor-epochs`` passes):
    sparsify TopK   EleutherAI sparsify's ``SparseCoder`` trained as its Trainer does: FVU
                    loss, ``b_dec`` at the first batch's mean, unit-norm decoder with the
                    parallel gradient removed, its default optimizer (signum: sign SGD in a
                    schedule-free wrapper, momentum 0.95) and learning rate
                    ``5e-3 / sqrt(atoms / 2^14)``; batches of ``--batch-size`` rows
    overcomplete    ``MpSAE`` (k MP steps, dense correlations each) trained by its own
                    ``train_sae`` (MSE, Adam 5e-4, clip 1), one batch per call
    scikit-learn    ``MiniBatchDictionaryLearning`` (lasso coding, alpha ``--sk-alpha``,
                    batches of 256) on the centred rows, encoding with its OMP at k

``--lr-scales 0.33 3`` also trains each method at its default learning rate times each
factor, and ``--batch-scales 0.25 4`` at its default batch size times each, to place the
defaults against tuned settings.

Curves (test FVU against samples and against training seconds, evaluation time left out)
are written with each row; ``--plot`` draws FVU against time (``--plot-from RESULTS``
draws it from a results file without training).

    python benchmarks/bench_real.py [--ks 8 32] [--methods ...] [--anchors ...]
"""

import argparse
import json
import time
import warnings

import numpy as np
from _provenance import blas_env, load_average, package_commit

SPARSECODE = {
    "mpsae-abs": dict(solver="mp", update="adam", selection="abs"),
    "mpsae-positive": dict(solver="mp", update="adam", selection="positive"),
    "mpsae-signed": dict(solver="mp", update="adam", selection="signed"),
    "topk": dict(solver="topk", update="adam"),
    "omp-online": dict(solver="omp", update="online"),
    "omp-mod": dict(solver="omp", update="mod"),
    "omp-ksvd": dict(solver="omp", update="ksvd"),
    "gp-online": dict(solver="gp", update="online"),
}
ANCHORS = ("sparsify", "overcomplete", "sklearn")


def fvu(X, X_hat):
    """Test FVU, float64 sums."""
    R = (X - X_hat).astype(np.float64)
    D = X.astype(np.float64) - X.mean(axis=0, dtype=np.float64)
    return float(np.einsum("ij,ij->", R, R) / np.einsum("ij,ij->", D, D))


class Clock:
    """Training seconds: wall time less the time spent evaluating curve points."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.paused = 0.0

    def now(self):
        return time.perf_counter() - self.t0 - self.paused

    def evaluate(self, f):
        t = time.perf_counter()
        try:
            return f()
        finally:
            self.paused += time.perf_counter() - t


def run_sparsecode(name, X, T, k, atoms, max_time, seed, lr_scale=None, batch_scale=None):
    from sparsecode.sae import MPSAE, TrainConfig

    clock, curve = Clock(), []
    model = MPSAE(atoms, k, random_state=seed, **SPARSECODE[name])
    auto = TrainConfig.from_params(model.get_params()).resolve(len(X))
    if lr_scale is not None:  # a tuned rate: the default's times lr_scale
        model.set_params(lr=auto.lr * lr_scale)
    if batch_scale is not None:  # a tuned batch: the default's times batch_scale
        model.set_params(batch_size=max(1, int(round(auto.batch_size * batch_scale))))

    def point(record):  # at each check of the stopping rule
        if np.isnan(record["validation_fvu"]):
            return
        t = clock.now()
        curve.append((record["samples"], t, clock.evaluate(
            lambda: fvu(T, model.inverse_transform(model.transform(T))))))

    model.set_params(max_time=max_time, callback=point, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X)
    fit_s = clock.now()
    t = time.perf_counter()
    T_hat = model.inverse_transform(model.transform(T))
    enc_s = time.perf_counter() - t
    cfg = model.engine_.config
    return dict(fvu=fvu(T, T_hat), fit_seconds=fit_s, encode_seconds=enc_s,
                samples=model.n_samples_seen_, curve=curve, stop_reason=model.stop_reason_,
                steps=model.n_steps_, batch_size=cfg.batch_size, lr=cfg.lr,
                warned=any("ConvergenceWarning" in type(w.message).__name__ for w in caught))


def _batches(n, bs, rng, epochs):
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n - bs + 1, bs):
            yield np.sort(order[s:s + bs])


def _result(clock, evaluate, T, seen, curve, **extra):
    """An anchor's row: fit time so far, then the timed encoding of the test rows."""
    fit_s = clock.now()
    t = time.perf_counter()
    T_hat = evaluate()
    enc_s = time.perf_counter() - t
    return dict(fvu=fvu(T, T_hat), fit_seconds=fit_s, encode_seconds=enc_s, samples=seen,
                curve=curve, **extra)


def run_sparsify(X, T, k, atoms, max_time, epochs, bs, seed):
    import torch
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder
    from sparsify.config import SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    torch.manual_seed(seed)
    sae = SparseCoder(X.shape[1], SparseCoderConfig(num_latents=atoms, k=k), device="cpu",
                      dtype=torch.float32)
    lr = 5e-3 / (atoms / 2**14) ** 0.5
    opt = ScheduleFreeWrapper(SignSGD([dict(params=sae.parameters(), lr=lr)]), momentum=0.95)
    opt.train()
    Tt = torch.from_numpy(T)

    def evaluate():
        opt.eval()  # the schedule-free average, as sparsify saves it
        with torch.no_grad():
            out = np.concatenate([sae(Tt[i:i + 8192]).sae_out.numpy()
                                  for i in range(0, len(T), 8192)])
        opt.train()
        return out

    clock, curve, seen, first = Clock(), [], 0, True
    rng = np.random.default_rng(seed)
    per_epoch = X.shape[0] // bs
    for i, rows in enumerate(_batches(X.shape[0], bs, rng, epochs)):
        x = torch.from_numpy(X[rows])
        if first:  # the Trainer's b_dec: the first batch's mean
            sae.b_dec.data = x.mean(0)
            first = False
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sae.set_decoder_norm_to_unit_norm()
        seen += len(rows)
        t = clock.now()
        if (i + 1) % per_epoch == 0 or t >= max_time:
            curve.append((seen, t, clock.evaluate(lambda: fvu(T, evaluate()))))
        if t >= max_time:
            break
    return _result(clock, evaluate, T, seen, curve, lr=lr, batch_size=bs)


def run_overcomplete(X, T, k, atoms, max_time, epochs, bs, seed):
    import torch
    from _overcomplete import import_sae

    oc = import_sae()
    torch.manual_seed(seed)
    model = oc.MpSAE(X.shape[1], atoms, k=k)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)

    def criterion(x, x_hat, pre_codes, codes, dictionary):
        return (x - x_hat).square().mean()

    def evaluate():
        with torch.no_grad():
            return np.concatenate([model(torch.from_numpy(T[i:i + 4096]))[2].numpy()
                                   for i in range(0, len(T), 4096)])

    clock, curve, seen = Clock(), [], 0
    rng = np.random.default_rng(seed)
    per_epoch = X.shape[0] // bs
    for i, rows in enumerate(_batches(X.shape[0], bs, rng, epochs)):
        oc.train_sae(model, [torch.from_numpy(X[rows])], criterion, opt, nb_epochs=1,
                     clip_grad=1.0, monitoring=0)
        seen += len(rows)
        t = clock.now()
        if (i + 1) % max(per_epoch // 4, 1) == 0 or t >= max_time:
            curve.append((seen, t, clock.evaluate(lambda: fvu(T, evaluate()))))
        if t >= max_time:
            break
    return _result(clock, evaluate, T, seen, curve, batch_size=bs)


def run_sklearn(X, T, k, atoms, max_time, epochs, alpha, seed):
    from sklearn.decomposition import MiniBatchDictionaryLearning

    mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    model = MiniBatchDictionaryLearning(
        n_components=atoms, alpha=alpha, batch_size=256, fit_algorithm="cd",
        transform_algorithm="omp", transform_n_nonzero_coefs=k, random_state=seed)
    clock, seen = Clock(), 0
    rng = np.random.default_rng(seed)
    for rows in _batches(X.shape[0], 256, rng, epochs):
        model.partial_fit(X[rows] - mean)
        seen += len(rows)
        if clock.now() >= max_time:
            break
    fit_s = clock.now()
    t = time.perf_counter()
    T_hat = model.transform(T - mean) @ model.components_ + mean
    enc_s = time.perf_counter() - t
    f = fvu(T, T_hat)
    return dict(fvu=f, fit_seconds=fit_s, encode_seconds=enc_s, samples=seen,
                curve=[(seen, fit_s, f)], alpha=alpha)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acts", default="/work/data/minilm_l5.h5")
    parser.add_argument("--dataset", default="acts")
    parser.add_argument("--rows", type=int, default=None, help="use the first ROWS rows")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--atoms", type=int, default=3072)
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--methods", nargs="*", default=list(SPARSECODE),
                        choices=list(SPARSECODE))
    parser.add_argument("--anchors", nargs="*", default=list(ANCHORS), choices=ANCHORS)
    parser.add_argument("--lr-scales", type=float, nargs="*", default=[],
                        help="also train each method at its default lr times these "
                        "(the defaults against tuned rates)")
    parser.add_argument("--batch-scales", type=float, nargs="*", default=[],
                        help="also train each method at its default batch size times these")
    parser.add_argument("--max-time", type=float, default=300.0,
                        help="cap on each sparsecode fit (seconds)")
    parser.add_argument("--anchor-time", type=float, default=600.0,
                        help="cap on each anchor's fit (seconds)")
    parser.add_argument("--anchor-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096, help="anchors' batch rows")
    parser.add_argument("--sk-alpha", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/real.jsonl")
    parser.add_argument("--plot", default=None, help="write FVU against time (PNG) here")
    parser.add_argument("--plot-from", default=None,
                        help="only draw --plot from the rows of this results file")
    args = parser.parse_args()
    if args.plot_from:
        with open(args.plot_from) as f:
            plot([json.loads(line) for line in f], args.plot)
        return

    import h5py

    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    from sparsecode.cli._common import set_threads

    set_threads(args.threads)
    with h5py.File(args.acts, "r") as f:
        ds = f[args.dataset]
        n = ds.shape[0] if args.rows is None else min(args.rows, ds.shape[0])
        A = np.asarray(ds[:n], dtype=np.float32)
    n_test = int(round(args.test_fraction * n))
    X, T = A[:n - n_test], A[n - n_test:]
    meta = {"commit": package_commit(), "load": load_average(), "blas": blas_env(),
            "acts": args.acts, "train_rows": len(X), "test_rows": len(T),
            "atoms": args.atoms, "threads": args.threads}
    print(f"{len(X):,} training rows, {len(T):,} test rows, d = {X.shape[1]}, "
          f"{args.atoms} atoms; commit {meta['commit']}, load {meta['load']}")
    rows = []
    with open(args.out, "a") as out:
        for k in args.ks:
            a = (X, T, k, args.atoms, args.anchor_time, args.anchor_epochs)
            jobs = [(m, lambda m=m, k=k: run_sparsecode(m, X, T, k, args.atoms, args.max_time,
                                                        args.seed)) for m in args.methods]
            jobs += [(f"{m}, lr x{f:g}", lambda m=m, k=k, f=f: run_sparsecode(
                m, X, T, k, args.atoms, args.max_time, args.seed, lr_scale=f))
                for m in args.methods for f in args.lr_scales]
            jobs += [(f"{m}, batch x{f:g}", lambda m=m, k=k, f=f: run_sparsecode(
                m, X, T, k, args.atoms, args.max_time, args.seed, batch_scale=f))
                for m in args.methods for f in args.batch_scales]
            jobs += [(f"anchor:{name}", fn) for name, fn in (
                ("sparsify", lambda a=a: run_sparsify(*a, args.batch_size, args.seed)),
                ("overcomplete", lambda a=a: run_overcomplete(*a, args.batch_size, args.seed)),
                ("sklearn", lambda a=a: run_sklearn(*a, args.sk_alpha, args.seed)),
            ) if name in args.anchors]
            for name, job in jobs:
                r = {**meta, "k": k, "method": name, **job(), "load_after": load_average()}
                out.write(json.dumps(r) + "\n")
                out.flush()
                rows.append(r)
                extra = f"  {r['stop_reason']} after {r['steps']} steps" \
                    if "stop_reason" in r else ""
                print(f"k={k:>3} {name:<22} test fvu {r['fvu']:.4f}  fit {r['fit_seconds']:7.1f} s"
                      f"  encode {r['encode_seconds']:5.1f} s  {r['samples']:>10,} samples"
                      f"{extra}", flush=True)
            summary(rows, k)
    if args.plot:
        plot(rows, args.plot)


def summary(rows, k):
    here = [r for r in rows if r["k"] == k]
    ours = [r for r in here if not r["method"].startswith("anchor:") and ", " not in
            r["method"]]
    theirs = [r for r in here if r["method"].startswith("anchor:")]
    if not ours or not theirs:
        return
    best = min(ours, key=lambda r: r["fvu"])
    anchor = min(theirs, key=lambda r: r["fvu"])
    t_best = best["fit_seconds"] + best["encode_seconds"]
    t_anchor = anchor["fit_seconds"] + anchor["encode_seconds"]
    print(f"k={k}: best sparsecode {best['method']} fvu {best['fvu']:.4f} = "
          f"{best['fvu'] / anchor['fvu']:.3f}x the best anchor's ({anchor['method']}, "
          f"{anchor['fvu']:.4f}), in {t_best / t_anchor:.3f}x its time")


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["k"] for r in rows})
    fig, axes = plt.subplots(1, len(ks), figsize=(6 * len(ks), 4.5), squeeze=False)
    for ax, k in zip(axes[0], ks, strict=True):
        for r in rows:
            if r["k"] != k or not r["curve"]:
                continue
            _, t, f = zip(*r["curve"], strict=True)
            style = "--" if r["method"].startswith("anchor:") else "-"
            ax.plot(t, f, style, marker=".", label=r["method"])
        ax.set_xscale("log")
        ax.set_xlabel("training seconds (2 threads)")
        ax.set_ylabel("test FVU")
        ax.set_title(f"k = {k}, {rows[0]['atoms']} atoms")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
