"""The documentation: the site builds without a warning, and every code block runs.

Each page's blocks run in order in a fresh working directory, the Python blocks in one
namespace (so a page reads as one session) and each line of a bash block as a shell
command with the installed ``sparsecode`` on the PATH.  A block preceded by
``<!-- docs-test: skip (reason) -->`` is not run; the reason must say why (it installs
packages, needs a cluster or a GPU).  Output shown in ``text`` blocks is not compared.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md"] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")
)
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((.+?)\)\s*-->\s*$")
RUN = {"python", "bash"}


def code_blocks(text):
    """``(language, code, skip_reason, line)`` for every fenced block of a page."""
    blocks = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").splitlines()
        skip = SKIP.search(before[-1]) if before else None
        line = text.count("\n", 0, m.start()) + 1
        blocks.append((m.group(1), m.group(2), skip.group(1) if skip else None, line))
    return blocks


def shell_commands(code):
    """The commands of a bash block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [c for c in (line.strip() for line in joined.splitlines())
            if c and not c.startswith("#")]


def test_every_skipped_block_says_why():
    for page in PAGES:
        text = (ROOT / page).read_text()
        for raw in re.findall(r"<!--\s*docs-test:(.*?)-->", text):
            assert re.fullmatch(r"\s*skip\s*\(.+\)\s*", raw), f"{page}: {raw!r}"


def test_the_block_parser():
    text = ("a\n```python\nx = 1\n```\n<!-- docs-test: skip (needs a GPU) -->\n"
            "```bash\nsparsecode a \\\n  --b 1   # c\n# only a comment\n```\n")
    blocks = code_blocks(text)
    assert [(b[0], b[2], b[3]) for b in blocks] == [("python", None, 2),
                                                     ("bash", "needs a GPU", 6)]
    assert shell_commands(blocks[1][1]) == ["sparsecode a  --b 1   # c"]


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run(page, tmp_path, monkeypatch):
    blocks = [b for b in code_blocks((ROOT / page).read_text()) if b[0] in RUN]
    if not any(skip is None for _, _, skip, _ in blocks):
        pytest.skip(f"{page} has no block to run")
    monkeypatch.chdir(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
               f"{os.environ.get('PATH', '')}", MPLBACKEND="Agg")
    namespace = {"__name__": "__docs__"}
    for lang, code, skip, line in blocks:
        if skip is not None:
            continue
        where = f"{page}:{line}"
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the docs' own code
            continue
        for command in shell_commands(code):
            done = subprocess.run(["bash", "-eo", "pipefail", "-c", command], env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (
                f"{where}: `{command}` exited with {done.returncode}\n{done.stderr[-2000:]}"
            )


def test_cli_reference_lists_every_option():
    from sparsecode.cli import build_parser

    reference = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        assert f"## sparsecode {name}" in reference, name
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in reference, f"docs/cli.md misses {name} {option}"


def test_site_builds_without_warnings(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(site)], capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "WARNING" not in done.stderr, done.stderr[-4000:]
    # the API reference is rendered from the docstrings
    api = (site / "api" / "solvers" / "index.html").read_text()
    assert "sparsecode.pursuit.omp.omp" in api and "Parameters" in api
    assert "n_samples" in api
    for figure in ("hierarchical_toy.png", "adaptive_sparsity.png"):
        assert (site / "figures" / figure).stat().st_size > 10_000
