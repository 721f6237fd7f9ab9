"""The model families, decided once: everything that differs between a UNet and a
joint-attention model (DiT), behind one interface. A new family, or a host change to one,
is mended here and in its own structure and hook modules, nowhere else.

    UNet (SD1.x, SD2.x, SDXL: openaimodel)   unet.py walk, unet_hooks.py attn2 hooks
    DiT  (SD3/SD3.5 MMDiT, Flux.1)           dit.py walk, dit_hooks.py block hooks + attention override

A Family answers, for one host model: the layers the patch node hooks and where its hooks go
(patch kind and slot), the work before each layer (what "auto" weighs), the entries a
guidance pass adds to its copy of the model's options, what the recorded maps need before the
loss reads them, and the words its messages use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ...ai_t2i_attention import pool_maps
from ...ai_t2i_attention.joint_maps import JOINT_STEP_SCALE
from ...ai_t2i_attention.layers import Layer, map_size
from .dit import SLOTS, dit_kind, dit_layers, dit_work, is_dit, run_block
from .dit_hooks import JointBlockHook, JointLayout, dit_pass_options
from .keys import PATCH_KEY
from .structure import Key, unsupported
from .unet import cross_attention_layers, unet_work
from .unet_hooks import CrossAttentionHook, unet_pass_options


class Family(Protocol):
    """What differs between model families, for one host model (comfy.model_base.BaseModel).

    patch_kind: the patches_replace entry its hooks live in ("attn2" / "dit")
    hook_type:  the class of its hooks
    units:      what its hooked layers are called in messages ("layers" / "blocks")
    attention:  what a layer whose hook did not fire was bypassed in ("cross-attention" / ...)
    step_scale: the step strength 1 takes, as a multiple of the reference's step size
    joint_attention: its maps are a joint attention's, so the joint_map rule (JointMapRule)
                applies to them; a UNet's cross-attention maps are read as they are
    """

    patch_kind: str
    hook_type: type
    units: str
    attention: str
    step_scale: float
    joint_attention: bool

    def layers(self) -> list[Layer]:
        """Every layer the patch node hooks, in execution order."""

    def slot(self, key: Key) -> tuple:
        """The patches_replace slot of a layer's hook."""

    def wrapped(self, slots: dict, key: Key):
        """The patch another pack put in the layer's slot (or a wider one it covers), else None."""

    def pass_keys(self, hooked: Sequence[Layer], wanted: frozenset) -> list[Key]:
        """The layers whose hook must run in a guidance pass that records `wanted`."""

    def work(self, latent_hw: tuple[int, int], text_tokens: int) -> list[tuple[Optional[Key], float]]:
        """(key, work) of every part of the forward at latent size (h, w), in execution order."""

    def add_pass_options(self, to: dict, latent_hw: tuple[int, int], text_tokens: int, fused_attention: bool,
                         joint_keys: str = "all") -> None:
        """The family's own entries in a guidance pass's copy of transformer_options. joint_keys:
        which keys a joint attention's map is a softmax over (JointMapRule.keys); a UNet's
        cross-attention has text keys only, so it does not read it."""

    def maps(self, recorded: torch.Tensor, layers: Sequence[Layer]) -> torch.Tensor:
        """(B, H, W, T) maps at the chosen layers' level, from what the hooks recorded."""


@dataclass(frozen=True)
class UNetFamily:
    """ComfyUI UNets (openaimodel): a hook on every attn2 layer; maps recorded at their level."""

    model: object
    patch_kind: str = "attn2"
    hook_type: type = CrossAttentionHook
    units: str = "layers"
    attention: str = "cross-attention"
    step_scale: float = 1.0  # the reference's own step
    joint_attention: bool = False

    def layers(self) -> list[Layer]:
        return cross_attention_layers(self.model.diffusion_model)

    def slot(self, key: Key) -> tuple:
        return key

    def wrapped(self, slots: dict, key: Key):
        return slots.get(key) or slots.get(key[:2])  # a block-wide (2-key) patch covers the layer

    def pass_keys(self, hooked: Sequence[Layer], wanted: frozenset) -> list[Key]:
        return list(wanted)  # a layer not read needs no hook in the pass

    def work(self, latent_hw: tuple[int, int], text_tokens: int) -> list[tuple[Optional[Key], float]]:
        return unet_work(self.model.diffusion_model, latent_hw)

    def add_pass_options(self, to: dict, latent_hw: tuple[int, int], text_tokens: int, fused_attention: bool,
                         joint_keys: str = "all") -> None:
        unet_pass_options(to, fused_attention)

    def maps(self, recorded: torch.Tensor, layers: Sequence[Layer]) -> torch.Tensor:
        return recorded


