"""The losses' weights and shape constants: LossWeights, the LayoutWeights it holds, and
BaselineWeights (the baselines' own on top).

A leaf module: plain frozen data, importing nothing else from the engine, so the loss
modules (losses.py, layout_terms.py, baselines.py) all import their weights from here.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class LayoutWeights:
    """The layout terms' weights and the top-k fraction both terms share (LossWeights.layout).

    inner: weight of layout_inner in the loss total (pull each subject into its region).
    outer: weight of layout_outer in the loss total (keep each subject out of the rest of the
           image; a subject without a region, out of the others' regions).
    topk:  share of a region's area (or of its outside's) whose largest activations a term
           averages, k = topk * area; a shape constant, not a weight.

    Every preset uses these defaults (1.0 and 1.0, beside isolation 2.0 and aggregation 1.25).
    The layout node's `weight` (SubjectLayout.weight) multiplies inner and outer for the run
    it is given to (scaled), and the sampler's strength scales the whole update. A weight of 0
    is never applied: the sampler drops the layout instead, so its regions do not anchor
    aggregation either.
    """

    inner: float = 1.0
    outer: float = 1.0
    topk: float = 0.2

    def scaled(self, weight: float) -> LayoutWeights:
        """inner and outer times the layout node's weight; topk unchanged."""
        return replace(self, inner=self.inner * weight, outer=self.outer * weight)


@dataclass(frozen=True)
class LossWeights:
    """Weights and shape constants. Defaults are the AI-T2I reference runs.

    Radii are given for 16x16 maps (the reference level) and scale with the map side,
    so a 32x32 SDXL map searches discs of the same relative size.

    region_count / attribute_region_count: how many regions (regions.find_regions) the
    consolidation of a subject's / an attribute word's map pulls together; radius /
    attribute_radius: each region's disc around its peak (its centroid is taken there, and
    the search for the next region leaves it out).
    """

    isolation: float = 2.0
    aggregation: float = 1.25
    presence: float = 0.25
    attribute: float = 0.75
    isolation_metric: str = "euclidean"  # or "cosine"
    region_count: int = 3
    radius: float = 5.0
    attribute_region_count: int = 3
    attribute_radius: float = 6.0
    # The layout terms' (read only when the maps carry regions), see LayoutWeights.
    layout: LayoutWeights = LayoutWeights()

    def weight_of(self, term: str) -> float:
        """The weight of a loss term (losses.TERMS) in the loss total."""
        if term == "isolation":
            return self.isolation
        if term == "aggregation":
            return self.aggregation
        if term == "presence":
            return self.presence
        if term == "attribute":
            return self.attribute
        if term == "layout_inner":
            return self.layout.inner
        if term == "layout_outer":
            return self.layout.outer
        raise KeyError(f"the loss term {term!r} has no weight in LossWeights: give it one in weight_of")

    def scaled_radius(self, radius: float, side: int) -> float:
        return radius * side / 16.0


@dataclass(frozen=True)
class BaselineWeights(LossWeights):
    """LossWeights plus the baselines' own weights and constants: the reference defaults
    where they could be checked (Divide & Bind, CONFORM), this pack's choice otherwise
    (A-STAR's weights and binarisation threshold, see methods.A_STAR)."""

    attendance: float = 1.0  # Divide & Bind
    binding: float = 1.0  # Divide & Bind
    segregation: float = 1.0  # A-STAR
    retention: float = 1.0  # A-STAR
    retention_threshold: float = 0.5  # A-STAR: previous map binarised at this fraction of its peak
    contrast: float = 1.0  # CONFORM
    temperature: float = 0.5  # CONFORM (InfoNCE temperature)

    @classmethod
    def of(cls, w: LossWeights) -> BaselineWeights:
        """Plain LossWeights (any loss of the methods table accepts them) get the baselines' defaults."""
        if isinstance(w, cls):
            return w
        return cls(**{f.name: getattr(w, f.name) for f in fields(w)})
