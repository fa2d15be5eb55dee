"""``sparsecode encode``: codes of every row of an activation file by a sparsecode model or
a pretrained SAE, written as they are computed; Ctrl-C and ``--resume``."""

from pathlib import Path

import numpy as np

from sparsecode.cli import _sae
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

#: The error is measured on every this many batches (it costs about a quarter of an MP
#: encode of small k when measured on all of them).
STATS_EVERY = 8


def add_parser(sub):
    p = sub.add_parser(
        "encode", help="encode an HDF5 activation file with a trained model",
        description="Encode every row of a 2-D activation dataset with a model's atoms, in "
        "file order, streaming. The codes (indices, values) go to OUT.partial as they are "
        "computed and OUT when done; --resume continues an interrupted run. MODEL may be a "
        "pretrained SAE (SAELens, sparsify, Gemma Scope, Llama Scope or dictionary_learning "
        "folder): its own encoder, or with --solver a pursuit on its decoder.",
    )
    _sae.add_model_arguments(p)
    p.add_argument("--out", required=True, help="codes file to write (.h5)")
    p.add_argument("--resume", action="store_true", help="continue OUT.partial")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--k", type=count(), default=None, help="steps per signal (default: the "
                   "model's k)")
    p.add_argument("--tol", type=float, default=None,
                   help="also stop a signal once ||r||^2 <= tol ||x - b||^2")
    p.add_argument("--solver", choices=["mp", "topk", "omp", "gp"], default=None,
                   help="default: the model's (a pretrained SAE: its own encoder; omp, gp or "
                   "mp run on its decoder)")
    _sae.add_positive_option(p)
    p.add_argument("--refit", action="store_true", help="pretrained SAEs: coefficients by "
                   "least squares on each row's atoms")
    _sae.add_max_active_option(p)
    _sae.add_hookpoint_option(p)
    p.add_argument("--batch-size", type=count(), default=8192,
                   help="rows per batch (on a cluster: rows per task), rounded up to a "
                   "multiple of 256")
    p.add_argument("--buffer-mb", type=positive_number, default=64, help="read buffer (MiB)")
    p.add_argument("--commit-every", type=non_negative_number, default=5.0, metavar="SECONDS",
                   help="make the rows written so far durable this often")
    p.add_argument("--threads", type=count(), default=None,
                   help="Numba threads (default: all cores)")
    add_scheduler_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, stoppable=True)
    return p


def run(args):
    from sparsecode.io import (
        ActivationReader,
        CodesWriter,
        check_not_inputs,
        is_sae,
        load_model,
        model_position,
        partial_path,
    )

    set_threads(args.threads)
    out = Path(args.out)
    check_not_inputs({"--out": out, "its partial file": partial_path(out)},
                     {"model": args.model, "activation file": args.acts})
    if is_sae(args.model):
        return _run_sae(args, out)
    _sae.refuse(args, ("hookpoint", "positive", "refit", "max_active"),
                f"pretrained SAEs; {args.model} is a sparsecode model file")
    model = load_model(args.model)
    dataset = args.dataset
    if dataset is None:
        dataset = (model_position(args.model) or {}).get("dataset")
        if dataset is None:
            dataset = _sae.sole_dataset(args.acts, "the model does not record its dataset")
    from sparsecode._parallel import aligned_rows

    # batches of whole row groups, as the blocks of --scheduler: the same codes either way
    reader = ActivationReader(args.acts, dataset, batch_size=aligned_rows(args.batch_size),
                              shuffle=False,
                              buffer_bytes=int(args.buffer_mb * 2**20), copy=False)
    with reader:
        if reader.n_features != model.n_features_in_:
            raise ValueError(
                f"{args.acts}:{dataset} has {reader.n_features} features per row; the model "
                f"{args.model} was trained on {model.n_features_in_}"
            )
        solver = args.solver or model.solver
        k = args.k if args.k is not None else (model.k if args.tol is None
                                               else model.n_features_in_)
        settings = {"dataset": dataset, "solver": solver, "selection": model.selection,
                    "k": k, "tol": args.tol, "batch_size": args.batch_size,
                    **input_identity(model, args.acts, dataset)}
        if args.resume and _finished(out, settings):
            say(None, f"{out} is already complete with these settings and inputs; nothing "
                      "to do")
            return 0
        if args.scheduler is not None:
            reader.close()
            return _encode_on_cluster(model, args, dataset, solver, k, settings)
        writer = CodesWriter(out, model.n_atoms, k, dtype=model.components_.dtype,
                             settings=settings, resume=args.resume, overwrite=args.overwrite,
                             commit_seconds=args.commit_every,
                             sources={"model": str(Path(args.model).resolve()),
                                      "acts": str(Path(args.acts).resolve())})

        def measure(Xb, codes):
            from sparsecode.dictionary import residual_energy

            C = Xb - model.bias_
            return (residual_energy(C, codes, model.components_),
                    float(np.einsum("ij,ij->", C, C, dtype=np.float64)))

        return _write_codes(reader, writer, args, measure, "||x - b||^2",
                            lambda Xb: model.transform(Xb, k=k, tol=args.tol, solver=solver))


