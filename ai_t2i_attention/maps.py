"""Cross-attention maps: from captured query/key projections to per-subject maps.

Shapes used throughout:
    B  images in the batch         N = H*W latent pixels of one layer
    T  text tokens (77 per chunk)  S subjects, P attribute-subject pairs
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange

# The joint-attention (MM-DiT) map lives in joint_maps.py (its fused kernel and written-out
# gradient); re-exported here beside the cross-attention maps.
from .joint_maps import joint_attention_probabilities  # noqa: F401


def attention_probabilities(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) averaged over heads.

    q: (B, N, heads*d) projected queries; k: (B, T, heads*d) projected keys.
    Returns (B, N, T) in float32. The host's fast attention never exposes the
    probabilities, so they are recomputed here, only for the layers the loss reads.
    """
    q = rearrange(q.float(), "b n (h d) -> b h n d", h=heads)
    k = rearrange(k.float(), "b t (h d) -> b h t d", h=heads)
    scores = torch.einsum("bhnd,bhtd->bhnt", q, k) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-1).mean(dim=1)


def pool_maps(avg: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, H, W, T) maps average-pooled by factor on both axes -> (B, ceil(H/f), ceil(W/f), T).
    A window hanging over the edge (odd grids) averages the positions it covers. Pooling
    probabilities keeps them probabilities: each map position is the mean of the grid's."""
    if factor == 1:
        return avg
    x = rearrange(avg, "b h w t -> b t h w")
    x = F.avg_pool2d(x, factor, stride=factor, ceil_mode=True)
    return rearrange(x, "b t h w -> b h w t")


@dataclass
class AttentionRecorder:
    """Collects head-averaged cross-attention probabilities of chosen layers during
    one guidance forward pass. One recorder lives for one pass: nothing global.

    wanted: keys of the layers to record (opaque to the engine; the host names them).
    All recorded layers must share one map size (H, W). Once every wanted layer was
    recorded, `complete` turns true and the host may stop the forward pass early.
    """

    wanted: frozenset
    stop_early: bool = True  # let the host end the forward pass once complete
    map_size: tuple[int, int] | None = None
    layers: list[torch.Tensor] = field(default_factory=list)  # each (B, N, T)
    seen: list = field(default_factory=list)

    def wants(self, key) -> bool:
        return key in self.wanted and key not in self.seen

    def record(self, key, q: torch.Tensor, k: torch.Tensor, heads: int, map_size: tuple[int, int]) -> None:
        """Record a cross-attention layer from its projections q (B, N, heads*d), k (B, T, heads*d)."""
        self.record_probabilities(key, attention_probabilities(q, k, heads), map_size)

    def record_probabilities(self, key, probs: torch.Tensor, map_size: tuple[int, int]) -> None:
        """Record (B, N, T) probabilities of layer `key`, N = H * W of map_size (H, W)."""
        map_size = tuple(int(s) for s in map_size)
        if self.map_size is None:
            self.map_size = map_size
        elif map_size != self.map_size:
            raise ValueError(f"layer {key} has {map_size} maps, others {self.map_size}: choose layers of one level")
        if probs.shape[1] != map_size[0] * map_size[1]:
            raise ValueError(f"layer {key}: {probs.shape[1]} positions do not make {map_size} maps")
        self.layers.append(probs)
        self.seen.append(key)

    @property
    def complete(self) -> bool:
        return len(self.seen) == len(self.wanted)

    def average(self) -> torch.Tensor:
        """Mean over recorded layers, reshaped to (B, H, W, T)."""
        if not self.layers:
            raise RuntimeError("no cross-attention layer was recorded")
        mean = torch.stack(self.layers).mean(dim=0)
        h, w = self.map_size
        return rearrange(mean, "b (h w) t -> b h w t", h=h, w=w)


def gaussian_kernel(size: int = 3, sigma: float = 0.5, device=None) -> torch.Tensor:
    """(size, size) normalised Gaussian in float32, built as the Attend-and-Excite reference
    builds its "sigma 0.5" kernel: per axis (1 / (sigma sqrt(2 pi))) exp(-(x / (2 sigma))^2),
    the product of the two axes, divided by its sum. That is a Gaussian of effective sigma
    sigma * sqrt(2) (centre weight 0.332 at size 3, where a textbook sigma 0.5 gives 0.619);
    the presence thresholds were tuned on it, so it is kept, float32 rounding included
    (the reference vectors match it exactly, a float64 kernel only to 1e-7)."""
    ax = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = (1 / (sigma * math.sqrt(2 * math.pi))) * torch.exp(-((ax / (2 * sigma)) ** 2))
    k2 = g[:, None] * g[None, :]
    return k2 / k2.sum()


