"""AI-T2I Record Maps After Guidance: opt-in 'after' attention maps for the previews."""
from __future__ import annotations

from dataclasses import replace

from comfy_api.latest import io

from .host.sampling import GuidedSampler


class AIT2IRecordMapsAfter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIT2IRecordMapsAfter",
            display_name="AI-T2I Record Maps After Guidance",
            category="sampling/custom_sampling/samplers",
            description=("Makes an AI-T2I Guided Sampler also record each guided step's attention maps AFTER its "
                         "update (besides the maps before it), so 'AI-T2I Attention Maps' shows before and after "
                         "side by side. Costs one extra forward of the prompt's branch per guided step, without "
                         "gradients and stopped after the last attention layer read; without this node nothing "
                         "extra is computed."),
            inputs=[io.Sampler.Input("sampler", tooltip="The 'AI-T2I Guided Sampler' to record from.")],
            outputs=[io.Sampler.Output(tooltip="The same guided sampler, recording maps before and after each update.")],
        )

    @classmethod
    def execute(cls, sampler) -> io.NodeOutput:
        if not isinstance(sampler, GuidedSampler):
            raise ValueError("sampler is not an 'AI-T2I Guided Sampler': connect the Guided Sampler's output here, "
                             "then this node's output to SamplerCustom and to 'AI-T2I Attention Maps'")
        return io.NodeOutput(GuidedSampler(sampler.base, replace(sampler.settings, keep_maps=True,
                                                                 keep_maps_after=True)))
