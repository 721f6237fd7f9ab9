#!/usr/bin/env bash
# The prepared cost run for a lent GPU machine (one H200; about 6 minutes in all):
#   1. the host tests that matter on CUDA (the DiT and sampler tests, about 1 minute);
#   2. benchmarks/cost.py with --breakdown for every cost row: SD1.5 512 px fp16 50 steps,
#      SDXL 1024 px fp16 50 steps, Flux.1-dev 1024 px bf16 20 steps, SD3.5 Large 1024 px bf16
#      28 steps, each plain, AI-T2I at its default settings and Attend-and-Excite, and on
#      Flux the joint map's explicit path too (the price of the fused map in a whole run);
#   3. benchmarks/joint_maps.py on CUDA.
# Each step runs under `timeout`, so one slow row cannot eat the others' time; every log goes
# to $OUT (one file per step, summary.log with each step's exit status and seconds, tables.md
# with every table the benchmarks printed).
#
# What the GPU machine lacks is carried with the working tree and used where it is there:
# .whl/*.whl (torchsde, trampoline) installed into $GPU_SITE (default: a new temporary folder),
# .gpu_carry/stubs (a stand-in `av` package: the host imports PyAV for its video types) and
# .gpu_carry/ComfyUI (the host; COMFYUI_PATH). Where they are absent (or the Python in use
# already has the packages) the script uses the normal host and installs nothing.
#
#   OUT=/some/folder bash tools/gpu_cost.sh                    # on the GPU machine
#   OUT=/some/folder GPU_DRY_RUN=1 bash tools/gpu_cost.sh      # the same steps on the CPU at
#       tiny sizes (2 steps, UNets 64 channels wide, reduced DiTs at 64 px): about 2 minutes
# PYTHON picks the interpreter (default python3).
set -u
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder the logs go to}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
PY=${PYTHON:-python3}
DRY=${GPU_DRY_RUN:-0}
: > "$OUT/summary.log"

note() { echo "$*" | tee -a "$OUT/summary.log"; }

# step NAME SECONDS COMMAND...: run COMMAND under a time limit, its output in $OUT/NAME.log.
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  note "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)$([ $rc -eq 124 ] && echo ', TIMED OUT')"
}

# What the image lacks, from the carried files (only where the interpreter lacks it).
source tools/gpu_carried.sh
use_carried
note "host: ${COMFYUI_PATH:-.host/ComfyUI}; dry run: $DRY"

{
  [ "$DRY" = 1 ] || nvidia-smi -L
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
} > "$OUT/environment.log" 2>&1

# The host tests that matter on CUDA: the DiT modules and the sampler/guidance ones (by name, where present).
TESTS=()
for f in tests/host/test_mmdit.py tests/host/test_dit*.py tests/host/test_sampl*.py tests/host/test_driver*.py \
         tests/host/test_guid*.py; do
  [ -f "$f" ] && TESTS+=("$f")
done

COST=(benchmarks/cost.py --breakdown)
METHODS=plain,ai_t2i,attend_and_excite
DIT_METHODS=$METHODS,ai_t2i_explicit_map  # on one DiT: the fused map's price in a whole run
if [ "$DRY" = 1 ]; then
  # The tests are collected only (imports, fixtures' names): running them is the CPU suite's job.
  step host_tests 120 "$PY" -m pytest -q --collect-only -p no:cacheprovider "${TESTS[@]}"
  SMALL=(--steps 2 --unet-width 64)  # limits twice a quiet CPU's time: a busy one (tests beside it) is slower
  step cost_sd15 240 "$PY" "${COST[@]}" --methods "$METHODS" --models sd15:128 "${SMALL[@]}"
  step cost_sdxl 240 "$PY" "${COST[@]}" --methods "$METHODS" --models sdxl:128 "${SMALL[@]}"
  step cost_flux 240 "$PY" "${COST[@]}" --methods "$DIT_METHODS" --models flux:64 --dit-width reduced "${SMALL[@]}"
  step cost_sd35 240 "$PY" "${COST[@]}" --methods "$METHODS" --models sd35:64 --dit-width reduced "${SMALL[@]}"
  step joint_maps 60 "$PY" benchmarks/joint_maps.py --device cpu --runs 1 --image 256 --text 16
else
  step host_tests 60 "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
  step cost_sd15 35 "$PY" "${COST[@]}" --methods "$METHODS" --models sd15:512 --steps 50 --dtype fp16
  step cost_sdxl 45 "$PY" "${COST[@]}" --methods "$METHODS" --models sdxl:1024 --steps 50 --dtype fp16
  step cost_flux 100 "$PY" "${COST[@]}" --methods "$DIT_METHODS" --models flux --steps 20 --dtype bf16
  step cost_sd35 95 "$PY" "${COST[@]}" --methods "$METHODS" --models sd35 --steps 28 --dtype bf16
  step joint_maps 20 "$PY" benchmarks/joint_maps.py --device cuda --runs 5
fi

grep -h -e "^|" -e "^device" -e "^floor" -e "^  map\|^  attention\|^B " "$OUT"/cost_*.log "$OUT"/joint_maps.log > "$OUT/tables.md" 2>/dev/null
tail -n 3 "$OUT/host_tests.log" | tee -a "$OUT/summary.log"
note "total: $SECONDS s"
