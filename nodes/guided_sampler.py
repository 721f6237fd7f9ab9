"""AI-T2I Guided Sampler: a SAMPLER for SamplerCustom that wraps any k-diffusion sampler."""
from __future__ import annotations

from .host.sampling import GuidedSampler
from .options import ADVANCED_INPUTS, GUIDANCE_INPUTS, settings_from_inputs


class AIT2IGuidedSampler:
    DESCRIPTION = ("Wraps a sampler (from KSamplerSelect) so that, at the chosen early steps, the latent is moved to "
                   "keep each subject in one place and the subjects apart (AI-T2I). Use with SamplerCustom or "
                   "SamplerCustomAdvanced, a model from 'AI-T2I Attention Patch' and a positive prompt from "
                   "'AI-T2I Subject Prompt'.")
    CATEGORY = "sampling/custom_sampling/samplers"
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("The guided sampler.",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sampler": ("SAMPLER", {"tooltip": "The base sampler, e.g. from KSamplerSelect."}),
                             **GUIDANCE_INPUTS, **ADVANCED_INPUTS}}

    def get_sampler(self, sampler, **options):
        return (GuidedSampler(sampler, settings_from_inputs(**options)),)
