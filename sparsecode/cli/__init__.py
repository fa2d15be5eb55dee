"""The ``sparsecode`` command: demo, train, itda, encode, evaluate, export, info."""

import sys

from sparsecode.cli import demo, encode, evaluate, export, info, itda, train
from sparsecode.cli._common import HelpFormatter, Interrupted, OneLineParser, StopFlag

#: Exit codes: bad input, interrupted (as a shell reports SIGINT).
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def build_parser():
    parser = OneLineParser(
        prog="sparsecode",
        description="Fast sparse coding and MP-SAE training on NumPy arrays and HDF5 files.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (demo, train, itda, encode, evaluate, export, info):
        module.add_parser(sub).formatter_class = HelpFormatter
    return parser


def main(argv=None):
    """Run the command line; returns the exit code."""
    from sparsecode.io import FileFormatError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a bad option: one line printed (2)
        return exc.code
    try:
        if getattr(args, "stoppable", False):
            # from here on, Ctrl-C asks the work loop to save and stop
            with StopFlag() as args.stop:
                return args.func(args)
        return args.func(args)
    except Interrupted as exc:
        print(f"sparsecode: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("sparsecode: aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FileNotFoundError, FileExistsError, FileFormatError, ValueError, TypeError,
            ImportError, OSError, FloatingPointError) as exc:
        print(f"sparsecode: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
