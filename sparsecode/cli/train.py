"""``sparsecode train``: an MP-SAE (or classic dictionary) from an activation file, with
checkpoints, Ctrl-C and ``--resume``."""

import math
import time
from pathlib import Path

import numpy as np

from sparsecode.cli._common import (
    Interrupted,
    add_scheduler_option,
    cluster,
    count,
    non_negative_number,
    positive_number,
    progress_bar,
    say,
    set_threads,
    stop_flag,
)

#: Model options the command sets, and their MPSAE names.
MODEL_OPTIONS = {
    "atoms": "n_atoms", "k": "k", "solver": "solver", "selection": "selection",
    "update": "update", "batch_size": "batch_size", "lr": "lr", "seed": "random_state",
}


def checkpoint_path(out):
    """pathlib.Path: where ``train --out OUT`` keeps its checkpoint until it finishes."""
    out = Path(out)
    return out.with_name(out.name + ".ckpt")


def add_parser(sub):
    p = sub.add_parser(
        "train", help="train an MP-SAE on an HDF5 activation file",
        description="Train an MP-SAE (a sparse autoencoder whose encoder is matching pursuit "
        "on its own atoms) on a 2-D activation dataset, streaming shuffled minibatches. "
        "Checkpoints go to OUT.ckpt (every --checkpoint-every seconds, and on Ctrl-C); "
        "--resume continues from there with the same data order. The finished model is "
        "written to OUT.",
    )
    p.add_argument("acts", help="activation file (.h5)")
    p.add_argument("--dataset", required=True, help="name of the 2-D dataset in the file")
    p.add_argument("--atoms", type=count(), required=True, help="number of atoms (SAE width)")
    p.add_argument("--k", type=count(), required=True, help="MP steps per signal")
    p.add_argument("--out", required=True, help="model file to write (.h5)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--epochs", type=count(), default=None,
                   help="passes over the training rows (default: train until the held-out "
                   "explained variance stops improving, see --holdout and --patience)")
    p.add_argument("--max-epochs", type=count(), default=100,
                   help="passes at most when --epochs is not given")
    p.add_argument("--max-steps", type=count(), default=None, help="stop after this many steps")
    p.add_argument("--max-time", type=positive_number, default=None,
                   help="stop after this many seconds of training (counted across "
                   "resumes); the default Adam rate doubles, and the rate decays over the "
                   "last 20%% of them")
    p.add_argument("--patience", type=count(), default=3,
                   help="stop once this many held-out checks in a row (one per epoch, or per "
                   "2^20 rows) brought no improvement of more than 0.1%%")
    p.add_argument("--batch-size", type=count(), default=None,
                   help="rows per training step (default: from the data size, see the "
                   "MPSAE batch_size='auto')")
    p.add_argument("--lr", type=positive_number, default=None,
                   help="Adam learning rate (peak of the schedule; unused by mod, ksvd and "
                   "online; default: from the width, see the MPSAE lr='auto')")
    p.add_argument("--solver", choices=["mp", "topk", "omp", "gp"], default="mp",
                   help="encoder: unrolled MP (the MP-SAE), one-step TopK, OMP or GP")
    p.add_argument("--selection", choices=["abs", "positive", "signed"], default="abs",
                   help="MP selection rule (see the concepts page)")
    p.add_argument("--update", choices=["adam", "mod", "ksvd", "online"], default="adam",
                   help="dictionary update: Adam on the exact gradient, or a classic update "
                   "at fixed codes")
    p.add_argument("--holdout", type=float, default=None,
                   help="fraction of rows (at the end of the dataset) kept out of training, "
                   "to decide when to stop and to report explained variance (default "
                   "without --epochs: 0.1, at most 32,768 rows and 64 MiB, on files of "
                   "200 rows or more; with --epochs: 0)")
    p.add_argument("--seed", type=count(0), default=0, help="seed of the data order and the model")
    p.add_argument("--buffer-mb", type=positive_number, default=256,
                   help="memory for the shuffle buffer (MiB)")
    p.add_argument("--checkpoint-every", type=non_negative_number, default=300, help="seconds")
    p.add_argument("--checkpoint-steps", type=count(), default=None,
                   help="also checkpoint every this many steps")
    p.add_argument("--log-every", type=count(), default=100, help="metric line every N steps")
    p.add_argument("--threads", type=count(), default=None,
                   help="Numba threads (default: all cores)")
    add_scheduler_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, stoppable=True)
    return p


