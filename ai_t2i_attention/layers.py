"""Which cross-attention layers the loss reads: the level (map resolution), the layer set,
and the "auto" policy that weighs what a guidance pass costs.

The host describes its network as a list of Layer (in execution order) and, for "auto", a
function giving the share of the forward a pass runs when it stops after some layers; the
policy here only chooses. A UNet host names its parts "input" / "middle" / "output"; a
joint-attention (MM-DiT) host names its blocks "double" (joint blocks: SD3's every block,
Flux's double-stream blocks) and "single" (Flux's single-stream blocks).

Joint-attention models (Layer.pool). Every block of a DiT attends at one resolution, the
patch grid (latent/2), so there is no level to pick among blocks. The reference method is
tuned for 16x16 maps: its region discs (radius 5), 3x3 smoothing and distances normalised by
the map's diagonal are in map pixels, so on SD3/Flux's 64x64 grid at 1024 px the same loss
would see discs covering a sixteenth of the image share they cover at 16x16. The grid is
therefore average-pooled by an integer factor to the side nearest 16 (1024 px: 4, 512 px: 2)
before the loss; an explicit level 1/f pools to latent/f. Pooling means of probabilities
keeps them probabilities.

Which DiT blocks: the joint blocks. Their text and image tokens keep separate projections,
so the image queries' probabilities on the text keys are the direct counterpart of a UNet's
cross-attention. In Flux's single-stream blocks text and image tokens share one projection
and the text tokens have been mixed with the image for 19 blocks, so those columns are a
weaker stand-in for "the word": they are offered ("joint+single"), never chosen by auto.
Layer set auto reads every joint block unless the pass would then run more than
AUTO_WORK_BUDGET of the forward (SD3: its joint blocks are the whole network), and then the
joint blocks within that budget, first to last: the pass stops after the last block read,
so the cost is set by how far in it is. These are cost and structure criteria only.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

LEVELS = ("auto", "1/1", "1/2", "1/4", "1/8")
LAYER_SETS = {"down+up": ("input", "output"), "down": ("input",), "up": ("output",),
              "down+mid+up": ("input", "middle", "output"),
              "joint": ("double",), "joint+single": ("double", "single"),
              "joint early": ("double",), "joint middle": ("double",), "joint late": ("double",)}
UNET_SETS = ("down+up", "down", "up", "down+mid+up")
# Bands of the joint blocks: third k of n blocks is blocks n*k//3 up to n*(k+1)//3 (Flux.1's 19:
# 0-5, 6-11, 12-18; SD3.5 Medium's 24: 0-7, 8-15, 16-23). JEDI reads SD3.5's blocks 4-15, so
# where in the stack the words are best grounded is an open question these sets let one measure.
JOINT_BANDS = {"joint early": 0, "joint middle": 1, "joint late": 2}
DIT_SETS = ("joint", "joint+single", *JOINT_BANDS)
# Layer set "auto" reads the reference's down and up blocks, unless the guidance pass would
# then run more than this fraction of the UNet's forward (SDXL: its up-block maps come after
# ~78% of it), and the down blocks alone otherwise. Why 0.7: with half of the steps guided, a
# batch-1 pass costing half of a CFG step per unit of work, and a backward about as dear as
# its forward, guided sampling costs about 1 + 0.5 * fraction of plain sampling: 1.35x at 0.7.
# Quality was weighed against that cost where it can be measured, on the grounded embedded
# model (its up-block maps come after all of its forward, so auto reads the down block). On
# ShapesBench, AI-T2I with down+up against down gives "present" +0.077 [-0.018, +0.162] and
# "correct" +0.114 [+0.029, +0.191], at 1.94x plain sampling's time against 1.23x. The
# grounding of the two sets differs little at t 500 (pointing 0.99 against 0.97). The rule was
# fixed before that run: auto would read down+up only if "present" gained with an interval
# excluding 0. It did not, so auto keeps this cost rule; `down+up` is the choice for quality.
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
    pool:   the host can average-pool its maps by any integer (a DiT block on the patch
            grid): the level policy may then return it with a coarser factor, a multiple
            of the host's, and the host pools by the ratio.
    """

    key: tuple
    factor: int
    pool: bool = False


