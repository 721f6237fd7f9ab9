"""Which cross-attention layers the loss reads: the level (map resolution), the layer set,
and the "auto" policy that weighs what a guidance pass costs.

The host describes its network as a list of Layer (in execution order) and, for "auto", a
function giving the share of the forward a pass runs when it stops after some layers; the
policy here only chooses. A UNet host names its parts "input" / "middle" / "output"; a
joint-attention (MM-DiT) host would give its own part names and layer sets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

LEVELS = ("auto", "1/1", "1/2", "1/4", "1/8")
LAYER_SETS = {"down+up": ("input", "output"), "down": ("input",), "up": ("output",),
              "down+mid+up": ("input", "middle", "output")}
# Layer set "auto" reads the reference's down and up blocks, unless the guidance pass would
# then run more than this fraction of the UNet's forward (SDXL: its up-block maps come after
# ~78% of it), and the down blocks alone otherwise. Why 0.7: with half of the steps guided, a
# batch-1 pass costing half of a CFG step per unit of work, and a backward about as dear as
# its forward, guided sampling costs about 1 + 0.5 * fraction of plain sampling: 1.35x at 0.7.
AUTO_WORK_BUDGET = 0.7
# The reference method is tuned for 16x16 maps (SD at 512 px, latent/4).
REFERENCE_MAP_SIDE = 16


class LayerChoiceError(ValueError):
    """No layer fits what was asked; the message names the fix."""


@dataclass(frozen=True)
class Layer:
    """One cross-attention layer.

    key:    the host's name for it, (part, block, index within the block): key[0] is
            the part of the network a layer set selects, key[:2] names its block.
    factor: its maps are the latent's size divided by this (rounded up).
    """

    key: tuple
    factor: int


def map_size(latent_hw: tuple[int, int], factor: int) -> tuple[int, int]:
    """(h, w) of the maps at `factor` for a latent of latent_hw (h, w): each down-sampling
    halves with rounding up, so odd latents (e.g. 1000x600 px) have maps too."""
    h, w = latent_hw
    return -(-h // factor), -(-w // factor)


def layers_of_set(layers: Sequence[Layer], latent_hw: tuple[int, int], level: str, layer_set: str) -> list[Layer]:
    """The layers of `layer_set` at `level` ("auto": the level whose maps are closest to
    16x16) for a latent of latent_hw (h, w)."""
    parts = LAYER_SETS[layer_set]
    usable = [l for l in layers if l.key[0] in parts]
    factors = sorted({l.factor for l in usable})
    if not factors:
        raise LayerChoiceError(f"the model has no cross-attention in the {layer_set} blocks; choose layers "
                               "'down+mid+up'")
    h, w = latent_hw
    if level == "auto":
        factor = min(factors, key=lambda f: (abs(h / f - REFERENCE_MAP_SIDE), f))
    else:
        factor = int(level.split("/")[1])
        if factor not in factors:
            raise LayerChoiceError(f"the model has no {layer_set} cross-attention at level {level}; "
                                   f"levels it has: {', '.join('1/%d' % f for f in factors)}")
    map_h, map_w = map_size(latent_hw, factor)
    if min(map_h, map_w) < 4:
        raise LayerChoiceError(f"a {h}x{w} latent gives no usable attention map at level 1/{factor} "
                               f"({map_h}x{map_w}, under 4x4); use a larger image or a finer level")
    return [l for l in usable if l.factor == factor]


def choose_layers(layers: Sequence[Layer], latent_hw: tuple[int, int], level: str, layer_set: str,
                  work: Optional[Callable[[list[Layer]], float]] = None, control: bool = False) -> list[Layer]:
    """The layers whose maps the loss reads, for this latent size. For the layer set
    "auto", work(layers) is the fraction of the network's forward the guidance pass runs
    when it stops after `layers`, and control says a ControlNet is attached: its residuals
    join the UNet on the up path, which down-block maps would not see, so auto then keeps
    down+up."""
    if level not in LEVELS:
        raise LayerChoiceError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}")
    if layer_set not in LAYER_SETS and layer_set != "auto":
        raise LayerChoiceError(f"unknown layer set {layer_set!r}; choose one of auto, {', '.join(LAYER_SETS)}")
    if layer_set != "auto":
        return layers_of_set(layers, latent_hw, level, layer_set)
    chosen = layers_of_set(layers, latent_hw, level, "down+up")
    if control or work is None or work(chosen) <= AUTO_WORK_BUDGET:
        return chosen
    try:
        return layers_of_set(layers, latent_hw, level, "down")
    except LayerChoiceError:  # no down-block layers at that level: the costlier set is the only one
        return chosen


def describe_layers(layers: Sequence[Layer]) -> str:
    """'input 7, 8 + output 3, 4, 5 (5 layers)': which blocks' cross-attention is read."""
    blocks: dict[str, list[int]] = {}
    for l in layers:
        ids = blocks.setdefault(l.key[0], [])
        if l.key[1] not in ids:
            ids.append(l.key[1])
    count = f"{len(layers)} layer" + ("s" if len(layers) != 1 else "")
    return " + ".join(f"{name} {', '.join(map(str, ids))}" for name, ids in blocks.items()) + f" ({count})"
