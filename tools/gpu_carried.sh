# Sourced by the prepared GPU scripts (gpu_cost.sh, gpu_train.sh): what the GPU machine's image
# lacks, put on the path from the carried files, each only where the interpreter lacks it:
# wheels from .whl/ installed into a folder (GPU_SITE, else a new temporary one), a stand-in `av`
# from .gpu_carry/stubs, the host from .gpu_carry/ComfyUI (COMFYUI_PATH).
# Needs PY (the interpreter), ROOT (the repository) and a `note` function (the summary line).
use_carried() {
  if ! "$PY" -c "import torchsde" 2>/dev/null && compgen -G ".whl/*.whl" > /dev/null; then
    local site=${GPU_SITE:-$(mktemp -d)}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
      && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" && note "installed $(ls .whl) into $site"
  fi
  if ! "$PY" -c "import av" 2>/dev/null && [ -d .gpu_carry/stubs ]; then
    export PYTHONPATH="$ROOT/.gpu_carry/stubs${PYTHONPATH:+:$PYTHONPATH}" && note "stand-in av from .gpu_carry/stubs"
  fi
  if [ -z "${COMFYUI_PATH:-}" ] && [ -d .gpu_carry/ComfyUI/comfy ]; then
    export COMFYUI_PATH="$ROOT/.gpu_carry/ComfyUI"
  fi
}
