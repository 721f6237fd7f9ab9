"""The cross-attention hook: ComfyUI attn2 replace patches that record probabilities.

Everything here touches host internals (patch slots, transformer_options); which layers
a UNet has is read from its structure in unet.py.
"""
from __future__ import annotations

from comfy.ldm.modules.attention import get_attention_function, optimized_attention

from ...ai_t2i_attention.layers import Layer
from .unet import cross_attention_layers

# transformer_options key under which a guidance pass hands its recorder to the hooks.
# Only the guidance forward sets it; every other forward runs the hooks as pass-through.
RECORDER_KEY = "ai_t2i_recorder"
# model_options key marking a model patched by this pack (value: the installed hooks).
PATCH_KEY = "ai_t2i_patch"


class StopGuidanceForward(Exception):
    """Raised by the last needed hook: the rest of the network is not needed for the loss."""


class CrossAttentionHook:
    """attn2 replace patch. Pass-through unless a guidance pass put a recorder in
    transformer_options; then it records softmax(QK^T) of layers at the recorder's map
    size. It wraps whatever patch held its slot before (IPAdapter-style packs), so their
    output is kept; the recorded maps are of the text tokens only.
    """

    def __init__(self, key, wrapped=None):
        self.key = key
        self.wrapped = wrapped

    def __call__(self, q, k, v, extra_options):
        recorder = extra_options.get(RECORDER_KEY)
        if recorder is not None and recorder.wants(self.key):
            recorder.record(self.key, q, k, extra_options["n_heads"], extra_options["activations_shape"][-2:])
            if recorder.complete and recorder.stop_early:
                raise StopGuidanceForward()
        if self.wrapped is not None:
            return self.wrapped(q, k, v, extra_options)
        return optimized_attention(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
                                   transformer_options=extra_options)


def differentiable_attention(func, *args, **kwargs):
    """optimized_attention_override for the guidance pass only: the host's own PyTorch
    (scaled-dot-product) attention, whose backward is one fused kernel. The host's default
    elsewhere may have a costly backward (the chunked sub-quadratic attention CPU hosts use
    records every chunk for autograd) or none at all (Sage attention)."""
    return get_attention_function("pytorch", func)(*args, **kwargs)


def install_hooks(model_patcher):
    """A clone of model_patcher with a hook on every cross-attention layer (UNet) or on
    every block (joint-attention models: joint_attention.install_joint_hooks).

    A patch already in a slot (3-key or block-wide 2-key) is wrapped, not replaced.
    Applying twice wraps our own hook; the sampler detects and rejects that.
    """
    from .mmdit import is_dit  # here, not at the top: joint_attention imports this module
    if is_dit(model_patcher.model):
        from .joint_attention import install_joint_hooks
        return install_joint_hooks(model_patcher)
    layers = cross_attention_layers(model_patcher.model.diffusion_model)
    m = model_patcher.clone()
    existing = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for layer in layers:
        name, idx, t = layer.key
        wrapped = existing.get(layer.key) or existing.get((name, idx))
        m.set_model_attn2_replace(CrossAttentionHook(layer.key, wrapped), name, idx, t)
    m.model_options[PATCH_KEY] = tuple(layers)
    return m


def installed_layers(model_options) -> tuple[Layer, ...] | None:
    return model_options.get(PATCH_KEY)
