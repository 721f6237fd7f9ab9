"""The UNet's structure, read in one walk: which cross-attention layers it has (and at
which resolution), and how much of its forward's work lies before each of them.

`unet_parts` walks a ComfyUI UNetModel (openaimodel: SD1.x, SD2.x, SDXL) in execution
order: input blocks, middle block, output blocks, then the output layers, following the
resolution through every down- and up-sampling. The layer list (`cross_attention_layers`,
what 'AI-T2I Attention Patch' hooks) and the work estimate (`unet_work`, what the layer
set "auto" weighs) are both read from it, so they cannot disagree on where a layer sits.
It reads shapes only, so it works on any device, dtype or LoRA-patched copy.

Why the work estimate: the guidance forward stops after the last cross-attention layer the
loss reads, and its backward never goes further. So the cost of a guided step is set by
where that layer sits in the UNet's work, which differs a lot between families: SD1.5's
16x16 up-block layers come after about half of its work, SDXL's (at its deepest level,
behind ten-block transformers and the middle block) after nearly four fifths of it. The
estimate counts multiply-accumulates: weights times positions for every convolution and
projection, plus the self-attention products (2 * positions^2 * width); the text-side
projections count per text token. Checked against torch's FLOP counter on the real forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, UNetModel, Upsample

from ...ai_t2i_attention.layers import Layer, map_size
from .structure import Key, parameter_count as _weights, unsupported


@dataclass(frozen=True)
class UNetPart:
    """One module of the UNet's forward, where the walk meets it.

    module:  the module; a SpatialTransformer is two kinds of part: its norm and
             projections (module: the SpatialTransformer), then each of its blocks
    factor:  the part's output is the latent's size divided by this (rounded up)
    weights: the parameters it applies at every position of its output (a res block's
             time-embedding projection runs once per image: not counted)
    block:   a transformer block: it also attends over its positions
    key:     the block's cross-attention patch key; None where the part has none
    """

    module: torch.nn.Module
    factor: int
    weights: int
    block: bool = False
    key: Optional[Key] = None


def unet_parts(diffusion_model) -> Iterator[UNetPart]:
    """Every part of the UNet's forward, in execution order (see UNetPart)."""
    if not isinstance(diffusion_model, UNetModel):
        raise unsupported(f"this model is a {type(diffusion_model).__name__}")
    blocks = [("input", i, blk) for i, blk in enumerate(diffusion_model.input_blocks)]
    if diffusion_model.middle_block is not None:
        blocks.append(("middle", 0, diffusion_model.middle_block))
    blocks += [("output", i, blk) for i, blk in enumerate(diffusion_model.output_blocks)]
    factor = 1
    for name, idx, blk in blocks:
        for sub in blk:
            if isinstance(sub, SpatialTransformer):
                inner = list(sub.transformer_blocks)
                yield UNetPart(sub, factor, _weights(sub) - sum(_weights(b) for b in inner))
                for t, tb in enumerate(inner):
                    key = (name, idx, t) if getattr(tb, "attn2", None) is not None else None
                    yield UNetPart(tb, factor, _weights(tb), block=True, key=key)
            elif isinstance(sub, (Downsample, Upsample)):
                factor = factor * 2 if isinstance(sub, Downsample) else factor // 2
                yield UNetPart(sub, factor, _weights(sub))
            else:  # res blocks and the input convolution
                emb = getattr(sub, "emb_layers", None)
                yield UNetPart(sub, factor, _weights(sub) - (_weights(emb) if emb is not None else 0))
    yield UNetPart(diffusion_model.out, 1, _weights(diffusion_model.out))


def cross_attention_layers(diffusion_model) -> list[Layer]:
    """All attn2 layers of a ComfyUI UNetModel in execution order, with their factor."""
    layers = [Layer(part.key, part.factor) for part in unet_parts(diffusion_model) if part.key is not None]
    if not layers:
        raise unsupported("this UNet has no cross-attention layers, so there are no subject maps to guide")
    return layers


def unet_work(diffusion_model, latent_hw: tuple[int, int], text_tokens: int = 77) -> list[tuple[Optional[Key], float]]:
    """(key, work) for every part of the UNet's forward at latent size (h, w) with a text
    context of text_tokens, in execution order: key is the patch key of a transformer
    block's cross-attention, None elsewhere."""
    items: list[tuple[Optional[Key], float]] = []
    for part in unet_parts(diffusion_model):
        h, w = map_size(latent_hw, part.factor)
        n = h * w
        work = part.weights * n
        if part.block:  # self-attention: QK^T and the weighted sum of values, width each
            work += 2 * n * n * part.module.attn1.to_q.weight.shape[0]
            if part.key is not None:
                # keys and values are projections of the text tokens, not of the image positions
                attn2 = part.module.attn2
                work += (_weights(attn2.to_k) + _weights(attn2.to_v)) * (text_tokens - n)
        items.append((part.key, work))
    return items
