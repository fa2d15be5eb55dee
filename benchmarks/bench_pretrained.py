"""Pretrained SAEs at LLM width: loading a bfloat16 SAE against reading its bytes, and the
native TopK / JumpReLU encoders against the one GEMM ``X W_enc`` they need.

Writes a SAELens SAE of ``--atoms`` x ``--features`` (bfloat16 ``W_enc`` and ``W_dec``,
about 150 MB at 16,384 x 2,304) into a temporary folder, then in one run, ``--repeats``
times each, takes medians of:

- reading the files' bytes (``open().read()``, page cache warm after the first pass) and
  ``load_sae`` (header, memory map, bfloat16 widened to float32, finiteness checked);
  with ``--cold`` (root) both again from disk, the page cache dropped before each run;
- the GEMM ``X_in @ W_enc`` on ``--signals`` rows, and ``encode`` by the native TopK
  (``--k``) and JumpReLU (thresholds set so about ``--k`` atoms pass) encoders, which
  each perform that GEMM block by block plus one parallel pass over the scores.

Optionally (``--real H5``) the SAE's own encoder against pursuits on its decoder on real
activations: an MP-SAE (``--real-solver mp``, positive selection) or a tied TopK SAE
trained on the file, exported to SAELens, read back by ``load_sae`` and compared by
``compare_encoders`` on held-out rows.

Rows are appended to ``results/pretrained.jsonl`` with the commit, load and BLAS
variables.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _provenance import blas_env, load_average, package_commit  # noqa: E402


def timed(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def write_sae(folder, d, m, rng):
    """A SAELens TopK SAE with bfloat16 weights; returns its folder and byte count."""
    from sparsecode.io.safetensors import write_tensors

    W_dec = rng.standard_normal((m, d), dtype=np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    W_enc = np.ascontiguousarray(W_dec.T)
    write_tensors(folder / "sae_weights.safetensors",
                  {"W_enc": W_enc, "W_dec": W_dec, "b_enc": np.zeros(m, np.float32),
                   "b_dec": np.zeros(d, np.float32)}, bfloat16=("W_enc", "W_dec"))
    with open(folder / "cfg.json", "w") as f:
        json.dump({"architecture": "topk", "d_in": d, "d_sae": m, "k": 64,
                   "dtype": "bfloat16", "apply_b_dec_to_input": True,
                   "normalize_activations": "none",
                   "metadata": {"sae_lens_version": "6.5.0"}}, f)
    return sum(p.stat().st_size for p in folder.iterdir())


def drop_caches():
    """Empty the page cache (needs root); False where it cannot."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed_cold(fn, folder, repeats):
    """Median time of ``fn(folder)`` with the page cache dropped before each run (the
    drop itself untimed)."""
    times = []
    for _ in range(repeats):
        drop_caches()
        t0 = time.perf_counter()
        fn(folder)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_bytes(folder):
    n = 0
    for p in sorted(folder.iterdir()):
        with open(p, "rb") as f:
            n += len(f.read())
    return n


def bench_load(args, rng, rows):
    from sparsecode.io import load_sae

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp)
        size = write_sae(folder, args.features, args.atoms, rng)
        read_bytes(folder)  # warm the page cache for both, and load the kernels
        for _ in range(2):  # the first loads of a process also grow its heap
            load_sae(folder)
        t_read, _ = timed(lambda: read_bytes(folder), args.repeats)
        t_load, sae = timed(lambda: load_sae(folder), args.repeats)
        rows.append({"case": "load", "bytes": size, "read_s": t_read, "load_s": t_load,
                     "ratio": t_load / t_read})
        print(f"load {size / 1e6:.0f} MB bfloat16 SAELens SAE ({args.atoms} x "
              f"{args.features}), page cache warm: read bytes {t_read:.3f} s, load_sae "
              f"{t_load:.3f} s, ratio {t_load / t_read:.2f}")
        if args.cold and drop_caches():
            # the disk is the noisiest part of the machine: twice the repeats, in turns
            reads, loads = [], []
            for _ in range(2 * args.repeats):
                reads.append(timed_cold(read_bytes, folder, 1))
                loads.append(timed_cold(load_sae, folder, 1))
            t_read, t_load = statistics.median(reads), statistics.median(loads)
            rows.append({"case": "load_cold", "bytes": size, "read_s": t_read,
                         "load_s": t_load, "ratio": t_load / t_read})
            print(f"  from disk (page cache dropped before each): read bytes {t_read:.3f} s, "
                  f"load_sae {t_load:.3f} s, ratio {t_load / t_read:.2f}")
        return sae


