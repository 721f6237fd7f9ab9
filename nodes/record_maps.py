"""AI-T2I Record Maps After Guidance: opt-in 'after' attention maps for the previews."""
from __future__ import annotations

from dataclasses import replace

from .host.sampling import GuidedSampler


class AIT2IRecordMapsAfter:
    DESCRIPTION = ("Makes an AI-T2I Guided Sampler also record each guided step's attention maps AFTER its update "
                   "(besides the maps before it), so 'AI-T2I Attention Maps' shows before and after side by side. "
                   "Costs one extra forward of the prompt's branch per guided step, without gradients and stopped "
                   "after the last attention layer read; without this node nothing extra is computed.")
    CATEGORY = "sampling/custom_sampling/samplers"
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("The same guided sampler, recording maps before and after each update.",)
    FUNCTION = "record"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sampler": ("SAMPLER", {"tooltip": "The 'AI-T2I Guided Sampler' to record from."})}}

    def record(self, sampler):
        if not isinstance(sampler, GuidedSampler):
            raise ValueError("sampler is not an 'AI-T2I Guided Sampler': connect the Guided Sampler's output here, "
                             "then this node's output to SamplerCustom and to 'AI-T2I Attention Maps'")
        return (GuidedSampler(sampler.base, replace(sampler.settings, keep_maps=True, keep_maps_after=True)),)
