"""The MP-SAE paper's hierarchical toy: an MP-SAE recovers the tree, a TopK SAE absorbs it.

On ``sparsecode.datasets.make_hierarchical`` (20 features in d = 20: three parents with
three children each and eight leaves; features of one group share a cosine of 0, 0.3 or
0.6; a parent and its children are orthogonal), trains two tied SAEs with 20 atoms the
same way: the paper's recipe (batch 200, Adam with betas (0.5, 0.9375) at 3e-2, gradient
clip 1, 100 warmup steps, a 20% cooldown to 0.1x, random initial atoms, no pre-bias),
the "positive" selection rule, the same k (3; ``sparsecode demo`` gives its TopK SAE
k = 2, the most features a signal uses: with seed 0 and 15,000 steps it recovers 16, 0
and 0 features at the three correlations, against 13, 3 and 0 with k = 3) and the same
number of steps:

- an MP-SAE (``solver="mp"``: k steps of matching pursuit on its own atoms);
- a TopK SAE (``solver="topk"``: the k atoms of largest correlation, in one step).

Then shows, for every correlation (columns): the truth ``F F^T`` (top row), and for each
model the atom-atom cosines ``D D^T`` and the atom-feature cosines ``D F^T``, atoms
ordered by their Hungarian match to the features.  A model that recovers every feature
shows the truth in both of its rows.  The MP-SAE does at 0 and 0.3 and partly at 0.6; the
TopK SAE merges children into their parents (dark off-diagonal blocks in ``D F^T``) and
leaves atoms matched to nothing.  A feature counts as recovered when its matched atom
has ``|cos| > 0.99`` (as ``sparsecode demo`` and ``benchmarks/toy_recovery.py`` count);
an x on the diagonal of ``D F^T`` marks a feature that is not.

Run from the repository root::

    python docs/figures/hierarchical_toy.py            # 15,000 steps (the paper's), ~40 s
    python docs/figures/hierarchical_toy.py --quick    # 400 steps, a few seconds
    python docs/figures/hierarchical_toy.py --out /tmp/toy.png --steps 5000 --seed 1
"""

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "hierarchical_toy.png"
CORRELATIONS = (0.0, 0.3, 0.6)
MODELS = (("mp", "MP-SAE"), ("topk", "TopK SAE"))
THRESHOLD = 0.99


def toy_model(solver, k, steps, seed):
    """The paper's training recipe for the toy (as in ``sparsecode demo``)."""
    from sparsecode import MPSAE

    return MPSAE(20, k, solver=solver, selection="positive", batch_size=200, max_steps=steps,
                 lr=3e-2, betas=(0.5, 0.9375), schedule="wsd", warmup_steps=100,
                 cooldown=0.2, final_lr_ratio=0.1, clip_grad=1.0, pre_bias=False,
                 init="random", resample_dead=False, progress=False, random_state=seed)


