#!/usr/bin/env bash
# The whole GPU check in one call, at most about 8 minutes on one H100:
#
#   1. what the machine has (GPU, driver, Python packages sparsecode needs);
#   2. sparsecode installed from this tree without dependencies (the GPU machine reaches no
#      package index: numba, h5py, scipy, CuPy and PyTorch come with it), and the anchors
#      from benchmarks/gpu_wheels/ (overcomplete, orthogonal-matching-pursuit-gpu);
#   3. `pytest tests/gpu -m gpu` twice: a race shows as a difference between the runs;
#   4. benchmarks/bench_gpu.py (MP against PyTorch MP, Batch-OMP against
#      orthogonal-matching-pursuit-gpu, MP-SAE training against overcomplete), 5 repeats.
#
# Everything lands in $OUT (default: ./gpu-check-out): check.log (all output), tests-1.txt,
# tests-2.txt, bench.jsonl (one JSON row per timing), summary.json.
#
#   bash benchmarks/gpu_check.sh --fetch      # here, with a package index: the anchors'
#                                             # files into benchmarks/gpu_wheels/
#   bash benchmarks/gpu_check.sh              # on the GPU machine (carry benchmarks/gpu_wheels)
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --rehearse
#                                             # here, without a GPU: every step that can run
#                                             # on the CPU (installs into that interpreter,
#                                             # which needs torch and Cython as the GPU
#                                             # machine's has; tests on the CUDA emulator)
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
WHEELS=benchmarks/gpu_wheels
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
LOG=$OUT/check.log
PY=${PYTHON:-python3}
ANCHORS=("overcomplete==0.3.0" "orthogonal-matching-pursuit-gpu==0.1.3")
# a step's time limit, seconds (the whole run stays under about 8 minutes on an H100)
LIMIT_INSTALL=120 LIMIT_TESTS=90 LIMIT_BENCH=240

say() { echo "# gpu_check $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
step() {  # step NAME LIMIT CMD...: run with a time limit, log everything, record the status
    local name=$1 limit=$2; shift 2
    say "$name: $*"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    say "$name: exit $rc$([ $rc = 124 ] && echo " (over its ${limit} s limit)")"
    STATUS+=("\"$name\": $rc")
    return $rc
}
STATUS=()

if [ "$MODE" = --fetch ]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download --no-deps -d "$WHEELS" "${ANCHORS[@]}"
    ls -l "$WHEELS"
    exit 0
fi

: >"$LOG"
say "mode $MODE, tree $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# 1. what the machine has
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("numpy", "scipy", "numba", "h5py", "threadpoolctl", "tqdm", "cupy", "torch",
             "pytest", "hypothesis", "setuptools", "Cython"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        print(f"{name} MISSING ({exc.__class__.__name__}: {exc})")
EOF
} 2>&1 | tee "$OUT/machine.txt" >>"$LOG"

# 2. install: the project without dependencies, then the anchors from the carried files
step install-sparsecode "$LIMIT_INSTALL" \
    "$PY" -m pip install --no-deps --no-build-isolation --no-index -q -e .
if ls "$WHEELS"/* >/dev/null 2>&1; then
    step install-anchors "$LIMIT_INSTALL" \
        "$PY" -m pip install --no-deps --no-build-isolation --no-index -q "$WHEELS"/*
else
    say "no anchor files in $WHEELS (run with --fetch where an index is reachable): the OMP and training anchors are skipped"
fi
step import-anchors 60 "$PY" - <<'EOF'
import sys
sys.path.insert(0, "benchmarks")
from _overcomplete import import_sae
sae = import_sae()
print("overcomplete MpSAE:", None if sae is None else sae.MpSAE)
try:
    from orthogonal_matching_pursuit_gpu import run_omp
    print("orthogonal-matching-pursuit-gpu run_omp:", run_omp)
except ImportError as exc:
    print("orthogonal-matching-pursuit-gpu missing:", exc)
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available())
EOF

# 3. the GPU tests, twice (a race shows as a difference between the runs)
if [ "$MODE" = --rehearse ]; then
    # the CUDA emulator runs the kernels' logic on the CPU; it is slow, so a few tests
    export SPARSECODE_GPU_EMULATOR=1
    TESTS=(tests/gpu/test_gpu_compile.py tests/gpu/test_gpu_unavailable.py
           "tests/gpu/test_gpu_mp.py::test_gpu_mp_matches_cpu")
    MARK=()
else
    TESTS=(tests/gpu)
    MARK=(-m gpu)
fi
for run in 1 2; do
    step "tests-$run" "$LIMIT_TESTS" "$PY" -m pytest "${TESTS[@]}" "${MARK[@]}" -q -p no:cacheprovider \
        -rfEs -o console_output_style=classic
    tail -n 40 "$LOG" | grep -E "passed|failed|error|skipped" | tail -n 1 >"$OUT/tests-$run.txt"
done
if cmp -s "$OUT/tests-1.txt" "$OUT/tests-2.txt"; then
    say "the two test runs agree: $(cat "$OUT/tests-1.txt")"
else
    say "THE TWO TEST RUNS DIFFER: $(cat "$OUT/tests-1.txt") / $(cat "$OUT/tests-2.txt")"
fi

# 4. the benchmark (a GPU run only: the emulator has no timers, cuBLAS or random numbers)
if [ "$MODE" = --rehearse ]; then
    step bench-no-gpu 60 "$PY" benchmarks/bench_gpu.py --parts mp --quick
    say "bench_gpu.py refused to run without a device, as it must (exit above is 1)"
else
    step bench "$LIMIT_BENCH" bash -c \
        "$PY benchmarks/bench_gpu.py --repeats 5 > '$OUT/bench.jsonl'"
fi

( IFS=,; echo "{${STATUS[*]}}" ) >"$OUT/summary.json"
say "summary: $(cat "$OUT/summary.json")"
say "done; outputs in $OUT"
