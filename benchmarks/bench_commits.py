"""Two checkouts of sparsecode timed in one run, alternately: is a change slower?

For a change that must not cost speed (a refactor), time the tree before it and the tree
after it on the same data, in turns (``--rounds`` of each, so load drifts hit both), and
print the median of each and their ratio.  Timed (float32, medians of 7 calls each after a
warm-up; the Gram matrix given, as in a training loop or a chunked encode):

    P1   d=64,  256 atoms, 20000 signals, k=8:   omp, mp, and omp on 64 signals (per-call
         overhead)
    P2   d=384, 4096 atoms, 8192 signals, k=32:  omp, mp; and both on the no-Gram path
         (gram=False) on 512 of the signals
    P3   d=768, 16384 atoms, 4096 signals, k=64: omp, mp (a 1 GiB Gram matrix)
    SAE  one MPSAE.partial_fit step (MP encoder, Adam, dead-atom bookkeeping) on batches of
         4096 signals of d=384, 4096 atoms, k=32

    git worktree add /tmp/before <commit>
    python benchmarks/bench_commits.py /tmp/before . [--threads 2] [--rounds 3]

Each tree is imported in its own process (``sys.path`` put first).  Rows go to stdout and
to ``benchmarks/results/commits.jsonl`` with both commits, the load average and the BLAS
variables.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _provenance import blas_env, cpu_model  # noqa: E402

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, numba
import sparsecode
from sparsecode import MPSAE
from sparsecode.datasets import make_sparse_signals

numba.set_num_threads(int(sys.argv[2]))
out = {}

def med(fn, r=7):
    fn()
    ts = []
    for _ in range(r):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return float(np.median(ts))

for name, (d, K, n, k) in {"P1": (64, 256, 20000, 8), "P2": (384, 4096, 8192, 32),
                           "P3": (768, 16384, 4096, 64)}.items():
    X, D, _ = make_sparse_signals(n, d, K, k, noise=0.01, random_state=0)
    X, D = X.astype(np.float32), D.astype(np.float32)
    G = sparsecode.gram(D)
    out[f"{name} omp"] = med(lambda: sparsecode.omp(X, D, k=k, gram=G))
    out[f"{name} mp"] = med(lambda: sparsecode.mp(X, D, k=k, gram=G))
    if name == "P1":
        out["P1 omp 64 signals"] = med(lambda: sparsecode.omp(X[:64], D, k=k, gram=G), 51)
    elif name == "P2":
        # the no-Gram path: one correlation product per step
        out["P2 mp no-Gram 512 signals"] = med(lambda: sparsecode.mp(X[:512], D, k=k,
                                                                     gram=False))
        out["P2 omp no-Gram 512 signals"] = med(lambda: sparsecode.omp(X[:512], D, k=k,
                                                                       gram=False))
X, _, _ = make_sparse_signals(3 * 4096, 384, 4096, 32, noise=0.01, random_state=0)
X = X.astype(np.float32)
m = MPSAE(4096, 32, batch_size=4096, progress=False, random_state=0)
m.partial_fit(X[:4096])
i = [1]
def step():
    b = i[0] % 2 + 1
    i[0] += 1
    m.partial_fit(X[b * 4096:(b + 1) * 4096])
out["SAE step"] = med(step)
print(json.dumps(out))
"""


def commit_of(tree):
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", help="checkout of the tree before the change")
    ap.add_argument("after", help="checkout of the tree after it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "commits.jsonl"))
    args = ap.parse_args(argv)
    trees = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads))
    runs = {"before": [], "after": []}
    for r in range(args.rounds):
        for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
            proc = subprocess.run([sys.executable, "-c", CHILD, str(trees[side]),
                                   str(args.threads)], capture_output=True, text=True,
                                  env=env, check=True)
            runs[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"# round {r + 1} {side}: {runs[side][-1]}", file=sys.stderr)
    import numpy as np

    row = {"before": commit_of(trees["before"]), "after": commit_of(trees["after"]),
           "threads": args.threads, "rounds": args.rounds,
           "load_average": round(os.getloadavg()[0], 2),
           "blas_env": blas_env(), "cpu": cpu_model(),
           "seconds": {}, "after_over_before": {}}
    print(f"{'':22s}{'before (s)':>12s}{'after (s)':>12s}{'after/before':>14s}")
    for key in runs["before"][0]:
        b = float(np.median([x[key] for x in runs["before"]]))
        a = float(np.median([x[key] for x in runs["after"]]))
        row["seconds"][key] = {"before": b, "after": a}
        row["after_over_before"][key] = round(a / b, 3)
        print(f"{key:22s}{b:12.5f}{a:12.5f}{a / b:14.3f}")
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
