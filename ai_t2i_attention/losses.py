"""Loss terms on attention maps, and the two losses of this pack built from them
(AI-T2I and Attend-and-Excite); methods.py lists them with the baselines' in LOSSES.

Every loss has one signature:

    loss(maps: SubjectMaps, w: LossWeights) -> dict[str, Tensor]

returning per-image terms of shape (B,) and their weighted sum under "total". Losses
are pure functions of the maps: no state, no host objects.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import torch
import torch.nn.functional as F

from .layout_terms import has_region, layout_inner_term, layout_outer_term, region_anchor
from .maps import SubjectMaps
from .regions import centroid, find_regions
from .weights import LossWeights


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
            total = total + _consolidation(raw[:, s], w.region_count, radius, anchor=anchors[:, s])
        else:
            total = total + _consolidation(raw[:, s], w.region_count, radius)
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
        total = total + _consolidation(attr[:, p], w.attribute_region_count, attr_radius, anchor=peak)
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
    """Compute the named terms whose weight (LossWeights.weight_of) is non-zero, and their weighted total."""
    out = {}
    total = maps.raw.new_zeros(maps.raw.shape[0])
    for name in names:
        weight = w.weight_of(name)
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
