"""``sparsecode export``: a trained model in SAELens' format."""


def add_parser(sub):
    p = sub.add_parser(
        "export", help="export a model to SAELens' format",
        description="Write cfg.json (architecture 'matching_pursuit') and "
        "sae_weights.safetensors (W_dec [d_sae, d_in], b_dec [d_in]) to DIR. Needs the "
        "optional dependency safetensors: pip install 'sparsecode[export]'.",
    )
    p.add_argument("model", help="model file (.h5)")
    p.add_argument("--saelens", required=True, metavar="DIR", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in DIR")
    p.set_defaults(func=run)
    return p


def run(args):
    import warnings
    from pathlib import Path

    from sparsecode.cli._common import say
    from sparsecode.io import check_not_inputs, export_saelens, load_model
    from sparsecode.io.saelens import CFG_FILENAME, WEIGHTS_FILENAME

    out = Path(args.saelens)
    check_not_inputs({"the export's config": out / CFG_FILENAME,
                      "the export's weights": out / WEIGHTS_FILENAME}, {"model": args.model})
    model = load_model(args.model)
    if not args.overwrite and any((out / name).exists() for name in (CFG_FILENAME,
                                                                      WEIGHTS_FILENAME)):
        raise FileExistsError(f"{out} already holds an export; pass --overwrite to replace it")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export_saelens(model, args.saelens, overwrite=args.overwrite)
    for w in caught:
        say(None, f"sparsecode: warning: {w.message}")
    say(None, f"wrote {out / 'cfg.json'} and {out / 'sae_weights.safetensors'} "
              f"(d_in {model.n_features_in_}, d_sae {model.n_atoms})")
    return 0