def unit_rows(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def run(steps, k, seed, correlations=CORRELATIONS):
    """Train both models at every correlation.

    Returns
    -------
    list of dict
        One per (correlation, model): ``F``, the matched and unit-normalised atoms ``D``
        (row i matched to feature i), the matched cosines, the number recovered, seconds.
    """
    from sparsecode.datasets import make_hierarchical
    from sparsecode.metrics import match_atoms

    results = []
    for corr in correlations:
        X, F, _ = make_hierarchical(steps * 200, correlation=corr, random_state=seed)
        for solver, name in MODELS:
            t0 = time.perf_counter()
            model = toy_model(solver, k, steps, seed).fit(X)
            seconds = time.perf_counter() - t0
            rows, cols, cos = match_atoms(model.components_, F)
            order = np.empty(20, dtype=int)
            order[cols] = rows  # atom matched to feature j goes to row j
            D = unit_rows(model.components_.astype(np.float64))[order]
            matched = np.empty(20)
            matched[cols] = cos
            results.append({
                "correlation": corr, "solver": solver, "name": name, "F": F.astype(np.float64),
                "D": D, "cos": matched, "recovered": int((matched > THRESHOLD).sum()),
                "fvu": model.history_[-1]["fvu"], "seconds": seconds,
            })
        del X
    return results


def plot(results, out, steps, k, seed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corrs = sorted({r["correlation"] for r in results})
    ncol = len(corrs)
    fig, axes = plt.subplots(5, ncol, figsize=(3.3 * ncol + 1.2, 16.0), squeeze=False,
                             layout="constrained")
    cmap = plt.get_cmap("RdBu_r")
    image = None

    def show(ax, M, title):
        nonlocal image
        image = ax.imshow(M, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9.5)
        ax.set_xlim(-0.5, 19.5)
        ax.set_ylim(19.5, -0.5)
        ax.autoscale(False)
        # group boundaries of the depth-first order: {0..3}, {4..7}, {8..11}, leaves 12..19
        for b in (3.5, 7.5, 11.5):
            ax.axhline(b, color="0.35", lw=0.5)
            ax.axvline(b, color="0.35", lw=0.5)
        ax.set_xticks([0, 4, 8, 12, 19])
        ax.set_yticks([0, 4, 8, 12, 19])
        ax.tick_params(labelsize=7, length=2)

    for j, corr in enumerate(corrs):
        res = {r["solver"]: r for r in results if r["correlation"] == corr}
        F = next(iter(res.values()))["F"]
        show(axes[0, j], F @ F.T, f"within-group cosine {corr:g}\ntruth: F F$^T$")
        for i, (solver, name) in enumerate(MODELS):
            r = res[solver]
            n = r["recovered"]
            show(axes[1 + 2 * i, j], r["D"] @ r["D"].T, f"{name}: D D$^T$ (atom vs atom)")
            ax = axes[2 + 2 * i, j]
            show(ax, r["D"] @ F.T, f"{name}: D F$^T$ (atom vs feature)\n"
                 f"{n}/20 features recovered")
            missed = np.flatnonzero(r["cos"] <= THRESHOLD)
            ax.plot(missed, missed, "x", color="k", ms=5, mew=1.2)
    labels = ["truth", "MP-SAE\natoms", "MP-SAE\natoms vs features", "TopK\natoms",
              "TopK\natoms vs features"]
    for i, label in enumerate(labels):
        axes[i, 0].set_ylabel(label, fontsize=10)
    for ax in axes[-1]:
        ax.set_xlabel("feature (parents 0, 4, 8 + children; leaves 12-19)", fontsize=7.5)
    fig.colorbar(image, ax=axes, shrink=0.5, pad=0.02, label="cosine")
    fig.suptitle(
        f"Hierarchical toy (20 features in d = 20): MP-SAE vs TopK SAE, both k = {k},\n"
        f"{steps:,} Adam steps of 200 signals, seed {seed}.  D: the learnt atoms (unit norm), "
        "ordered by their Hungarian match\nto the features.  Recovered: matched "
        f"|cos| > {THRESHOLD}; x marks a feature not recovered.", fontsize=10.5)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="PNG to write")
    parser.add_argument("--quick", action="store_true",
                        help="400 steps instead of --steps (a smoke test: no recovery)")
    parser.add_argument("--steps", type=int, default=15000,
                        help="Adam steps of 200 signals (the paper's 15,000)")
    parser.add_argument("--k", type=int, default=3,
                        help="steps (MP-SAE) and atoms (TopK) per signal, both models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = 400 if args.quick else args.steps
    t0 = time.perf_counter()
    results = run(steps, args.k, args.seed)
    print(f"{'cosine':>6}  {'model':<9}{'recovered':>10}{'final fvu':>11}{'seconds':>9}")
    for r in results:
        print(f"{r['correlation']:>6.1f}  {r['name']:<9}{r['recovered']:>7}/20"
              f"{r['fvu']:>11.2e}{r['seconds']:>9.1f}")
    out = plot(results, args.out, steps, args.k, args.seed)
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main()
