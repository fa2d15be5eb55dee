"""Encoding and MP-SAE training on a Dask cluster against the same work in-process.

Three ways to run the same job on the same data:

    in-process   encode: ``ActivationReader`` batches, ``sparsecode.mp``, ``CodesWriter``
                 (what ``sparsecode encode`` does); train: ``MPSAE.partial_fit`` on
                 arrays in memory
    local:1      ``sparsecode.distributed`` with one worker process (all cores)
    local:2      two worker processes (the cores shared out between them)

Encode jobs read an HDF5 float32 file on the workers and write a codes file (parts, then
the merge).  Training takes ``--steps`` data-parallel steps; the per-step overhead is the
distributed step time minus the in-process step time (sending the atoms, the task round
trips, the merge of the shards' parts).  Cluster start-up is timed once and reported
apart.  Medians of ``--repeats`` runs after a warm-up.

    python benchmarks/bench_distributed.py [--repeats 3] [--steps 8] [--out FILE] [--quick]

Output: one JSON object per line (printed, and appended to ``--out``), then a table.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROBLEMS = {
    # name: (n_features, n_atoms, k, rows to encode, training batch)
    "P2": (384, 4096, 32, 32768, 4096),
    "P1": (64, 256, 8, 262144, 1024),
}


def _median(f, repeats):
    f()  # warm-up (compilation, page cache, worker imports)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_problem(name, args, tmp):
    """The three setups on one problem; returns their records."""
    import numba

    import sparsecode
    from sparsecode import MPSAE
    from sparsecode.distributed import connect, encode, fit
    from sparsecode.distributed.learn import batch_plan
    from sparsecode.io import ActivationReader, CodesWriter, write_activations

    records = []
    d, K, k, rows, bs = PROBLEMS[name]
    if args.quick:
        rows //= 10
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, d)).astype(np.float32)
    acts = tmp / f"{name}.h5"
    write_activations(acts, X)
    D = rng.standard_normal((K, d)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    block = 8192 if d > 100 else 65536

    def encode_in_process():
        out = tmp / "codes_local.h5"
        with ActivationReader(acts, "activations", batch_size=block, shuffle=False) as r, \
                CodesWriter(out, K, k, overwrite=True) as w:
            for Xb in r.epoch(0):
                w.append(sparsecode.mp(Xb, D, k=k))

    steps = args.steps
    kw = dict(batch_size=bs, max_steps=steps, progress=False, random_state=0,
              resample_dead=False, log_every=10**9)
    plan = batch_plan(rows, bs, seed=0)[:steps]
    batches = [np.concatenate([X[a:b] for a, b in batch]) for batch in plan]

    def train_in_process():
        m = MPSAE(K, k, **kw).start(batches[0], total_steps=steps)
        for Xb in batches:
            m.partial_fit(Xb)

    t_enc = _median(encode_in_process, args.repeats)
    t_train = _median(train_in_process, args.repeats)
    rec = {"problem": name, "setup": "in-process", "threads": numba.get_num_threads(),
           "encode_s": t_enc, "encode_rows_per_s": rows / t_enc,
           "train_step_s": t_train / steps}
    records.append(rec)
    print(json.dumps(rec), flush=True)
    for workers in (1, 2):
        t0 = time.perf_counter()
        with connect(f"local:{workers}") as client:
            client.run(lambda: __import__("sparsecode").warmup(("float32",)))
            start = time.perf_counter() - t0

            def encode_cluster(client=client):
                encode((str(acts), "activations"), D, k=k, out=tmp / "codes_dist.h5",
                       client=client, block_rows=block, overwrite=True, measure_every=0)

            def train_cluster(client=client):
                fit(MPSAE(K, k, **kw), (str(acts), "activations"), client=client)

            te = _median(encode_cluster, args.repeats)
            tt = _median(train_cluster, args.repeats)
        step = tt / steps
        rec = {"problem": name, "setup": f"local:{workers}", "startup_s": start,
               "encode_s": te, "encode_rows_per_s": rows / te,
               "encode_speedup": t_enc / te, "train_step_s": step,
               "train_speedup": (t_train / steps) / step,
               "overhead_per_step_s": step - t_train / steps}
        records.append(rec)
        print(json.dumps(rec), flush=True)
    return records


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="a tenth of the rows, 1 repeat")
    args = p.parse_args()
    if args.quick:
        args.repeats = 1

    tmp = Path(tempfile.mkdtemp(prefix="bench_distributed_"))
    records = []
    for name in args.problems:
        records += run_problem(name, args, tmp)
    if args.out:
        with open(args.out, "a") as f:
            for r in records:
                f.write(json.dumps({**r, "machine": f"{os.cpu_count()} cores"}) + "\n")
    print(f"\n{'problem':8} {'setup':11} {'encode rows/s':>14} {'x':>6} {'step s':>8} "
          f"{'x':>6} {'overhead/step':>14}", file=sys.stderr)
    for r in records:
        print(f"{r['problem']:8} {r['setup']:11} {r['encode_rows_per_s']:14,.0f} "
              f"{r.get('encode_speedup', 1):6.2f} {r['train_step_s']:8.3f} "
              f"{r.get('train_speedup', 1):6.2f} {r.get('overhead_per_step_s', 0):14.3f}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
