"""The UNet's hooks: attn2 replace patches that record a cross-attention layer's
probabilities in a guidance pass, and the guidance pass's own entries for a UNet.

What changes here is what changes when the host changes its attn2 patch interface
(q, k, v after projection and extra_options) or its UNet patch points.
"""
from __future__ import annotations

from comfy.ldm.modules.attention import get_attention_function, optimized_attention
from torch.profiler import record_function

from ...ai_t2i_attention import attention_probabilities
from .keys import RECORDER_KEY, record_layer


class CrossAttentionHook:
    """attn2 replace patch. Pass-through unless a guidance pass put a recorder in
    transformer_options; then it records softmax(QK^T) of the layer, head-averaged over the
    text tokens (B, N, T). It wraps whatever patch held its slot before (IPAdapter-style
    packs), so their output is kept."""

    def __init__(self, key, wrapped=None):
        self.key = key
        self.wrapped = wrapped

    def __call__(self, q, k, v, extra_options):
        recorder = extra_options.get(RECORDER_KEY)
        if recorder is not None and recorder.wants(self.key):
            with record_function("ai_t2i.maps"):
                record_layer(recorder, self.key, attention_probabilities(q, k, extra_options["n_heads"]),
                             extra_options["activations_shape"][-2:])
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


def detach_skip(h, transformer_options):
    """The UNet adds ControlNet residuals to its skip tensors in place, after the middle
    block has saved the same tensor for backward. Handing the next block a copy keeps
    the saved tensor intact (forward values are unchanged)."""
    return h.clone()


def unet_pass_options(to: dict, fused_attention: bool) -> None:
    """A UNet guidance pass's own entries in its copy of transformer_options `to`: the skip
    copy and (fused_attention) the attention kernel with a cheap backward."""
    patches = {k: list(v) for k, v in to.get("patches", {}).items()}
    patches.setdefault("input_block_patch_after_skip", []).append(detach_skip)
    to["patches"] = patches
    if fused_attention:
        # The guidance pass needs attention with a cheap backward. An override another pack set
        # (e.g. Sage attention, which has no backward) only swaps the kernel: it is replaced here.
        to["optimized_attention_override"] = differentiable_attention
