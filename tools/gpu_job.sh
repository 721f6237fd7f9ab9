#!/usr/bin/env bash
# One prepared run on a lent GPU machine (15 minutes of device time in all): fine-tune the
# embedded model with the grounded recipe on the GPU, export it, then measure full-size
# SD1.5 / SDXL guidance cost. Outputs go to $OUT (the model in 15 MB parts: cat them back).
# Expects: .whl (torchsde, trampoline), .host/ComfyUI, and .gpu_carry/init.safetensors (the
# model to start from: the best CPU candidate; its autoencoder is kept as it is).
# The recipe is the CPU attempt's (docs/embedded_model_attempts.md, attempt 4) with a GPU's
# batch; RECIPE overrides it, TRAIN_MIN sets the training minutes.
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
nvidia-smi -L
TRAIN_MIN=${TRAIN_MIN:-6}
RECIPE=${RECIPE:---content-free-end --grounding-weight 0.01 --ground-words shape --mix 0.5,0.5,0.6 --unet-lr 3e-4}
mkdir -p .gpu_work
timeout $(( ${TRAIN_MIN%.*} * 60 + 120 )) python3 tools/train_tiny_model.py --stage unet --device cuda --threads 4 \
  --workers 12 --batch 256 --fresh 64 --buffer 60000 --unet-minutes "$TRAIN_MIN" --ckpt-minutes 10 --work .gpu_work \
  --init-from .gpu_carry/init.safetensors $RECIPE > "$OUT/train.log" 2>&1
tail -3 "$OUT/train.log"
python3 tools/train_tiny_model.py --stage export --work .gpu_work --export .gpu_work/tiny.safetensors \
  --init-from .gpu_carry/init.safetensors $RECIPE >> "$OUT/train.log" 2>&1
ls -la .gpu_work
[ -f .gpu_work/tiny.safetensors ] && split -b 15M .gpu_work/tiny.safetensors "$OUT/tiny.part."
timeout 150 python3 benchmarks/cost.py --models sd15 --size 512 --steps 50 --dtype fp16 > "$OUT/cost_sd15.txt" 2>&1
grep -E "^\||device=" "$OUT/cost_sd15.txt"
timeout 170 python3 benchmarks/cost.py --models sdxl --size 1024 --steps 50 --dtype fp16 > "$OUT/cost_sdxl.txt" 2>&1
grep -E "^\||device=" "$OUT/cost_sdxl.txt"
tail -5 "$OUT/cost_sdxl.txt"
