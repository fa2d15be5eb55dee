"""What the commands share for pretrained SAEs (a model argument that is an SAE folder):
loading, the options that apply to one kind of model only, the identity of an SAE for
``--resume``, the width of its codes."""

import argparse

from sparsecode.cli._common import count

#: ``--max-active`` by default: the widest row a ReLU, JumpReLU or gated SAE's own
#: encoder may give in a codes file.
MAX_ACTIVE = 256
#: The architectures whose own encoder gives a variable number of atoms per row.
VARIABLE_WIDTH = ("relu", "jumprelu", "gated")
#: The pursuits on an SAE's decoder.
SAE_SOLVERS = ("omp", "gp", "mp")


def add_model_arguments(p):
    """MODEL, ACTS and --dataset, as encode and evaluate take them."""
    p.add_argument("model", help="model file written by `sparsecode train` (.h5), or a "
                   "pretrained SAE's folder (or one of its files)")
    p.add_argument("acts", help="activation file (.h5)")
    p.add_argument("--dataset", default=None,
                   help="dataset in ACTS (default: the one the model was trained on, "
                   "else the file's only 2-D dataset)")


def add_hookpoint_option(p):
    p.add_argument("--hookpoint", default=None,
                   help="pretrained SAEs: the SAE in this sub-folder of MODEL (a folder of "
                   "SAEs, one per hookpoint, as sparsify saves them)")


def add_positive_option(p):
    p.add_argument("--positive", action=argparse.BooleanOptionalAction, default=None,
                   help="pretrained SAEs with --solver: non-negative coefficients, as the "
                   "SAE's activations are (default: --positive)")


def add_max_active_option(p):
    p.add_argument("--max-active", type=count(), default=None, metavar="N",
                   help="pretrained ReLU, JumpReLU and gated SAEs without --solver: the most "
                   "atoms a row may use, the width of the codes file (default: "
                   f"{MAX_ACTIVE}, at most the SAE's atoms); a row with more is an error")


def load(args):
    """``(model, is_sae)``: the pretrained SAE at ``args.model`` (with ``--hookpoint``),
    or the sparsecode model file there."""
    from sparsecode.io import is_sae, load_model, load_sae

    if is_sae(args.model):
        return load_sae(args.model, hookpoint=args.hookpoint), True
    refuse(args, ("hookpoint", "positive", "max_active"),
           f"pretrained SAEs; {args.model} is a sparsecode model file")
    return load_model(args.model), False


def refuse(args, names, applies_to):
    """Raise when one of the options ``names`` (argparse dests) was given: they apply to
    ``applies_to`` only."""
    for name in names:
        value = getattr(args, name, None)
        if value is None or (value is False and name != "positive"):
            continue
        flag = "--no-positive" if value is False else "--" + name.replace("_", "-")
        raise ValueError(f"{flag} applies to {applies_to}")


def pursuit_options(sae, args):
    """``(k, positive)`` of ``--solver``, ``--k`` and ``--positive`` on ``sae``: the
    pursuit's atoms per signal (None without ``--solver``) and sign constraint (None
    without ``--solver``)."""
    if args.solver is None:
        if args.k is not None:
            raise ValueError("--k applies to the pursuits (--solver omp, gp or mp); the "
                             "SAE's own encoder keeps its own")
        refuse(args, ("positive",), "the pursuits (--solver omp, gp or mp)")
        return None, None
    if args.solver not in SAE_SOLVERS:
        raise ValueError(f"--solver {args.solver} applies to sparsecode models; a "
                         "pretrained SAE takes omp, gp or mp (or no --solver: its own "
                         "encoder)")
    positive = True if args.positive is None else bool(args.positive)
    if args.k is not None:
        return args.k, positive
    if sae.architecture in ("topk", "groupmax"):
        return sae.k, positive
    if sae.architecture == "matching_pursuit":
        return sae.max_iterations, positive
    raise ValueError(f"--k is needed with --solver: a {sae.architecture} SAE has no fixed "
                     "number of atoms per signal")


def codes_width(sae, k, max_active):
    """int: the width of a codes file of ``sae``: the pursuit's ``k``; else the SAE's own
    ``k`` (TopK, groupmax), its steps (matching pursuit) or ``max_active`` (default
    :data:`MAX_ACTIVE`) for the encoders of variable width, at most ``n_atoms``."""
    if k is not None:
        width = k
    elif sae.architecture in ("topk", "groupmax"):
        width = sae.k
    elif sae.architecture == "matching_pursuit":
        width = sae.max_iterations
    else:
        width = MAX_ACTIVE if max_active is None else max_active
    return min(width, sae.n_atoms) if k is None else width


