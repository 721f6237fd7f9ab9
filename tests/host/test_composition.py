"""Composition with what users wire around the method: LoRA, ControlNet, loaders.

Uses a full-size SD1.5 checkpoint with random weights, loaded by the host's own
CheckpointLoaderSimple (weights are inference tensors, as in a real graph), a random
LoRA file through LoraLoaderModelOnly and a random ControlNet through ControlNetLoader.
"""
import math
import re

import pytest
import torch

import comfy.samplers
import nodes
from runner import encode, guided_sampler, patch, plain, run

SIZE = 16  # 128 px: 16x16 maps at latent/1, the auto level


@pytest.fixture(scope="module")
def prompt(pack, sd15):
    model, clip, _ = sd15
    return encode(pack, clip, "a cat and a dog", "cat, dog"), plain(clip)


def _maps(pack, model, pos, neg, **kw):
    sampler = guided_sampler(pack, **kw)
    out = run(patch(pack, model), sampler, pos, neg, size=SIZE, steps=2, seed=5)
    assert torch.isfinite(out).all()
    return sampler.runs.latest()


def _log_totals(record) -> list[float]:
    """The total loss of each guided step, as the run log prints it."""
    return [float(v) for v in re.findall(r"\btotal=(\S+)", record.log_text())]


def test_checkpoint_model_guides(pack, sd15, prompt):
    """On the loaded checkpoint the guided result differs from the plain sampler's at the same
    seed, and the update lowers the loss: with two steps at one sigma (euler's dt is 0 between
    them) the second step's loss, printed in the run log, is at the updated latent."""
    model, _, _ = sd15
    pos, neg = prompt
    plain_out = run(model, comfy.samplers.sampler_object("euler"), pos, neg, size=SIZE, steps=2, seed=5)
    sampler = guided_sampler(pack)
    guided = run(patch(pack, model), sampler, pos, neg, size=SIZE, steps=2, seed=5)
    assert torch.isfinite(guided).all() and not torch.allclose(plain_out, guided)
    record = sampler.runs.latest()
    assert record.map_size == (16, 16) and [r.step for r in record.reports] == [0] and not record.reports[0].skipped
    (total,) = _log_totals(record)
    assert math.isfinite(total) and total > 0

    s = float(comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 10)[2])
    sampler = guided_sampler(pack, end_percent=1.0)
    run(patch(pack, model), sampler, pos, neg, size=SIZE, sigmas=torch.tensor([s, s, 0.0]), seed=5)
    before, after = _log_totals(sampler.runs.latest())
    assert math.isfinite(after) and after < before, (before, after)


def test_lora_changes_the_guidance_forward(pack, sd15, prompt, model_files):
    model, _, _ = sd15
    with torch.inference_mode():
        lora_model, = nodes.LoraLoaderModelOnly().load_lora_model_only(model, model_files["lora"], 1.0)
    base = _maps(pack, model, *prompt)
    with_lora = _maps(pack, lora_model, *prompt)
    # The LoRA only touches attn2 key/value projections: the maps must move.
    assert not torch.allclose(base.maps[0], with_lora.maps[0], atol=1e-5)
    assert not with_lora.reports[0].skipped


def test_controlnet_changes_the_guidance_forward(pack, sd15, prompt, model_files):
    model, _, vae = sd15
    pos, neg = prompt
    with torch.inference_mode():
        cn, = nodes.ControlNetLoader().load_controlnet(model_files["controlnet"])
        hint = torch.zeros(1, SIZE * 8, SIZE * 8, 3)
        hint[:, 20:60, 20:60] = 1.0
        cpos, cneg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, cn, hint, 1.0, 0.0, 1.0)
    assert "ai_t2i_subjects" in cpos[0][1]  # the subjects ride along the ControlNet conditioning
    base = _maps(pack, model, pos, neg)
    controlled = _maps(pack, model, cpos, cneg)
    assert not torch.allclose(base.maps[0], controlled.maps[0], atol=1e-5)
    # Layer set auto: at 128 px the up-block maps are the UNet's last layers, so without a ControlNet
    # it reads the down blocks; ControlNet residuals join on the up path, so with one it reads both.
    assert base.layers == "input 1, 2 (2 layers)" and base.pass_work < 0.3
    assert controlled.layers == "input 1, 2 + output 9, 10, 11 (5 layers)" and controlled.pass_work > 0.9


def test_fp16_model_guides_with_fp32_loss(pack, sd15_small):
    """A half-precision UNet: maps and loss are computed in fp32, the update is finite."""
    from tools import random_models as builders
    _, clip = sd15_small
    half = builders.sd15_model(width=64, dtype=torch.float16)
    assert half.model.get_dtype() == torch.float16
    pos = encode(pack, clip, "a cat and a dog", "cat, dog")
    sampler = guided_sampler(pack)
    out = run(patch(pack, half), sampler, pos, plain(clip), size=16, steps=2)
    report = sampler.runs.latest().reports[0]
    assert torch.isfinite(out).all()
    assert not report.skipped and report.losses["total"] > 0
    assert sampler.runs.latest().maps[0].dtype == torch.float32