@dataclass(frozen=True)
class DiTFamily:
    """Joint-attention models (SD3/SD3.5, Flux.1): a hook on every block, and an attention
    override that records the image-to-text probabilities of the blocks read; maps recorded at
    the patch grid and average-pooled to the chosen level."""

    model: object
    patch_kind: str = "dit"
    hook_type: type = JointBlockHook
    units: str = "blocks"
    attention: str = "the joint attention"
    joint_attention: bool = True

    @property
    def step_scale(self) -> float:
        return JOINT_STEP_SCALE  # chosen on the Flux-shaped toy (joint_maps.py says how)

    def layers(self) -> list[Layer]:
        return dit_layers(self.model)

    def slot(self, key: Key) -> tuple:
        return SLOTS[key[0]], key[1]  # ("double", 3, 0) -> ("double_block", 3)

    def wrapped(self, slots: dict, key: Key):
        return slots.get(self.slot(key))

    def pass_keys(self, hooked: Sequence[Layer], wanted: frozenset) -> list[Key]:
        # Every block runs through its hook in the pass, read or not: the hook keeps the saved
        # tensors of the block's in-place stream updates (Flux) for the backward.
        return [layer.key for layer in hooked]

    def work(self, latent_hw: tuple[int, int], text_tokens: int) -> list[tuple[Optional[Key], float]]:
        return dit_work(self.model, latent_hw, text_tokens)

    def layout(self, latent_hw: tuple[int, int], text_tokens: int) -> JointLayout:
        """Where the context's and the latent's tokens sit in each joint attention."""
        kind = dit_kind(self.model)
        grid = map_size(latent_hw, kind.patch)
        text = (kind.registers, kind.registers + text_tokens)
        return JointLayout(text, (text[1], text[1] + grid[0] * grid[1]), grid)

    def add_pass_options(self, to: dict, latent_hw: tuple[int, int], text_tokens: int, fused_attention: bool,
                         joint_keys: str = "all") -> None:
        run: Optional[Callable] = None
        if dit_kind(self.model).checkpointed:
            run = lambda key, args: run_block(self.model, key, args)  # noqa: E731
        dit_pass_options(to, self.layout(latent_hw, text_tokens), run, fused_attention, joint_keys)

    def maps(self, recorded: torch.Tensor, layers: Sequence[Layer]) -> torch.Tensor:
        return pool_maps(recorded, layers[0].factor // dit_kind(self.model).patch)


def family_of(model) -> Family:
    """The family of a host model (comfy.model_base.BaseModel), decided once. Any other model is
    an UnsupportedModel naming what is supported."""
    if is_dit(model):
        dit_kind(model)  # refuses, by name, the joint-attention models the pack does not map
        return DiTFamily(model)
    if isinstance(model.diffusion_model, UNetModel):
        return UNetFamily(model)
    raise unsupported(f"this model is a {type(model.diffusion_model).__name__}")


def install_hooks(model_patcher):
    """A clone of model_patcher with the family's hook on every layer it hooks; a patch already
    in a layer's slot (another pack's) is wrapped, not replaced, so both run. The hooked layers
    are recorded under PATCH_KEY; applying twice would wrap our own hook (the node refuses it)."""
    family = family_of(model_patcher.model)
    layers = family.layers()
    m = model_patcher.clone()
    slots = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get(family.patch_kind, {})
    for layer in layers:
        hook = family.hook_type(layer.key, family.wrapped(slots, layer.key))
        m.set_model_patch_replace(hook, family.patch_kind, *family.slot(layer.key))
    m.model_options[PATCH_KEY] = tuple(layers)
    return m


def hooked_layers(model_options: dict) -> Optional[tuple[Layer, ...]]:
    """The layers 'AI-T2I Attention Patch' hooked on a model, None if it did not patch it."""
    return model_options.get(PATCH_KEY)
