"""The joint-attention hooks of a DiT (SD3/SD3.5, Flux.1): `dit` block replace patches that
name the block running for the guidance pass, and the guidance pass's attention override
that records each read block's image-to-text probabilities.

Why two pieces. Both families compute each block's attention with the host's
optimized_attention on [text, image] (Flux: after RoPE, inside flux.math.attention), and
hand it to transformer_options["optimized_attention_override"] when one is set: that is
where q and k can be read, with no copy of the model's code. But SD3's MMDiT does not say
in transformer_options which block is running, and both families honour block replace
patches (patches_replace["dit"][("double_block", i)], Flux also ("single_block", i)). So
the patch node installs a pass-through patch on every block; only when a guidance pass put
its recorder in transformer_options does the patch run the block with a copy of them that
names it (BLOCK_KEY), which the override reads. Every other forward (the CFG passes) goes
straight to the block the patch wraps: the host's own code and values.

Which module changes with what: this file with the host's block-patch and override
interfaces; the families' structure in mmdit.py; the guidance forward in guidance_pass.py.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from comfy.ldm.modules.attention import get_attention_function

from ...ai_t2i_attention import joint_attention_probabilities
from ...ai_t2i_attention.layers import Layer
from .attention import PATCH_KEY, RECORDER_KEY, StopGuidanceForward
from .mmdit import SLOTS, joint_attention_layers

# Keys the guidance pass (or the block patch, in its copy) puts in transformer_options.
BLOCK_KEY = "ai_t2i_block"  # the layer key of the block running (the block patch's copy only)
LAYOUT_KEY = "ai_t2i_joint_layout"  # a JointLayout: where the text and image tokens sit
RUN_BLOCK_KEY = "ai_t2i_run_block"  # run_block(key, args) for families whose patched blocks are checkpointed


@dataclass(frozen=True)
class JointLayout:
    """Where a guidance pass's tokens sit in each joint attention's sequence.

    text:  (first, stop) columns of the context's tokens (SD3: after its registers)
    image: (first, stop) rows of the latent's patch grid (Flux Kontext's reference tokens
           come after them and stay keys only)
    grid:  (h, w) of the patch grid
    """

    text: tuple[int, int]
    image: tuple[int, int]
    grid: tuple[int, int]


def slot(key) -> tuple[str, int]:
    """The host's block-replace slot of a layer key: ("double", 3, 0) -> ("double_block", 3)."""
    return SLOTS[key[0]], key[1]


@contextmanager
def keep_saved_streams(streams: Sequence[torch.Tensor]):
    """Autograd keeps copies, not the tensors, of what the block saves from its token streams.

    Flux's blocks add to their token streams in place (img += ..., x += ...) after a norm has
    saved the same tensor for backward, which would make the guidance pass's backward fail.
    Inside this context a saved tensor sharing storage with one of `streams` (B, L, D) is
    cloned when saved; values and the forward are unchanged, and only those few tensors are
    copied (weights and other activations are kept as they are)."""
    storages = {t.untyped_storage().data_ptr() for t in streams}

    def pack(t: torch.Tensor):
        return t.clone() if t.untyped_storage().data_ptr() in storages else t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield


class JointBlockHook:
    """`dit` block replace patch. Pass-through unless a guidance pass put a recorder in
    transformer_options; then it runs the block with a copy of them naming it (BLOCK_KEY),
    with its token streams' saved tensors copied (keep_saved_streams), and, for a family
    whose patched blocks the host checkpoints, through the guidance pass's RUN_BLOCK_KEY.
    It wraps whatever patch held its slot before (another pack's), which then runs too."""

    def __init__(self, key, wrapped=None):
        self.key = key
        self.wrapped = wrapped

    def __call__(self, args: dict, extra: dict) -> dict:
        to = args.get("transformer_options") or {}
        if to.get(RECORDER_KEY) is not None:
            args = {**args, "transformer_options": {**to, BLOCK_KEY: self.key}}
            run: Optional[Callable] = to.get(RUN_BLOCK_KEY)
            if run is not None:
                extra = {**extra, "original_block": lambda a: run(self.key, a)}
            streams = [t for t in (args.get("img"), args.get("txt")) if isinstance(t, torch.Tensor)]
            with keep_saved_streams(streams):
                return self._run(args, extra)
        return self._run(args, extra)

    def _run(self, args: dict, extra: dict) -> dict:
        if self.wrapped is not None:
            return self.wrapped(args, extra)
        return extra["original_block"](args)


