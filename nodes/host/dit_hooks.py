"""The DiT's hooks (SD3/SD3.5, Flux.1): `dit` block replace patches that name the block
running for the guidance pass, and the guidance pass's attention override that records each
read block's image-to-text probabilities.

Why two pieces. Both kinds compute each block's attention with the host's
optimized_attention on [text, image] (Flux: after RoPE, inside flux.math.attention), and
hand it to transformer_options["optimized_attention_override"] when one is set: that is
where q and k can be read, with no copy of the model's code. But SD3's MMDiT does not say
in transformer_options which block is running, and both kinds honour block replace
patches (patches_replace["dit"][("double_block", i)], Flux also ("single_block", i)). So
the patch node installs a pass-through patch on every block; only when a guidance pass put
its recorder in transformer_options does the patch run the block with a copy of them that
names it (BLOCK_KEY), which the override reads. Every other forward (the CFG passes) goes
straight to the block the patch wraps: the host's own code and values.

What changes here is what changes when the host changes its block-patch and override
interfaces; the DiTs' structure is in dit.py.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from comfy.ldm.modules.attention import get_attention_function
from torch.profiler import record_function

from ...ai_t2i_attention.joint_maps import joint_map_probabilities
from .keys import BLOCK_KEY, JOINT_LAYOUT_KEY, RECORDER_KEY, RUN_BLOCK_KEY, record_layer


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
    image queries over all keys (keys "all"; "text": over the text keys alone), head-averaged,
    the text columns kept -> (B, h*w, T) at the patch grid. After the last wanted block it ends the forward (stop_early). The
    output is the host's: its PyTorch attention (fused: a differentiable kernel with a
    cheap backward, whatever override another pack set) or, unfused, the override that
    was set before (else the host's default kernel)."""

    def __init__(self, previous: Optional[Callable] = None, fused: bool = True, keys: str = "all"):
        self.previous = previous
        self.fused = fused
        self.keys = keys  # the map's softmax: over "all" keys (the attention's own) or the "text" keys

    def __call__(self, func, *args, **kwargs):
        to = kwargs.get("transformer_options") or {}
        key, recorder, layout = to.get(BLOCK_KEY), to.get(RECORDER_KEY), to.get(JOINT_LAYOUT_KEY)
        if key is not None and recorder is not None and layout is not None and recorder.wants(key):
            q, k = _heads_first(args, kwargs)
            if q.shape[2] >= layout.image[1]:
                mask = kwargs.get("mask")
                if mask is not None and mask.ndim == 3:  # (B, L, L): one mask for all heads
                    mask = mask.unsqueeze(1)
                with record_function("ai_t2i.maps"):
                    record_layer(recorder, key, joint_map_probabilities(self.keys, q, k, layout.image, layout.text, mask),
                                 layout.grid)
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


def dit_pass_options(to: dict, layout: JointLayout, run_block: Optional[Callable], fused_attention: bool,
                     joint_keys: str = "all") -> None:
    """A DiT guidance pass's own entries in its copy of transformer_options `to`: the token
    layout, the recording attention override (its maps a softmax over `joint_keys`, "all" or
    "text") and, for checkpointed kinds, run_block."""
    to[JOINT_LAYOUT_KEY] = layout
    if run_block is not None:
        to[RUN_BLOCK_KEY] = run_block
    to["optimized_attention_override"] = JointAttentionOverride(to.get("optimized_attention_override"), fused_attention,
                                                               joint_keys)
