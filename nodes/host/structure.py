"""What the structure walks of every model family share: layer keys, the unsupported-model
error and its message, parameter counts, and the work-share rule.

A leaf (unet.py and dit.py both read it), so the rule and the message are written once.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch

# A hooked layer's key: UNet ("input" | "middle" | "output", block index, transformer index);
# DiT ("double" | "single", block index, 0).
Key = tuple[str, int, int]

SUPPORTED = ("UNet models (SD1.x, SD2.x, SDXL) and the joint-attention models SD3/SD3.5 (MMDiT) and Flux.1 "
             "(dev, schnell, Fill, Kontext)")
USE_INSTEAD = "Use an SD1.x/SD2.x/SDXL, SD3/SD3.5 or Flux.1 checkpoint."


class UnsupportedModel(ValueError):
    """A model the pack cannot guide; the message names what it supports."""


def unsupported(what: str) -> UnsupportedModel:
    """The error for a model the pack does not map, `what` saying what it is."""
    return UnsupportedModel(f"AI-T2I supports {SUPPORTED}; {what}. {USE_INSTEAD}")


def parameter_count(*modules: Optional[torch.nn.Module]) -> int:
    """Parameters of the given modules (None counts 0)."""
    return sum(p.numel() for m in modules if m is not None for p in m.parameters())


def work_until(items: list[tuple[Optional[Key], float]], keys: Iterable[Key]) -> float:
    """Fraction of the forward's work done when the last of `keys` has run (0..1), from a
    walk's (key, work) items in execution order."""
    keys = set(keys)
    total = sum(w for _, w in items)
    done = last = 0.0
    for key, w in items:
        done += w
        if key in keys:
            last = done
    return last / total if total else 1.0
