#!/usr/bin/env bash
# On the GPU machine: build the kernels, run their GPU tests, memcheck every kernel, benchmark them.
# Results go to $OUT/kernels_bench.json when OUT is set, else docs/results/kernels_bench.json.
# (`make plugins` needs TensorRT, which the GPU machine does not have.)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
RESULTS_DIR=${OUT:-docs/results}
mkdir -p "$RESULTS_DIR"

echo "== build"
make -C plugins -j"$(nproc)"

echo "== GPU tests"
"$PYTHON" -m pytest -m gpu tests/test_kernels_gpu.py tests/test_kernels_ffn.py tests/test_kernels_msa.py tests/test_fused_route.py -q

echo "== compute-sanitizer memcheck"
if command -v compute-sanitizer >/dev/null 2>&1; then
    compute-sanitizer --tool memcheck --error-exitcode 1 "$PYTHON" -m tools.sanitize_kernels
else
    echo "compute-sanitizer not found; skipped"
fi

echo "== benchmark"
"$PYTHON" -m tools.bench_kernels --out "$RESULTS_DIR/kernels_bench.json"
