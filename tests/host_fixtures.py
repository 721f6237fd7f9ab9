"""Fixtures for host tests: a real ComfyUI, random-weight model files in its folders."""
from __future__ import annotations

import os
import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "host"))
from comfy_host import ROOT, import_pack  # noqa: E402

PACK = import_pack()

import comfy.samplers  # noqa: E402
import folder_paths  # noqa: E402

from tools import random_models as builders  # noqa: E402

CACHE = pathlib.Path(os.environ.get("AI_T2I_TEST_CACHE", ROOT / ".cache" / "test_models"))
CKPT = "random_sd15_v2.safetensors"  # v2: the real SD1.5 autoencoder (v1 held the x4 upscaler's)
LORA = "random_attn_lora_v1.safetensors"
CONTROLNET = "random_controlnet_sd15_v1.safetensors"


@pytest.fixture(scope="session")
def pack():
    return PACK


@pytest.fixture(scope="session")
def model_files():
    """Random SD1.5 checkpoint, LoRA and ControlNet files, registered in the host's folders.

    Made once and cached (they take a minute); their content is random by design.
    """
    for kind in ("checkpoints", "loras", "controlnet"):
        (CACHE / kind).mkdir(parents=True, exist_ok=True)
        folder_paths.add_model_folder_path(kind, str(CACHE / kind))
    ckpt = CACHE / "checkpoints" / CKPT
    if not ckpt.exists():
        builders.write_random_sd15_checkpoint(ckpt)
    lora = CACHE / "loras" / LORA
    if not lora.exists():
        builders.write_random_attention_lora(lora, ckpt)
    cn = CACHE / "controlnet" / CONTROLNET
    if not cn.exists():
        builders.write_random_controlnet(cn)
    return {"checkpoint": CKPT, "lora": LORA, "controlnet": CONTROLNET}


@pytest.fixture(scope="session")
def sd15(model_files):
    """(MODEL, CLIP, VAE) loaded by the host's own CheckpointLoaderSimple, under inference mode."""
    import nodes
    with torch.inference_mode():
        return nodes.CheckpointLoaderSimple().load_checkpoint(model_files["checkpoint"])[:3]


@pytest.fixture(scope="session")
def sd15_small():
    """SD1.5 topology at reduced width, and a real-architecture CLIP-L (random)."""
    return builders.sd15_model(width=64), builders.sd1_clip()


@pytest.fixture(scope="session")
def sdxl_small():
    """SDXL topology at reduced width with the real 2048-wide context, real CLIP-L+G (random)."""
    return builders.sdxl_model(width=64), builders.sdxl_clip()
