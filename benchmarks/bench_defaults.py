"""What ``MPSAE`` does with its defaults: planted recovery and the data's scale.

Part ``planted`` -- ``MPSAE(256, 5, solver=S, update=U, random_state=seed).fit(X)`` and
nothing else, on 20,000 planted 5-sparse signals (d = 64, 256 unit atoms, 1% noise; data
seed = model seed), for each update: the fraction of planted atoms recovered (a learnt
atom at |cos| > 0.99), why and after how many steps the run stopped, and its time.

Part ``scale`` -- the same data plus an offset of 2, times each factor in 1e-6 .. 1e6:
explained variance of 5,000 fresh signals (same scale) after training with defaults.

    python benchmarks/bench_defaults.py [--seeds 5] [--out FILE]
"""

import argparse
import json
import time
import warnings

import numpy as np
from _provenance import blas_env, load_average, package_commit

from sparsecode.datasets import make_sparse_signals
from sparsecode.metrics import recovery_rate
from sparsecode.sae import MPSAE

COMBOS = [("adam", "mp"), ("ksvd", "omp"), ("mod", "omp"), ("online", "omp")]
FACTORS = [1e-6, 1e-3, 1.0, 1e3, 1e6]


def planted(seeds, write):
    print("defaults on the planted problem (recovered = atoms at |cos| > 0.99)")
    for update, solver in COMBOS:
        rows = []
        for seed in range(seeds):
            X, D, _ = make_sparse_signals(20000, 64, 256, 5, noise=0.01, random_state=seed)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                m = MPSAE(256, 5, solver=solver, update=update, random_state=seed)
                m.set_params(progress=False).fit(X)
                secs = time.perf_counter() - t0
            rows.append({"part": "planted", "update": update, "solver": solver, "seed": seed,
                         "recovered": recovery_rate(m.components_, D), "steps": m.n_steps_,
                         "stop_reason": m.stop_reason_, "seconds": secs,
                         "batch_size": m.engine_.config.batch_size,
                         "lr": m.engine_.config.lr, "warnings": len(caught)})
            write(rows[-1])
        rec = [r["recovered"] for r in rows]
        print(f"  {update:<6} {solver:<4} recovered min {min(rec):.1%} median "
              f"{np.median(rec):.1%}; steps median {np.median([r['steps'] for r in rows]):.0f}"
              f"; {np.median([r['seconds'] for r in rows]):.1f} s median; stopped: "
              f"{sorted({r['stop_reason'] for r in rows})}", flush=True)


def scale(write):
    print("defaults at every scale (explained variance of fresh signals)")
    X, _, _ = make_sparse_signals(25000, 64, 256, 5, noise=0.01, random_state=0)
    X = X + np.float32(2.0)
    train, test = X[:20000], X[20000:]
    for update, solver in COMBOS[:1] + COMBOS[3:]:
        evs = []
        for f in FACTORS:
            m = MPSAE(256, 5, solver=solver, update=update, random_state=0)
            m.set_params(progress=False).fit(train * np.float32(f))
            evs.append(m.score(test * np.float32(f)))
            write({"part": "scale", "update": update, "solver": solver, "factor": f,
                   "explained_variance": evs[-1], "steps": m.n_steps_})
        pairs = zip(FACTORS, evs, strict=True)
        print(f"  {update:<6} {solver:<4} " + "  ".join(f"{f:g}: {e:.4f}" for f, e in pairs),
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--parts", nargs="+", default=["planted", "scale"])
    parser.add_argument("--out", default="benchmarks/results/defaults.jsonl")
    args = parser.parse_args()
    meta = {"commit": package_commit(), "load": load_average(), "blas": blas_env()}
    with open(args.out, "a") as out:
        def write(row):
            out.write(json.dumps({**meta, **row}) + "\n")
            out.flush()

        if "planted" in args.parts:
            planted(args.seeds, write)
        if "scale" in args.parts:
            scale(write)


if __name__ == "__main__":
    main()
