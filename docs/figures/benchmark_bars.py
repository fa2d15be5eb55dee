"""sparsecode against its anchors: bar charts of the measured times in benchmarks/results/.

Reads the JSON lines written by ``benchmarks/bench_pursuit.py`` and
``benchmarks/bench_train.py`` (nothing is re-measured) and draws one figure of four
panels, times on a log scale, each anchor's bar labelled with its time over sparsecode's:

1. OMP: ``sparsecode.omp`` (Batch-OMP) against SPAMS' ``omp`` (ORMP) and scikit-learn's
   ``orthogonal_mp_gram``, per signal, on P1 (d = 64, 256 atoms, k = 8) and P2 (d = 384,
   4096 atoms, k = 32) at 1 and 2 threads (``pursuit.jsonl``, the run of the main
   tables of ``docs/benchmarks.md``; scikit-learn was timed on a subset of the signals).
2. MP on P2: ``sparsecode.mp`` against overcomplete's ``MpSAE.encode`` (PyTorch), with
   the correlation GEMM ``X D^T`` as the floor (``pursuit.jsonl``).
3. One MP-SAE training step (d = 384, 4096 atoms, k = 32, batch 4096): ``MPSAE.partial_fit``
   against overcomplete's ``MpSAE`` + ``train_sae`` and a plain PyTorch autograd MP-SAE
   (``train.jsonl``, rows of its latest commit).
4. Dictionary learning on P1: seconds to reach a relative error of 0.05 for sparsecode's
   online, MOD and K-SVD learners, SPAMS' ``trainDL`` and scikit-learn's
   ``MiniBatchDictionaryLearning`` (which never reached it in 60 s: hatched bar at its
   run time); ratios against sparsecode online (``train.jsonl``, latest commit).

The result rows do not name the CPU; ``docs/benchmarks.md`` does (AMD EPYC, 2 cores), and
the title says so unless a row records a ``machine``.

Run from the repository root::

    python docs/figures/benchmark_bars.py                  # writes docs/figures/benchmarks.png
    python docs/figures/benchmark_bars.py --out /tmp/b.png --results benchmarks/results

``--quick`` is accepted for symmetry with the other figure scripts and changes nothing
(the script only reads files).
"""

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_OUT = HERE / "benchmarks.png"
DEFAULT_RESULTS = ROOT / "benchmarks" / "results"
MACHINE = "AMD EPYC, 2 cores (docs/benchmarks.md)"

# one colour per library, the same in every panel; sparsecode's extra methods in lighter blues
COLORS = (("sparsecode MOD", "#6baed6"), ("sparsecode K-SVD", "#c6dbef"),
          ("sparsecode", "#1f77b4"), ("GEMM", "0.6"), ("spams", "#d62728"),
          ("SPAMS", "#d62728"), ("sklearn", "#ff7f0e"), ("scikit-learn", "#ff7f0e"),
          ("overcomplete", "#9467bd"), ("plain PyTorch", "#8c564b"))


def color_of(name):
    return next(c for prefix, c in COLORS if name.startswith(prefix))


def read_rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def latest_commit_rows(rows, part):
    """The rows of ``part`` from the last commit that wrote any (files are appended)."""
    rows = [r for r in rows if r.get("part") == part]
    if not rows:
        raise ValueError(f"no rows with part={part!r}")
    commit = rows[-1].get("commit")
    return [r for r in rows if r.get("commit") == commit], commit


def pick(rows, **where):
    """The last row matching every ``key=value`` (``solver`` may be a prefix)."""
    found = None
    for r in rows:
        ok = True
        for key, value in where.items():
            got = r.get(key)
            if key == "solver":
                ok &= isinstance(got, str) and got.startswith(value)
            else:
                ok &= got == value
        if ok:
            found = r
    if found is None:
        raise KeyError(f"no row with {where}")
    return found


def per_signal_us(row):
    return 1e6 * row["seconds"] / row.get("signals_timed", row["n_samples"])