def map_size(latent_hw: tuple[int, int], factor: int) -> tuple[int, int]:
    """(h, w) of the maps at `factor` for a latent of latent_hw (h, w): each down-sampling
    halves with rounding up, so odd latents (e.g. 1000x600 px) have maps too."""
    h, w = latent_hw
    return -(-h // factor), -(-w // factor)


def _check_map_size(latent_hw: tuple[int, int], factor: int) -> None:
    """Refuse a level whose maps for a latent of latent_hw (h, w) are under 4x4."""
    h, w = latent_hw
    map_h, map_w = map_size(latent_hw, factor)
    if min(map_h, map_w) < 4:
        raise LayerChoiceError(f"a {h}x{w} latent gives no usable attention map at level 1/{factor} "
                               f"({map_h}x{map_w}, under 4x4); use a larger image or a finer level")


def layers_of_set(layers: Sequence[Layer], latent_hw: tuple[int, int], level: str, layer_set: str) -> list[Layer]:
    """The layers of `layer_set` at `level` ("auto": the level whose maps are closest to
    16x16) for a latent of latent_hw (h, w)."""
    parts = LAYER_SETS[layer_set]
    usable = [l for l in layers if l.key[0] in parts]
    dit = any(l.pool for l in layers)
    if dit and not usable:
        raise LayerChoiceError(f"this joint-attention (MM-DiT) model has no {layer_set} blocks; choose layers "
                               f"{' or '.join(repr(s) for s in ('auto',) + DIT_SETS)}")
    factors = sorted({l.factor for l in usable})
    if not factors:
        raise LayerChoiceError(f"the model has no cross-attention in the {layer_set} blocks; choose layers "
                               "'down+mid+up'")
    if dit:
        if layer_set in JOINT_BANDS:
            usable = _band(usable, JOINT_BANDS[layer_set], layer_set)
        return _pooled(usable, latent_hw, level)
    h, w = latent_hw
    if level == "auto":
        factor = min(factors, key=lambda f: (abs(h / f - REFERENCE_MAP_SIDE), f))
    else:
        factor = int(level.split("/")[1])
        if factor not in factors:
            raise LayerChoiceError(f"the model has no {layer_set} cross-attention at level {level}; "
                                   f"levels it has: {', '.join('1/%d' % f for f in factors)}")
    _check_map_size(latent_hw, factor)
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
    if any(l.pool for l in layers):
        return _dit_auto(layers_of_set(layers, latent_hw, level, "joint"), work)
    chosen = layers_of_set(layers, latent_hw, level, "down+up")
    if control or work is None or work(chosen) <= AUTO_WORK_BUDGET:
        return chosen
    try:
        return layers_of_set(layers, latent_hw, level, "down")
    except LayerChoiceError:  # no down-block layers at that level: the costlier set is the only one
        return chosen


def _band(layers: Sequence[Layer], k: int, name: str) -> list[Layer]:
    """The layers of the k-th third (0, 1, 2) of the blocks that `layers` span, in order."""
    blocks = list(dict.fromkeys(l.key[:2] for l in layers))
    n = len(blocks)
    kept = set(blocks[n * k // 3:n * (k + 1) // 3])
    if not kept:
        raise LayerChoiceError(f"this model has {n} joint block{'s' if n != 1 else ''}, too few for a third "
                               f"'{name}'; choose layers 'joint'")
    return [l for l in layers if l.key[:2] in kept]


def _pooled(layers: Sequence[Layer], latent_hw: tuple[int, int], level: str) -> list[Layer]:
    """DiT layers (one grid, latent/f0) at `level`: the pooled factor f0 * k nearest 16x16
    maps ("auto"), or the level's factor, which must be a multiple of f0."""
    native = {l.factor for l in layers}
    if len(native) != 1:
        raise LayerChoiceError(f"joint-attention layers at several grids {sorted(native)}: the host must give one")
    f0 = native.pop()
    h, w = latent_hw
    if level == "auto":
        grid = -(-h // f0)
        factor = f0 * min(range(1, max(grid, 1) + 1), key=lambda k: (abs(h / (f0 * k) - REFERENCE_MAP_SIDE), k))
    else:
        factor = int(level.split("/")[1])
        if factor % f0:
            finer = ", ".join(f"1/{f}" for f in (f0, 2 * f0, 4 * f0, 8 * f0) if f"1/{f}" in LEVELS)
            raise LayerChoiceError(f"this joint-attention model attends on a latent/{f0} grid, so level {level} "
                                   f"cannot be made by pooling it; levels it has: auto, {finer}")
    _check_map_size(latent_hw, factor)
    return [replace(l, factor=factor) for l in layers]


def _dit_auto(joint: list[Layer], work: Optional[Callable[[list[Layer]], float]]) -> list[Layer]:
    """Every joint block if the pass stays within AUTO_WORK_BUDGET of the forward; else the
    joint blocks within it, from the first (at least the first)."""
    if work is None or work(joint) <= AUTO_WORK_BUDGET:
        return joint
    n = 1
    while n < len(joint) and work(joint[:n + 1]) <= AUTO_WORK_BUDGET:
        n += 1
    return joint[:n]


def describe_layers(layers: Sequence[Layer]) -> str:
    """'input 7, 8 + output 3, 4, 5 (5 layers)': which blocks' cross-attention is read."""
    blocks: dict[str, list[int]] = {}
    for l in layers:
        ids = blocks.setdefault(l.key[0], [])
        if l.key[1] not in ids:
            ids.append(l.key[1])
    count = f"{len(layers)} layer" + ("s" if len(layers) != 1 else "")
    return " + ".join(f"{name} {', '.join(map(str, ids))}" for name, ids in blocks.items()) + f" ({count})"
