"""A preview tile that says something in words, for a run that has no maps to show (strength 0,
a guided range that holds no step): AI-T2I Attention Maps and KSampler (AI-T2I) return it in
place of heatmaps, so the prompt succeeds and the preview says why it is empty. The text is
drawn with PIL, which the host ships; the engine stays pure torch."""
from __future__ import annotations

import numpy as np
import torch

BACKGROUND = (38, 38, 38)  # neutral grey: not a colour of the heatmap ramp, so it never reads as a map
INK = (240, 240, 240)
MARGIN = 8


def notice_tile(text: str, size: tuple[int, int] = (256, 256)) -> torch.Tensor:
    """(1, H, W, 3) float tile in [0, 1], size = (H, W), with `text` wrapped to its width."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = size
    canvas = Image.new("RGB", (w, h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=max(10, w // 16))
    except TypeError:  # Pillow before 10.1: only the fixed-size bitmap font
        font = ImageFont.load_default()
    lines, line = [], ""
    for word in text.split():  # greedy wrap: as many words per line as the width holds
        wider = f"{line} {word}".strip()
        if line and draw.textlength(wider, font=font) > w - 2 * MARGIN:
            lines.append(line)
            line = word
        else:
            line = wider
    lines.append(line)
    draw.multiline_text((MARGIN, MARGIN), "\n".join(lines), fill=INK, font=font)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]


def unguided_notice(record) -> str:
    """What the preview and the loss log say for a run without maps (RunRecord.unguided_reason)."""
    return "AI-T2I: " + (record.unguided_reason or "no attention maps were kept in this run")


def unguided_tile(record, images: torch.Tensor | None = None) -> torch.Tensor:
    """(1, H, W, 3) tile saying why the run has no maps; (H, W) of images (B, H, W, 3) if
    given (it sits in one preview with them), else 256 x 256."""
    size = tuple(images.shape[1:3]) if images is not None else (256, 256)
    return notice_tile(unguided_notice(record), size)
