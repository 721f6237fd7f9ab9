"""AI-T2I Attention Patch: hooks the model's cross-attention for the guided sampler."""
from __future__ import annotations

from comfy_api.latest import io

from .host.families import hooked_layers, install_hooks


class AIT2IAttentionPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AIT2IAttentionPatch",
            display_name="AI-T2I Attention Patch",
            category="model_patches/AI-T2I",
            description=("Hooks cross-attention (UNet models) or every joint-attention block (SD3/SD3.5, Flux.1) so "
                         "the AI-T2I sampler can read each subject's attention map. Outside the guidance pass the "
                         "host's own code and fast attention run unchanged. Other attention and block patches "
                         "(IPAdapter and the like) compose in either order: it wraps those before it, and the "
                         "guidance pass wraps those after."),
            inputs=[io.Model.Input("model", tooltip=(
                "An SD1.x, SD2.x or SDXL model, or a joint-attention model: SD3/SD3.5 (MMDiT) or Flux.1 (dev, "
                "schnell). On SD3/Flux the maps are the image tokens' joint-attention probabilities on the text "
                "tokens, average-pooled to about 16x16."))],
            outputs=[io.Model.Output(tooltip="A patched copy of the model; the input model is left as it was.")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        if hooked_layers(model.model_options) is not None:
            raise ValueError("this model already passed through an 'AI-T2I Attention Patch' node: remove the second one")
        return io.NodeOutput(install_hooks(model))