#: Files with fewer rows get no held-out rows by default.
MIN_HOLDOUT_FILE_ROWS = 200
#: The held-out rows are read into memory: at most this many bytes of them by default.
MAX_HOLDOUT_BYTES = 64 << 20


def _split(n, holdout, n_features, converge):
    """Training and held-out row ranges of a file of ``n`` rows."""
    if holdout is None:
        if not converge or n < MIN_HOLDOUT_FILE_ROWS:
            holdout = 0.0
        else:
            from sparsecode.sae.stopping import MAX_VALIDATION_ROWS

            n_hold = min(int(round(0.1 * n)), MAX_VALIDATION_ROWS,
                         MAX_HOLDOUT_BYTES // (8 * n_features))
            return (0, n - n_hold), (n - n_hold, n)
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"--holdout must be in [0, 1); got {holdout}")
    n_hold = int(round(n * holdout))
    if holdout > 0 and (n_hold == 0 or n_hold == n):
        raise ValueError(f"--holdout {holdout} leaves no rows on one side of the split of {n}")
    if converge and n_hold == 0:
        raise ValueError(
            f"without --epochs the run stops when held-out rows stop improving, but "
            f"{'--holdout is 0' if holdout == 0 else 'no rows are held out'} (the file has "
            f"{n} rows; {MIN_HOLDOUT_FILE_ROWS} or more get 10% held out by default): pass "
            "--epochs N or a --holdout fraction"
        )
    return (0, n - n_hold), ((n - n_hold, n) if n_hold else None)


def _config(args, n_train, held_out):
    """The run's checked configuration, its "auto" settings resolved for ``n_train``
    rows."""
    from sparsecode.sae import MPSAE, TrainConfig

    return TrainConfig.from_params(MPSAE(args.atoms, args.k, **_params(args)).get_params()
                                   ).resolve(n_train, held_out=held_out)


def _params(args):
    """The model's parameters that the options set."""
    converge = args.epochs is None
    return dict(solver=args.solver, selection=args.selection, update=args.update,
                batch_size=args.batch_size or "auto", lr=args.lr or "auto",
                n_epochs=args.epochs, max_epochs=args.max_epochs, max_steps=args.max_steps,
                max_time=args.max_time,
                n_iter_no_change=args.patience, schedule="plateau" if converge else "auto",
                log_every=args.log_every, progress=False, random_state=args.seed)


def run(args):
    from sparsecode.io import ActivationReader, OutputLock, check_not_inputs, partial_path

    set_threads(args.threads)
    out, ckpt = Path(args.out), checkpoint_path(args.out)
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a directory; give a file path")
    # the inputs first: nothing is created before they are known good
    with ActivationReader(args.acts, args.dataset, batch_size=1) as probe:
        n_rows = probe.n_rows  # the committed rows of an interrupted writer's file
        n_features = probe.n_features
    train_rows, hold_rows = _split(n_rows, args.holdout, n_features, args.epochs is None)
    config = _config(args, train_rows[1] - train_rows[0], hold_rows is not None)
    check_not_inputs({"--out": out, "its checkpoint": ckpt,
                      "its partial file": partial_path(out)}, {"activation file": args.acts})
    check_writable(out.parent)
    _check_room(out, args, n_features)
    with OutputLock(out):  # another live run on this --out is refused here
        if args.resume and not ckpt.exists():
            if out.exists() and _finished(args, out, train_rows):
                return 0
            raise FileNotFoundError(f"{ckpt}: no checkpoint to resume")
        if not args.resume and out.exists() and not args.overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
        if not args.resume and ckpt.exists() and not args.overwrite:
            raise FileExistsError(
                f"{ckpt} is left from an interrupted run; continue it with --resume, or "
                "pass --overwrite to start over"
            )
        reader = ActivationReader(args.acts, args.dataset, batch_size=config.batch_size,
                                  seed=args.seed, rows=train_rows,
                                  buffer_bytes=int(args.buffer_mb * 2**20))
        with reader, cluster(args.scheduler) as client:
            return _train(args, config, reader, client, out, ckpt, train_rows, hold_rows)


