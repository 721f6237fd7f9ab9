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


def tile_size(map_hw: tuple[int, int], longest: int = 256) -> tuple[int, int]:
    """(H, W) of a preview tile for maps of map_hw = (h, w): the longer side `longest`,
    the other in proportion (at least 1), so a non-square latent's maps keep its shape."""
    h, w = map_hw
    if h >= w:
        return longest, max(1, round(longest * w / h))
    return max(1, round(longest * h / w)), longest


def before_after_tiles(record, steps: list[int], images: torch.Tensor | None = None,
                       longest: int = 256) -> tuple[torch.Tensor, str]:
    """Heatmaps of a guided run's chosen steps, before and (where recorded) after each update.

    record: a run record with maps / maps_after {step: (B, S, h, w)} and subjects (S names).
    images: optional (B, H, W, 3) in [0, 1] to draw over; the tiles then take their (H, W).
            Without them a tile keeps the maps' aspect ratio, its longer side `longest`.
    Returns (N, H, W, 3) tiles, N = sum over the chosen steps of B * S per recorded
    before/after, and a text legend of their order.
    """
    parts, rows = [], []
    for k in steps:
        for when, maps in (("before", record.maps.get(k)), ("after", record.maps_after.get(k))):
            if maps is None:
                continue
            size = tuple(images.shape[1:3]) if images is not None else tile_size(tuple(maps.shape[-2:]), longest)
            parts.append(heatmaps(maps, size, images))
            rows.append(f"step {k} {when} update: " + ", ".join(
                f"image {b} {s}" for b in range(maps.shape[0]) for s in record.subjects))
    return torch.cat(parts, dim=0), "tiles in order:\n" + "\n".join(rows)
