"""``sparsecode info``: what an HDF5 file holds."""


def add_parser(sub):
    p = sub.add_parser(
        "info", help="describe an HDF5 file (activations, codes or model)",
        description="Describe an HDF5 file: every dataset (shape, dtype, chunks, "
        "compression); for files sparsecode wrote, what they hold (model settings and last "
        "metrics, codes settings and sparsity, rows committed by an interrupted writer).",
    )
    p.add_argument("file", help="HDF5 file")
    p.set_defaults(func=run)
    return p


def run(args):
    from sparsecode.io.info import file_info

    for line in file_info(args.file):
        print(line)
    return 0
