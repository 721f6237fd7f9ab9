#!/usr/bin/env bash
# The prepared training run for a lent GPU machine (about 8 minutes of wall time in all):
#   1. a --profile of the UNet-shaped model's fine-tune (where a GPU step's time goes);
#   2. fine-tune the UNet-shaped embedded model from models/ai_t2i_tiny_shapes.safetensors,
#      export it;
#   3. fine-tune the Flux-shaped one (--arch flux) from models/ai_t2i_tiny_flux.safetensors
#      when that file exists, else from the UNet file's text encoder and autoencoder (the
#      trainer's --init-from takes those across architectures), export it.
# The recipe is tools/gpu_job.sh's (the CPU attempt 4 recipe with a GPU's batch; RECIPE
# overrides it), with rendering in worker processes that a step does not wait for.
# Each step runs under `timeout`; the output of all steps goes to $OUT/steps.log, each
# step's exit status and seconds (and each training's last lines) to $OUT/summary.log,
# and each exported file is split into 15 MB parts in $OUT (a machine hands back at most
# 8 files of 16 MB): `cat $OUT/tiny_shapes.safetensors.part.* > tiny_shapes.safetensors`.
#
# What the GPU machine lacks is carried as for tools/gpu_cost.sh: .whl/*.whl installed into
# $GPU_SITE (default: a new temporary folder), .gpu_carry/stubs (a stand-in `av`) and
# .gpu_carry/ComfyUI (the host, COMFYUI_PATH), each used only where present and needed.
#
#   OUT=/some/folder bash tools/gpu_train.sh                  # on the GPU machine
#   OUT=/some/folder GPU_DRY_RUN=1 bash tools/gpu_train.sh    # the same steps on the CPU with
#       0.3-minute budgets and batches of 4 (one render worker): about 2 minutes
# PYTHON picks the interpreter (default python3), GPU_TRAIN_WORK the work folder (default
# .gpu_work; its train_unet/ and train_flux/ are started afresh), TRAIN_MIN the minutes of
# each training (default 2).
set -u
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder the logs and model parts go to}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
PY=${PYTHON:-python3}
DRY=${GPU_DRY_RUN:-0}
WORK=${GPU_TRAIN_WORK:-.gpu_work}
: > "$OUT/summary.log"
: > "$OUT/steps.log"

note() { echo "$*" | tee -a "$OUT/summary.log"; }

# step NAME SECONDS COMMAND...: run COMMAND under a time limit, its output appended to steps.log.
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "=== $name: $*" >> "$OUT/steps.log"
  timeout -k 10 "$limit" "$@" >> "$OUT/steps.log" 2>&1
  rc=$?
  note "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)$([ $rc -eq 124 ] && echo ', TIMED OUT')"
}

# What the image lacks, from the carried files (only where the interpreter lacks it).
source tools/gpu_carried.sh
use_carried
note "host: ${COMFYUI_PATH:-.host/ComfyUI}; dry run: $DRY; work: $WORK"
{
  [ "$DRY" = 1 ] || nvidia-smi -L
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
} 2>&1 | tee -a "$OUT/summary.log"

UNET_INIT=models/ai_t2i_tiny_shapes.safetensors
FLUX_INIT=models/ai_t2i_tiny_flux.safetensors
[ -f "$FLUX_INIT" ] || FLUX_INIT=$UNET_INIT  # its text encoder and autoencoder; the Flux model starts fresh
RECIPE=${RECIPE:---content-free-end --grounding-weight 0.01 --ground-words shape --mix 0.5,0.5,0.6 --unet-lr 3e-4}
if [ "$DRY" = 1 ]; then
  MIN=${TRAIN_MIN:-0.3}
  RUN=(--device cpu --threads 1 --workers 1 --batch 4 --fresh 2 --buffer 64 --log-every 5)
  PROFILE_STEPS=3 PROFILE_LIMIT=120 SLACK=120 EXPORT_LIMIT=120  # a busy CPU: limits far above a quiet one's time
else
  MIN=${TRAIN_MIN:-2}
  RUN=(--device cuda --threads 4 --workers 12 --batch 256 --fresh 64 --buffer 60000 --log-every 50)
  # Slack: the trainer's start (imports, render workers, the first batch) and the final checkpoint
  # lie outside its --unet-minutes. Limits in all: 50 + 2 * (120 + 55 + 35) = 470 s.
  PROFILE_STEPS=30 PROFILE_LIMIT=50 SLACK=55 EXPORT_LIMIT=35
fi
TRAIN=("$PY" tools/train_tiny_model.py --stage unet "${RUN[@]}" --no-render-wait --ckpt-minutes 10)
TRAIN_LIMIT=$(awk -v m="$MIN" -v s="$SLACK" 'BEGIN { printf "%d", m * 60 + s }')

rm -rf "$WORK/profile_unet" "$WORK/train_unet" "$WORK/train_flux"
mkdir -p "$WORK"
# shellcheck disable=SC2086  # RECIPE is a list of flags
step profile_unet "$PROFILE_LIMIT" "${TRAIN[@]}" --arch unet --profile "$PROFILE_STEPS" --work "$WORK/profile_unet" \
  --init-from "$UNET_INIT" $RECIPE

# train_and_export ARCH INIT NAME: fine-tune, export, split the file into $OUT.
train_and_export() {
  local arch=$1 init=$2 name=$3 work=$WORK/train_$1
  # shellcheck disable=SC2086
  step "train_$arch" "$TRAIN_LIMIT" "${TRAIN[@]}" --arch "$arch" --unet-minutes "$MIN" --work "$work" \
    --init-from "$init" $RECIPE
  grep -E "unet step|stopped at" "$OUT/steps.log" | tail -n 2 | sed "s/^/  $arch: /" | tee -a "$OUT/summary.log"
  # shellcheck disable=SC2086
  step "export_$arch" "$EXPORT_LIMIT" "$PY" tools/train_tiny_model.py --stage export --arch "$arch" --work "$work" \
    --export "$work/$name.safetensors" --init-from "$init" $RECIPE
  if [ -f "$work/$name.safetensors" ]; then
    rm -f "$OUT/$name.safetensors.part."*
    split -b 15M "$work/$name.safetensors" "$OUT/$name.safetensors.part."
    note "  $name.safetensors: $(stat -c %s "$work/$name.safetensors") bytes, sha256 $(sha256sum "$work/$name.safetensors" | cut -c1-64), parts: $(cd "$OUT" && ls "$name.safetensors.part."* | tr '\n' ' ')"
  else
    note "  $name.safetensors: not exported"
  fi
}

train_and_export unet "$UNET_INIT" tiny_shapes
train_and_export flux "$FLUX_INIT" tiny_flux
grep -E "^\||profile of|profile:" "$OUT/steps.log" >> "$OUT/summary.log"
note "total: $SECONDS s"