def _write_codes(reader, writer, args, measure, denominator, encode):
    """Encode every row of ``reader`` into ``writer`` (see :func:`_encode_all`), keep or
    discard its partial file on an error, finish it and say how it went."""
    try:
        stats = _encode_all(reader, writer, args, encode, measure)
    except (ValueError, TypeError) as exc:
        # bad input (a NaN row, ...): the rows before it are kept for --resume, or no
        # file of this run is left when there are none
        if writer.resumed or writer.n_rows:
            writer.close()
            raise type(exc)(f"{exc}; the {writer.n_rows:,} rows encoded before it are "
                            f"kept in {writer.partial} for --resume") from None
        writer.discard()
        raise
    except BaseException:
        writer.close()
        raise
    reader.close()
    path = writer.finish()
    n, l0, err, tot, sampled, secs = stats
    if n:
        rel = err / tot if tot > 0 else 0.0
        say(None, f"encoded {n:,} rows at {n / max(secs, 1e-9):,.0f} rows/s: mean l0 "
                  f"{l0 / n:.2f}; relative error ||x - x_hat||^2 / {denominator} {rel:.4f} "
                  f"(on {sampled:,} rows: every {STATS_EVERY}th batch)")
    say(None, f"wrote {path}")
    return 0


def _run_sae(args, out):
    """``encode`` with a pretrained SAE: its own encoder, or a pursuit on its decoder."""
    from sparsecode._parallel import aligned_rows
    from sparsecode.io import (
        ActivationReader,
        CodesWriter,
        check_not_inputs,
        dataset_digest,
        load_sae,
        partial_path,
    )

    _sae.refuse(args, ("tol", "scheduler"), "sparsecode models (.h5), not pretrained SAEs")
    sae = load_sae(args.model, hookpoint=args.hookpoint)
    # --out inside the SAE's folder must not replace one of its files
    check_not_inputs({"--out": out, "its partial file": partial_path(out)},
                     _sae.model_files(args.model, sae))
    if args.dataset is None:
        args.dataset = _sae.sole_dataset(
            args.acts, "a pretrained SAE does not record the dataset it was trained on")
    k, positive = _sae.pursuit_options(sae, args)
    variable = k is None and sae.architecture in _sae.VARIABLE_WIDTH
    if args.max_active is not None and not variable:
        raise ValueError("--max-active applies to the own encoder (no --solver) of ReLU, "
                         f"JumpReLU and gated SAEs; this one is {sae.architecture}")
    width = _sae.codes_width(sae, k, args.max_active)
    where = f"{args.acts}:{args.dataset}"
    reader = ActivationReader(args.acts, args.dataset,
                              batch_size=aligned_rows(args.batch_size), shuffle=False,
                              buffer_bytes=int(args.buffer_mb * 2**20), copy=False,
                              dtype=sae.dtype)
    with reader:
        if reader.n_features != sae.n_features_in_:
            raise ValueError(f"{where} has {reader.n_features} features per row; the SAE "
                             f"{args.model} takes {sae.n_features_in_}")
        # "k" is the file's width, as codes_settings reports it
        settings = {"dataset": args.dataset, "solver": args.solver or "native", "k": width,
                    "max_active": width if variable else None, "positive": positive,
                    "refit": bool(args.refit), "batch_size": args.batch_size,
                    **_sae.identity(sae), "acts_identity": dataset_digest(args.acts,
                                                                          args.dataset)}
        if args.resume and _finished(out, settings):
            say(None, f"{out} is already complete with these settings and inputs; nothing "
                      "to do")
            return 0
        if args.resume:
            _sae.check_partial(out, settings)
        writer = CodesWriter(out, sae.n_atoms, width, dtype=sae.dtype, settings=settings,
                             resume=args.resume, overwrite=args.overwrite,
                             commit_seconds=args.commit_every,
                             sources={"model": str(Path(args.model).resolve()),
                                      "acts": str(Path(args.acts).resolve())})

        def encode(Xb):
            codes = sae.encode(Xb, solver=args.solver, k=k, positive=bool(positive),
                               refit=args.refit)
            _sae.check_width(codes, width, writer.n_rows, where)
            return codes

        return _write_codes(reader, writer, args, lambda Xb, codes: _sae.batch_error(
            sae, Xb, codes), "||x - mean||^2", encode)


