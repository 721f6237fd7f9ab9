"""Loss terms on attention maps, and the registry of guidance losses.

Every registered loss has one signature:

    loss(maps: SubjectMaps, w: LossWeights) -> dict[str, Tensor]

returning per-image terms of shape (B,) and their weighted sum under "total". Losses
are pure functions of the maps: no state, no host objects.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .layout_terms import LayoutWeights, has_region, layout_inner_term, layout_outer_term, region_anchor
from .maps import SubjectMaps
from .regions import centroid, find_regions


@dataclass(frozen=True)
class LossWeights:
    """Weights and shape constants. Defaults are the AI-T2I reference runs.

    Radii are given for 16x16 maps (the reference level) and scale with the map side,
    so a 32x32 SDXL map searches discs of the same relative size.
    """

    isolation: float = 2.0
    aggregation: float = 1.25
    presence: float = 0.25
    attribute: float = 0.75
    isolation_metric: str = "euclidean"  # or "cosine"
    regions: int = 3
    radius: float = 5.0
    attribute_regions: int = 3
    attribute_radius: float = 6.0
    # The layout terms' (read only when the maps carry regions), see LayoutWeights.
    layout: LayoutWeights = LayoutWeights()

    # weighted_terms reads a term's weight as the attribute named like the term.
    @property
    def layout_inner(self) -> float:
        return self.layout.inner

    @property
    def layout_outer(self) -> float:
        return self.layout.outer

    def scaled_radius(self, radius: float, side: int) -> float:
        return radius * side / 16.0


def _diagonal(h: int, w: int) -> float:
    return math.sqrt((h - 1) ** 2 + (w - 1) ** 2)


def _consolidation(maps: torch.Tensor, k: int, radius: float, anchor: torch.Tensor | None = None) -> torch.Tensor:
    """Pull the top-k regions of (B, H, W) maps toward anchor (B, 2) and toward each other.

    Without an anchor the map's own main peak p1 is the anchor (the aggregation term).

    ( sum_i ||anchor - c_i|| + sum_{2<=i<j<=k} ||c_i - c_j|| ) / D  -> (B,).
    With k = 3 the second sum is the reference's ||c_2 - c_3||. Regions found in an
    exhausted map (nothing left) do not count.
    """
    h, w = maps.shape[-2:]
    reg = find_regions(maps, k, radius)
    anchor = reg.peak if anchor is None else anchor
    valid = reg.valid.to(maps.dtype)
    to_anchor = (reg.centroids - anchor[:, None, :].detach()).norm(dim=-1) * valid  # (B, k)
    total = to_anchor.sum(dim=1)
    for i, j in itertools.combinations(range(1, k), 2):
        pair = (reg.centroids[:, i] - reg.centroids[:, j]).norm(dim=-1)
        total = total + pair * valid[:, i] * valid[:, j]
    return total / _diagonal(h, w)


def aggregation_term(maps: SubjectMaps, w: LossWeights) -> torch.Tensor:
    """Sum over subjects of the consolidation of each raw subject map -> (B,).

    A subject with a layout region consolidates toward its region's centroid instead of
    its own main peak: the aggregation target becomes the region.
    """
    raw = maps.raw
    radius = w.scaled_radius(w.radius, raw.shape[-1])
    total = raw.new_zeros(raw.shape[0])
    anchors = has = None
    if maps.regions is not None:
        regions = maps.regions.to(raw).expand(raw.shape[0], -1, -1, -1)
        anchors, has = region_anchor(regions), has_region(regions)
    for s in range(raw.shape[1]):
        if anchors is not None and bool(has[:, s].all()):
            total = total + _consolidation(raw[:, s], w.regions, radius, anchor=anchors[:, s])
        else:
            total = total + _consolidation(raw[:, s], w.regions, radius)
    return total


def isolation_term(maps: SubjectMaps, w: LossWeights) -> torch.Tensor:
    """Mean over subject pairs of (1 - distance) -> (B,).

    euclidean: distance = ||c(M_a) - c(M_b)|| / sqrt(H^2 + W^2) (reference default);
    cosine:    distance = 1 - cos(M_a, M_b) over the flattened maps.
    A mean (not a sum) over pairs keeps the reference weight meaningful for S > 2.
    """
    raw = maps.raw
    b, s, h, wd = raw.shape
    if s < 2:
        return raw.new_zeros(b)
    pairs = list(itertools.combinations(range(s), 2))
    if w.isolation_metric == "euclidean":
        c = centroid(raw)  # (B, S, 2)
        d = torch.stack([(c[:, i] - c[:, j]).norm(dim=-1) for i, j in pairs], dim=1)
        d = d / math.sqrt(h ** 2 + wd ** 2)
    elif w.isolation_metric == "cosine":
        flat = raw.reshape(b, s, -1)
        d = torch.stack([1 - F.cosine_similarity(flat[:, i], flat[:, j], dim=-1) for i, j in pairs], dim=1)
    else:
        raise ValueError(f"unknown isolation metric {w.isolation_metric!r}: use 'euclidean' or 'cosine'")
    return (1.0 - d).mean(dim=1)


def presence_term(maps: SubjectMaps, w: LossWeights) -> torch.Tensor:
    """Attend-and-Excite: max(0, 1 - min_s max(smoothed M_s)) -> (B,)."""
    peaks = maps.smoothed.flatten(2).amax(dim=-1)  # (B, S)
    return (1.0 - peaks.amin(dim=1)).clamp_min(0.0)


def attribute_term(maps: SubjectMaps, w: LossWeights) -> torch.Tensor:
    """Pull each attribute word's regions onto its subject's main peak -> (B,)."""
    raw, attr = maps.raw, maps.attribute
    total = raw.new_zeros(raw.shape[0])
    if attr.shape[1] == 0:
        return total
    side = raw.shape[-1]
    radius = w.scaled_radius(w.radius, side)
    attr_radius = w.scaled_radius(w.attribute_radius, side)
    for p, s in enumerate(maps.attribute_of):
        peak = find_regions(raw[:, s], 1, radius).peak
        total = total + _consolidation(attr[:, p], w.attribute_regions, attr_radius, anchor=peak)
    return total


TERMS: dict[str, Callable[[SubjectMaps, LossWeights], torch.Tensor]] = {
    "isolation": isolation_term,
    "aggregation": aggregation_term,
    "presence": presence_term,
    "attribute": attribute_term,
    "layout_inner": layout_inner_term,
    "layout_outer": layout_outer_term,
}


def weighted_terms(maps: SubjectMaps, w: LossWeights, names) -> dict[str, torch.Tensor]:
    """Compute the named terms whose weight is non-zero, and their weighted total."""
    out = {}
    total = maps.raw.new_zeros(maps.raw.shape[0])
    for name in names:
        weight = getattr(w, name)
        if weight == 0:
            continue
        out[name] = TERMS[name](maps, w)
        total = total + weight * out[name]
    out["total"] = total
    return out


def ai_t2i_loss(maps: SubjectMaps, w: LossWeights) -> dict[str, torch.Tensor]:
    """AI-T2I: isolation + aggregation + presence + attribute alignment (+ the layout
    terms when the maps carry regions)."""
    names = ("isolation", "aggregation", "presence", "attribute")
    if maps.regions is not None:
        names += ("layout_inner", "layout_outer")
    return weighted_terms(maps, w, names)


def attend_and_excite_loss(maps: SubjectMaps, w: LossWeights) -> dict[str, torch.Tensor]:
    """Attend-and-Excite: the presence term alone, unweighted (its paper's loss)."""
    out = {"presence": presence_term(maps, w)}
    out["total"] = out["presence"]
    return out


LOSSES: dict[str, Callable[[SubjectMaps, LossWeights], dict[str, torch.Tensor]]] = {
    "ai_t2i": ai_t2i_loss,
    "attend_and_excite": attend_and_excite_loss,
}


@dataclass(frozen=True)
class Refinement:
    """A method's iterative refinement, as its preset declares it.

    points: position in the run (0.0 = first step) -> threshold.
    test:   the loss term that decides: at a point, the update repeats while that term is
            above 1 - threshold (Attend-and-Excite: its presence term). None: no term
            decides and every point makes a fixed number of updates; the thresholds are
            then None. A loss whose terms lack `test` breaks the contract (see
            tests/engine/test_presets.py; guided_update raises then).
    """

    points: dict
    test: Optional[str] = "presence"


# Attend-and-Excite's refinement points {0: 0.05, 10: 0.5, 20: 0.8} of 50 steps.
ATTEND_AND_EXCITE_REFINEMENT = Refinement({0.0: 0.05, 0.2: 0.5, 0.4: 0.8})


@dataclass(frozen=True)
class Preset:
    """A named method and its whole contract.

    loss:          the LOSSES entry it minimises, with these weights.
    refinement:    its iterative refinement (which steps, which term decides); None: the
                   method has none, and asking for it is an error.
    refine:        whether that refinement runs unless the user says otherwise.
    reads_regions: whether its loss reads layout regions (SubjectMaps.regions); a layout
                   given to a method that does not is an error, never silently ignored.
    """

    loss: str
    weights: LossWeights
    refinement: Optional[Refinement] = None
    refine: bool = False
    reads_regions: bool = False


# The AI-T2I reference code does no refinement; asked for, the pack's AI-T2I presets refine
# at Attend-and-Excite's points on the presence term their loss includes (this pack's choice).
PRESETS: dict[str, Preset] = {
    "AI-T2I": Preset("ai_t2i", LossWeights(), ATTEND_AND_EXCITE_REFINEMENT, reads_regions=True),
    "AI-T2I aggregation only": Preset("ai_t2i", LossWeights(isolation=0.0), ATTEND_AND_EXCITE_REFINEMENT,
                                      reads_regions=True),
    "AI-T2I isolation only": Preset("ai_t2i", LossWeights(aggregation=0.0), ATTEND_AND_EXCITE_REFINEMENT,
                                    reads_regions=True),
    "Attend-and-Excite": Preset("attend_and_excite", LossWeights(), ATTEND_AND_EXCITE_REFINEMENT, refine=True),
}


def preset_weights(name: str, **overrides) -> Preset:
    """A preset with some weights overridden (the node's widgets)."""
    if name not in PRESETS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(PRESETS)}")
    p = PRESETS[name]
    return replace(p, weights=replace(p.weights, **overrides))
