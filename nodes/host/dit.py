"""A joint-attention model's (DiT's) structure, read in one walk: which kind it is, its
blocks in execution order (the layers the patch node hooks) and how much of its forward's
work lies before each of them.

What changes here is what changes when the host changes a DiT's structure (its model
classes, block lists, per-token and per-image weights, registers). The hooks are in
dit_hooks.py; families.py puts both together for the guidance pass.

Kinds: SD3/SD3.5 (comfy.model_base.SD3 around the host's MMDiT: joint blocks only, the
text tokens first in each joint attention, after `register_length` learnt registers) and
Flux.1 (comfy.model_base.Flux around the host's Flux: double-stream blocks, then
single-stream blocks over [text, image]; dev, schnell, Fill and Kontext share that class).
Flux.2 and Chroma reuse the Flux classes with another text encoder and modulation and are
refused by name. Every block sees the latent's patch grid, so each layer's factor is the
patch size (the level policy pools from there: ai_t2i_attention/layers.py).

Why the work estimate: the guidance forward stops after the last block the loss reads and
its backward goes no further, so the cost of a guided step is the share of the forward up
to that block. It counts multiply-accumulates: the weights applied to every token (image
tokens through the image-side weights, text tokens through the text-side ones, both through
a single-stream block's), plus the attention products 2 * L^2 * width of every attention
over L tokens. Weights applied once per image (time/pooled-text embedders, the adaptive
norms' modulation) are left out. Checked against torch's FLOP counter on the real forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import comfy.model_base
from comfy.ldm.flux.model import Flux
from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

from ...ai_t2i_attention.layers import Layer, map_size
from .structure import Key, parameter_count as _weights, unsupported

# The host's block-replace slot names for each part of a DiT.
SLOTS = {"double": "double_block", "single": "single_block"}


@dataclass(frozen=True)
class DiTKind:
    """What a guidance pass needs to know of a DiT model, besides its blocks.

    name:       "SD3" or "Flux", for messages
    patch:      the patch size: every block's grid is the latent / patch (rounded up)
    registers:  learnt tokens the model puts before the text in the joint sequence (SD3's
                register_length; 0 for the released models): the context's first column
                sits there in each joint attention
    checkpointed: the host runs a block reached through a replace patch under activation
                checkpointing (SD3's JointBlock), which would rerun the hooks in the
                backward: the guidance pass then runs those blocks directly (run_block)
    """

    name: str
    patch: int
    registers: int = 0
    checkpointed: bool = False


def is_dit(model) -> bool:
    """Whether the host model (comfy.model_base.BaseModel) is of a joint-attention class this
    pack knows by type, supported or refused (see dit_kind)."""
    return isinstance(model, (comfy.model_base.SD3, comfy.model_base.Flux))


def dit_kind(model) -> DiTKind:
    """The kind of a DiT host model (comfy.model_base.BaseModel). Raises UnsupportedModel,
    naming what is supported, for every other joint-attention model."""
    dm = model.diffusion_model
    if type(model) is comfy.model_base.SD3 and isinstance(dm, MMDiT):
        return DiTKind("SD3", dm.patch_size, dm.register_length, checkpointed=True)
    if type(model) is comfy.model_base.Flux and isinstance(dm, Flux):
        return DiTKind("Flux", dm.patch_size)
    raise unsupported(f"this model is a {type(model).__name__} ({type(dm).__name__}), whose text encoder and "
                      "blocks it does not map")


@dataclass(frozen=True)
class DiTPart:
    """One step of a DiT's forward, where the walk meets it.

    key:          the block's layer key; None for the input and output layers
    image, text:  weights applied to every image / text token (a single-stream block's
                  apply to both: counted in each)
    joint_width:  width of its attention over the whole [text, image] sequence (0: none)
    image_width:  width of a further attention over the image tokens alone (SD3.5's
                  MMDiT-X blocks; 0: none)
    """

    key: Optional[Key]
    image: int = 0
    text: int = 0
    joint_width: int = 0
    image_width: int = 0


def _mmdit_parts(dm: MMDiT) -> Iterator[DiTPart]:
    yield DiTPart(None, image=_weights(dm.x_embedder), text=_weights(dm.context_embedder))
    for i, block in enumerate(dm.joint_blocks):
        ctx, x = block.context_block, block.x_block
        image_width = x.attn2.qkv.out_features // 3 if x.x_block_self_attn else 0
        yield DiTPart(("double", i, 0), image=_weights(x) - _weights(x.adaLN_modulation),
                      text=_weights(ctx) - _weights(ctx.adaLN_modulation),
                      joint_width=x.attn.qkv.out_features // 3, image_width=image_width)
    yield DiTPart(None, image=_weights(dm.final_layer.linear))


def _flux_parts(dm: Flux) -> Iterator[DiTPart]:
    yield DiTPart(None, image=_weights(dm.img_in), text=_weights(dm.txt_in))
    for i, block in enumerate(dm.double_blocks):
        mods = (getattr(block, "img_mod", None), getattr(block, "txt_mod", None))
        image = _weights(block.img_attn, block.img_mlp)
        text = _weights(block) - image - _weights(*mods)
        yield DiTPart(("double", i, 0), image=image, text=text, joint_width=block.hidden_size)
    for i, block in enumerate(dm.single_blocks):
        w = _weights(block) - _weights(block.modulation)
        yield DiTPart(("single", i, 0), image=w, text=w, joint_width=block.hidden_size)
    yield DiTPart(None, image=_weights(dm.final_layer.linear))


def dit_parts(model) -> Iterator[DiTPart]:
    """Every part of the host model's DiT forward, in execution order (see DiTPart)."""
    kind = dit_kind(model)
    dm = model.diffusion_model
    return _mmdit_parts(dm) if kind.name == "SD3" else _flux_parts(dm)


def dit_layers(model) -> list[Layer]:
    """The blocks of a DiT host model whose joint attention can be read, in execution order;
    factor: the patch size (every block sees the patch grid), pool: the maps may be pooled."""
    patch = dit_kind(model).patch
    return [Layer(p.key, patch, pool=True) for p in dit_parts(model) if p.key is not None]


def dit_work(model, latent_hw: tuple[int, int], text_tokens: int) -> list[tuple[Optional[Key], float]]:
    """(key, work) for every part of the DiT's forward at latent size (h, w) with a text
    context of text_tokens tokens, in execution order (see the module docstring)."""
    kind = dit_kind(model)
    h, w = map_size(latent_hw, kind.patch)
    n = h * w
    t = text_tokens + kind.registers
    items = []
    for part in dit_parts(model):
        work = part.image * n + part.text * t
        work += 2 * (n + t) ** 2 * part.joint_width + 2 * n * n * part.image_width
        items.append((part.key, float(work)))
    return items


def run_block(model, key: Key, args: dict) -> dict:
    """Run block `key` of a checkpointed family (SD3) on a replace patch's args, as the host's
    own forward runs an unpatched block, without activation checkpointing: its rerun in the
    backward would call the guidance hooks a second time. Returns {"txt", "img"}."""
    block = model.diffusion_model.joint_blocks[key[1]]
    txt, img = block(args["txt"], args["img"], c=args["vec"], use_checkpoint=False,
                     transformer_options=args["transformer_options"])
    return {"txt": txt, "img": img}
