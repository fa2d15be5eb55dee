"""Write docs/cli.md, the command-line reference, from the parser itself.

    python docs/gen_cli.py

The test suite checks that the page names every option of every command.
"""

import os
from pathlib import Path

HEADER = """# Command line

`sparsecode COMMAND --help` prints the same text.  Every command exits with 0 on
success, 2 on bad input (a one-line message on stderr, no output file touched) and 130
when interrupted (after saving what it can; see
[Files](io.md#interruption-and-resuming)).  Files are described in [Files](io.md), and
`--scheduler` in [Dask clusters](distributed.md).
"""


def main():
    os.environ["COLUMNS"] = "92"  # the width argparse wraps to
    from sparsecode.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    parts = [HEADER]
    for name, sub in commands.items():
        sub.prog = f"sparsecode {name}"
        parts.append(f"## sparsecode {name}\n\n```text\n{sub.format_help().rstrip()}\n```\n")
    out = Path(__file__).with_name("cli.md")
    out.write_text("\n".join(parts))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