def identity(sae):
    """dict: what identifies an SAE for ``--resume``, wherever it lies: a SHA-256 of its
    weights (``W_dec``, ``b_dec``, then ``W_enc`` and every other array it has) and the
    settings of its encoder."""
    from sparsecode.io.guard import array_digest

    names = [name for name in ("W_dec", "b_dec", "W_enc", "b_enc", "threshold", "b_gate",
                               "r_mag", "b_mag", "W_skip") if getattr(sae, name) is not None]
    config = {"architecture": sae.architecture, "format": sae.info.get("format"),
              "hookpoint": sae.info.get("hookpoint"), "k": sae.k,
              "normalize": sae.normalize, "norm_scale": sae.norm_scale,
              "apply_b_dec_to_input": sae.apply_b_dec_to_input,
              "rescale_acts_by_decoder_norm": sae.rescale_acts_by_decoder_norm,
              "max_iterations": sae.max_iterations,
              "residual_threshold": sae.residual_threshold,
              "stop_on_duplicate_support": sae.stop_on_duplicate_support,
              "dtype": str(sae.dtype)}
    return {"model_sha256": array_digest(*(getattr(sae, n) for n in names)),
            "model_arrays": names, "sae": config}


def check_width(codes, width, first_row, where):
    """Raise a one-line error naming ``--max-active`` when a row of ``codes`` (rows
    ``first_row...`` of ``where``) uses more than ``width`` atoms."""
    import numpy as np

    used = (np.asarray(codes.indices) >= 0).sum(axis=1)
    if used.size and int(used.max()) > width:
        r = int(np.flatnonzero(used > width)[0])  # the first such row
        raise ValueError(f"row {first_row + r} of {where} activates {int(used[r])} atoms, "
                         f"more than --max-active {width}: encode again with a larger "
                         f"--max-active (at most the SAE's {codes.n_atoms})")


def check_partial(out, settings):
    """Refuse to resume the partial codes file of ``out`` when it was started with other
    ``settings``, naming them (nothing to check when there is none, or it cannot be read:
    the writer then says why)."""
    import json

    from sparsecode.io import codes_settings, partial_path

    partial = partial_path(out)
    if not partial.exists():
        return
    try:
        stored = codes_settings(partial)
    except Exception:  # a file the writer reports on (locked, damaged)
        return
    wanted = json.loads(json.dumps(settings))
    changed = [key for key in wanted if stored.get(key) != wanted[key]]
    if not changed:
        return

    def show(key):
        old, new = repr(stored.get(key)), repr(wanted[key])
        return key if max(len(old), len(new)) > 24 else f"{key} {old}, not {new}"

    raise ValueError(f"{partial}: cannot resume, it was written with other "
                     f"{'; '.join(show(k) for k in changed)}; pass --overwrite to start "
                     "again")


def batch_error(sae, X, codes):
    """``(sum ||x - x_hat||^2, sum ||x - mean||^2)`` over the rows of a batch, in float64
    and in blocks of rows."""
    import numpy as np

    from sparsecode.pretrained import RunningVariance

    X_hat = sae.decode(codes, X)
    err = 0.0
    step = max(1, (1 << 20) // max(X.shape[1], 1))
    for lo in range(0, X.shape[0], step):
        R = X[lo:lo + step].astype(np.float64) - X_hat[lo:lo + step]
        err += float(np.einsum("ij,ij->", R, R))
    return err, RunningVariance().update(X).m2


def sole_dataset(acts, why):
    """The one 2-D dataset of activation file ``acts``, for a run that names none;
    ``--dataset is needed`` (with ``why`` and the candidates) when there are several or
    none."""
    import h5py

    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 2 and (
                obj.dtype.kind == "f" or obj.attrs.get("dtype") in ("bfloat16", b"bfloat16")):
            found.append(name)

    with h5py.File(acts, "r") as f:
        f.visititems(visit)
    if len(found) == 1:
        return found[0]
    listed = f": it holds {', '.join(found[:8])}{', ...' if len(found) > 8 else ''}" if (
        found) else ": it holds no 2-D float dataset"
    raise ValueError(f"--dataset is needed: {why}, and {acts} does not hold exactly one "
                     f"2-D activation dataset{listed}")


def model_files(model_arg, model):
    """The files a run must not write over: MODEL itself, or every file of the folder a
    pretrained SAE was read from (``info["path"]``), by the names a message gives them."""
    from pathlib import Path

    folder = model.info.get("path") if hasattr(model, "info") else None
    if folder is None:
        return {"model": model_arg}
    return {f"model's {p.name}": p for p in Path(folder).rglob("*") if p.is_file()}
