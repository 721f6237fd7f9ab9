"""What one guided run did (RunRecord): plain data the host fills step by step."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from .guidance import StepReport


@dataclass
class RunRecord:
    """What one guided run did: per-step reports and the maps seen at each guided step."""

    subjects: list[str] = field(default_factory=list)
    map_size: Optional[tuple[int, int]] = None
    layers: str = ""  # which cross-attention layers the loss read (layers.describe_layers)
    pass_work: Optional[float] = None  # estimated fraction of the network's forward a guidance pass ran
    reports: list[StepReport] = field(default_factory=list)
    maps: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> (B, S, H, W) raw maps
    maps_after: dict[int, torch.Tensor] = field(default_factory=dict)  # same, at the step's updated latent
    # Why the run guided no step (strength 0, a range without steps), in the user's terms; "" if it guided.
    unguided_reason: str = ""

    def log_text(self) -> str:
        if self.unguided_reason:  # the loss log's one line, as the preview tile says it
            return f"AI-T2I: {self.unguided_reason}"
        head = f"AI-T2I run: subjects={', '.join(self.subjects)} maps={self.map_size}"
        if self.layers:
            head += f" from {self.layers}"
        if self.pass_work is not None:
            head += f", guidance pass ~{self.pass_work:.0%} of the network"
        return "\n".join([head] + [r.line() for r in self.reports])
