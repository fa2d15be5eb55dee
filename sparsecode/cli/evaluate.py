"""``sparsecode evaluate``: how well a sparsecode model or a pretrained SAE reconstructs
the rows of an activation file, in one streaming pass."""

import json

from sparsecode.cli import _sae
from sparsecode.cli._common import (
    Interrupted,
    count,
    positive_number,
    progress_bar,
    set_threads,
    stop_flag,
)


def add_parser(sub):
    p = sub.add_parser(
        "evaluate", help="FVU, L0 and dead atoms of a model on an HDF5 activation file",
        description="Encode and decode the rows of a 2-D activation dataset in file order, "
        "streaming, and report the fraction of variance unexplained (about the mean of the "
        "rows read), the explained variance, the mean L0, the fraction of atoms no row "
        "used, and the speed. MODEL is a model file written by `sparsecode train` or a "
        "pretrained SAE. Ctrl-C prints the figures of the rows read so far.",
    )
    _sae.add_model_arguments(p)
    p.add_argument("--solver", choices=["mp", "topk", "omp", "gp"], default=None,
                   help="default: the model's (a pretrained SAE: its own encoder; omp, gp or "
                   "mp run on its decoder)")
    p.add_argument("--k", type=count(), default=None,
                   help="atoms per signal (default: the model's k)")
    _sae.add_positive_option(p)
    p.add_argument("--refit", action="store_true",
                   help="coefficients by least squares on each row's atoms")
    _sae.add_hookpoint_option(p)
    p.add_argument("--max-rows", type=count(), default=None, metavar="N",
                   help="only the first N rows")
    p.add_argument("--batch-size", type=count(), default=8192, help="rows per batch")
    p.add_argument("--buffer-mb", type=positive_number, default=64, help="read buffer (MiB)")
    p.add_argument("--threads", type=count(), default=None,
                   help="Numba threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, stoppable=True)
    return p


def run(args):
    from sparsecode.io import ActivationReader, model_position
    from sparsecode.pretrained import evaluate

    set_threads(args.threads)
    model, pretrained = _sae.load(args)
    dataset = args.dataset
    if dataset is None and not pretrained:
        dataset = (model_position(args.model) or {}).get("dataset")
    if dataset is None:
        dataset = _sae.sole_dataset(args.acts, "the model does not record the dataset it "
                                    "was trained on")
    if pretrained:
        k, positive = _sae.pursuit_options(model, args)
        dtype = model.dtype
    else:  # _sae.load refused --positive and --hookpoint
        k, positive = args.k, None
        dtype = model.components_.dtype
    reader = ActivationReader(args.acts, dataset, batch_size=args.batch_size,
                              shuffle=False, buffer_bytes=int(args.buffer_mb * 2**20),
                              dtype=dtype, copy=False)
    stop = stop_flag(args)
    with reader:
        if reader.n_features != model.n_features_in_:
            raise ValueError(f"{args.acts}:{dataset} has {reader.n_features} features per "
                             f"row; the model {args.model} takes {model.n_features_in_}")
        total = reader.n_rows if args.max_rows is None else min(args.max_rows, reader.n_rows)
        bar = progress_bar(total, "row", "evaluate", enabled=not args.quiet)
        try:
            result = evaluate(model, reader.epoch(0), solver=args.solver, k=k,
                              positive=positive, refit=args.refit, max_rows=args.max_rows,
                              progress=None if bar is None else bar.update,
                              stop=lambda: stop.set)
        finally:
            if bar is not None:
                bar.close()
    result = {"model": str(args.model), "acts": str(args.acts), "dataset": dataset,
              "solver": args.solver or ("native" if pretrained else model.solver),
              "k": k if pretrained else (args.k or model.k), "positive": positive,
              "refit": bool(args.refit), "rows_total": total, **result}
    if args.json:
        print(json.dumps(result))
    else:
        for line in _lines(result):
            print(line)
    if result["stopped"]:
        raise Interrupted(f"interrupted after {result['n_rows']:,} of {total:,} rows; the "
                          "figures above are those of the rows read")
    return 0


def _lines(r):
    """The figures as text."""

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    return [
        f"model {r['model']} (solver {r['solver']}, k {r['k']}"
        + (", refit" if r["refit"] else "") + f") on {r['acts']}:{r['dataset']}",
        f"rows                {r['n_rows']:,} of {r['rows_total']:,}",
        f"FVU                 {fmt(r['fvu'], '.6f')}",
        f"explained variance  {fmt(r['explained_variance'], '.6f')}",
        f"mean L0             {fmt(r['mean_l0'], '.3f')}",
        f"dead fraction       {r['dead_fraction']:.4f} ({r['n_dead']:,} of "
        f"{r['n_atoms']:,} atoms never active)",
        f"rows/s              {fmt(r['rows_per_second'], ',.0f')}",
    ]
