"""Layout input: a region (box or mask) per subject, from what the layout node is given.

Parses the boxes text, checks masks and assigns them to subjects, and holds the result as
a SubjectLayout, which the sampler turns into soft region planes at the map size. The loss
terms that read those planes are in layout_terms.py.

Boxes text (what the layout node's `boxes` widget takes), one box per subject:

    cat: 0.05 0.2 0.45 0.8; dog: 0.55 0.2 0.95 0.8

`subject: x0 y0 x1 y1`, entries separated by ';' or new lines, numbers by spaces or
commas. (x0, y0) is the top-left corner, (x1, y1) the bottom-right, as fractions of the
image width and height (0..1, y downwards). Append ' px' to an entry to give pixels
instead (`cat: 16 32 60 100 px`); that needs the image width and height.

Masks come in numbered slots (the node's mask_1, mask_2, ...; errors name them so). With
no `mask_subjects` text, slot n is the prompt's subject n; otherwise `mask_subjects` names
one subject per slot, in slot order ('dog, cat': mask_1 is the dog's).

Regions are soft (values in [0, 1]): boxes and masks are area-interpolated to the map size.

Shapes: S subjects, B images, (H, W) a mask's size in pixels, (h, w) the attention map size.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from .tokens import parse_list

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


def assign_masks(subjects: Sequence[str], masks_by_slot: Mapping[int, Optional[torch.Tensor]],
                 mask_subjects: str = "", image_size: Optional[tuple[int, int]] = None
                 ) -> tuple[Optional[torch.Tensor], ...]:
    """Give each connected mask slot its subject (module docstring) -> per subject a mask or None.

    masks_by_slot: slot number (1, 2, ...) -> a MASK (H, W) or (B, H, W), or None for an
                   unconnected slot.
    mask_subjects: the subject of each slot, comma separated, in slot order; empty: slot n
                   is subject n. A name is read only where its slot is connected.
    image_size:    (width, height) in pixels, or None (as is a zero side, like parse_boxes);
                   when given, every mask must be that size.
    Returns S entries: the subject's checked float (B, H, W) mask, or None.
    """
    if any(i < 1 for i in masks_by_slot):
        raise ValueError(f"mask slots are numbered from 1, got {sorted(masks_by_slot)}")
    assigned: list[Optional[torch.Tensor]] = [None] * len(subjects)
    names = parse_list(mask_subjects or "")
    # In slot order, so that a too short mask_subjects is refused before any mask is read, naming
    # the highest connected slot (not an index error at the first slot it lacks).
    connected = sorted(((i, m) for i, m in masks_by_slot.items() if m is not None), key=lambda e: e[0])
    if names and len(names) < max((i for i, _ in connected), default=0):
        raise LayoutError(f"mask_subjects names {len(names)} subjects but mask_{connected[-1][0]} is connected: "
                          "name one subject per mask slot, in the order mask_1, mask_2, ...")
    for i, mask in connected:
        label = f"mask_{i}"
        if names:
            s = subject_index(names[i - 1], subjects, f"mask_subjects (for {label})")
        elif i <= len(subjects):
            s = i - 1
        else:
            raise LayoutError(f"{label} is connected but the prompt has only {len(subjects)} subjects: "
                              "disconnect it or name its subject in mask_subjects")
        mask = check_mask(mask, f"{label} (for {subjects[s]!r})")
        if image_size and min(image_size) > 0:
            width, height = image_size
            if tuple(mask.shape[-2:]) != (height, width):
                raise LayoutError(f"{label} is {mask.shape[-1]}x{mask.shape[-2]} px but width x height is "
                                  f"{width}x{height}: make the mask at the image's size")
        if assigned[s] is not None:
            raise LayoutError(f"two masks are for {subjects[s]!r}: give one mask per subject")
        assigned[s] = mask
    return tuple(assigned)


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
    weight:   the user's multiplier of the layout terms' weights (LayoutWeights.scaled);
              0 turns the layout off.
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
