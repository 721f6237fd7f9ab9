"""How much of the UNet's work a guidance pass needs, estimated from the UNet's structure.

The guidance forward stops after the last cross-attention layer the loss reads, and its
backward never goes further. So the cost of a guided step is set by where that layer sits
in the UNet's work, which differs a lot between families: SD1.5's 16x16 up-block layers
come after about half of its work, SDXL's (at its deepest level, behind ten-block
transformers and the middle block) after nearly four fifths of it. The estimate counts
multiply-accumulates: weights times positions for every convolution and projection, plus
the self-attention products (2 * positions^2 * width); the text-side projections count per
text token. Checked against torch's FLOP counter on the real forward. It reads shapes only, so it works
on any device, dtype or LoRA-patched copy.
"""
from __future__ import annotations

from typing import Iterable, Optional

from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, Upsample

Key = tuple[str, int, int]


def _weights(module) -> int:
    return sum(p.numel() for p in module.parameters())


def unet_work(diffusion_model, latent_hw: tuple[int, int], text_tokens: int = 77) -> list[tuple[Optional[Key], float]]:
    """(key, work) for every step of the UNet's forward at latent size (h, w) with a text
    context of text_tokens, in execution order: key is the patch key of a transformer
    block's cross-attention, None elsewhere."""
    h, w = latent_hw
    items: list[tuple[Optional[Key], float]] = []

    def positions(factor: int) -> int:
        return -(-h // factor) * -(-w // factor)  # each down-sampling rounds up

    def scan(name: str, idx: int, block, factor: int) -> int:
        for sub in block:
            n = positions(factor)
            if isinstance(sub, SpatialTransformer):
                blocks = list(sub.transformer_blocks)
                items.append((None, (_weights(sub) - sum(_weights(b) for b in blocks)) * n))  # norm, proj in/out
                for t, blk in enumerate(blocks):
                    work = _weights(blk) * n + 2 * n * n * blk.attn1.to_q.weight.shape[0]
                    if getattr(blk, "attn2", None) is not None:
                        # keys and values are projections of the text tokens, not of the image positions
                        work += (_weights(blk.attn2.to_k) + _weights(blk.attn2.to_v)) * (text_tokens - n)
                    items.append(((name, idx, t) if getattr(blk, "attn2", None) is not None else None, work))
            elif isinstance(sub, Downsample):
                factor *= 2
                items.append((None, _weights(sub) * positions(factor)))
            elif isinstance(sub, Upsample):
                factor //= 2
                items.append((None, _weights(sub) * positions(factor)))
            else:  # res blocks (their time-embedding projection runs once, not per position)
                emb = getattr(sub, "emb_layers", None)
                items.append((None, (_weights(sub) - (_weights(emb) if emb is not None else 0)) * n))
        return factor

    factor = 1
    for i, blk in enumerate(diffusion_model.input_blocks):
        factor = scan("input", i, blk, factor)
    if diffusion_model.middle_block is not None:
        factor = scan("middle", 0, diffusion_model.middle_block, factor)
    for i, blk in enumerate(diffusion_model.output_blocks):
        factor = scan("output", i, blk, factor)
    items.append((None, _weights(diffusion_model.out) * positions(1)))
    return items


def work_until(items: list[tuple[Optional[Key], float]], keys: Iterable[Key]) -> float:
    """Fraction of the forward's work done when the last of `keys` has run (0..1)."""
    keys = set(keys)
    total = sum(w for _, w in items)
    done = last = 0.0
    for key, w in items:
        done += w
        if key in keys:
            last = done
    return last / total if total else 1.0
