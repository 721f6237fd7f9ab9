"""Centroids and the greedy search for a subject's scattered activation regions."""
from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-8


def pixel_grid(h: int, w: int, device=None) -> torch.Tensor:
    """(H, W, 2) pixel coordinates as (y, x)."""
    ys = torch.arange(h, dtype=torch.float32, device=device)
    xs = torch.arange(w, dtype=torch.float32, device=device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)


def centroid(maps: torch.Tensor) -> torch.Tensor:
    """Activation-weighted centre of (..., H, W) non-negative maps -> (..., 2) as (y, x)."""
    grid = pixel_grid(*maps.shape[-2:], device=maps.device)
    mass = maps.sum(dim=(-2, -1)).clamp_min(EPS)
    return torch.einsum("...hw,hwc->...c", maps, grid) / mass[..., None]


@dataclass
class Regions:
    """Result of find_regions for B maps.

    peak:      (B, 2) arg-max pixel of the map (no gradient: a position, not a value).
    centroids: (B, k, 2) centroid of the activation inside each found disc (differentiable).
    valid:     (B, k) bool, False where the map had no activation left to find.
    """

    peak: torch.Tensor
    centroids: torch.Tensor
    valid: torch.Tensor


def find_regions(maps: torch.Tensor, k: int = 3, radius: float = 5.0) -> Regions:
    """Greedy top-k region search with suppression on (B, H, W) maps.

    Take the arg-max of what is left, keep the disc of `radius` pixels around it, record
    the centroid of the activation in that disc, remove the disc, repeat k times. The
    discs are fixed masks (no gradient through the arg-max); the centroids carry the
    gradient, so a loss on them moves activation, not the search.
    """
    b, h, w = maps.shape
    grid = pixel_grid(h, w, maps.device)  # (H, W, 2)
    remaining = maps
    centroids, valid, peak = [], [], None
    for _ in range(k):
        with torch.no_grad():
            flat = remaining.detach().reshape(b, -1)
            idx = flat.argmax(dim=1)
            p = torch.stack([idx // w, idx % w], dim=-1).float()  # (B, 2)
            dist = (grid[None] - p[:, None, None, :]).norm(dim=-1)  # (B, H, W)
            disc = (dist <= radius).float()
            has_mass = flat.amax(dim=1) > EPS
        if peak is None:
            peak = p
        inside = remaining * disc
        centroids.append(centroid(inside))
        valid.append(has_mass)
        remaining = remaining * (1.0 - disc)
    return Regions(peak, torch.stack(centroids, dim=1), torch.stack(valid, dim=1))
