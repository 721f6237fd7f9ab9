"""KSampler (AI-T2I): the whole method in one node, for graphs without custom sampling."""
from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..ai_t2i_attention.preview import before_after_tiles
from .host.families import hooked_layers, install_hooks
from .host.sampling import sample_with_guidance
from .options import guidance_inputs, joint_map_input, layers_input, settings_from_inputs
from .preview_notice import unguided_tile


class AIT2IKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIT2IKSampler",
            display_name="KSampler (AI-T2I)",
            category="sampling/AI-T2I",
            description=("KSampler with AI-T2I guidance built in: patches the model if needed, guides the early "
                         "steps, and returns the attention maps of the last guided step and the loss per guided "
                         "step."),
            inputs=[
                io.Model.Input("model", tooltip=(
                    "The model (patched here if it did not pass through 'AI-T2I Attention Patch').")),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The random seed for the noise."),
                io.Int.Input("steps", default=50, min=1, max=10000, tooltip="Denoising steps."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS,
                               tooltip="The sampling algorithm."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, tooltip="The noise schedule."),
                io.Conditioning.Input("positive", tooltip="From 'AI-T2I Subject Prompt'."),
                io.Conditioning.Input("negative", tooltip="The negative prompt."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the schedule to run (1.0 = from pure noise)."),
                *guidance_inputs(),
                layers_input(optional=True),
                joint_map_input(optional=True),
            ],
            outputs=[
                io.Latent.Output(tooltip="The denoised latent."),
                io.Image.Output(display_name="attention_maps", tooltip=(
                    "One heatmap per subject (per image) at the first and last guided step; at strength 0 (or a range "
                    "without steps) one tile saying no step was guided.")),
                io.String.Output(display_name="loss_log", tooltip="The loss terms at every guided step."),
            ],
        )

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                **options) -> io.NodeOutput:
        if hooked_layers(model.model_options) is None:
            model = install_hooks(model)
        settings = settings_from_inputs(**options)
        latent, record = sample_with_guidance(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                              latent_image, denoise, settings)
        log_text = record.log_text()
        return io.NodeOutput(latent, maps_image(record), log_text, ui={"text": [log_text]})


def maps_image(record):
    """(N, H, W, 3) heatmaps of the first and last guided step; for a run that guided none,
    one tile saying why (as AI-T2I Attention Maps shows it)."""
    if not record.maps:
        return unguided_tile(record)
    keys = sorted(record.maps)
    return before_after_tiles(record, sorted({keys[0], keys[-1]}))[0]
