#!/usr/bin/env bash
# MST++ toolkit: one command for the whole job, one for the tests.
#
#   ./build.sh            set up .venv, then export -> engines -> kernels -> benchmarks -> accuracy -> report
#   ./build.sh test       set up .venv, then run the test suite (what CI runs)
#   ./build.sh --help     stages, profiles and environment variables
#
# Every stage runs what this machine allows and says in one line what it skipped and why; the run
# completes either way. Without a CUDA GPU the "quick" profile is used (about 10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'EOF'
usage: ./build.sh [all|test|setup] [--profile quick|full] [--weights PATH] [--no-setup]

  all (default)  export ONNX (static 1x3x512x482 + dynamic), weights .npz, TensorRT engines (ONNX parser
                 and network API; TensorRT-RTX plans when only TensorRT-RTX is installed), CUDA kernels,
                 latency benchmark, accuracy study, sample cubes, docs/REPORT.md
  test           the test suite (GPU tests are skipped without CUDA)
  setup          only create/update the virtual environment

  --profile      quick: batch 1, small timing budget (default without a GPU)
                 full:  batch 1,2,4,8,16 at 512x482, docs/DESIGN.md section 7 timing (default with a GPU)
  --weights      MST++ checkpoint for every stage (default: shipped weights, else seeded init)
  --no-setup     use the current python3 as is (no .venv)

environment: PYTHON (interpreter for the venv, default python3), MSTPP_VENV (default .venv),
             OUT_DIR (build outputs, default build)
EOF
}

target=all; profile=""; weights=""; setup=1
while [ $# -gt 0 ]; do
  case "$1" in
    all|test|setup) target=$1 ;;
    --profile) profile=${2:?--profile needs quick or full}; shift ;;
    --weights) weights=${2:?--weights needs a path}; shift ;;
    --no-setup) setup=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (see ./build.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$profile" in ""|quick|full) ;; *) echo "error: --profile must be quick or full" >&2; exit 2 ;; esac

say() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

setup_env() {
  local venv=${MSTPP_VENV:-.venv} py=${PYTHON:-python3}
  if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    # System packages stay visible so a machine's own CUDA build of torch is used, not replaced.
    "$py" -m venv --system-site-packages "$venv"
  fi
  # shellcheck disable=SC1091
  . "$venv/bin/activate"
  local stamp="$venv/.requirements.sha"
  local want; want=$(sha1sum requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing requirements.txt into $venv"
    python -m pip install -q --disable-pip-version-check -r requirements.txt
    echo "$want" > "$stamp"
  fi
}

[ "$setup" = 1 ] && setup_env
PY=python
"$PY" -c "import torch" 2>/dev/null || { echo "error: torch is not importable; run ./build.sh setup" >&2; exit 2; }

if [ "$target" = setup ]; then exit 0; fi
if [ "$target" = test ]; then
  say "running tests"
  exec "$PY" -m pytest -q tests
fi

has_gpu=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
[ -z "$profile" ] && { [ "$has_gpu" = 1 ] && profile=full || profile=quick; }
OUT=${OUT_DIR:-build}
mkdir -p "$OUT"
wargs=(); [ -n "$weights" ] && wargs=(--weights "$weights")
skipped=()

say "1/7 ONNX export (static 1x3x512x482 and dynamic)"
"$PY" torch2onnx.py "${wargs[@]}" --onnx_path "$OUT/mstpp.onnx"
"$PY" torch2onnx.py "${wargs[@]}" --dynamic --onnx_path "$OUT/mstpp_dynamic.onnx"
"$PY" get_weights.py ${weights:+--model_path "$weights"} --weight_path "$OUT/mstpp_weights.npz"

say "2/7 TensorRT engines"
trt=$("$PY" -c "from mstpp.trt.version import detect; print(detect().summary)" 2>/dev/null || echo "none")
if [ "$trt" = none ]; then
  note "skipped: neither tensorrt nor tensorrt_rtx is importable (pip install tensorrt, or tensorrt-rtx-cu12)"
  skipped+=("TensorRT engines: no TensorRT installed")
else
  note "using $trt"
  case "$trt" in TensorRT-RTX*) skipped+=("full TensorRT not installed: plans built with $trt (they run on RTX-class GPUs, not on Hopper/A100)") ;; esac
  modes=(FP32 FP16); [ "$profile" = full ] && modes+=(INT8) || skipped+=("INT8 engines: built in the full profile only (calibration takes minutes on a CPU)")
  for mode in "${modes[@]}"; do
    "$PY" mst_onnxparser.py --onnx_path "$OUT/mstpp.onnx" --plan_path "$OUT/mstpp_parser_${mode,,}.plan" --mode "$mode" \
      || skipped+=("parser $mode engine failed (see above)")
    "$PY" mst_trt_api.py --weight_path "$OUT/mstpp_weights.npz" --plan_path "$OUT/mstpp_api_${mode,,}.plan" --mode "$mode" \
      || skipped+=("API $mode engine failed (see above)")
  done
fi

say "3/7 CUDA kernels"
if command -v nvcc >/dev/null 2>&1; then
  make -s -C plugins
  [ "$has_gpu" = 1 ] || { note "compiled; not run (no CUDA GPU)"; skipped+=("CUDA kernels compiled but not run: no GPU"); }
else
  note "skipped: nvcc not found"; skipped+=("CUDA kernels: nvcc not found")
fi

say "4/7 latency benchmark ($profile profile)"
bench_args=(--out-dir "$OUT/results" --no-progress); [ "$profile" = quick ] && bench_args+=(--quick)
"$PY" performance_latency.py "${bench_args[@]}" "${wargs[@]}"
[ "$has_gpu" = 1 ] || skipped+=("GPU routes of the benchmark and accuracy study: no CUDA GPU (each table row says why)")

say "5/7 accuracy and INT8 studies"
acc_args=(--out-dir "$OUT/results" --no-progress); [ "$profile" = quick ] && acc_args+=(--quick)
"$PY" performance_accuracy.py "${acc_args[@]}" "${wargs[@]}"
int8_args=(--out-dir "$OUT/results" --no-progress); [ "$profile" = quick ] && int8_args+=(--size 128 128 --synthetic 1)
"$PY" performance_int8.py "${int8_args[@]}" "${wargs[@]}"

say "6/7 sample cubes"
"$PY" infer.py data/samples --out-dir "$OUT/cubes" "${wargs[@]}"

say "7/7 report"
"$PY" make_report.py --results-dir "$OUT/results" --out "$OUT/REPORT.md"

say "done: outputs in $OUT/"
if [ ${#skipped[@]} -gt 0 ]; then
  echo "skipped on this machine:"
  printf '  - %s\n' "${skipped[@]}"
fi
