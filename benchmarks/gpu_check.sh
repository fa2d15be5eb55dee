#!/usr/bin/env bash
# The whole GPU check in one call (sized for the 8 minutes a device check may take on one
# H100; not yet run on a GPU, so its real duration is unknown):
#
#   1. what the machine has (GPU, driver, Python packages sparsecode needs);
#   2. sparsecode installed from this tree without dependencies (the GPU machine reaches no
#      package index: numba, h5py, scipy, CuPy and PyTorch come with it), and the anchors
#      from benchmarks/gpu_wheels/ (overcomplete, orthogonal-matching-pursuit-gpu);
#   3. `pytest tests/gpu -m gpu` twice: a race shows as a difference between the runs;
#   4. benchmarks/bench_gpu.py (MP against PyTorch MP, Batch-OMP against
#      orthogonal-matching-pursuit-gpu, MP-SAE training against overcomplete), 5 repeats.
#
# Everything lands in $OUT (default: a new ./gpu-check-out/TIMESTAMP, so a rerun never
# overwrites an earlier run's outputs; an $OUT given must be empty): check.log (all output), tests-1.txt,
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
OUT=${OUT:-$PWD/gpu-check-out/$(date -u +%Y%m%d-%H%M%S)}
if [ "$MODE" != --fetch ]; then
    mkdir -p "$OUT"
    if [ -n "$(ls -A "$OUT")" ]; then
        echo "gpu_check: $OUT is not empty; give an empty OUT (outputs are never overwritten)" >&2
        exit 2
    fi
fi
LOG=$OUT/check.log
PY=${PYTHON:-python3}
ANCHORS=("overcomplete==0.3.0" "orthogonal-matching-pursuit-gpu==0.1.3")
# each step's time limit, seconds: the bench writes its rows as it goes, so a step cut short
# still leaves what it measured; a run with warm CuPy caches takes well under the sum
LIMIT_INSTALL=120 LIMIT_TESTS=150 LIMIT_BENCH=300

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
step import-anchors 120 "$PY" - <<'EOF'
# each anchor called once as bench_gpu.py calls it, on the CPU (tiny shapes)
import sys
sys.path.insert(0, "benchmarks")
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available())
from _overcomplete import import_sae
missing = []
sae = import_sae()
x = torch.randn(8, 16)
D = torch.randn(64, 16)
D /= D.norm(dim=1, keepdim=True)
if sae is None:
    missing.append("overcomplete")
else:
    print("overcomplete MpSAE:", [tuple(t.shape) for t in sae.MpSAE(16, 64, k=4, device="cpu")(x)])
try:
    from orthogonal_matching_pursuit_gpu import run_omp
    codes = run_omp(D.T, x, 3, normalize=False, fit_intercept=False, alg="v0")
    print("orthogonal-matching-pursuit-gpu run_omp:", tuple(codes.shape))
except ImportError as exc:
    print("orthogonal-matching-pursuit-gpu missing:", exc)
    missing.append("orthogonal-matching-pursuit-gpu")
sys.exit(f"anchors missing: {missing}" if missing else 0)
EOF

# 3. the GPU tests, twice (a race shows as a difference between the runs)
if [ "$MODE" = --rehearse ]; then
    # the CUDA emulator runs the kernels' logic on the CPU; it is slow, so a few tests
    export SPARSECODE_GPU_EMULATOR=1
    TESTS=(tests/gpu/test_gpu_unavailable.py
           tests/gpu/test_gpu_mp.py::test_mp_gpu_tol_only_trims_width_like_cpu
           tests/gpu/test_gpu_mp.py::test_mp_gpu_reselected_atoms_are_summed)
    MARK=()
    LIMIT_TESTS=900  # the emulator compiles the module with g++ first
else
    TESTS=(tests/gpu)
    MARK=(-m gpu)
fi
for run in 1 2; do
    step "tests-$run" "$LIMIT_TESTS" "$PY" -m pytest "${TESTS[@]}" "${MARK[@]}" -q \
        -p no:cacheprovider -rA --junitxml="$OUT/tests-$run.xml"
    # each test's outcome, for comparing the runs (their timings differ, their outcomes
    # must not)
    "$PY" - "$OUT/tests-$run.xml" >"$OUT/tests-$run.txt" <<'EOF'
import sys
import xml.etree.ElementTree as ET
for case in ET.parse(sys.argv[1]).iter("testcase"):
    kids = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
    print(case.get("classname"), case.get("name"), kids[0] if kids else "passed")
EOF
done
if cmp -s "$OUT/tests-1.txt" "$OUT/tests-2.txt"; then
    say "the two test runs agree on every test's outcome: $(cut -d' ' -f3 "$OUT/tests-1.txt" | sort | uniq -c | tr '\n' ' ')"
else
    say "THE TWO TEST RUNS DIFFER (a race?):"
    diff "$OUT/tests-1.txt" "$OUT/tests-2.txt" | tee -a "$LOG"
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
