"""``sparsecode demo``: every solver on synthetic signals, the file workflow on a
synthetic activation file, and the MP-SAE paper's hierarchical toy."""

import time
from pathlib import Path

import numpy as np


def _solvers(args):
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


def _toy_model(solver, steps, seed):
    from sparsecode.sae import paper_recipe

    # the MP-SAE paper's recipe for its toy, shortened (see docs/training.md)
    return paper_recipe(20, 3 if solver == "mp" else 2, solver=solver, max_steps=steps,
                        progress=False, random_state=seed)


def _demo_toy(args):
    from sparsecode.datasets import HIERARCHY_PARENTS, make_hierarchical
    from sparsecode.metrics import match_atoms

    steps = args.toy_steps
    print(
        f"\nMP-SAE on the hierarchical toy (20 features in d = 20, within-group cosine "
        f"{args.toy_correlation}): {steps} Adam steps of 200 signals, 'positive' MP (<= 3 "
        "steps) against a one-step TopK encoder (k = 2) trained the same way"
    )
    X, F, _ = make_hierarchical(steps * 200, correlation=args.toy_correlation,
                                random_state=args.seed)
    cos = {}
    for solver in ("mp", "topk"):
        t0 = time.perf_counter()
        model = _toy_model(solver, steps, args.seed).fit(X)
        rows, cols, c = match_atoms(model.components_, F)
        cos[solver] = np.empty(20)
        cos[solver][cols] = c
        rate = steps * 200 / (time.perf_counter() - t0)
        print(f"  {solver:<5} trained at {rate:,.0f} signals/s, final fvu "
              f"{model.history_[-1]['fvu']:.2e}")
    parent_of = {c: p for p, kids in HIERARCHY_PARENTS.items() for c in kids}
    print(f"\n{'feature':<18}{'|cos| MP-SAE':>13}{'|cos| TopK':>12}")
    for f in range(20):
        role = (f"child of {parent_of[f]}" if f in parent_of
                else "parent" if f in HIERARCHY_PARENTS else "leaf")
        print(f"{f:>3} {role:<14}{cos['mp'][f]:>13.3f}{cos['topk'][f]:>12.3f}")
    for solver in ("mp", "topk"):
        n = int((cos[solver] > 0.99).sum())
        print(f"{'MP-SAE' if solver == 'mp' else 'TopK'}: {n} of 20 features recovered "
              "(Hungarian-matched |cos| > 0.99)")


def _workflow(args):
    """Write a synthetic activation file, then run train, encode, export, evaluate and info on it
    as a user would from the shell."""
    from sparsecode.cli import build_parser
    from sparsecode.datasets import make_sparse_signals
    from sparsecode.io import load_model, read_codes, write_activations
    from sparsecode.io.activations import ActivationReader
    from sparsecode.metrics import recovery_rate

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    acts, model, codes, export = (work / "acts.h5", work / "model.h5", work / "codes.h5",
                                  work / "saelens")
    n, d, atoms, k = args.file_rows, args.features, args.atoms, 5
    X, D, _ = make_sparse_signals(n, d, atoms, k, noise=args.noise, random_state=args.seed)
    write_activations(acts, X, dtype="float16", compression="gzip", overwrite=True)
    print(f"\nThe file workflow in {work}/: {n:,} activations ({d} features, {k}-sparse in "
          f"{atoms} planted atoms) written to {acts.name} as float16, gzip "
          f"({acts.stat().st_size / 2**20:.1f} MiB)\n")

    def sh(*argv):
        print("$ sparsecode " + " ".join(str(a) for a in argv), flush=True)
        args_ = build_parser().parse_args([str(a) for a in argv])
        args_.func(args_)
        print(flush=True)

    sh("train", acts, "--dataset", "activations", "--atoms", atoms, "--k", k, "--out", model,
       "--epochs", 5, "--batch-size", 500, "--lr", 0.01, "--holdout", 0.1, "--overwrite",
       "--log-every", 150, "--quiet")
    sh("encode", model, acts, "--out", codes, "--overwrite", "--quiet")
    sh("export", model, "--saelens", export, "--overwrite")
    # the export read back as a pretrained SAE: its own encoder (SAELens' matching pursuit)
    sh("evaluate", export, acts, "--dataset", "activations", "--quiet")
    sh("info", model)
    sae = load_model(model)
    err = tot = 0.0
    with ActivationReader(acts, "activations", batch_size=10000, shuffle=False) as r:
        for i, Xb in enumerate(r.epoch(0)):
            Z = read_codes(codes, i * 10000, i * 10000 + len(Xb))
            R = Xb - sae.inverse_transform(Z)
            err += float((R.astype(np.float64) ** 2).sum())
            tot += float(((Xb - Xb.mean(axis=0)).astype(np.float64) ** 2).sum())
    print(f"planted atoms recovered (|cos| > 0.99): {recovery_rate(sae.components_, D):.1%}; "
          f"explained variance of the codes in {codes.name}: {1 - err / tot:.4f}")


def run(args):
    _solvers(args)
    if args.file_rows:
        _workflow(args)
    if args.toy_steps:
        _demo_toy(args)
    return 0


def add_parser(sub):
    demo = sub.add_parser(
        "demo",
        help="every solver on synthetic signals; train/encode/export/evaluate on a synthetic file; "
        "an MP-SAE on the toy",
        description="Encode synthetic k-sparse signals from a planted dictionary with every "
        "solver (support recovery, error, throughput); write them to an HDF5 activation "
        "file and run train, encode, export, evaluate and info on it; then train an MP-SAE and a "
        "TopK SAE on the hierarchical toy of the MP-SAE paper and print the recovery of "
        "each feature.",
    )
    demo.add_argument("--samples", type=int, default=20000, help="synthetic signals")
    demo.add_argument("--features", type=int, default=64, help="signal dimension")
    demo.add_argument("--atoms", type=int, default=256, help="atoms of the planted dictionary")
    demo.add_argument("--k", type=int, default=8, help="atoms per signal")
    demo.add_argument("--noise", type=float, default=0.01,
                      help="noise norm relative to the signal norm")
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                      help="precision of the signals and the solvers")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    demo.add_argument("--workdir", default="sparsecode-demo",
                      help="where the file workflow writes its files")
    demo.add_argument("--file-rows", type=int, default=50000,
                      help="rows of the synthetic activation file (0 skips the workflow)")
    demo.add_argument("--toy-steps", type=int, default=5000,
                      help="training steps on the hierarchical toy (0 skips it)")
    demo.add_argument("--toy-correlation", type=float, default=0.3,
                      help="within-group cosine of the toy's features (0, 0.1, ..., 0.8)")
    demo.set_defaults(func=run)
    return demo
