#!/usr/bin/env bash
# Packaging that keeps building: an sdist and a wheel built from it (so the sdist is
# complete), the wheel installed into a fresh virtualenv, and the installed package checked
# from outside the source tree (the CUDA sources and the command line included).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python -m pip install -q build
python -m build -q --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
if grep -i "deprecat" "$WORK/build.log"; then
    echo "package_check: the build warns of a deprecation (above)"; exit 1
fi
python -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$WORK"/dist/*.whl
cd "$WORK"
"$WORK/venv/bin/python" - <<'PY'
import importlib.metadata as md
import sparsecode
from sparsecode.gpu import _module

assert "site-packages" in sparsecode.__file__, sparsecode.__file__
assert md.metadata("sparsecode")["License-Expression"] == "BSD-3-Clause"
source = _module.source()  # every .cu and .cuh file of the table, read from the install
assert all(f'#line 1 "{name}"' in source for name in (_module.HEADER, *_module.SOURCES))
print(f"package_check: sparsecode {sparsecode.__version__} installed from its wheel, "
      f"{len(_module.SOURCES)} CUDA sources and the header included")
PY
"$WORK/venv/bin/sparsecode" --help >/dev/null
echo "package_check: sdist, wheel and the installed command line are fine"