def collect(results_dir):
    """Gather the bars of the four panels.

    Returns
    -------
    list of dict
        One per panel: ``title``, ``ylabel``, ``groups`` (x labels), ``series``
        (list of ``(name, values)``, sparsecode first), ``ratios`` (per anchor series, the
        label above each bar), ``censored`` (per series, a bool per group: a lower bound).
    """
    results_dir = Path(results_dir)
    pursuit = read_rows(results_dir / "pursuit.jsonl")
    train = read_rows(results_dir / "train.jsonl")
    machines = {r["machine"] for r in pursuit + train if "machine" in r}
    panels = []

    # 1. OMP against SPAMS and scikit-learn, per signal
    groups, sc, spams, skl, r_spams, r_skl = [], [], [], [], [], []
    for problem in ("P1", "P2"):
        for threads in (1, 2):
            where = dict(problem=problem, threads=threads)
            a = pick(pursuit, solver="sparsecode.omp", **where)
            b = pick(pursuit, solver="spams.omp", **where)
            c = pick(pursuit, solver="sklearn.orthogonal_mp_gram", **where)
            groups.append(f"{problem}, {threads} thread{'s' if threads > 1 else ''}")
            sc.append(per_signal_us(a))
            spams.append(per_signal_us(b))
            skl.append(per_signal_us(c))
            r_spams.append(b.get("omp_speedup", spams[-1] / sc[-1]))
            r_skl.append(c.get("omp_speedup", skl[-1] / sc[-1]))
    panels.append(dict(
        title="OMP: Batch-OMP against SPAMS (ORMP) and scikit-learn\n"
              "P1: d=64, 256 atoms, k=8 | P2: d=384, 4096 atoms, k=32 (pursuit.jsonl)",
        ylabel="microseconds per signal (log)", groups=groups,
        series=[("sparsecode.omp", sc), ("spams.omp", spams),
                ("sklearn orthogonal_mp_gram", skl)],
        ratios=[None, r_spams, r_skl]))

    # 2. MP against overcomplete on P2, with the GEMM floor
    groups, gemm, mp, oc, r_gemm, r_oc = [], [], [], [], [], []
    for threads in (1, 2):
        where = dict(problem="P2", threads=threads)
        g = pick(pursuit, solver="gemm X D^T", **where)
        m = pick(pursuit, solver="sparsecode.mp", **where)
        o = pick(pursuit, solver="overcomplete MpSAE.encode", **where)
        groups.append(f"P2, {threads} thread{'s' if threads > 1 else ''}")
        gemm.append(per_signal_us(g))
        mp.append(per_signal_us(m))
        oc.append(per_signal_us(o))
        r_gemm.append(f"MP {mp[-1] / gemm[-1]:.1f}x this")
        r_oc.append(o.get("mp_speedup", oc[-1] / mp[-1]))
    panels.append(dict(
        title="MP: sparsecode.mp against overcomplete's MpSAE.encode\n"
              "P2, k=32 steps; the GEMM X D$^T$ is the floor (pursuit.jsonl)",
        ylabel="microseconds per signal (log)", groups=groups,
        series=[("sparsecode.mp", mp), ("GEMM X D^T (floor)", gemm),
                ("overcomplete MpSAE.encode", oc)],
        ratios=[None, r_gemm, r_oc]))

    # 3. MP-SAE training step
    sae, commit = latest_commit_rows(train, "sae")
    groups, sc, oc, pt, r_oc, r_pt = [], [], [], [], [], []
    for threads in (1, 2):
        a = pick(sae, threads=threads, library="sparsecode",
                 solver="MPSAE.partial_fit (unit_atoms=True, resample_dead=True)")
        o = pick(sae, threads=threads, library="overcomplete")
        p = pick(sae, threads=threads, library="pytorch")
        groups.append(f"{threads} thread{'s' if threads > 1 else ''}")
        sc.append(a["seconds"])
        oc.append(o["seconds"])
        pt.append(p["seconds"])
        r_oc.append(o.get("speedup", oc[-1] / sc[-1]))
        r_pt.append(p.get("speedup", pt[-1] / sc[-1]))
    panels.append(dict(
        title=f"MP-SAE training step: d=384, 4096 atoms, k=32, batch 4096\n"
              f"(train.jsonl, commit {commit})",
        ylabel="seconds per step (log)", groups=groups,
        series=[("sparsecode MPSAE.partial_fit", sc), ("plain PyTorch autograd MP-SAE", pt),
                ("overcomplete MpSAE + train_sae", oc)],
        ratios=[None, r_pt, r_oc]))

    # 4. dictionary learning: time to error 0.05
    dl, commit = latest_commit_rows(train, "dl")
    target = "0.05"
    names = [("sparsecode", "online", "sparsecode online"), ("sparsecode", "MOD", "sparsecode MOD"),
             ("sparsecode", "K-SVD", "sparsecode K-SVD"), ("spams", "trainDL", "SPAMS trainDL"),
             ("scikit-learn", "MiniBatch", "scikit-learn MiniBatchDL")]
    groups = []
    values = {label: [] for _, _, label in names}
    censored = {label: [] for _, _, label in names}
    for threads in (1, 2):
        groups.append(f"{threads} thread{'s' if threads > 1 else ''}")
        for library, solver, label in names:
            r = pick(dl, threads=threads, library=library, solver=solver)
            t = r["time_to_target"][target]
            censored[label].append(t is None)
            values[label].append(r["seconds"] if t is None else t)
    base = values["sparsecode online"]
    ratios = []
    for _, _, label in names:
        if label == "sparsecode online":
            ratios.append(None)
            continue
        lab = []
        for i, v in enumerate(values[label]):
            ratio = v / base[i]
            lab.append(f">{ratio:.0f}x" if censored[label][i] else ratio)
        ratios.append(lab)
    panels.append(dict(
        title=f"Dictionary learning on P1 (20000 x 64, 256 atoms, 8-sparse):\n"
              f"time to relative error {target} (train.jsonl, commit {commit})",
        ylabel="seconds to reach the error (log)", groups=groups,
        series=[(label, values[label]) for _, _, label in names], ratios=ratios,
        censored=[censored[label] for _, _, label in names]))
    machine = ", ".join(sorted(machines)) if machines else MACHINE
    return panels, machine