class JointAttentionOverride:
    """optimized_attention_override of a DiT's guidance pass (its copy of the options only).

    In a block the recorder wants, the call whose queries cover the whole joint sequence
    (not SD3.5's image-only second attention) is recorded: softmax(QK^T / sqrt(d)) of the
    image queries over all keys, head-averaged, the text columns kept -> (B, h*w, T) at
    the patch grid. After the last wanted block it ends the forward (stop_early). The
    output is the host's: its PyTorch attention (fused: a differentiable kernel with a
    cheap backward, whatever override another pack set) or, unfused, the override that
    was set before (else the host's default kernel)."""

    def __init__(self, previous: Optional[Callable] = None, fused: bool = True):
        self.previous = previous
        self.fused = fused

    def __call__(self, func, *args, **kwargs):
        to = kwargs.get("transformer_options") or {}
        key, recorder, layout = to.get(BLOCK_KEY), to.get(RECORDER_KEY), to.get(LAYOUT_KEY)
        if key is not None and recorder is not None and layout is not None and recorder.wants(key):
            q, k = _heads_first(args, kwargs)
            if q.shape[2] >= layout.image[1]:
                mask = kwargs.get("mask")
                if mask is not None and mask.ndim == 3:  # (B, L, L): one mask for all heads
                    mask = mask.unsqueeze(1)
                probs = joint_attention_probabilities(q, k, layout.image, layout.text, mask)
                recorder.record_probabilities(key, probs, layout.grid)
                if recorder.complete and recorder.stop_early:
                    raise StopGuidanceForward()
        if self.fused:
            return get_attention_function("pytorch", func)(*args, **kwargs)
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)


def _heads_first(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k of an optimized_attention call as (B, heads, L, d): Flux passes them so
    (skip_reshape), SD3 as (B, L, heads * d)."""
    q, k = args[0], args[1]
    if kwargs.get("skip_reshape", False):
        return q, k
    heads = kwargs["heads"] if "heads" in kwargs else args[3]
    b = q.shape[0]
    return (q.reshape(b, q.shape[1], heads, -1).transpose(1, 2), k.reshape(b, k.shape[1], heads, -1).transpose(1, 2))


def install_joint_hooks(model_patcher):
    """A clone of model_patcher with a JointBlockHook on every block of its DiT; a patch
    already in a block's slot is wrapped, not replaced."""
    layers = joint_attention_layers(model_patcher.model)
    m = model_patcher.clone()
    existing = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for layer in layers:
        name, index = slot(layer.key)
        m.set_model_patch_replace(JointBlockHook(layer.key, existing.get((name, index))), "dit", name, index)
    m.model_options[PATCH_KEY] = tuple(layers)
    return m


def joint_guidance_options(model_options: dict, recorder, layout: JointLayout, hooked: Sequence[Layer],
                           run_block: Optional[Callable] = None, fused_attention: bool = True) -> dict:
    """A copy of model_options for a DiT's guidance pass: the recorder, the token layout,
    the recording attention override and, for checkpointed families, run_block.

    Where another pack's block patch took a hooked slot after 'AI-T2I Attention Patch', it is
    wrapped in a hook of its own here, in the copy only, so the block is still named (and
    its streams' saved tensors kept) and both run."""
    mo = dict(model_options)
    to = dict(mo.get("transformer_options", {}))
    replace = dict(to.get("patches_replace", {}))
    dit = dict(replace.get("dit", {}))
    displaced = [l.key for l in hooked if not isinstance(dit.get(slot(l.key)), JointBlockHook)]
    for key in displaced:
        dit[slot(key)] = JointBlockHook(key, dit.get(slot(key)))
    if displaced:
        replace["dit"] = dit
        to["patches_replace"] = replace
    to[RECORDER_KEY] = recorder
    to[LAYOUT_KEY] = layout
    if run_block is not None:
        to[RUN_BLOCK_KEY] = run_block
    to["optimized_attention_override"] = JointAttentionOverride(to.get("optimized_attention_override"), fused_attention)
    mo["transformer_options"] = to
    return mo
