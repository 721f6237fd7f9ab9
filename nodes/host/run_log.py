"""The runs of one AI-T2I Guided Sampler, each kept with the latent the graph received from it.

A SAMPLER value is shared: one Guided Sampler may feed several SamplerCustom nodes, and the
maps node sees it only through its SAMPLER wire. So the maps node does not read "the latest
run" (a wrong wire would show another run's maps, or none): it hands in the latent it was
wired to and gets the run whose output that latent is, or an error saying what to connect.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

import torch

from ...ai_t2i_attention.record import RunRecord
from .errors import GuidanceError

NOT_FROM_THIS_SAMPLER = (
    "these samples did not come from a run of this AI-T2I Guided Sampler: connect the 'output' LATENT of the "
    "SamplerCustom (or SamplerCustomAdvanced) that used it (not 'denoised_output', nor a latent changed since), "
    "and this node's 'sampler' to the same Guided Sampler (or Record Maps After Guidance) that SamplerCustom used")


@dataclass
class _Run:
    record: RunRecord
    output: torch.Tensor  # (B, C, h, w) float32 on the CPU: the latent SamplerCustom put in its 'output'


class RunLog:
    """The last `keep` finished runs of one Guided Sampler, oldest first.

    A few are kept, not one, so that one sampler feeding two SamplerCustom nodes gives each
    of their maps nodes its own run.
    """

    def __init__(self, keep: int = 8):
        self._runs: deque[_Run] = deque(maxlen=keep)

    def add(self, record: RunRecord, output: torch.Tensor) -> None:
        """Keep a finished run with its output (B, C, h, w): the latent the graph will
        receive (the sampler's samples after the model's process_latent_out, float32)."""
        self._runs.append(_Run(record, output.detach().to("cpu", torch.float32)))

    def latest(self) -> Optional[RunRecord]:
        """The record of the last finished run (None before any): for callers that own the sampler."""
        return self._runs[-1].record if self._runs else None

    def run_for(self, samples: torch.Tensor) -> RunRecord:
        """The record of the run whose output is `samples` (B, C, h, w): same shape and values
        (compared in the dtype samples has, should the host have cast it; NaN matches NaN, so
        a run that overflowed is still found). The newest run wins where two gave the same
        latent. Raises GuidanceError if no kept run gave it."""
        given = samples.detach().cpu()
        for run in reversed(self._runs):
            if run.output.shape == given.shape and torch.allclose(run.output.to(given.dtype), given, rtol=0, atol=0,
                                                                  equal_nan=True):
                return run.record
        raise GuidanceError(NOT_FROM_THIS_SAMPLER)

    def __len__(self) -> int:
        return len(self._runs)