def _ratio_text(r):
    if isinstance(r, str):
        return r
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def plot(panels, machine, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 2, figsize=(14, 10), layout="constrained")
    for ax, panel in zip(axes.flat, panels, strict=True):
        series = panel["series"]
        n = len(series)
        width = 0.8 / n
        x = np.arange(len(panel["groups"]))
        censored = panel.get("censored") or [[False] * len(x)] * n
        top = max(max(v) for _, v in series)
        bottom = min(min(v) for _, v in series)
        for i, (name, values) in enumerate(series):
            pos = x - 0.4 + width * (i + 0.5)
            bars = ax.bar(pos, values, width * 0.92, color=color_of(name), label=name,
                          edgecolor="0.4", linewidth=0.4)
            for bar, cens in zip(bars, censored[i], strict=True):
                if cens:
                    bar.set_hatch("//")
                    bar.set_edgecolor("0.2")
            ratios = panel["ratios"][i]
            for j, v in enumerate(values):
                if ratios is None:
                    text, weight = f"{v:.3g}", "normal"
                else:
                    text, weight = _ratio_text(ratios[j]), "bold"
                ax.annotate(text, (pos[j], v), textcoords="offset points", xytext=(0, 2),
                            ha="center", va="bottom", fontsize=7.5, fontweight=weight,
                            rotation=90 if n > 3 else 0)
        ax.set_yscale("log")
        ax.set_ylim(bottom / 3, top * (12 if n > 3 else 6))
        ax.set_xticks(x, panel["groups"])
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(True, axis="y", which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", ncol=2 if n > 3 else 1)
    fig.suptitle(
        f"sparsecode against the anchors, measured on {machine}, float32.  Lower is faster.\n"
        "Labels: sparsecode's own time (first bar of each group); for every other bar, its "
        "time over sparsecode's (bold; '>': never reached the target, run time shown hatched)",
        fontsize=11)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="PNG to write")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS),
                        help="folder of the benchmark JSON lines")
    parser.add_argument("--quick", action="store_true", help="no effect (nothing to compute)")
    args = parser.parse_args(argv)
    panels, machine = collect(args.results)
    for panel in panels:
        print(panel["title"].replace("\n", " "))
        for i, group in enumerate(panel["groups"]):
            cells = []
            for (name, values), ratios in zip(panel["series"], panel["ratios"], strict=True):
                extra = "" if ratios is None else f" ({_ratio_text(ratios[i])})"
                cells.append(f"{name} {values[i]:.3g}{extra}")
            print(f"  {group}: " + "; ".join(cells))
    out = plot(panels, machine, args.out)
    print(f"wrote {out}")
    return panels


if __name__ == "__main__":
    main()
