"""Attention heatmaps as images (for the host's image previews)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# A perceptually ordered ramp: dark blue -> cyan -> yellow -> red.
_RAMP = torch.tensor([[0.05, 0.05, 0.35], [0.0, 0.6, 0.9], [0.95, 0.9, 0.1], [0.85, 0.1, 0.05]])


def colorize(values: torch.Tensor) -> torch.Tensor:
    """(..., H, W) values in [0, 1] -> (..., H, W, 3) RGB."""
    v = values.clamp(0, 1) * (len(_RAMP) - 1)
    lo = v.floor().long().clamp(max=len(_RAMP) - 2)
    frac = (v - lo.float())[..., None]
    ramp = _RAMP.to(values.device)
    return ramp[lo] * (1 - frac) + ramp[lo + 1] * frac


def heatmaps(maps: torch.Tensor, size: tuple[int, int], image: torch.Tensor | None = None,
             opacity: float = 0.6) -> torch.Tensor:
    """Per-subject heatmaps.

    maps:  (B, S, h, w) non-negative attention maps.
    image: optional (B, H, W, 3) in [0, 1]; the heatmap is blended over it.
    Returns (B*S, H, W, 3) in [0, 1], ordered image-major (all subjects of image 0 first).
    """
    b, s, h, w = maps.shape
    flat = maps.float().reshape(b * s, 1, h, w)
    lo = flat.amin(dim=(2, 3), keepdim=True)
    hi = flat.amax(dim=(2, 3), keepdim=True)
    norm = (flat - lo) / (hi - lo).clamp_min(1e-8)
    up = F.interpolate(norm, size=size, mode="bilinear", align_corners=False)[:, 0]
    rgb = colorize(up)
    if image is not None:
        base = image.float().repeat_interleave(s, dim=0)
        rgb = base * (1 - opacity) + rgb * opacity
    return rgb.clamp(0, 1)
