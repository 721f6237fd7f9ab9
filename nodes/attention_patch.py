"""AI-T2I Attention Patch: hooks the model's cross-attention for the guided sampler."""
from __future__ import annotations

from .host.attention import PATCH_KEY, install_hooks


class AIT2IAttentionPatch:
    DESCRIPTION = ("Hooks cross-attention so the AI-T2I sampler can read each subject's attention map. Outside the "
                   "guidance pass the host's fast attention runs unchanged. Other attention patches (IPAdapter and the "
                   "like) compose in either order: it wraps those before it, and the guidance pass wraps those after.")
    CATEGORY = "model_patches/AI-T2I"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A patched copy of the model; the input model is left as it was.",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "An SD1.x, SD2.x or SDXL model."})}}

    def patch(self, model):
        if model.model_options.get(PATCH_KEY) is not None:
            raise ValueError("this model already passed through an 'AI-T2I Attention Patch' node: remove the second one")
        return (install_hooks(model),)
