#!/usr/bin/env bash
# The GPU path in one call: build the CUDA kernels, run every CUDA test, the CUDA benchmark
# table, a short mixed-precision training run with its AP, a one-process torchrun (nccl),
# and CPU-vs-GPU losses of the first iterations. Each section runs under its own time limit;
# a failing section is reported and the others still run. Logs land in OUT_DIR.
#
#   bash tools/gpu_check.sh --fetch-wheels   # on a machine with PyPI: the cp312 wheels of
#                                            # yacs, PyYAML and pycocotools into .gpu_check/wheels
#   bash tools/gpu_check.sh OUT_DIR          # on the GPU machine (no network needed)
#   bash tools/gpu_check.sh --dry-run OUT_DIR  # without a GPU: what runs without one (the
#                                            # FORCE_CUDA=1 build goes to a scratch folder)
#
# Environment: PYTHON (default python3), GPU_CHECK_ITERS (training iterations, default 300),
# GPU_CHECK_REPEATS (benchmark repeats, default 3), TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS.
# The wheels folder is git-ignored; carry it to the GPU machine with the working tree.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
py=${PYTHON:-python3}
wheels="$root/.gpu_check/wheels"
wheel_pkgs=(yacs==0.1.8 PyYAML pycocotools)

if [ "${1:-}" = "--fetch-wheels" ]; then
  mkdir -p "$wheels"
  # --no-deps: numpy and the rest come with the GPU machine's own Python.
  exec "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d "$wheels" "${wheel_pkgs[@]}"
fi

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
out=${1:?usage: tools/gpu_check.sh [--dry-run] OUT_DIR | --fetch-wheels}
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary="$out/summary.txt"
: >"$summary"
iters=${GPU_CHECK_ITERS:-300}
repeats=${GPU_CHECK_REPEATS:-3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export DETBENCH_DATASETS=${DETBENCH_DATASETS:-$out/datasets}  # the generated shapes data
export PYTHONPATH="$out/site:$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# section NAME LIMIT_S COMMAND...: run it with its output in OUT_DIR/NAME.log, record the outcome.
section() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS rc
  echo "== $name (at most ${limit} s)"
  # Through bash -c, so that the functions below (exported) can run under timeout too.
  timeout --signal=TERM --kill-after=20 "$limit" bash -c '"$@"' "$name" "$@" >"$out/$name.log" 2>&1
  rc=$?
  tail -n 25 "$out/$name.log"
  local verdict=ok
  [ $rc -eq 0 ] || verdict="FAILED (exit $rc)"
  [ $rc -eq 124 ] && verdict="TIMED OUT after ${limit} s"
  printf '%-14s %-26s %5d s\n' "$name" "$verdict" $((SECONDS - start)) | tee -a "$summary"
}

skip() {  # skip NAME REASON
  printf '%-14s %-26s %5s\n' "$1" "skipped: $2" "-" | tee -a "$summary"
}

has_gpu() {
  "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null
}

install_wheels() {
  ls "$wheels"/*.whl >/dev/null 2>&1 || { echo "no wheels in $wheels (run --fetch-wheels first)"; return 1; }
  local missing=()
  for module in yacs yaml pycocotools; do
    "$py" -c "import $module" 2>/dev/null || missing+=("$module")
  done
  [ ${#missing[@]} -eq 0 ] && { echo "yacs, yaml and pycocotools are importable already"; return 0; }
  echo "installing for: ${missing[*]}"
  "$py" -m pip install --no-deps --no-index --target "$out/site" "$wheels"/*.whl
}

build() {
  if [ $dry_run -eq 1 ]; then  # compile check only: the CPU build in place stays as it is
    FORCE_CUDA=1 CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} "$py" setup.py build_ext \
      --build-temp "$out/build/temp" --build-lib "$out/build/lib"
  else
    FORCE_CUDA=1 "$py" setup.py build_ext --inplace
  fi
}

cuda_tests() {
  # Every test file that asks for a GPU (their CPU tests run too; they are fast).
  mapfile -t files < <(grep -rl "cuda.is_available" tests | sort)
  "$py" -m pytest -q -p no:cacheprovider -rs --junitxml="$out/cuda_tests.xml" "${files[@]}"
}

export py out root wheels dry_run
export -f install_wheels build cuda_tests

quickstart=configs/quickstart/mask_rcnn_R_18_FPN_shapes.yaml
# A short schedule of the quickstart recipe: decays at 75 % and 90 % of the iterations.
short_schedule=(SOLVER.MAX_ITER "$iters" SOLVER.STEPS "($((iters * 3 / 4)), $((iters * 9 / 10)))"
                SOLVER.WARMUP_ITERS $((iters / 10)) SOLVER.CHECKPOINT_PERIOD "$iters" SOLVER.TEST_PERIOD 0)

echo "== detbench GPU check: $(date -u +%FT%TZ), output in $out$([ $dry_run -eq 1 ] && echo ', dry run')"
section wheels 120 install_wheels
section build 420 build
section collect_env 60 "$py" -m detbench.utils.collect_env
section cuda_tests 300 cuda_tests
if has_gpu; then
  section benchmark 420 "$py" tools/benchmark.py --device cuda --amp both --sections ops,inference,train \
    --repeats "$repeats"
  section train_amp 420 "$py" tools/train_net.py --config-file "$quickstart" MODEL.DEVICE cuda DTYPE float16 \
    DATALOADER.NUM_WORKERS 4 OUTPUT_DIR "$out/train_amp" "${short_schedule[@]}"
  section torchrun_nccl 240 "$py" -m torch.distributed.run --standalone --nproc_per_node=1 tools/train_net.py \
    --config-file "$quickstart" --skip-test MODEL.DEVICE cuda OUTPUT_DIR "$out/torchrun" \
    SOLVER.MAX_ITER 20 SOLVER.STEPS "(15,)" SOLVER.WARMUP_ITERS 5 SOLVER.CHECKPOINT_PERIOD 20 SOLVER.TEST_PERIOD 0
  section compare 240 "$py" tools/compare_devices.py --config-file "$quickstart" --iters 5 --amp \
    --json "$out/compare.json"
else
  for name in benchmark train_amp torchrun_nccl; do skip "$name" "no GPU visible"; done
  section compare 240 "$py" tools/compare_devices.py --config-file "$quickstart" --iters 2 --other cpu \
    --json "$out/compare.json" SOLVER.IMS_PER_BATCH 2
fi

echo "== summary (also in $summary)"
cat "$summary"
! grep -qE "FAILED|TIMED OUT" "$summary"