def input_identity(model, acts, dataset):
    """dict: what identifies a run's inputs for ``--resume``, whatever their paths: a
    SHA-256 of the model's atoms and bias, and the activation dataset's shape, dtype and a
    SHA-256 of rows sampled over it."""
    from sparsecode._backend import to_host
    from sparsecode.io.guard import array_digest, dataset_digest

    return {"model_sha256": array_digest(to_host(model.components_), to_host(model.bias_)),
            "acts_identity": dataset_digest(acts, dataset)}


def _finished(out, settings):
    """Whether ``out`` is a finished codes file of these settings (``--resume`` then has
    nothing to do); raise when it is one of others."""
    import json

    from sparsecode.io import codes_settings, partial_path

    if not out.exists() or partial_path(out).exists():
        return False
    stored = codes_settings(out)
    wanted = json.loads(json.dumps(settings))
    changed = sorted(key for key in wanted if stored.get(key) != wanted[key])
    if changed:
        raise FileExistsError(
            f"{out} is finished, and was written with other {', '.join(changed)}: nothing to "
            "resume; pass --overwrite to encode again"
        )
    return True


def _encode_on_cluster(model, args, dataset, solver, k, settings):
    """Every block of rows encoded by a task on the cluster, written as a part; the parts
    are merged into OUT when all are there (--resume keeps the parts already written)."""
    import time

    from sparsecode.distributed import encode
    from sparsecode.distributed.encode import parts_dir

    t0 = time.perf_counter()
    stop = stop_flag(args)
    if args.resume and not parts_dir(args.out).exists():
        raise FileNotFoundError(f"{parts_dir(args.out)}: no parts of a job to resume")
    with cluster(args.scheduler) as client:
        try:
            s = encode((args.acts, dataset), model, solver=solver, k=k, tol=args.tol,
                       out=args.out, client=client, block_rows=args.batch_size,
                       overwrite=args.overwrite, resume=args.resume,
                       measure_every=STATS_EVERY, progress=not args.quiet and None,
                       settings=settings, stop=lambda: stop.set)
        except KeyboardInterrupt:
            if not stop.set:
                raise
            raise Interrupted(f"interrupted; the blocks written so far are in "
                              f"{parts_dir(args.out)}; continue with --resume") from None
    secs = time.perf_counter() - t0
    if s["blocks_resumed"]:
        say(None, f"resumed: {s['blocks_resumed']} of {s['blocks']} blocks were written "
                  "before")
    n = s["n_rows"]
    rel = s["error"] / s["total"] if s["total"] > 0 else 0.0
    say(None, f"encoded {n:,} rows in {s['blocks']} blocks at {n / max(secs, 1e-9):,.0f} "
              f"rows/s: mean l0 {s['nnz'] / max(n, 1):.2f}; relative error ||x - x_hat||^2 / "
              f"||x - b||^2 {rel:.4f} (on {s['measured_rows']:,} rows: every "
              f"{STATS_EVERY}th block)")
    say(None, f"wrote {s['path']}")
    return 0


def _encode_all(reader, writer, args, encode, measure):
    """Append ``encode(batch)`` of every batch of ``reader`` after the rows ``writer``
    holds; ``measure(batch, codes)`` (squared error, its denominator) on every
    :data:`STATS_EVERY`-th batch."""
    import time

    done = writer.n_rows
    if done:
        say(None, f"resuming {writer.partial} after {done:,} rows")
    bs = reader.batch_size
    bar = progress_bar(reader.n_rows, "row", "encode", enabled=not args.quiet)
    if bar is not None:
        bar.update(done)
    n = l0 = sampled = batch = 0
    err = tot = 0.0
    t0 = time.perf_counter()
    try:
        stop = stop_flag(args)
        skip = done % bs  # rows of the first batch written before the interruption
        for Xb in reader.epoch(0, start_batch=done // bs):
            if skip:
                Xb, skip = Xb[skip:], 0
            if not len(Xb):
                continue  # every row of this batch was committed before the interruption
            codes = encode(Xb)
            writer.append(codes)
            if batch % STATS_EVERY == 0:
                e, t = measure(Xb, codes)
                err += e
                tot += t
                sampled += len(Xb)
            batch += 1
            n += len(Xb)
            l0 += int((codes.indices >= 0).sum())
            if bar is not None:
                bar.update(len(Xb))
            if stop.set:
                writer.close()
                raise Interrupted(
                    f"interrupted after {writer.n_rows:,} of {reader.n_rows:,} rows; "
                    f"partial codes in {writer.partial}; continue with --resume"
                )
    finally:
        if bar is not None:
            bar.close()
    return n, l0, err, tot, sampled, time.perf_counter() - t0
