"""The ``sparsecode`` command."""

import argparse
import sys
import time

import numpy as np


def _demo(args):
    import sparsecode
    from sparsecode.datasets import make_sparse_signals, support_recovery

    dtype = np.dtype(args.dtype)
    print(
        f"sparsecode {sparsecode.__version__} demo: {args.samples} signals, {args.features} "
        f"features, {args.atoms} unit atoms, {args.k}-sparse, {args.noise:.0%} noise, {dtype}"
    )
    X, D, truth = make_sparse_signals(args.samples, args.features, args.atoms, args.k,
                                      noise=args.noise, dtype=dtype, random_state=args.seed)
    G = sparsecode.gram(D)
    solvers = [
        ("mp", lambda: sparsecode.mp(X, D, k=args.k, gram=G)),
        ("mp, 2k steps", lambda: sparsecode.mp(X, D, k=2 * args.k, gram=G)),
        ("omp", lambda: sparsecode.omp(X, D, k=args.k, gram=G)),
        ("omp, no Gram", lambda: sparsecode.omp(X, D, k=args.k, gram=False)),
        ("gp", lambda: sparsecode.gp(X, D, k=args.k, gram=G)),
        ("acgp", lambda: sparsecode.gp(X, D, k=args.k, variant="acgp", gram=G)),
    ]
    print("compiling kernels (cached after the first run) ...", flush=True)
    t0 = time.perf_counter()
    sparsecode.warmup([dtype])
    print(f"ready in {time.perf_counter() - t0:.1f} s\n")
    xn2 = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    print(f"{'solver':<16}{'recovered':>10}{'rel. error':>12}{'mean l0':>9}{'signals/s':>12}")
    for name, run in solvers:
        t0 = time.perf_counter()
        codes = run()
        dt = time.perf_counter() - t0
        r = X - codes.decode(D)
        err = float(np.sqrt(np.einsum("ij,ij->i", r, r, dtype=np.float64).sum() / xn2.sum()))
        rec = support_recovery(codes, truth)
        rate = args.samples / dt
        print(f"{name:<16}{rec:>10.1%}{err:>12.4f}{codes.l0.mean():>9.2f}{rate:>12,.0f}")
    print("\nrecovered: fraction of planted atoms found; rel. error: ||X - Z D|| / ||X||")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sparsecode", description="Fast sparse coding on NumPy arrays."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="encode synthetic k-sparse signals with every solver",
        description="Encode synthetic k-sparse signals from a planted dictionary with every "
        "solver; print support recovery, error and throughput.",
    )
    demo.add_argument("--samples", type=int, default=20000)
    demo.add_argument("--features", type=int, default=64)
    demo.add_argument("--atoms", type=int, default=256)
    demo.add_argument("--k", type=int, default=8)
    demo.add_argument("--noise", type=float, default=0.01)
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        print(f"sparsecode: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
