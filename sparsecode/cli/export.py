"""``sparsecode export``: a trained model, or a pretrained SAE, in SAELens' or sparsify's
format."""

from sparsecode.cli import _sae


def add_parser(sub):
    p = sub.add_parser(
        "export", help="export a model or a pretrained SAE to SAELens' or sparsify's format",
        description="Write MODEL as an SAE other libraries load: --saelens DIR writes "
        "cfg.json and sae_weights.safetensors (an MP-SAE as architecture "
        "'matching_pursuit', a TopK model as 'topk'; a pretrained SAE as its own "
        "architecture), --sparsify DIR writes cfg.json and sae.safetensors (TopK or "
        "groupmax). A configuration the target library encodes differently is exported "
        "with a warning; one it cannot express is refused.",
    )
    p.add_argument("model", help="model file (.h5), or a pretrained SAE's folder or one of "
                   "its files (SAELens, sparsify, Gemma Scope, Llama Scope, "
                   "dictionary_learning)")
    p.add_argument("--saelens", metavar="DIR", help="write a SAELens SAE to DIR")
    p.add_argument("--sparsify", metavar="DIR", help="write a sparsify SAE to DIR")
    p.add_argument("--hookpoint", metavar="NAME",
                   help="the hookpoint: read MODEL/NAME when MODEL is a folder of SAEs, one "
                   "per hookpoint; write the sparsify SAE into DIR/NAME, sparsify's layout")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in DIR")
    p.set_defaults(func=run)
    return p


def _read(args):
    """The model MODEL names: a pretrained SAE or a model file."""
    from pathlib import Path

    from sparsecode.io import FileFormatError, is_sae, load_model, load_sae
    from sparsecode.io.pretrained import detect_format

    path = Path(args.model)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if is_sae(path):
        hookpoint = args.hookpoint if path.is_dir() and detect_format(path) is None else None
        try:
            return load_sae(path, hookpoint=hookpoint)
        except FileFormatError as exc:  # a folder of SAEs: name the option
            raise FileFormatError(str(exc).replace("pass hookpoint=",
                                                   "pass --hookpoint NAME")) from None
    if path.is_dir():
        raise ValueError(f"{path}: a folder, but no SAE sparsecode reads is in it; MODEL is "
                         "a model file (.h5) or a pretrained SAE's folder")
    return load_model(path)


def run(args):
    import warnings
    from pathlib import Path

    from sparsecode.cli._common import say
    from sparsecode.io import check_not_inputs, export_saelens, export_sparsify, saelens, sparsify

    if args.saelens is None and args.sparsify is None:
        raise ValueError("nothing to write: pass --saelens DIR, --sparsify DIR or both")
    # (name, export function, its module, the folder its files land in, its options)
    targets = []
    if args.saelens is not None:
        targets.append(("SAELens", export_saelens, saelens, Path(args.saelens),
                        {"directory": args.saelens}))
    if args.sparsify is not None:
        folder = Path(args.sparsify)
        if args.hookpoint is not None:
            folder = folder / args.hookpoint
        targets.append(("sparsify", export_sparsify, sparsify, folder,
                        {"directory": args.sparsify, "hookpoint": args.hookpoint}))
    if len(targets) == 2 and targets[0][3].resolve() == targets[1][3].resolve():
        raise ValueError("--saelens and --sparsify name the same folder, and both formats "
                         "read cfg.json there: choose two folders")
    model = _read(args)
    inputs = _sae.model_files(args.model, model)
    for _, _, module, folder, _ in targets:
        files = (folder / module.CFG_FILENAME, folder / module.WEIGHTS_FILENAME)
        check_not_inputs({"the export's config": files[0], "the export's weights": files[1]},
                         inputs)
        if not args.overwrite and any(f.exists() for f in files):
            raise FileExistsError(f"{folder} already holds an export; pass --overwrite to "
                                  "replace it")
    for name, export, module, _, kw in targets:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            folder = export(model, overwrite=args.overwrite, **kw)
        for w in caught:
            say(None, f"sparsecode: warning: {w.message}")
        say(None, f"wrote {folder / module.CFG_FILENAME} and "
                  f"{folder / module.WEIGHTS_FILENAME} ({name}; d_in {model.n_features_in_}, "
                  f"d_sae {model.n_atoms})")
    return 0
