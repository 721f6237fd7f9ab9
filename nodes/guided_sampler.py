"""AI-T2I Guided Sampler: a SAMPLER for SamplerCustom that wraps any k-diffusion sampler."""
from __future__ import annotations

from comfy_api.latest import io

from .host.sampling import GuidedSampler
from .options import advanced_inputs, guidance_inputs, settings_from_inputs


class AIT2IGuidedSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIT2IGuidedSampler",
            display_name="AI-T2I Guided Sampler",
            category="sampling/custom_sampling/samplers",
            description=("Wraps a sampler (from KSamplerSelect) so that, at the chosen early steps, the latent is "
                         "moved to keep each subject in one place and the subjects apart (AI-T2I). Use with "
                         "SamplerCustom or SamplerCustomAdvanced, a model from 'AI-T2I Attention Patch' and a "
                         "positive prompt from 'AI-T2I Subject Prompt'."),
            inputs=[io.Sampler.Input("sampler", tooltip="The base sampler, e.g. from KSamplerSelect."),
                    *guidance_inputs(), *advanced_inputs()],
            outputs=[io.Sampler.Output(tooltip="The guided sampler.")],
        )

    @classmethod
    def execute(cls, sampler, **options) -> io.NodeOutput:
        return io.NodeOutput(GuidedSampler(sampler, settings_from_inputs(**options)))
