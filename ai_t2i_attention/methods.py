"""The methods table: every guidance loss (LOSSES) and every named method (PRESETS).

Both tables are written out here, whole: importing this module gives all of them, and no
other module adds to them. PRESETS' order is the order the node's method Combo shows.

A preset is a method's whole contract: the loss it minimises, with which weights, and its
iterative refinement (which steps refine, which loss term decides, how many updates at most).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from .baselines import a_star_loss, conform_loss, divide_and_bind_loss
from .guidance import RefinementTarget
from .losses import ai_t2i_loss, attend_and_excite_loss
from .maps import SubjectMaps
from .weights import BaselineWeights, LossWeights

Loss = Callable[[SubjectMaps, LossWeights], dict[str, torch.Tensor]]

LOSSES: dict[str, Loss] = {
    "ai_t2i": ai_t2i_loss,
    "attend_and_excite": attend_and_excite_loss,
    "divide_and_bind": divide_and_bind_loss,
    "a_star": a_star_loss,
    "conform": conform_loss,
}
"""loss name -> loss(maps, weights) -> {term: (B,), ..., "total": (B,)}."""


@dataclass(frozen=True)
class Refinement:
    """A method's iterative refinement, as its preset declares it.

    points:    position in the run (0.0 = first step) -> threshold.
    test:      the loss term that decides: at a point, the update repeats while that term is
               above 1 - threshold (Attend-and-Excite: its presence term). None: no term
               decides and every point makes max_iters updates; the thresholds are then None.
               A loss whose terms lack `test` breaks the contract (see
               tests/engine/test_presets.py; guided_update raises then).
    max_iters: at most this many refinement updates at a point.
    """

    points: dict
    test: Optional[str] = "presence"
    max_iters: int = 20

    def __post_init__(self):
        if self.max_iters < 1:
            raise ValueError(f"a refinement makes at least one update: max_iters is {self.max_iters}")

    def target_at(self, i: int, total_steps: int) -> RefinementTarget | None:
        """What the point that falls on step i of total_steps asks, if one does: a point at
        position pos falls on the step round(pos * total_steps)."""
        for pos, threshold in self.points.items():
            if round(pos * total_steps) == i:
                return RefinementTarget(threshold, self.test, self.max_iters)
        return None


# Attend-and-Excite's refinement points {0: 0.05, 10: 0.5, 20: 0.8} of 50 steps.
ATTEND_AND_EXCITE_REFINEMENT = Refinement({0.0: 0.05, 0.2: 0.5, 0.4: 0.8})


@dataclass(frozen=True)
class Preset:
    """A named method and its whole contract.

    loss:          the LOSSES entry it minimises, with these weights.
    refinement:    its iterative refinement (which steps, which term decides); None: the
                   method has none, and asking for it is an error.
    refine:        whether that refinement runs (the preset's default; the node's
                   refinement widget may turn it on or off, see settings.py).
    reads_regions: whether its loss reads layout regions (SubjectMaps.regions); a layout
                   given to a method that does not is an error, never silently ignored.
    """

    loss: str
    weights: LossWeights
    refinement: Optional[Refinement] = None
    refine: bool = False
    reads_regions: bool = False

    def refinement_at(self, i: int, total_steps: int) -> RefinementTarget | None:
        """The refinement step i of total_steps makes; None where it makes none: no point
        falls on it, the method has no refinement, or refine is off."""
        if self.refinement is None or not self.refine:
            return None
        return self.refinement.target_at(i, total_steps)


DIVIDE_AND_BIND = Preset("divide_and_bind", BaselineWeights(), Refinement({0.0: 0.05, 0.2: 0.2, 0.4: 0.3}),
                         refine=True)
"""Divide & Bind preset. Reference defaults kept: step size 20 * sqrt(linspace(1.0, 0.5)),
first half of the steps guided, refinement at steps 0 / 10 / 20 of 50 (positions 0.0 / 0.2
/ 0.4) until the weakest subject's TV reaches 0.05 / 0.2 / 0.3.
Differences from the reference code: at most 20 refinement iterations (Refinement.max_iters;
the reference allows 50); the binding weight is a constant 1 (the
reference raises it to 5 and 10 after 10 and 20 of 50 steps: a loss here does not know
the step); binding compares the two maps normalised by their sums (the reference
softmax-normalises and cuts below a quantile of the peak first) and reads the attribute
at the same map level as the subject (the reference reads it from finer levels)."""

A_STAR = Preset("a_star", BaselineWeights())
"""A-STAR preset: segregation + retention, weights 1 and 1, the pack's default step size
and guided range, no iterative refinement. Retention is applied when the host passes the
previous guided step's maps (the pack's guided sampler does; the first guided step has
none). The paper's exact binarisation threshold and loss weights were not checked here:
half the peak and 1 / 1 are this pack's choices. It declares no iterative refinement: asking
for one is an error (no term of its loss says when a subject is present enough)."""

CONFORM = Preset("conform", BaselineWeights(), Refinement({0.0: None, 0.2: None, 0.4: None}, test=None),
                 refine=True)
"""CONFORM preset: InfoNCE at temperature 0.5 over token-renormalised, smoothed maps,
step size 20 * sqrt(linspace(1.0, 0.5)), first half guided, and at steps 0 / 10 / 20 of 50
a fixed 20 extra updates (the reference refines for a fixed count, not to a threshold: its
refinement declares no test term).
The previous step's maps are the subjects' only (the reference also adds the attributes')."""

# The AI-T2I reference code does no refinement; asked for, the pack's AI-T2I presets refine
# at Attend-and-Excite's points on the presence term their loss includes (this pack's choice).
PRESETS: dict[str, Preset] = {
    "AI-T2I": Preset("ai_t2i", LossWeights(), ATTEND_AND_EXCITE_REFINEMENT, reads_regions=True),
    "AI-T2I aggregation only": Preset("ai_t2i", LossWeights(isolation=0.0), ATTEND_AND_EXCITE_REFINEMENT,
                                      reads_regions=True),
    "AI-T2I isolation only": Preset("ai_t2i", LossWeights(aggregation=0.0), ATTEND_AND_EXCITE_REFINEMENT,
                                    reads_regions=True),
    "Attend-and-Excite": Preset("attend_and_excite", LossWeights(), ATTEND_AND_EXCITE_REFINEMENT, refine=True),
    "Divide & Bind": DIVIDE_AND_BIND,
    "A-STAR": A_STAR,
    "CONFORM": CONFORM,
}


def configured_preset(name: str, **overrides) -> Preset:
    """The preset `name` with some of its weights overridden (the node's widgets); PRESETS
    itself is left as it is."""
    if name not in PRESETS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(PRESETS)}")
    p = PRESETS[name]
    return replace(p, weights=replace(p.weights, **overrides))
