"""KSampler (AI-T2I): the whole method in one node, for graphs without custom sampling."""
from __future__ import annotations

import comfy.samplers

from .attention_maps import before_after_tiles
from .host.attention import PATCH_KEY, install_hooks
from .host.sampling import sample_with_guidance
from .options import ADVANCED_INPUTS, GUIDANCE_INPUTS, settings_from_inputs


class AIT2IKSampler:
    DESCRIPTION = ("KSampler with AI-T2I guidance built in: patches the model if needed, guides the early steps, "
                   "and returns the attention maps of the last guided step and the loss per guided step.")
    CATEGORY = "sampling/AI-T2I"
    RETURN_TYPES = ("LATENT", "IMAGE", "STRING")
    RETURN_NAMES = ("LATENT", "attention_maps", "loss_log")
    OUTPUT_TOOLTIPS = ("The denoised latent.",
                       "One heatmap per subject (per image) at the first and last guided step.",
                       "The loss terms at every guided step.")
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model (patched here if it did not pass through 'AI-T2I Attention Patch')."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "The random seed for the noise."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 10000, "tooltip": "Denoising steps."}),
            "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale."}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"tooltip": "The sampling algorithm."}),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"tooltip": "The noise schedule."}),
            "positive": ("CONDITIONING", {"tooltip": "From 'AI-T2I Subject Prompt'."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative prompt."}),
            "latent_image": ("LATENT", {"tooltip": "The latent to denoise."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "How much of the schedule to run (1.0 = from pure noise)."}),
            **GUIDANCE_INPUTS,
        }, "optional": {"layers": ADVANCED_INPUTS["layers"]}}

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
               **options):
        if model.model_options.get(PATCH_KEY) is None:
            model = install_hooks(model)
        settings = settings_from_inputs(**options)
        latent, record = sample_with_guidance(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                              latent_image, denoise, settings)
        log_text = record.log_text()
        return {"ui": {"text": [log_text]}, "result": (latent, maps_image(record), log_text)}


def maps_image(record):
    """(N, H, W, 3) heatmaps of the first and last guided step (a black tile when none was guided)."""
    import torch

    if not record or not record.maps:
        return torch.zeros(1, 64, 64, 3)
    keys = sorted(record.maps)
    return before_after_tiles(record, sorted({keys[0], keys[-1]}))[0]