def bench_encode(args, sae, rng, rows):
    from sparsecode.pretrained import PretrainedSAE

    n, k = args.signals, args.k
    X = rng.standard_normal((n, args.features), dtype=np.float32)
    W_enc = np.ascontiguousarray(sae.W_enc)
    sae_topk = PretrainedSAE(sae.W_dec, sae.b_dec, architecture="topk", W_enc=W_enc,
                             b_enc=sae.b_enc, k=k)
    # JumpReLU thresholds: each atom's (1 - k/m) quantile of its scores on X
    P = X[:1024] @ W_enc
    thr = np.quantile(P, 1 - k / args.atoms, axis=0).astype(np.float32)
    sae_jr = PretrainedSAE(sae.W_dec, sae.b_dec, architecture="jumprelu", W_enc=W_enc,
                           b_enc=sae.b_enc, threshold=thr)
    sae_topk.encode(X[:64])
    sae_jr.encode(X[:64])
    t_gemm, _ = timed(lambda: X @ W_enc, args.repeats)
    flops = 2.0 * n * args.features * args.atoms
    print(f"GEMM X W_enc ({n} x {args.features} x {args.atoms}): {t_gemm:.3f} s "
          f"({flops / t_gemm / 1e9:.0f} GFLOP/s)")
    for name, model in (("topk", sae_topk), ("jumprelu", sae_jr)):
        t, codes = timed(lambda m=model: m.encode(X), args.repeats)
        l0 = float(codes.l0.mean())
        rows.append({"case": f"encode_{name}", "signals": n, "atoms": args.atoms,
                     "features": args.features, "k": k, "gemm_s": t_gemm, "encode_s": t,
                     "ratio": t / t_gemm, "mean_l0": l0})
        print(f"native {name:<8} encode {t:.3f} s, {t / t_gemm:.2f}x the GEMM "
              f"(mean L0 {l0:.1f})")


def bench_real(args, rows):
    """An SAE trained on real activations, exported to SAELens, read back and its
    encoder compared with pursuits on its decoder."""
    import h5py

    from sparsecode import MPSAE
    from sparsecode.io import export_saelens, load_sae
    from sparsecode.pretrained import compare_encoders

    with h5py.File(args.real, "r") as f:
        ds = f[args.real_dataset]
        n = min(len(ds), args.real_rows)
        X = np.asarray(ds[:n], dtype=np.float32)
    X_train, X_test = X[:-args.real_test], X[-args.real_test:]
    model = MPSAE(args.real_atoms, k=args.k_real, solver=args.real_solver, selection="positive",
                  random_state=0, n_epochs=args.real_epochs, batch_size=args.real_batch,
                  lr=args.real_lr, progress=False)
    t0 = time.perf_counter()
    model.fit(X_train)
    fit_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        export_saelens(model, tmp, overwrite=True)
        sae = load_sae(tmp)
        table = compare_encoders(sae, X_test)
    print(f"\nreal activations {args.real}: {args.real_solver} SAE {args.real_atoms} atoms, "
          f"k {args.k_real}, trained on {len(X_train):,} rows in {fit_s:.1f} s; "
          f"{len(X_test):,} held-out rows")
    print(table)
    for row in table:
        rows.append({"case": "real_compare", "data": os.path.basename(args.real),
                     "sae": args.real_solver, "fit_s": fit_s,
                     "atoms": args.real_atoms, "k_train": args.k_real,
                     "train_rows": len(X_train), "test_rows": len(X_test), **row})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=16384)
    ap.add_argument("--features", type=int, default=2304)
    ap.add_argument("--signals", type=int, default=4096)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tmp", default=None, help="folder for the temporary SAE")
    ap.add_argument("--cold", action="store_true",
                    help="also time both from disk, the page cache dropped before each "
                    "(needs root)")
    ap.add_argument("--real", default=None, help="HDF5 activations for the comparison")
    ap.add_argument("--real-dataset", default="acts")
    ap.add_argument("--real-rows", type=int, default=100_000)
    ap.add_argument("--real-test", type=int, default=10_000)
    ap.add_argument("--real-atoms", type=int, default=3072)
    ap.add_argument("--k-real", type=int, default=32)
    ap.add_argument("--real-epochs", type=int, default=3)
    ap.add_argument("--real-batch", type=int, default=1024)
    ap.add_argument("--real-lr", type=float, default=1e-3)
    ap.add_argument("--real-solver", choices=["mp", "topk"], default="mp",
                    help="the SAE trained: an MP-SAE (exported as SAELens' "
                    "matching_pursuit) or a tied TopK SAE (exported as topk)")
    ap.add_argument("--out", default=str(HERE / "results" / "pretrained.jsonl"))
    args = ap.parse_args(argv)
    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    with threadpool_limits(limits=args.threads):
        sae = bench_load(args, rng, rows)
        bench_encode(args, sae, rng, rows)
        if args.real:
            bench_real(args, rows)
    stamp = {"commit": package_commit(), "load": load_average(), "blas": blas_env(),
             "threads": args.threads, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(args.out, "a") as f:
        for row in rows:
            f.write(json.dumps({**stamp, **row}) + "\n")
    print(f"\nappended {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