def check_writable(folder):
    """Create ``folder`` (and its parents) and check that files can be made in it, before
    any work is done."""
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sparsecode-probe-"):
            pass
    except OSError as exc:
        raise OSError(f"cannot write in {folder} ({exc.strerror or exc}); choose another "
                      "--out") from None


def _check_room(out, args, n_features):
    """Refuse a run whose model cannot be saved next to ``--out`` (a checkpoint and the
    model: the atoms with two optimizer moments each, or the online statistics), before
    any training."""
    import errno
    import shutil

    per_model = 4 * (3 * args.atoms * n_features + n_features) + (1 << 20)
    if args.update == "online":
        per_model += 8 * args.atoms * (args.atoms + n_features)
    need = 2 * per_model
    free = shutil.disk_usage(out.parent).free
    if free < need:
        error = OSError(f"{out.parent}: the disk is full ({free / 2**20:.1f} MiB free; the "
                        f"model and its checkpoint need about {need / 2**20:.1f} MiB)")
        error.errno = errno.ENOSPC
        raise error


def _finished(args, out, train_rows):
    """Whether ``out`` is the finished model of this very run (``--resume`` then has
    nothing to do); raise when it is another's."""
    from sparsecode.io import load_model, model_position

    pos = model_position(out) or {}
    if not pos.get("finished"):
        return False
    model = load_model(out)
    _check_same_run(args, model, pos, _data_of(args, pos.get("total_steps"), train_rows,
                                               pos.get("order", "reader"),
                                               pos.get("batch_size")), finished=True)
    say(None, f"{out} is already finished ({model.n_steps_} steps) with these options; "
              "nothing to do")
    return True


def _data_of(args, total, train_rows, order, batch_size):
    """The data and schedule a run is identified by (stored with its checkpoints)."""
    return {"acts": str(Path(args.acts).resolve()), "dataset": args.dataset,
            "rows": list(train_rows), "batch_size": batch_size, "seed": args.seed,
            "buffer_bytes": int(args.buffer_mb * 2**20), "total_steps": total,
            "order": order}


def _train(args, config, reader, client, out, ckpt, train_rows, hold_rows):
    from sparsecode.io import load_model, model_position, save_model
    from sparsecode.sae import MPSAE

    bs = config.batch_size
    if client is not None:
        if args.update == "ksvd":
            raise ValueError("--update ksvd cannot be trained on a cluster; use adam, mod "
                             "or online")
        from sparsecode.distributed.learn import batch_plan

        # the cluster's data order: pieces of the rows in a random order (see docs)
        per_epoch = len(batch_plan(train_rows[1] - train_rows[0], bs))
    else:
        per_epoch = len(reader)
    epochs = args.epochs or args.max_epochs
    total = config.total_steps(per_epoch, epochs)
    data = _data_of(args, total, train_rows, "reader" if client is None else "pieces", bs)
    if args.resume:
        model = load_model(ckpt)
        pos = model_position(ckpt)
        _check_same_run(args, model, pos, data)
        epoch, batch = pos["epoch"], pos["batch"]
        say(None, f"resuming {ckpt} at step {model.n_steps_} (epoch {epoch}, batch {batch})")
        _apply_changed(args, model)
    else:
        model = MPSAE(args.atoms, args.k, **{**_params(args), "batch_size": bs,
                                             "max_steps": total})
        epoch, batch = 0, 0
    if client is not None:
        from sparsecode.distributed.learn import DataParallel

        dp = DataParallel(model, (args.acts, args.dataset), client, seed=args.seed,
                          rows=train_rows)
        if not args.resume:
            dp.start(total)

        def steps(epoch, batch):
            return dp.epoch(epoch, batch)
    else:
        if not args.resume:
            # initialise from as many signals as there are atoms (a batch may hold fewer)
            rows, init = 0, []
            for Xb in reader.epoch(0):
                init.append(Xb)
                rows += len(Xb)
                if rows >= max(args.atoms, bs):
                    break
            model.start(np.concatenate(init), total_steps=total,
                        n_samples=train_rows[1] - train_rows[0])

        def steps(epoch, batch):
            for Xb in reader.epoch(epoch, batch):
                model.partial_fit(Xb)
                yield
    if args.epochs is None:  # the stopping rule watches the held-out rows
        from sparsecode.sae.stopping import check_every

        model.engine_.watch(_read_rows(args, hold_rows, model.engine_.config.dtype),
                            check_every(per_epoch, bs))
    _loop(model, steps, per_epoch, args, ckpt, data, epoch, batch, total, epochs)
    _report(model, args, hold_rows)  # before the model is written: it may find bad rows
    save_model(model, out, position={**data, "epoch": epochs, "batch": 0,
                                     "finished": True})
    ckpt.unlink(missing_ok=True)
    say(None, f"wrote {out}")
    return 0


