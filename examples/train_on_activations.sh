#!/usr/bin/env bash
# From a transformer's activations to a trained MP-SAE and its codes, with the command line.
#
# NEEDS PYTORCH for the first step only (examples/activations_to_hdf5.py builds and runs a
# tiny transformer); the sparsecode commands never import it.
#
#   bash examples/train_on_activations.sh WORKDIR [--full]
#
# 1. examples/activations_to_hdf5.py streams the residual stream of a tiny transformer
#    (64 features, bfloat16) into WORKDIR/acts.h5, dataset "resid": 16,384 tokens
#    (--quick), or 262,144 with --full.
# 2. sparsecode train: an MP-SAE with 256 atoms and k = 8 matching-pursuit steps, a few
#    epochs, the last 5% of rows held out (their explained variance is printed).
# 3. sparsecode encode: the codes of every row into WORKDIR/codes.h5.
# 4. sparsecode info: what the model and codes files hold.
#
# About 7 s on two cores (quick); 30 s with --full.  PYTHON picks the interpreter
# (default: python3); the commands run as "$PYTHON -m sparsecode.cli", the same thing as the
# `sparsecode` command that `pip install sparsecode` puts on the PATH.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 WORKDIR [--full]" >&2
    exit 2
fi
work=$1
size=--quick  # passed unquoted below: empty with --full
epochs=5
if [[ ${2:-} == --full ]]; then
    size=
    epochs=2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}
sparsecode() {
    echo "+ sparsecode $*"
    "$PYTHON" -m sparsecode.cli "$@"
}

mkdir -p "$work"
echo "+ python activations_to_hdf5.py --out $work/acts.h5 --dataset resid --overwrite $size"
"$PYTHON" "$here/activations_to_hdf5.py" --out "$work/acts.h5" --dataset resid --overwrite $size
sparsecode train "$work/acts.h5" --dataset resid --atoms 256 --k 8 --out "$work/model.h5" \
    --epochs "$epochs" --batch-size 512 --lr 0.01 --holdout 0.05 --log-every 50 --seed 0 \
    --overwrite --quiet
sparsecode encode "$work/model.h5" "$work/acts.h5" --out "$work/codes.h5" --overwrite --quiet
sparsecode info "$work/model.h5"
sparsecode info "$work/codes.h5"
