"""``sparsecode itda``: an ITDA dictionary from an activation file, one pass in file order,
with checkpoints, Ctrl-C and ``--resume``."""

import time
from pathlib import Path

from sparsecode.cli._common import (
    Interrupted,
    count,
    non_negative_number,
    positive_number,
    progress_bar,
    say,
    set_threads,
    stop_flag,
)


def add_parser(sub):
    p = sub.add_parser(
        "itda", help="build an ITDA dictionary from an HDF5 activation file",
        description="Build an ITDA dictionary (the activations themselves, normalised, "
        "added as atoms when matching pursuit on the atoms so far leaves a relative error "
        "over --threshold) in one pass over a 2-D activation dataset, in file order. "
        "Checkpoints go to OUT.ckpt (every --checkpoint-every seconds, and on Ctrl-C); "
        "--resume continues from there. The finished dictionary is written to OUT, which "
        "the encode, export and info commands take like a model file.",
    )
    p.add_argument("acts", help="activation file (.h5)")
    p.add_argument("--dataset", required=True, help="name of the 2-D dataset in the file")
    p.add_argument("--k", type=count(), default=40, help="matching-pursuit steps per row")
    p.add_argument("--threshold", type=positive_number, required=True,
                   help="relative error ||x - x_hat||^2 / ||x||^2 over which a row becomes "
                   "an atom, in (0, 1)")
    p.add_argument("--out", required=True, help="dictionary file to write (.h5)")
    p.add_argument("--max-atoms", type=count(), default=None,
                   help="stop adding atoms at this many")
    p.add_argument("--selection", choices=["abs", "positive", "signed"], default="abs",
                   help="selection rule of the pursuit")
    p.add_argument("--batch-size", type=count(), default=1024,
                   help="rows encoded together (see the batch semantics in the docs)")
    p.add_argument("--max-rows", type=count(), default=None,
                   help="use only the first this many rows")
    p.add_argument("--source-info", action="append", default=[], metavar="DATASET",
                   help="a 1-D dataset of ACTS with one value per row (token ids, document "
                   "offsets...) whose values at the atoms' source rows are stored with the "
                   "dictionary (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--buffer-mb", type=positive_number, default=64, help="read buffer (MiB)")
    p.add_argument("--checkpoint-every", type=non_negative_number, default=300,
                   help="seconds")
    p.add_argument("--threads", type=count(), default=None,
                   help="Numba threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, stoppable=True)
    return p


#: Settings a resume must share with the interrupted run.
RESUME_FIXED = ("k", "threshold", "max_atoms", "selection", "batch_size")


def run(args):
    from sparsecode import ITDA
    from sparsecode.cli.train import check_writable, checkpoint_path
    from sparsecode.io import (
        ActivationReader,
        OutputLock,
        check_not_inputs,
        dataset_digest,
        partial_path,
    )

    set_threads(args.threads)
    if not 0.0 < args.threshold < 1.0:
        raise ValueError(f"--threshold must be in (0, 1); got {args.threshold}")
    out, ckpt = Path(args.out), checkpoint_path(args.out)
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a directory; give a file path")
    with ActivationReader(args.acts, args.dataset, batch_size=1) as probe:
        n_rows = probe.n_rows
    if args.max_rows is not None:
        n_rows = min(n_rows, args.max_rows)
    check_not_inputs({"--out": out, "its checkpoint": ckpt,
                      "its partial file": partial_path(out)}, {"activation file": args.acts})
    check_writable(out.parent)
    from sparsecode.io.itda import read_source_info

    read_source_info(args.acts, args.source_info, [], n_rows)  # checked before any work
    data = {"acts_identity": dataset_digest(args.acts, args.dataset),
            "dataset": args.dataset, "rows": n_rows}
    model = ITDA(args.k, args.threshold, max_atoms=args.max_atoms, selection=args.selection,
                 batch_size=args.batch_size)
    model._check_params()
    with OutputLock(out):
        if not args.resume and out.exists() and not args.overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
        if not args.resume and ckpt.exists() and not args.overwrite:
            raise FileExistsError(f"{ckpt} is left from an interrupted run; continue it with "
                                  "--resume, or pass --overwrite to start over")
        if args.resume:
            if not ckpt.exists():
                if out.exists() and _same_run(out, model, data, finished=True):
                    say(None, f"{out} is already finished with these options; nothing to "
                              "do")
                    return 0
                raise FileNotFoundError(f"{ckpt}: no checkpoint to resume")
            model = _resumed(ckpt, model, data)
        reader = ActivationReader(args.acts, args.dataset, batch_size=args.batch_size,
                                  shuffle=False, rows=(0, n_rows),
                                  buffer_bytes=int(args.buffer_mb * 2**20))
        with reader:
            _build(model, reader, args, ckpt, data, n_rows)
        from sparsecode.io import save_itda

        save_itda(model, out, position={**data, "finished": True},
                  source_info=read_source_info(args.acts, args.source_info,
                                               model.atom_sources_, n_rows))
        ckpt.unlink(missing_ok=True)
    say(None, f"wrote {out}: {model.n_atoms_:,} atoms from {model.n_rows_seen_:,} rows")
    return 0


def _same_run(path, model, data, finished=False):
    """Raise unless the ITDA file ``path`` was built with ``model``'s settings on
    ``data``; True when it is."""
    from sparsecode.io import load_itda
    from sparsecode.io.itda import itda_position

    saved = load_itda(path)
    what = "the finished dictionary" if finished else "the checkpoint"
    for name in RESUME_FIXED:
        if getattr(saved, name) != getattr(model, name):
            opt = "--" + name.replace("_", "-")
            raise ValueError(f"{opt} {getattr(model, name)} differs from {what}'s "
                             f"{getattr(saved, name)}; resume with the options of the run")
    pos = itda_position(path) or {}
    for key, value in data.items():
        if pos.get(key) != value:
            raise ValueError(f"{what} was built on other data ({key} differs); resume with "
                             "the data of the run")
    return True


def _resumed(ckpt, model, data):
    from sparsecode.io import load_itda

    _same_run(ckpt, model, data)
    saved = load_itda(ckpt)
    say(None, f"resuming {ckpt} after {saved.n_rows_seen_:,} rows ({saved.n_atoms_:,} atoms)")
    return saved


def _guarded(batches, model, checkpoint, ckpt):
    """The batches; a bad row (met by the reader or the model) keeps the dictionary built
    before its batch in a checkpoint, and the error says so."""
    try:
        yield from batches
    except ValueError as exc:
        if not getattr(model, "n_rows_seen_", 0):
            raise
        checkpoint()
        raise ValueError(f"{exc}; the dictionary up to that batch is saved in {ckpt} for "
                         "--resume") from None


def _build(model, reader, args, ckpt, data, n_rows):
    from sparsecode.io import save_itda

    done = getattr(model, "n_rows_seen_", 0)
    bs = args.batch_size
    bar = progress_bar(n_rows, "row", "itda", enabled=not args.quiet)
    if bar is not None:
        bar.update(done)
    last_save = time.monotonic()

    def checkpoint():
        save_itda(model, ckpt, position=data)

    try:
        stop = stop_flag(args)
        for Xb in _guarded(reader.epoch(0, start_batch=done // bs), model, checkpoint, ckpt):
            model.partial_fit(Xb)
            if bar is not None:
                bar.update(len(Xb))
                bar.set_postfix(atoms=model.n_atoms_, refresh=False)
            if time.monotonic() - last_save >= args.checkpoint_every:
                checkpoint()
                last_save = time.monotonic()
            if stop.set:
                checkpoint()
                raise Interrupted(f"interrupted after {model.n_rows_seen_:,} of {n_rows:,} "
                                  f"rows; checkpoint in {ckpt}; continue with --resume")
    finally:
        if bar is not None:
            bar.close()
