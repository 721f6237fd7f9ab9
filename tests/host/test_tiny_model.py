"""The embedded tiny model file loads as host MODEL/CLIP/VAE and samples through the host.

Skipped (with the reason) only when models/ai_t2i_tiny_shapes.safetensors has not
been exported yet (tools/train_tiny_model.py writes it).
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST = pathlib.Path(os.environ.get("COMFYUI_PATH", ROOT / ".host" / "ComfyUI")).resolve()
# AI_T2I_TINY_MODEL points the test at another export (e.g. a candidate before it is committed).
MODEL_FILE = pathlib.Path(os.environ.get("AI_T2I_TINY_MODEL", ROOT / "models" / "ai_t2i_tiny_shapes.safetensors"))
MAX_BYTES = 25 * 1000 * 1000

for p in (str(HOST), str(ROOT)):
    if p not in sys.path:
        sys.path.append(p)

if "comfy.model_management" not in sys.modules:
    # Without a GPU the host only starts in CPU mode when asked to.
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True

import comfy.model_base  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402


def _tiny_module():
    """nodes/host/tiny_model.py by path (a bare ``import nodes`` finds the host's nodes.py)."""
    name = "ai_t2i_tiny_model_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "nodes" / "host" / "tiny_model.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


tm = _tiny_module()

pytestmark = pytest.mark.skipif(
    not MODEL_FILE.is_file(),
    reason=f"{MODEL_FILE} not exported yet (run tools/train_tiny_model.py --stage export)",
)


@pytest.fixture(scope="module")
def tiny():
    """(MODEL, CLIP, VAE), loaded under inference mode as ComfyUI runs loader nodes."""
    with torch.inference_mode():
        return tm.load_tiny_model(str(MODEL_FILE))


def test_output_types(tiny):
    model, clip, vae = tiny
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    assert isinstance(model.model, comfy.model_base.BaseModel)
    assert model.model.model_type == comfy.model_base.ModelType.EPS
    assert isinstance(clip, comfy.sd.CLIP)
    assert isinstance(vae, comfy.sd.VAE)
    assert isinstance(model.model.latent_format, tm.TinyLatentFormat)
    # SD1's discrete schedule: sigma_max of linear betas 0.00085..0.012 is ~14.61.
    assert float(model.model.model_sampling.sigma_max) == pytest.approx(14.6146, rel=1e-3)
    assert vae.latent_channels == 4 and vae.spacial_compression_decode() == 8


def test_cross_attention_at_both_levels(tiny):
    from comfy.ldm.modules.attention import SpatialTransformer

    unet = tiny[0].model.diffusion_model
    widths = {m.proj_in.out_channels for blocks in (unet.input_blocks, unet.output_blocks)
              for b in blocks for m in b if isinstance(m, SpatialTransformer)}
    assert widths == {64, 128}  # 16x16 (64 ch) and 8x8 (128 ch) levels, not only the middle


def test_clip_encodes(tiny):
    _, clip, _ = tiny
    with torch.inference_mode():
        cond = clip.encode_from_tokens_scheduled(clip.tokenize("a red circle"))
    assert cond[0][0].shape == (1, 77, tm.TinyModelConfig().text_width)
    assert torch.isfinite(cond[0][0]).all()


def test_four_step_sample_decodes(tiny):
    model, clip, vae = tiny
    with torch.inference_mode():
        pos = clip.encode_from_tokens_scheduled(clip.tokenize("a red circle"))
        neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        latent = torch.zeros(1, 4, 128 // 8, 128 // 8)
        noise = comfy.sample.prepare_noise(latent, 0)
        out = comfy.sample.sample(model, noise, 4, 5.0, "euler", "normal", pos, neg, latent, seed=0,
                                  disable_pbar=True)
        image = vae.decode(out)
    assert out.shape == (1, 4, 16, 16)
    assert image.shape == (1, 128, 128, 3)
    assert torch.isfinite(image).all()
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_vae_round_trip(tiny):
    """VAEEncode -> VAEDecode through comfy.sd.VAE reconstructs a flat-colour scene."""
    _, _, vae = tiny
    yy, xx = np.mgrid[0:128, 0:128]
    img = np.full((128, 128, 3), 0.95, np.float32)
    img[(xx - 64) ** 2 + (yy - 60) ** 2 <= 24 ** 2] = (0.86, 0.14, 0.14)
    pixels = torch.from_numpy(img)[None]
    with torch.inference_mode():
        latent = vae.encode(pixels)
        back = vae.decode(latent)
    assert latent.shape == (1, 4, 16, 16)
    assert float((back - pixels).abs().mean()) < 0.05


def test_size_budget(tiny):
    assert MODEL_FILE.stat().st_size <= MAX_BYTES
    model, clip, vae = tiny
    params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    params += sum(p.numel() for p in clip.cond_stage_model.parameters())
    params += sum(p.numel() for p in vae.first_stage_model.parameters())
    assert params * 2 <= MAX_BYTES  # fp16 storage


@pytest.mark.parametrize("layers, read", [(None, "input 1 (1 layer)"),
                                          ("down+up", "input 1 + output 2, 3 (3 layers)")])
def test_ksampler_layers_input(pack, tiny, layers, read):
    """KSampler (AI-T2I)'s optional layers input: left out, the layer set auto reads this model's
    down block only (its 16x16 up-block maps are its last layers); down+up reads the reference's set."""
    model, clip, _ = tiny
    with torch.inference_mode():
        pos = pack.nodes.AIT2ISubjectPrompt.execute(clip=clip, text="a red circle and a blue square",
                                                    subjects="circle, square").result[0]
        neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        extra = {"layers": layers} if layers else {}
        out = pack.nodes.AIT2IKSampler.execute(
            model=model, seed=0, steps=4, cfg=5.0, sampler_name="euler", scheduler="normal", positive=pos,
            negative=neg, latent_image={"samples": torch.zeros(1, 4, 16, 16)}, denoise=1.0, method="AI-T2I",
            strength=1.0, start_percent=0.0, end_percent=0.5, **extra)
    log_text = out.result[2]
    assert f"maps=(16, 16) from {read}" in log_text, log_text
