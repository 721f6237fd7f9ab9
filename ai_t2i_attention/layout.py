"""Layout control: a region (box or mask) per subject, and the loss terms that use it.

With regions, aggregation pulls each subject's activation into its region and isolation
keeps it out of the rest of the image (BoxDiff-style constraints on the token-
renormalised, smoothed subject maps M in [0, 1]):

    inner(s) = 1 - mean(top-k of M_s inside R_s),        k = frac * |R_s|
    outer(s) =     mean(top-k of M_s outside R_s),        k = frac * |outside R_s|

A subject without a region of its own is kept out of the other subjects' regions
(its "outside" is their union). Regions are soft (values in [0, 1], boxes and masks
area-interpolated to the map size); the top-k runs over M * R with k from the region's
area, which equals the plain top-k for a binary region.

Boxes text (what the layout node's `boxes` widget takes), one box per subject:

    cat: 0.05 0.2 0.45 0.8; dog: 0.55 0.2 0.95 0.8

`subject: x0 y0 x1 y1`, entries separated by ';' or new lines, numbers by spaces or
commas. (x0, y0) is the top-left corner, (x1, y1) the bottom-right, as fractions of the
image width and height (0..1, y downwards). Append ' px' to an entry to give pixels
instead (`cat: 16 32 60 100 px`); that needs the image width and height.

Shapes: S subjects, B images, (h, w) the attention map size.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .maps import SubjectMaps
from .regions import EPS, pixel_grid

BOX_EXAMPLE = "cat: 0.05 0.2 0.45 0.8; dog: 0.55 0.2 0.95 0.8"


class LayoutError(ValueError):
    """A box or mask the layout cannot use. The message names the fix."""


@dataclass(frozen=True)
class Box:
    """A box as fractions of the image: (x0, y0) top-left, (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float


def _norm(word: str) -> str:
    return " ".join(word.lower().split())


def subject_index(name: str, subjects: Sequence[str], what: str) -> int:
    """Index of a subject named as typed in the subject prompt (case-insensitive)."""
    wanted = _norm(name)
    for i, s in enumerate(subjects):
        if _norm(s) == wanted:
            return i
    raise LayoutError(f"{what} names subject {name.strip()!r}, which is not a subject of the prompt; "
                      f"use one of: {', '.join(subjects)}")


def parse_boxes(text: str, subjects: Sequence[str],
                image_size: Optional[tuple[int, int]] = None) -> dict[int, Box]:
    """Parse boxes text (module docstring) -> {subject index: Box in fractions}.

    image_size: (width, height) in pixels, needed only by entries in pixels (' px').
    """
    boxes: dict[int, Box] = {}
    for entry in (e.strip() for e in re.split(r"[;\n]", text or "")):
        if not entry:
            continue
        name, colon, numbers = entry.rpartition(":")
        if not colon or not name.strip():
            raise LayoutError(f"box {entry!r} names no subject: write it as 'subject: x0 y0 x1 y1', "
                              f"e.g. '{BOX_EXAMPLE}'")
        s = subject_index(name, subjects, f"box {entry!r}")
        if s in boxes:
            raise LayoutError(f"subject {subjects[s]!r} has two boxes: give one box per subject")
        numbers = numbers.strip()
        pixels = numbers.lower().endswith("px")
        if pixels:
            numbers = numbers[:-2]
        parts = [p for p in re.split(r"[\s,]+", numbers) if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 4 or len(parts) != 4 or not all(math.isfinite(v) for v in values):
            raise LayoutError(f"box {entry!r} needs four numbers x0 y0 x1 y1 (top-left and bottom-right corners as "
                              f"fractions of the image), e.g. '{BOX_EXAMPLE}'")
        x0, y0, x1, y1 = values
        if pixels:
            if not image_size or min(image_size) <= 0:
                raise LayoutError(f"box {entry!r} is in pixels ('px') but the image size is unknown: set width and "
                                  "height on the layout node, or give fractions of the image (0..1) without 'px'")
            width, height = image_size
            if min(values) < 0 or max(x0, x1) > width or max(y0, y1) > height:
                raise LayoutError(f"box {entry!r} reaches outside the {width}x{height} image: keep x in 0..{width} "
                                  f"and y in 0..{height}")
            x0, x1, y0, y1 = x0 / width, x1 / width, y0 / height, y1 / height
        elif min(values) < 0 or max(values) > 1:
            raise LayoutError(f"box {entry!r} has numbers outside 0..1: give fractions of the image width and "
                              "height, or pixels with ' px' at the end of the entry (and the image size set)")
        if x0 >= x1 or y0 >= y1:
            axis = "x0 >= x1" if x0 >= x1 else "y0 >= y1"
            raise LayoutError(f"box {entry!r} is empty ({axis}): x0 y0 is the top-left corner, x1 y1 the "
                              "bottom-right one, so x0 < x1 and y0 < y1")
        boxes[s] = Box(x0, y0, x1, y1)
    return boxes


def check_mask(mask: torch.Tensor, label: str) -> torch.Tensor:
    """A MASK (H, W) or (B, H, W) with values in [0, 1] -> float (B, H, W); refuses empty masks."""
    if mask.dim() == 2:
        mask = mask[None]
    if mask.dim() != 3 or min(mask.shape[-2:]) < 1:
        raise LayoutError(f"{label} has shape {tuple(mask.shape)}; a mask is (height, width) or (batch, height, "
                          "width): connect a MASK output")
    mask = mask.detach().float().cpu().clamp(0, 1)
    empty = [i for i in range(mask.shape[0]) if float(mask[i].max()) <= 0]
    if empty:
        raise LayoutError(f"{label} is empty (all zero{f' in image {empty[0]}' if mask.shape[0] > 1 else ''}): "
                          "paint the subject's region white, or disconnect the mask")
    return mask


def box_coverage(box: Box, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) fraction of each map cell covered by the box (exact area interpolation)."""
    h, w = size

    def cover(lo: float, hi: float, n: int) -> torch.Tensor:
        edges = torch.arange(n + 1, dtype=torch.float32) / n
        return ((torch.minimum(edges[1:], torch.tensor(hi)) - torch.maximum(edges[:-1], torch.tensor(lo)))
                .clamp_min(0) * n)

    return cover(box.y0, box.y1, h)[:, None] * cover(box.x0, box.x1, w)[None, :]


def mask_to_size(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) mask -> (B, h, w): area interpolation (each cell the mean of the mask over it)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask[:, None], size=size, mode="area")[:, 0]


@dataclass(frozen=True)
class SubjectLayout:
    """A region per subject (or none), as the layout node attaches it to the conditioning.

    subjects: the subject words, in the subject prompt's order.
    boxes:    per subject a Box or None.  masks: per subject a (1 or B, H, W) mask or None.
    weight:   multiplies the layout terms' weights.
    """

    subjects: tuple[str, ...]
    boxes: tuple[Optional[Box], ...]
    masks: tuple[Optional[torch.Tensor], ...]
    weight: float = 1.0

    def __post_init__(self):
        n = len(self.subjects)
        if len(self.boxes) != n or len(self.masks) != n:
            raise LayoutError("the layout needs one box-or-mask slot per subject")
        for s, (box, mask) in enumerate(zip(self.boxes, self.masks)):
            if box is not None and mask is not None:
                raise LayoutError(f"subject {self.subjects[s]!r} has both a box and a mask: give one of them")
        if all(b is None for b in self.boxes) and all(m is None for m in self.masks):
            raise LayoutError(f"the layout gives no region: type boxes like '{BOX_EXAMPLE}' or connect a mask")

    @property
    def constrained(self) -> list[int]:
        """Indices of the subjects that have a region."""
        return [s for s in range(len(self.subjects)) if self.boxes[s] is not None or self.masks[s] is not None]

    def check_image(self, latent_hw: tuple[int, int], batch: int) -> None:
        """Refuse masks whose aspect ratio or batch does not fit a (batch, ., h, w) latent."""
        h, w = latent_hw
        for s, mask in enumerate(self.masks):
            if mask is None:
                continue
            mb, mh, mw = mask.shape
            # One latent pixel of slack: masks are usually at image size, 8x the latent.
            if abs(mh / mw - h / w) > 1.0 / min(h, w):
                raise LayoutError(f"the mask of {self.subjects[s]!r} is {mw}x{mh} px but the image is {w}:{h} in "
                                  f"latent pixels (aspect {w / h:.3g}, the mask's {mw / mh:.3g}): make the mask at "
                                  "the image's size")
            if mb not in (1, batch):
                raise LayoutError(f"the mask of {self.subjects[s]!r} holds {mb} masks for a batch of {batch} "
                                  "images: give one mask, or one per image")

    def region_masks(self, size: tuple[int, int], batch: int = 1) -> torch.Tensor:
        """(B, S, h, w) soft regions at the map size; all zero for unconstrained subjects."""
        planes = []
        for box, mask in zip(self.boxes, self.masks):
            if box is not None:
                planes.append(box_coverage(box, size)[None].expand(batch, -1, -1))
            elif mask is not None:
                planes.append(mask_to_size(mask, size).expand(batch, -1, -1))
            else:
                planes.append(torch.zeros(batch, *size))
        return torch.stack(planes, dim=1).float()


# ---------------------------------------------------------------------------
# Loss terms (engine signature: (maps, weights) -> (B,))
# ---------------------------------------------------------------------------


def has_region(regions: torch.Tensor) -> torch.Tensor:
    """(B, S, h, w) -> (B, S) bool."""
    return regions.flatten(2).sum(-1) > EPS


def region_anchor(regions: torch.Tensor) -> torch.Tensor:
    """(B, S, h, w) regions -> (B, S, 2) their centroids (y, x) in map pixels."""
    grid = pixel_grid(*regions.shape[-2:], device=regions.device)
    mass = regions.sum(dim=(-2, -1)).clamp_min(EPS)
    return torch.einsum("bshw,hwc->bsc", regions, grid) / mass[..., None]


def topk_mean(values: torch.Tensor, weights: torch.Tensor, frac: float) -> torch.Tensor:
    """Mean of the k largest of values * weights, k = max(1, round(frac * sum(weights))).

    values, weights: (B, N) -> (B,). Rows with no weight give 0.
    """
    area = weights.sum(-1)
    k = (frac * area).round().clamp_min(1)
    ranked = (values * weights).sort(dim=-1, descending=True).values
    keep = (torch.arange(values.shape[-1], device=values.device)[None] < k[:, None]).float()
    mean = (ranked * keep).sum(-1) / k
    return torch.where(area > EPS, mean, torch.zeros_like(mean))


def _regions_of(maps: SubjectMaps) -> torch.Tensor:
    m = maps.smoothed
    regions = maps.regions.to(device=m.device, dtype=m.dtype)
    if tuple(regions.shape[-2:]) != tuple(m.shape[-2:]) or regions.shape[1] != m.shape[1]:
        raise ValueError(f"regions {tuple(regions.shape)} do not fit the maps {tuple(m.shape)}")
    return regions.expand(m.shape[0], -1, -1, -1)


def _mean_over(per_subject: list[torch.Tensor], counted: list[torch.Tensor], b: int, like: torch.Tensor):
    if not per_subject:
        return like.new_zeros(b)
    total = torch.stack(per_subject, 1).sum(1)
    n = torch.stack(counted, 1).float().sum(1)
    return total / n.clamp_min(1)


def layout_inner_term(maps: SubjectMaps, w) -> torch.Tensor:
    """Mean over subjects with a region of 1 - mean(top-k of M_s inside R_s) -> (B,)."""
    m = maps.smoothed
    b, s = m.shape[:2]
    if maps.regions is None:
        return m.new_zeros(b)
    regions = _regions_of(maps)
    has = has_region(regions)
    terms, counted = [], []
    for i in range(s):
        inside = topk_mean(m[:, i].flatten(1), regions[:, i].flatten(1), w.layout_topk)
        terms.append((1.0 - inside) * has[:, i])
        counted.append(has[:, i])
    return _mean_over(terms, counted, b, m)


def outside_regions(regions: torch.Tensor) -> torch.Tensor:
    """(B, S, h, w) -> where each subject should not be: the complement of its own region,
    or, for a subject without one, the union of the others' regions."""
    has = has_region(regions)[..., None, None]
    others = (regions.sum(1, keepdim=True) - regions).clamp(0, 1)
    return torch.where(has, 1.0 - regions, others)


def layout_outer_term(maps: SubjectMaps, w) -> torch.Tensor:
    """Mean over subjects of mean(top-k of M_s outside its region) -> (B,)."""
    m = maps.smoothed
    b, s = m.shape[:2]
    if maps.regions is None:
        return m.new_zeros(b)
    outside = outside_regions(_regions_of(maps))
    has = has_region(outside)
    terms = [topk_mean(m[:, i].flatten(1), outside[:, i].flatten(1), w.layout_topk) for i in range(s)]
    return _mean_over([t * has[:, i] for i, t in enumerate(terms)], [has[:, i] for i in range(s)], b, m)


def fraction_inside(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Share of each subject's activation mass inside its region: (B, S, h, w) x2 -> (B, S)."""
    regions = regions.to(maps).expand_as(maps)
    return (maps * regions).flatten(2).sum(-1) / maps.flatten(2).sum(-1).clamp_min(EPS)