def gaussian_smooth(maps: torch.Tensor, size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """Smooth (B, S, H, W) maps with a Gaussian, reflect padding (keeps peaks off borders)."""
    b, s, h, w = maps.shape
    kernel = gaussian_kernel(size, sigma, maps.device).to(maps.dtype)[None, None]
    x = rearrange(maps, "b s h w -> (b s) 1 h w")
    pad = size // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel)
    return rearrange(x, "(b s) 1 h w -> b s h w", b=b, s=s)


@dataclass(frozen=True)
class TokenGroups:
    """Token columns of the context, resolved from words (see tokens.py).

    subjects: for each subject, the context columns of its tokens (a word may be
        split into several tokens; an embedding may span several vectors).
    attributes: for each attribute-subject pair, (attribute columns, subject index).
    text_columns: the token axis that the presence term re-normalises over (x100
        softmax). As the reference code: every column but each chunk's start token and
        its last column (end token and padding stay in). Stable Diffusion 2.x's official
        Attend-and-Excite keeps the prompt's own columns only (see tokens.resolve). Empty:
        the reference's columns 1..T-2 of a single chunk.
    """

    subjects: tuple[tuple[int, ...], ...]
    attributes: tuple[tuple[tuple[int, ...], int], ...] = ()
    text_columns: tuple[int, ...] = ()


@dataclass(frozen=True)
class SubjectMaps:
    """What every loss reads, built whole for one guidance pass. All float32.

    raw:       (B, S, H, W) head/layer-averaged probabilities of each subject (mean over
               its tokens), as the centroid terms use them.
    smoothed:  (B, S, H, W) token-renormalised (x100 softmax over text tokens), summed over
               the subject's tokens, Gaussian-smoothed: the presence term's maps.
    attribute: (B, P, H, W) raw maps of attribute words; attribute_of: (P,) subject index.
    regions:   optional (B or 1, S, H, W) soft layout regions in [0, 1] (layout_parse.py); an all-zero
               plane leaves that subject unconstrained. None: no layout.
    attribute_smoothed: optional (B, P, H, W) attribute maps made like `smoothed`
               (baselines.py reads them; None falls back to `attribute`).
    previous:  optional (B, S, H, W) `smoothed` maps of the previous guided step, given by a
               host that keeps them (A-STAR retention, CONFORM); None: no earlier step.
    """

    raw: torch.Tensor
    smoothed: torch.Tensor
    attribute: torch.Tensor
    attribute_of: tuple[int, ...]
    regions: Optional[torch.Tensor] = None
    attribute_smoothed: Optional[torch.Tensor] = None
    previous: Optional[torch.Tensor] = None


def sharpened(maps: torch.Tensor) -> torch.Tensor:
    """FOCUS's shaping of (B, S, H, W) maps: blurred 3x3 with a textbook Gaussian of sigma 1
    (gaussian_kernel's sigma is 1/sqrt(2) of that, see there), cubed (peaks stand out) and
    normalised to sum 1 over the image. Returns (B, S, H, W)."""
    blurred = gaussian_smooth(maps, 3, sigma=1 / math.sqrt(2)).clamp_min(0.0) ** 3
    return blurred / blurred.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def subject_maps(avg: torch.Tensor, groups: TokenGroups, temperature: float = 100.0,
                 regions: Optional[torch.Tensor] = None, previous: Optional[torch.Tensor] = None,
                 sharpen: bool = False) -> SubjectMaps:
    """Turn averaged (B, H, W, T) probabilities into SubjectMaps (float32, or float64 when
    given float64: the reference vectors are checked that way). regions (B or 1, S, H, W)
    and previous (B, S, H, W) are the host's, carried into the maps as they are. sharpen:
    the raw subject maps are `sharpened` (a joint-attention map rule, JointMapRule)."""
    avg = avg if avg.dtype == torch.float64 else avg.float()
    t = avg.shape[-1]
    for cols in groups.subjects + tuple(c for c, _ in groups.attributes):
        if not cols or max(cols) >= t:
            raise ValueError(f"token columns {cols} do not fit a context of {t} tokens")
    raw = torch.stack([avg[..., list(c)].mean(-1) for c in groups.subjects], dim=1)
    if sharpen:
        raw = sharpened(raw)

    text = list(groups.text_columns) or list(range(1, t - 1))
    renorm = (avg[..., text] * temperature).softmax(dim=-1)  # (B, H, W, len(text))
    where = {col: i for i, col in enumerate(text)}
    sub = []
    for cols in groups.subjects:
        idx = [where[c] for c in cols if c in where]
        if not idx:
            raise ValueError(f"subject columns {cols} are not text columns")
        sub.append(renorm[..., idx].sum(-1))
    smoothed = gaussian_smooth(torch.stack(sub, dim=1))

    if groups.attributes:
        attribute = torch.stack([avg[..., list(c)].mean(-1) for c, _ in groups.attributes], dim=1)
    else:
        attribute = raw.new_zeros(raw.shape[0], 0, *raw.shape[2:])
    attr_idx = [[where[c] for c in cols if c in where] for cols, _ in groups.attributes]
    attribute_smoothed = None
    if all(attr_idx):  # attribute words in the text columns: renormalised like the subjects
        attribute_smoothed = (gaussian_smooth(torch.stack([renorm[..., i].sum(-1) for i in attr_idx], dim=1))
                              if attr_idx else attribute)
    return SubjectMaps(raw, smoothed, attribute, tuple(s for _, s in groups.attributes), regions=regions,
                       attribute_smoothed=attribute_smoothed, previous=previous)
