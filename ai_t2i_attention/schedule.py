"""When to guide and how far to step: the update schedule.

Positions are fractions of the sampling run (0.0 = first step, 1.0 = end), as ComfyUI's
own start_percent/end_percent are, so one schedule fits 20 or 50 steps alike. The
reference runs guide steps i < 25 of 50, i.e. [0.0, 0.5).

Which guided steps also refine is the method's: Preset.refinement_at (methods.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GuidanceSchedule:
    start: float = 0.0  # first guided position (inclusive)
    end: float = 0.5  # last guided position (exclusive)
    scale_factor: float = 20.0
    scale_range: tuple[float, float] = (1.0, 0.5)

    def __post_init__(self):
        if not (0.0 <= self.start <= 1.0 and 0.0 <= self.end <= 1.0):
            raise ValueError(f"guided range [{self.start}, {self.end}) must lie within 0.0..1.0 of the schedule")
        if self.start > self.end:
            raise ValueError(f"guidance start {self.start} is after its end {self.end}: swap them")
        if self.scale_factor < 0:
            raise ValueError("scale_factor must be >= 0")

    def guided_steps(self, total_steps: int) -> list[int]:
        """Indices i in [0, total_steps) whose position i/total_steps is in [start, end)."""
        return [i for i in range(total_steps) if self.start <= i / total_steps < self.end]

    def is_guided(self, i: int, total_steps: int) -> bool:
        return total_steps > 0 and self.start <= i / total_steps < self.end

    def step_size(self, i: int, total_steps: int) -> float:
        """alpha_i = scale_factor * sqrt(s_i), s = linspace(scale_range, total_steps)."""
        hi, lo = self.scale_range
        t = i / (total_steps - 1) if total_steps > 1 else 0.0
        return self.scale_factor * math.sqrt(hi + (lo - hi) * t)