def _read_rows(args, rows, dtype):
    """Rows ``[start, stop)`` of the activation dataset, in memory, as ``dtype``."""
    from sparsecode.io import ActivationReader

    with ActivationReader(args.acts, args.dataset, batch_size=rows[1] - rows[0],
                          shuffle=False, rows=rows) as r:
        return np.ascontiguousarray(np.concatenate(list(r.epoch(0))), dtype=dtype)


#: Options a resume refuses to change (they change what is trained), with the model's
#: parameter each one sets; a changed --lr is applied from the resumed step on, and
#: --log-every keeps the checkpoint's value (both said on resume).
RESUME_FIXED = {"atoms": "n_atoms", "k": "k", "solver": "solver", "selection": "selection",
                "update": "update"}


def _check_same_run(args, model, pos, data, finished=False):
    what_run = "the finished model" if finished else "the checkpoint"
    for opt, param in RESUME_FIXED.items():
        value = getattr(model, param)
        if getattr(args, opt) != value:
            raise ValueError(
                f"--{opt} {getattr(args, opt)} differs from {what_run}'s {value}; resume "
                "with the options of the interrupted run"
            )
    pos = pos or {}
    pos = {"order": "reader", **pos}  # checkpoints that do not say were in reader order
    for key in ("acts", "dataset", "rows", "batch_size", "seed", "total_steps",
                "buffer_bytes", "order"):
        if key == "total_steps" and data[key] is None:
            continue  # a finished run: its schedule is in the model
        if pos.get(key) != data[key]:
            what = "--epochs/--max-steps giving total_steps" if key == "total_steps" else key
            raise ValueError(
                f"{what_run} was trained with {what} = {pos.get(key)!r}, not "
                f"{data[key]!r}; resume with the data and options of the interrupted run"
            )


def _apply_changed(args, model):
    """Say what a resume does with the options it lets change."""
    lr = model.engine_.config.lr
    if args.lr is not None and args.lr != lr:
        say(None, f"--lr {args.lr:g} replaces the checkpoint's {lr:g} from step "
                  f"{model.n_steps_ + 1} on")
        model.set_params(lr=args.lr)
    if args.log_every != model.log_every:
        say(None, f"--log-every {args.log_every} is ignored: the run keeps its "
                  f"{model.log_every}")


def _loop(model, steps, per_epoch, args, ckpt, data, epoch, batch, total, epochs):
    from sparsecode.io import save_model
    from sparsecode.sae.fitting import stop_now

    bar = progress_bar(total, "step", "train", enabled=not args.quiet)
    if bar is not None:
        bar.update(model.n_steps_)
    last_save = time.monotonic()
    logged = model.history_[-1]["step"] if model.history_ else 0

    def checkpoint(epoch, batch):
        try:
            save_model(model, ckpt, position={**data, "epoch": epoch, "batch": batch})
        except OSError as exc:  # the disk is full...: an earlier checkpoint stays whole
            kept = (f"the last checkpoint is kept in {ckpt} for --resume" if ckpt.exists()
                    else "no checkpoint was written")
            raise OSError(f"{exc}; {kept}") from None

    reason = None
    try:
        stop = stop_flag(args)
        while epoch < epochs and model.n_steps_ < total and reason is None:
            # the checkpoint of a failure is taken at the position of the failing batch
            at_failure = lambda: checkpoint(epoch, batch)  # noqa: B023, E731
            for _ in _guarded(steps(epoch, batch), at_failure, ckpt):
                batch += 1
                if bar is not None:
                    bar.update(1)
                if model.history_ and model.history_[-1]["step"] > logged:
                    h = model.history_[-1]
                    logged = h["step"]
                    say(bar, _metric_line(h, total))
                due = (time.monotonic() - last_save >= args.checkpoint_every
                       or (args.checkpoint_steps
                           and model.n_steps_ % args.checkpoint_steps == 0))
                if due:
                    checkpoint(epoch, batch)
                    last_save = time.monotonic()
                reason = stop_now(model.engine_, model.engine_.config)
                if reason == "max_steps":  # the run's end: said below
                    reason = None
                if stop.set or model.n_steps_ >= total or reason is not None:
                    break
            if stop.set:
                checkpoint(epoch, batch)
                raise Interrupted(
                    f"interrupted at step {model.n_steps_} of {total}; checkpoint in "
                    f"{ckpt}; continue with --resume"
                )
            if batch >= per_epoch:
                epoch, batch = epoch + 1, 0
    finally:
        if bar is not None:
            bar.close()
    if reason is None:
        capped = args.max_steps is not None and model.n_steps_ >= args.max_steps
        reason = "max_steps" if capped else ("n_epochs" if args.epochs else "max_epochs")
    _say_stop(model, reason)


