"""Streaming encode from HDF5 against the same encode in memory.

For each problem, an MP-SAE (atoms drawn from the signals; encode cost does not depend on
training) encodes the same rows two ways:

    in memory   ``model.transform`` on consecutive batches of an array already in RAM
    streamed    ``sparsecode encode MODEL ACTS --out CODES``: the file read by
                ``ActivationReader`` (file order, chunk-aligned blocks, float32
                conversion, finiteness check), ``transform``, and the codes appended to
                an HDF5 file that is renamed into place at the end

with the same batch size, for activation files stored as float32 and float16, plain and
gzip-compressed (level 1, byte shuffle).  Also timed: reading the whole file through the
reader with no encode (read bandwidth, in file bytes and in float32 bytes delivered).

The files are read right after being written, from the page cache (this machine cannot
drop it); a cold read adds the disk's time.  Every figure is the median of ``--repeats``
runs after a warm-up run.

    python benchmarks/bench_io.py [--problems P2 P1] [--rows N] [--threads 2]
        [--repeats 5] [--out FILE] [--quick]

Output: one JSON object per line (printed, and appended to ``--out``), then a table.
``ratio`` is streamed throughput / in-memory throughput (the target is >= 0.8).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _provenance import blas_env, load_average, package_commit  # benchmarks/ is on sys.path

PROBLEMS = {
    # name: (n_features, n_atoms, k, rows, batch)
    "P2": (384, 4096, 32, 65536, 8192),
    "P1": (64, 256, 8, 1_000_000, 8192),
}
STORAGE = [("float32", None), ("float16", None), ("float32", "gzip"), ("float16", "gzip")]


def _median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def run_problem(name, rows, repeats, work, emit):
    from sparsecode.cli import main
    from sparsecode.datasets import make_sparse_signals
    from sparsecode.io import ActivationReader, save_model, write_activations
    from sparsecode.sae import MPSAE

    d, atoms, k, default_rows, bs = PROBLEMS[name]
    n = rows or default_rows
    X, _, _ = make_sparse_signals(n, d, atoms, k, noise=0.01, random_state=0)
    model = MPSAE(atoms, k, unit_atoms=True, random_state=0).start(X[:max(atoms, 8192)])
    model_path = save_model(model, work / f"{name}_model.h5")

    def in_memory():
        for s in range(0, n, bs):
            model.transform(X[s:s + bs])

    t_mem, lo, hi = _median_time(in_memory, repeats)
    base = {"problem": name, "n_features": d, "n_atoms": atoms, "k": k, "rows": n,
            "batch_size": bs, "commit": package_commit(), "load": load_average(),
            "blas_env": blas_env()}
    emit({**base, "case": "in memory", "seconds": t_mem, "min": lo, "max": hi,
          "rows_per_s": n / t_mem})
    for dtype, comp in STORAGE:
        acts = work / f"{name}_{dtype}_{comp}.h5"
        write_activations(acts, X, dtype=dtype, compression=comp,
                          compression_opts=1 if comp == "gzip" else None, overwrite=True)
        size = acts.stat().st_size
        codes = work / f"{name}_codes.h5"

        def read_all(acts=acts):
            with ActivationReader(acts, "activations", batch_size=bs, shuffle=False,
                                  buffer_bytes=64 << 20) as r:
                for _ in r.epoch(0):
                    pass

        def streamed(acts=acts, codes=codes):
            code = main(["encode", str(model_path), str(acts), "--dataset", "activations",
                         "--out", str(codes), "--batch-size", str(bs), "--overwrite",
                         "--quiet"])
            assert code == 0

        t_read, _, _ = _median_time(read_all, repeats)
        t_enc, lo, hi = _median_time(streamed, repeats)
        emit({**base, "case": "streamed", "dtype": dtype, "compression": comp,
              "file_mib": size / 2**20, "seconds": t_enc, "min": lo, "max": hi,
              "rows_per_s": n / t_enc, "ratio": t_mem / t_enc, "read_seconds": t_read,
              "read_file_mb_s": size / t_read / 1e6,
              "read_float32_mb_s": n * d * 4 / t_read / 1e6})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    p.add_argument("--rows", type=int, default=None, help="override the rows of each problem")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "io.jsonl"))
    p.add_argument("--quick", action="store_true", help="small and fast; writes no file")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.repeats, args.out = 20000, 1, None
    if args.threads:
        import numba

        numba.set_num_threads(args.threads)
    import numba

    threads = numba.get_num_threads()
    rows = []

    def emit(row):
        row["threads"] = threads
        rows.append(row)
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")

    with tempfile.TemporaryDirectory(prefix="bench_io_") as tmp:
        for name in args.problems:
            run_problem(name, args.rows, args.repeats, Path(tmp), emit)
    print(f"\n{'problem':<8}{'case':<22}{'rows/s':>12}{'vs memory':>11}{'read MB/s':>12}")
    for r in rows:
        case = r["case"] if r["case"] == "in memory" else (
            f"{r['dtype']}" + (f" {r['compression']}" if r["compression"] else ""))
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        read = f"{r['read_file_mb_s']:,.0f}" if "read_file_mb_s" in r else ""
        print(f"{r['problem']:<8}{case:<22}{r['rows_per_s']:>12,.0f}{ratio:>11}{read:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
