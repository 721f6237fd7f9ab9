"""What one guided run did (RunRecord): plain data the host fills step by step."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from .guidance import StepReport, settle_reports


@dataclass
class RunRecord:
    """What one guided run did: per-step reports and the maps seen at each guided step.

    While the run goes on its values stay on the device the run samples on: the reports'
    losses as tensors (StepReport) and the maps where the guidance pass made them, so that no
    step waits for the device to hand them over. finish() brings them to the host at the run's
    end (the reports' values in one transfer, the maps to the CPU); reading a report's values
    before that reads them on the spot.
    """

    subjects: list[str] = field(default_factory=list)
    map_size: Optional[tuple[int, int]] = None
    layers: str = ""  # which cross-attention layers the loss read (layers.describe_layers)
    pass_work: Optional[float] = None  # estimated fraction of the network's forward a guidance pass ran
    reports: list[StepReport] = field(default_factory=list)
    maps: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> (B, S, H, W) raw maps
    maps_after: dict[int, torch.Tensor] = field(default_factory=dict)  # same, at the step's updated latent
    # Why the run guided no step (strength 0, a range without steps), in the user's terms; "" if it guided.
    unguided_reason: str = ""

    def finish(self) -> None:
        """At the run's end: every report's values read on the host in one transfer, and the
        maps moved to the CPU (where previews and the run log keep them). Calling it again
        changes nothing."""
        settle_reports(self.reports)
        for kept in (self.maps, self.maps_after):
            for step, maps in kept.items():
                kept[step] = maps.cpu()

    def log_text(self) -> str:
        if self.unguided_reason:  # the loss log's one line, as the preview tile says it
            return f"AI-T2I: {self.unguided_reason}"
        settle_reports(self.reports)  # one transfer for every step's line, should the run not have finished them
        head = f"AI-T2I run: subjects={', '.join(self.subjects)} maps={self.map_size}"
        if self.layers:
            head += f" from {self.layers}"
        if self.pass_work is not None:
            head += f", guidance pass ~{self.pass_work:.0%} of the network"
        return "\n".join([head] + [r.line() for r in self.reports])
