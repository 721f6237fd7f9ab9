"""Centroids and the greedy search for a subject's scattered activation regions."""
from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-8


def pixel_grid(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, W, 2) pixel coordinates as (y, x)."""
    ys = torch.arange(h, dtype=dtype, device=device)
    xs = torch.arange(w, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)


def centroid(maps: torch.Tensor) -> torch.Tensor:
    """Activation-weighted centre of (..., H, W) non-negative maps -> (..., 2) as (y, x)."""
    grid = pixel_grid(*maps.shape[-2:], device=maps.device, dtype=maps.dtype)
    mass = maps.sum(dim=(-2, -1)).clamp_min(EPS)
    return torch.einsum("...hw,hwc->...c", maps, grid) / mass[..., None]


@dataclass
class Regions:
    """Result of find_regions for B maps.

    peaks:     (B, k, 2) arg-max pixel of what was left at each search (no gradient: a
               position, not a value); peaks[:, 0] is the map's main peak p1.
    centroids: (B, k, 2) centroid of the map inside each found disc (differentiable).
    valid:     (B, k) bool, False where the map had no activation left to find.
    """

    peaks: torch.Tensor
    centroids: torch.Tensor
    valid: torch.Tensor

    @property
    def peak(self) -> torch.Tensor:
        """(B, 2) the main peak p1."""
        return self.peaks[:, 0]


def find_regions(maps: torch.Tensor, k: int = 3, radius: float = 5.0) -> Regions:
    """Greedy top-k region search with suppression on (B, H, W) maps.

    Take the arg-max of what is left, keep the disc around it, record the centroid of the
    map in that disc, remove the disc from what is left, repeat k times. As the reference
    code does: the disc holds the pixels strictly closer than `radius` (squared distance
    < radius^2: 69 pixels at radius 5, not 81), and each centroid is taken on the original
    map inside its disc, so overlapping discs count shared pixels again. The discs are
    fixed masks (no gradient through the arg-max); the centroids carry the gradient, so a
    loss on them moves activation, not the search.
    """
    b, h, w = maps.shape
    grid = pixel_grid(h, w, maps.device, maps.dtype)  # (H, W, 2)
    remaining = maps
    centroids, valid, peaks = [], [], []
    for _ in range(k):
        with torch.no_grad():
            flat = remaining.detach().reshape(b, -1)
            idx = flat.argmax(dim=1)
            p = torch.stack([idx // w, idx % w], dim=-1).to(maps.dtype)  # (B, 2)
            dist2 = ((grid[None] - p[:, None, None, :]) ** 2).sum(dim=-1)  # (B, H, W)
            disc = (dist2 < radius ** 2).to(maps.dtype)
            has_mass = flat.amax(dim=1) > EPS
        peaks.append(p)
        centroids.append(centroid(maps * disc))
        valid.append(has_mass)
        remaining = remaining * (1.0 - disc)
    return Regions(torch.stack(peaks, dim=1), torch.stack(centroids, dim=1), torch.stack(valid, dim=1))
