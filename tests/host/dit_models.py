"""Tiny random-weight joint-attention host models (SD3, SD3.5 Medium, Flux.1) and their
conditioning made as tensors, shared by the DiT tests (test_dit, test_dit_hooks,
test_guidance_pass). Plumbing only: random weights say nothing of how well guidance works
on real SD3/Flux."""
from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers
from ai_t2i_pack import ai_t2i_attention as engine
from ai_t2i_pack.nodes.host import conditioning, guidance_pass

T = 12  # text tokens of the test context
SUBJECTS = ((2,), (5, 6))  # the subjects' context columns (the second spans two tokens)
LATENT = 32  # 32x32 latent: a 16x16 patch grid

# kind -> (builders -> (MODEL, width of its pooled text vector))
KINDS = {
    "sd3": lambda b: (b.sd3_model(depth=2, blocks=3), 2048),
    "sd35m": lambda b: (b.sd3_model(depth=2, blocks=3, qk_norm="rms", x_block_self_attn_layers=(0, 1)), 2048),
    "flux": lambda b: (b.flux_model(width=64, heads=2, double=2, single=2), 768),
}


def conds(pooled: int, seed: int = 0):
    """(positive with subjects, negative) made directly as tensors: context (1, T, 4096)."""
    g = torch.Generator().manual_seed(seed)
    groups = engine.TokenGroups(SUBJECTS, (), tuple(range(T)))
    spec = engine.ResolvedSubjects("a cat and a teddy bear", ("cat", "teddy bear"), (), groups)
    pos = [[torch.randn(1, T, 4096, generator=g),
            {"pooled_output": torch.randn(1, pooled, generator=g), conditioning.SUBJECTS_KEY: spec}]]
    neg = [[torch.randn(1, T, 4096, generator=g) * 0.1, {"pooled_output": torch.zeros(1, pooled)}]]
    return pos, neg


def sample(model, sampler, pos, neg, steps=4, seed=1, callback=None, cfg=3.0):
    """A (1, 16, LATENT, LATENT) latent sampled from seeded noise through the host's sample_custom."""
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)
    latent = torch.zeros(1, 16, LATENT, LATENT)
    noise = comfy.sample.prepare_noise(latent, seed)
    with torch.inference_mode():
        return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, pos, neg, latent, seed=seed,
                                          callback=callback, disable_pbar=True)


class Probe(comfy.samplers.Sampler):
    """A SAMPLER that hands the host's guider (conditioning processed as for sampling) to a
    test function instead of sampling."""

    def __init__(self, fn):
        self.fn = fn

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        with torch.inference_mode(False):
            self.fn(model_wrap, sigmas, extra_args["model_options"], noise.clone())
        return noise


def make_guidance_pass(guider, fused=True, stop_early=True, joint_keys="all"):
    """The guidance pass of the guider's model on its prompt's subject entry."""
    entry, _ = conditioning.subject_entry(guider.conds)
    return guidance_pass.GuidancePass(guider, entry, guidance_pass.patched_layers(guider.model_options), stop_early,
                                      fused, joint_keys)
