"""``sparsecode info``: what an HDF5 file or a pretrained SAE holds."""


def add_parser(sub):
    p = sub.add_parser(
        "info", help="describe an HDF5 file (activations, codes or model) or a pretrained SAE",
        description="Describe an HDF5 file: every dataset (shape, dtype, chunks, "
        "compression); for files sparsecode wrote, what they hold (model settings and last "
        "metrics, codes settings and sparsity, rows committed by an interrupted writer). "
        "For a pretrained SAE (a SAELens, sparsify, Gemma Scope, Llama Scope or "
        "dictionary_learning folder, or one of its files): format, architecture, sizes, k "
        "or thresholds, input normalisation, hookpoint, dtypes and files; a folder of SAEs "
        "for several hookpoints lists them.",
    )
    p.add_argument("file", help="HDF5 file, or a pretrained SAE's folder or file")
    p.add_argument("--hookpoint", default=None,
                   help="in a folder of SAEs (one sub-folder per hookpoint): the one to "
                   "describe")
    p.set_defaults(func=run)
    return p


def run(args):
    from sparsecode.io import file_info, is_sae, sae_info

    if is_sae(args.file):
        lines = sae_info(args.file, hookpoint=args.hookpoint)
    elif args.hookpoint is not None:
        raise ValueError(f"--hookpoint applies to a folder of pretrained SAEs; {args.file} "
                         "is not one")
    else:
        lines = file_info(args.file)
    for line in lines:
        print(line)
    return 0