def _say_stop(model, reason):
    """Record and print why the run stopped (and that it had not converged, at a cap)."""
    import warnings

    from sparsecode.sae import ConvergenceWarning
    from sparsecode.sae.fitting import finish

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        finish(model.engine_, reason)
    st = model.engine_.stopper
    best = "" if st is None or st.n_checks == 0 else (
        f"; best held-out fvu {st.best:.4f} at step {st.best_step}")
    say(None, f"stopped: {reason}{best}")
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            say(None, f"warning: {w.message}")


def _guarded(steps, checkpoint, ckpt):
    """The training steps; a step that fails on bad rows or diverges leaves the model as
    it was before it: that state is checkpointed for --resume, and the error says so."""
    from sparsecode.sae import TrainingDivergedError

    try:
        yield from steps
    except TrainingDivergedError as exc:
        checkpoint()
        raise ValueError(f"{exc}; the model before that step is saved in {ckpt}: continue "
                         "with --resume and a smaller --lr") from None
    except (ValueError, TypeError) as exc:
        checkpoint()
        raise ValueError(f"{exc}; training up to that batch is saved in {ckpt} for "
                         "--resume") from None


def _metric_line(h, total):
    held = h.get("validation_fvu", math.nan)
    held = "" if math.isnan(held) else f"  held-out fvu {held:.4f}"
    return (f"step {h['step']:>7}/{total}  fvu {h['fvu']:.4f}{held}  l0 {h['l0']:.1f}  "
            f"dead {h['dead_fraction']:.3f}  lr {h['lr']:.2e}  "
            f"{h['samples'] / max(h['seconds'], 1e-9):,.0f} samples/s")


def _report(model, args, hold_rows):
    from sparsecode.io import ActivationReader

    h = model.history_[-1] if model.history_ else None
    if h is not None:
        say(None, f"trained {model.n_steps_} steps on {model.n_samples_seen_:,} samples: "
                  f"train fvu {h['fvu']:.4f}, l0 {h['l0']:.1f}, dead {h['dead_fraction']:.3f}")
    if hold_rows is None:
        return
    # explained variance, streamed: sum ||x - x_hat||^2 against sum ||x - mean||^2, the
    # latter from running sums of x and x^2 (float64)
    err, n, s1, s2 = 0.0, 0, 0.0, 0.0
    with ActivationReader(args.acts, args.dataset, batch_size=4096, shuffle=False,
                          rows=hold_rows, buffer_bytes=int(args.buffer_mb * 2**20)) as r:
        for Xb in r.epoch(0):
            R = Xb - model.inverse_transform(model.transform(Xb))
            err += float(np.einsum("ij,ij->", R, R, dtype=np.float64))
            s1 = s1 + Xb.sum(axis=0, dtype=np.float64)
            s2 = s2 + np.einsum("ij,ij->j", Xb, Xb, dtype=np.float64)
            n += len(Xb)
    tot = float((s2 - s1**2 / n).sum())
    ev = 1.0 - err / tot if tot > 0 else math.nan
    say(None, f"held-out rows {hold_rows[0]}-{hold_rows[1]}: explained variance {ev:.4f}")
