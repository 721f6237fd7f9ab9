"""The Flux-shaped tiny model (TinyModelConfig.architecture "flux"): the host's own Flux.

A random-weight file of that architecture, written by save_tiny_model, loads through
load_tiny_model as the host's comfy.model_base.Flux (ModelSamplingFlux with the file's
shift), the pack sees a Flux.1 model, its pooled vector carries no caption, and AI-T2I
guides it through the same joint-attention path as real Flux, with the subjects resolved
on the tiny CLIP's tokens.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

import comfy.model_base
import comfy.model_sampling
import comfy.samplers
from ai_t2i_pack.nodes.host import dit, families
from ai_t2i_pack.nodes.host import tiny_model as tm
from comfy.ldm.flux.model import Flux
from runner import encode, guided_sampler, patch, plain, run
from tools.train_tiny_model import init_weights


@pytest.fixture(scope="module")
def flux_file(tmp_path_factory):
    cfg = tm.TinyModelConfig(architecture="flux", content_free_end=True, latent_scale_factor=1.3)
    torch.manual_seed(0)
    modules = [tm.build_unet(cfg), tm.build_text_model(cfg), tm.build_taesd(cfg)]
    for m in modules:
        init_weights(m)
    path = tmp_path_factory.mktemp("tiny_flux") / "tiny_flux.safetensors"
    size = tm.save_tiny_model(str(path), cfg, *modules)
    return path, size


@pytest.fixture(scope="module")
def tiny_flux(flux_file):
    with torch.inference_mode():
        return tm.load_tiny_model(str(flux_file[0]))


def test_loads_as_the_hosts_flux(flux_file, tiny_flux):
    model, clip, vae = tiny_flux
    assert type(model.model) is comfy.model_base.Flux
    assert isinstance(model.model.diffusion_model, Flux)
    sampling = model.get_model_object("model_sampling")
    assert isinstance(sampling, comfy.model_sampling.ModelSamplingFlux)
    # Flux's time shift with mu = 0.5 (the file's flux_shift) at t = 0.5: e^mu / (e^mu + 1)
    assert float(sampling.sigma(torch.tensor(0.5))) == pytest.approx(math.exp(0.5) / (math.exp(0.5) + 1), rel=1e-5)
    assert flux_file[1] <= tm.MAX_FILE_BYTES


def test_the_pack_sees_flux_with_every_block(tiny_flux):
    model = tiny_flux[0].model
    assert isinstance(families.family_of(model), families.DiTFamily)
    assert dit.dit_kind(model).name == "Flux" and dit.dit_kind(model).patch == 1
    keys = [layer.key for layer in dit.dit_layers(model)]
    assert keys == [("double", i, 0) for i in range(4)] + [("single", i, 0) for i in range(6)]


def test_pooled_vector_is_content_free(tiny_flux):
    clip = tiny_flux[1]
    with torch.inference_mode():
        cond, extra = clip.encode_from_tokens_scheduled(clip.tokenize("a red circle and a blue square"))[0]
    assert cond.shape == (1, 77, 64) and cond.abs().max() > 0
    assert torch.count_nonzero(extra["pooled_output"]) == 0


def test_guidance_changes_the_flux_sample(pack, tiny_flux):
    model, clip, _ = tiny_flux
    patched = patch(pack, model)
    positive = encode(pack, clip, "a red circle and a blue square", "circle, square")
    negative = plain(clip)
    kw = dict(steps=4, seed=3)
    vanilla = run(patched, guided_sampler(pack, strength=0.0), positive, negative, **kw)
    plain_run = run(model, comfy.samplers.sampler_object("euler"), positive, negative, **kw)
    guided = run(patched, guided_sampler(pack, strength=1.0), positive, negative, **kw)
    assert torch.equal(vanilla, plain_run)
    assert torch.isfinite(guided).all()
    assert (guided - vanilla).abs().max() > 1e-4


def test_strength_1_on_a_joint_attention_model_takes_half_the_references_step(pack, tiny_flux, monkeypatch):
    """The SD3/Flux step chosen on the Flux-shaped toy: strength 1 there is the step the
    reference's unit gave at strength 0.5, bit for bit; the UNet family keeps the reference's."""
    model, clip, _ = tiny_flux
    patched = patch(pack, model)
    positive = encode(pack, clip, "a red circle and a blue square", "circle, square")
    negative = plain(clip)
    kw = dict(steps=4, seed=3)
    assert families.UNetFamily(None).step_scale == 1.0
    default = run(patched, guided_sampler(pack, strength=1.0), positive, negative, **kw)
    monkeypatch.setattr(families, "JOINT_STEP_SCALE", 1.0)  # the reference's unit
    half = run(patched, guided_sampler(pack, strength=0.5), positive, negative, **kw)
    whole = run(patched, guided_sampler(pack, strength=1.0), positive, negative, **kw)
    assert torch.equal(default, half)
    assert (whole - default).abs().max() > 1e-5


def test_each_joint_map_rule_guides_the_flux_sample_and_the_log_names_it(pack, tiny_flux):
    """The joint_map setting reaches the joint-attention guidance: each rule moves the sample
    its own way, and a rule other than the default is named in the run log."""
    model, clip, _ = tiny_flux
    patched = patch(pack, model)
    positive = encode(pack, clip, "a red circle and a blue square", "circle, square")
    negative = plain(clip)
    samples, logs = {}, {}
    for rule in ("joint softmax", "text softmax", "sharpened joint softmax"):
        sampler = guided_sampler(pack, strength=1.0, joint_map=rule)
        samples[rule] = run(patched, sampler, positive, negative, steps=4, seed=3)
        logs[rule] = sampler.runs.latest().log_text().splitlines()[0]
        assert torch.isfinite(samples[rule]).all()
    for a, b in (("joint softmax", "text softmax"), ("joint softmax", "sharpened joint softmax"),
                 ("text softmax", "sharpened joint softmax")):
        assert (samples[a] - samples[b]).abs().max() > 1e-5, (a, b)
    assert "double 0, 1, 2, 3 (4 layers), guidance pass" in logs["sharpened joint softmax"]  # the default
    assert "double 0, 1, 2, 3 (4 layers) as text softmax," in logs["text softmax"]
    assert "(4 layers) as joint softmax," in logs["joint softmax"]


def test_config_architecture_round_trip():
    flux = tm.TinyModelConfig(architecture="flux")
    back = tm.TinyModelConfig.from_json(flux.to_json())
    assert back == flux and back.flux_axes_dim == (4, 14, 14)
    # A file written before the field existed is the SD1-shaped model.
    old = json.loads(tm.TinyModelConfig().to_json())
    del old["architecture"]
    assert tm.TinyModelConfig.from_json(json.dumps(old)).architecture == "unet"
    old["architecture"] = "sdxl"
    with pytest.raises(ValueError, match="architecture 'sdxl'"):
        tm.TinyModelConfig.from_json(json.dumps(old))
