"""Layout loss terms (their weights: weights.LayoutWeights, held by LossWeights.layout).

With regions, aggregation pulls each subject's activation into its region and isolation
keeps it out of the rest of the image (BoxDiff-style constraints on the token-
renormalised, smoothed subject maps M in [0, 1]):

    inner(s) = 1 - mean(top-k of M_s inside R_s),        k = topk * |R_s|
    outer(s) =     mean(top-k of M_s outside R_s),        k = topk * |outside R_s|

A subject without a region of its own is kept out of the other subjects' regions
(its "outside" is their union). Regions R are soft (values in [0, 1], made by
SubjectLayout.region_masks in layout_parse.py); the top-k runs over M * R with k from the
region's area, which equals the plain top-k for a binary region.

Shapes: S subjects, B images, (h, w) the attention map size.
"""
from __future__ import annotations

import torch

from .maps import SubjectMaps
from .regions import EPS, pixel_grid
from .weights import LossWeights


def has_region(regions: torch.Tensor) -> torch.Tensor:
    """(B, S, h, w) -> (B, S) bool."""
    return regions.flatten(2).sum(-1) > EPS


def region_anchor(regions: torch.Tensor) -> torch.Tensor:
    """(B, S, h, w) regions -> (B, S, 2) their centroids (y, x) in map pixels."""
    grid = pixel_grid(*regions.shape[-2:], device=regions.device)
    mass = regions.sum(dim=(-2, -1)).clamp_min(EPS)
    return torch.einsum("bshw,hwc->bsc", regions, grid) / mass[..., None]


def topk_mean(values: torch.Tensor, weights: torch.Tensor, frac: float) -> torch.Tensor:
    """Mean of the k largest of values * weights, k = max(1, round(frac * sum(weights))).

    values, weights: (B, N) -> (B,). Rows with no weight give 0.
    """
    area = weights.sum(-1)
    k = (frac * area).round().clamp_min(1)
    ranked = (values * weights).sort(dim=-1, descending=True).values
    keep = (torch.arange(values.shape[-1], device=values.device)[None] < k[:, None]).float()
    mean = (ranked * keep).sum(-1) / k
    return torch.where(area > EPS, mean, torch.zeros_like(mean))


def _regions_of(maps: SubjectMaps) -> torch.Tensor:
    """The maps' (B or 1, S, h, w) regions -> (B, S, h, w), on the smoothed maps' device and dtype."""
    m = maps.smoothed
    regions = maps.regions.to(device=m.device, dtype=m.dtype)
    if tuple(regions.shape[-2:]) != tuple(m.shape[-2:]) or regions.shape[1] != m.shape[1]:
        raise ValueError(f"regions {tuple(regions.shape)} do not fit the maps {tuple(m.shape)}")
    return regions.expand(m.shape[0], -1, -1, -1)


def _mean_over(per_subject: list[torch.Tensor], counted: list[torch.Tensor], b: int, like: torch.Tensor):
    """Per-subject (B,) terms -> (B,) their sum over the subjects counted (bool (B,) each) / that count."""
    if not per_subject:
        return like.new_zeros(b)
    total = torch.stack(per_subject, 1).sum(1)
    n = torch.stack(counted, 1).float().sum(1)
    return total / n.clamp_min(1)


def layout_inner_term(maps: SubjectMaps, w: LossWeights) -> torch.Tensor:
    """Mean over subjects with a region of 1 - mean(top-k of M_s inside R_s) -> (B,)."""
    m = maps.smoothed
    b, s = m.shape[:2]
    if maps.regions is None:
        return m.new_zeros(b)
    regions = _regions_of(maps)
    has = has_region(regions)
    terms, counted = [], []
    for i in range(s):
        inside = topk_mean(m[:, i].flatten(1), regions[:, i].flatten(1), w.layout.topk)
        terms.append((1.0 - inside) * has[:, i])
        counted.append(has[:, i])
    return _mean_over(terms, counted, b, m)


def outside_regions(regions: torch.Tensor) -> torch.Tensor:
    """(B, S, h, w) -> where each subject should not be: the complement of its own region,
    or, for a subject without one, the union of the others' regions."""
    has = has_region(regions)[..., None, None]
    others = (regions.sum(1, keepdim=True) - regions).clamp(0, 1)
    return torch.where(has, 1.0 - regions, others)


def layout_outer_term(maps: SubjectMaps, w: LossWeights) -> torch.Tensor:
    """Mean over subjects of mean(top-k of M_s outside its region) -> (B,)."""
    m = maps.smoothed
    b, s = m.shape[:2]
    if maps.regions is None:
        return m.new_zeros(b)
    outside = outside_regions(_regions_of(maps))
    has = has_region(outside)
    terms = [topk_mean(m[:, i].flatten(1), outside[:, i].flatten(1), w.layout.topk) for i in range(s)]
    return _mean_over([t * has[:, i] for i, t in enumerate(terms)], [has[:, i] for i in range(s)], b, m)


def fraction_inside(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Share of each subject's activation mass inside its region: (B, S, h, w) x2 -> (B, S)."""
    regions = regions.to(maps).expand_as(maps)
    return (maps * regions).flatten(2).sum(-1) / maps.flatten(2).sum(-1).clamp_min(EPS)
