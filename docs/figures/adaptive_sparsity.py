"""Inference-time sparsity: an MP-SAE keeps improving with more steps, a TopK SAE does not.

Trains an MP-SAE (``solver="mp"``) and a tied TopK SAE (``solver="topk"``) at the same
``k`` on the same planted problem (``make_sparse_signals``: 256 unit atoms in d = 64,
8-sparse signals, 1% noise; 20,000 training signals, 5,000 held out), with the same
budget (batches of 500, 10 epochs, Adam at 1e-2 after 100 warmup steps; no dead-atom
resampling, so both train alike), then encodes the held-out signals with
``k_inf = 1 .. 4 k`` atoms and plots the fraction of variance unexplained
(``sparsecode.metrics.fvu``) against ``k_inf``:

- MP-SAE: ``model.transform(X, k=k_inf)``: more matching-pursuit steps on the same atoms;
  the residual can only shrink, and the error keeps falling well past the training k.
- TopK SAE: ``model.transform(X, k=k_inf)`` with its own encoder: the ``k_inf`` atoms of
  largest correlation, coded by their correlations in one step.  It is tuned to its
  training k: past it, overlapping atoms double-count and the error rises again.
- dashed: the TopK SAE's atoms encoded by matching pursuit
  (``transform(X, k=k_inf, solver="mp")``), which separates the encoder from the atoms.

Run from the repository root::

    python docs/figures/adaptive_sparsity.py           # about 6 s
    python docs/figures/adaptive_sparsity.py --quick   # smaller problem, a few seconds
    python docs/figures/adaptive_sparsity.py --out /tmp/adaptive.png --k 4
"""

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "adaptive_sparsity.png"


def train(solver, k, X, epochs, seed):
    from sparsecode import MPSAE

    return MPSAE(256, k, solver=solver, batch_size=500, n_epochs=epochs, lr=1e-2,
                 warmup_steps=100, resample_dead=False, progress=False,
                 random_state=seed).fit(X)


def run(k, n_train, n_test, epochs, k_max, seed):
    """Train both models and measure held-out fvu for ``k_inf = 1 .. k_max``.

    Returns
    -------
    dict
        ``k_inf`` and one fvu array per curve (``"mp"``, ``"topk"``, ``"topk atoms, mp"``),
        plus the planted-atom recovery and training time of each model.
    """
    from sparsecode.datasets import make_sparse_signals
    from sparsecode.metrics import fvu, recovery_rate

    X, D_true, _ = make_sparse_signals(n_train + n_test, 64, 256, 8, noise=0.01,
                                       random_state=seed)
    X_train, X_test = X[:n_train], X[n_train:]
    k_inf = np.arange(1, k_max + 1)
    curves, info = {}, {}
    for solver in ("mp", "topk"):
        t0 = time.perf_counter()
        model = train(solver, k, X_train, epochs, seed)
        info[solver] = {"seconds": time.perf_counter() - t0,
                        "recovery": recovery_rate(model.components_, D_true)}

        def err(kk, model=model, **kw):
            return fvu(X_test, model.inverse_transform(model.transform(X_test, k=int(kk), **kw)))

        curves[solver] = np.array([err(kk) for kk in k_inf])
        if solver == "topk":
            curves["topk atoms, mp"] = np.array([err(kk, solver="mp") for kk in k_inf])
    return {"k": k, "k_inf": k_inf, "curves": curves, "info": info}


def plot(result, out, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, k_inf, curves = result["k"], result["k_inf"], result["curves"]
    fig, ax = plt.subplots(figsize=(7.5, 5.0), layout="constrained")
    styles = {
        "mp": dict(color="C0", marker="o", ms=3.5, lw=2,
                   label="MP-SAE: k_inf matching-pursuit steps"),
        "topk": dict(color="C3", marker="s", ms=3.5, lw=2,
                     label="TopK SAE: top-k_inf of its encoder"),
        "topk atoms, mp": dict(color="C3", ls="--", lw=1.2, alpha=0.7,
                               label="TopK SAE's atoms, encoded by matching pursuit"),
    }
    for name, y in curves.items():
        ax.plot(k_inf, y, **styles[name])
    ax.axvline(k, color="0.3", ls=":", lw=1.2)
    ax.text(k, 0.98, f" training k = {k}", transform=ax.get_xaxis_transform(), va="top",
            fontsize=9, color="0.3")
    for name, color in (("mp", "C0"), ("topk", "C3")):
        for kk in (k, k_inf[-1]):
            y = curves[name][kk - 1]
            ax.annotate(f"{y:.3f}", (kk, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=8, color=color)
    ax.set_yscale("log")
    ax.set_xlim(0.5, k_inf[-1] + 3)
    ax.set_xlabel("atoms / steps used at inference (k_inf)")
    ax.set_ylabel("held-out fraction of variance unexplained (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8.5, loc="lower left")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="PNG to write")
    parser.add_argument("--quick", action="store_true",
                        help="3,000 training signals, 2 epochs, k_inf up to 2k")
    parser.add_argument("--k", type=int, default=8, help="training k of both models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.quick:
        n_train, n_test, epochs, k_max = 3000, 1000, 2, 2 * args.k
    else:
        n_train, n_test, epochs, k_max = 20000, 5000, 10, 4 * args.k
    result = run(args.k, n_train, n_test, epochs, k_max, args.seed)
    info = result["info"]
    title = (f"Held-out error against the number of atoms used at inference\n"
             f"256 planted atoms in d = 64, 8-sparse signals; both SAEs trained at "
             f"k = {args.k}\n({n_train:,} signals, {epochs} epochs of batches of 500); "
             f"planted atoms recovered: MP-SAE {info['mp']['recovery']:.0%}, "
             f"TopK {info['topk']['recovery']:.0%}")
    out = plot(result, args.out, title)
    print(f"{'k_inf':>5}" + "".join(f"{name:>16}" for name in result["curves"]))
    for i, kk in enumerate(result["k_inf"]):
        print(f"{kk:>5}" + "".join(f"{c[i]:>16.4f}" for c in result["curves"].values()))
    for solver, d in info.items():
        print(f"{solver}: trained in {d['seconds']:.1f} s, planted atoms recovered "
              f"(|cos| > 0.99) {d['recovery']:.1%}")
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return result


if __name__ == "__main__":
    main()
