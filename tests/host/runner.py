"""Run the host's own sampling entry point with a (guided) sampler, as SamplerCustom does."""
from __future__ import annotations

import torch

import comfy.sample
import comfy.samplers
from ai_t2i_pack.nodes import options
from ai_t2i_pack.nodes.host import sampling


def settings(pack, **kw):
    args = dict(method="AI-T2I", strength=1.0, start_percent=0.0, end_percent=0.5)
    args.update(kw)
    return options.settings_from_inputs(**args)


def guided_sampler(pack, base="euler", **kw):
    return sampling.GuidedSampler(comfy.samplers.sampler_object(base), settings(pack, **kw))


def encode(pack, clip, text, subjects, attributes=""):
    with torch.inference_mode():
        return pack.nodes.AIT2ISubjectPrompt.execute(clip=clip, text=text, subjects=subjects,
                                                     attributes=attributes).result[0]


def plain(clip, text=""):
    with torch.inference_mode():
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def patch(pack, model):
    with torch.inference_mode():
        return pack.nodes.AIT2IAttentionPatch.execute(model=model).result[0]


def run(model, sampler, positive, negative, size=16, steps=4, seed=1, batch=1, sigmas=None, cfg=5.0):
    """Sample a (batch, 4, size, size) latent from seeded noise. Returns the latent."""
    if sigmas is None:
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
    latent = torch.zeros(batch, 4, size, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    with torch.inference_mode():
        return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent, seed=seed,
                                          disable_pbar=True)


def options_snapshot(obj):
    """The structure of model_options with leaves by identity: any in-place change shows."""
    if isinstance(obj, dict):
        return {k: options_snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(options_snapshot(v) for v in obj))
    return ("leaf", id(obj))
