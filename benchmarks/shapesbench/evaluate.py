"""Exact evaluator for ShapesBench images: detect coloured shapes and score prompts.

Pipeline: nearest-palette colour segmentation -> connected components per
colour -> shape classification of each component by a nearest-centroid model
on shape features, fitted on renderer ground truth at first use.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .scenes import BACKGROUNDS, COLORS, PLACEMENT, SHAPES, Scene, SceneObject, render

# ---------------------------------------------------------------------------
# Colour segmentation and components
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectConfig:
    """Segmentation thresholds.

    color_threshold: max RGB distance from a palette colour; about half of the
    closest palette pair (~129), so blended edge pixels mostly stay unassigned
    instead of leaking into a neighbouring colour.
    min_area_frac: components smaller than this fraction of the canvas are
    noise; the smallest rendered object (a star at 22% size) covers ~1.9%.
    """

    color_threshold: float = 70.0
    min_area_frac: float = 0.012


DETECT_CONFIG = DetectConfig()

_COLOR_NAMES = tuple(COLORS)
# Background anchors compete with object colours in the nearest-colour vote,
# so pale anti-aliased edge pixels fall to the background.
_ANCHORS = np.array(
    [COLORS[c] for c in _COLOR_NAMES]
    + [b.top for b in BACKGROUNDS]
    + [b.bottom for b in BACKGROUNDS]
    + [(255, 255, 255)],
    dtype=np.float32,
)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def color_labels(image: np.ndarray, cfg: DetectConfig = DETECT_CONFIG) -> np.ndarray:
    """Per-pixel palette index.

    image: uint8 (H, W, 3). Returns int (H, W): index into COLORS order, or -1
    for background / unassigned pixels.
    """
    px = image.astype(np.float32)
    d2 = ((px[:, :, None, :] - _ANCHORS[None, None]) ** 2).sum(axis=-1)
    nearest = d2.argmin(axis=-1)
    close = np.take_along_axis(d2, nearest[..., None], axis=-1)[..., 0] <= cfg.color_threshold**2
    return np.where((nearest < len(_COLOR_NAMES)) & close, nearest, -1)


def components(
    image: np.ndarray, cfg: DetectConfig = DETECT_CONFIG
) -> list[tuple[str, np.ndarray]]:
    """Connected single-colour regions large enough to be objects.

    image: uint8 (H, W, 3). Returns (colour name, bool mask (H, W)) pairs with
    holes filled, largest first.
    """
    labels = color_labels(image, cfg)
    min_area = cfg.min_area_frac * labels.size
    found: list[tuple[str, np.ndarray]] = []
    for k, name in enumerate(_COLOR_NAMES):
        comp, n = ndimage.label(labels == k, structure=_EIGHT_CONNECTED)
        if n == 0:
            continue
        areas = np.bincount(comp.ravel())
        for j in np.nonzero(areas >= min_area)[0]:
            if j > 0:
                found.append((name, ndimage.binary_fill_holes(comp == j)))
    found.sort(key=lambda item: -int(item[1].sum()))
    return found


# ---------------------------------------------------------------------------
# Shape features
# ---------------------------------------------------------------------------


def _hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of (P, 2) points (monotone chain + shoelace)."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(seq) -> list:
        chain: list = []
        for p in seq:
            while len(chain) >= 2 and cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    hull = np.array(half(pts) + half(pts[::-1]), dtype=float)
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _row_extreme_corners(mask: np.ndarray) -> np.ndarray:
    """Pixel-square corners at each row's ends; their hull is the mask's hull.

    mask: bool (h, w). Returns (4 * rows, 2) float as (x, y).
    """
    rows = np.nonzero(mask.any(axis=1))[0]
    left = mask[rows].argmax(axis=1)
    right = mask.shape[1] - mask[rows][:, ::-1].argmax(axis=1)
    xs = np.concatenate([left, left, right, right])
    ys = np.concatenate([rows, rows + 1, rows, rows + 1])
    return np.stack([xs, ys], axis=1).astype(float)


_RADIAL_BINS = 32
_HARMONICS = 6


def _radial_profile(mask: np.ndarray) -> np.ndarray:
    """Farthest mask extent from the centroid per angular bin.

    mask: bool (h, w). Returns (_RADIAL_BINS,) distances divided by their mean.
    """
    ys, xs = np.nonzero(mask)
    dx, dy = xs - xs.mean(), ys - ys.mean()
    # +0.5 reaches from a pixel centre to roughly the shape's edge.
    r = np.hypot(dx, dy) + 0.5
    bins = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * _RADIAL_BINS).astype(int) % _RADIAL_BINS
    profile = np.zeros(_RADIAL_BINS)
    np.maximum.at(profile, bins, r)
    return profile / max(profile.mean(), 1e-6)


def shape_features(mask: np.ndarray) -> np.ndarray:
    """Scale-free descriptors of one component.

    mask: bool (H, W) (any crop containing the component). Returns float (12,):
    box fill, solidity, hull/box fill, centroid height in box, log aspect,
    radial-profile std, and magnitudes of radial harmonics 1..6 (the count of
    lobes: 3 triangle, 4 square/cross, 5 star, 1-2 heart, none circle).
    """
    rows, cols = np.nonzero(mask)
    y0, x0 = rows.min(), cols.min()
    crop = mask[y0:rows.max() + 1, x0:cols.max() + 1]
    h, w = crop.shape
    area = float(crop.sum())
    hull = max(_hull_area(_row_extreme_corners(crop)), area)
    profile = _radial_profile(crop)
    spectrum = np.abs(np.fft.rfft(profile))[1:_HARMONICS + 1] * 2 / _RADIAL_BINS
    return np.concatenate(
        [
            [
                area / (h * w),
                area / hull,
                hull / (h * w),
                (rows.mean() - y0 + 0.5) / h,
                math.log(w / h),
                profile.std(),
            ],
            spectrum,
        ]
    )


# ---------------------------------------------------------------------------
# Shape classifier: nearest centroid in standardised feature space
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeModel:
    """centroids: (n_shapes, F) in standardised units; mean/scale: (F,)."""

    shapes: tuple[str, ...]
    centroids: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    def predict(self, features: np.ndarray) -> str:
        """features: (F,). Returns the nearest class's shape name."""
        z = (features - self.mean) / self.scale
        return self.shapes[int(((self.centroids - z) ** 2).sum(axis=1).argmin())]


@dataclass(frozen=True)
class FitConfig:
    """Training renders for the classifier: per shape, sizes evenly spread
    slightly beyond the sampler's range, at random sub-pixel offsets."""

    per_shape: int = 24
    canvas: int = 64
    min_size_frac: float = PLACEMENT.min_size_frac * 0.9
    max_size_frac: float = PLACEMENT.max_size_frac * 1.1
    reference_canvas: int = 128  # size fractions refer to the default canvas
    seed: int = 0


def _training_features(shape: str, cfg: FitConfig, rng: np.random.Generator) -> np.ndarray:
    """Features of ``cfg.per_shape`` single-shape renders. Returns (per_shape, F)."""
    sizes = np.linspace(cfg.min_size_frac, cfg.max_size_frac, cfg.per_shape) * cfg.reference_canvas
    rows = []
    for s in sizes:
        cx, cy = cfg.canvas / 2 + rng.uniform(-0.5, 0.5, 2)
        scene = Scene((SceneObject(shape, "red", float(cx), float(cy), float(s)),), 0, cfg.canvas)
        image, _ = render(scene)
        # Fit on what the detector itself segments, not on the renderer's masks.
        mask = components(image, DetectConfig(min_area_frac=0.0))[0][1]
        rows.append(shape_features(mask))
    return np.array(rows)


def fit_shape_model(cfg: FitConfig = FitConfig()) -> ShapeModel:
    """Fit the nearest-centroid shape classifier on clean renders (deterministic)."""
    rng = np.random.default_rng(cfg.seed)
    per_class = [_training_features(s, cfg, rng) for s in SHAPES]
    stacked = np.concatenate(per_class)
    mean, scale = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6
    centroids = np.array([((f - mean) / scale).mean(axis=0) for f in per_class])
    return ShapeModel(SHAPES, centroids, mean, scale)


@functools.lru_cache(maxsize=1)
def shape_model() -> ShapeModel:
    """The default classifier, fitted once per process (well under a second)."""
    return fit_shape_model()


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------


@dataclass
class Detection:
    """One detected object; box is (x0, y0, x1, y1) in pixels, x1/y1 exclusive."""

    shape: str
    color: str
    box: tuple[float, float, float, float]
    area: int
    mask: np.ndarray = field(repr=False)  # bool (H, W)


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def detect(image: np.ndarray, cfg: DetectConfig = DETECT_CONFIG) -> list[Detection]:
    """Detect coloured shapes in a uint8 (H, W, 3) image, largest first."""
    model = shape_model()
    return [
        Detection(model.predict(shape_features(mask)), color, _box(mask), int(mask.sum()), mask)
        for color, mask in components(image, cfg)
    ]


# ---------------------------------------------------------------------------
# Prompt scoring
# ---------------------------------------------------------------------------


@dataclass
class PromptSpec:
    """A prompt and its subjects as (shape word, colour word or None), in order."""

    text: str
    subjects: tuple[tuple[str, str | None], ...]
    held_out: bool = False


# A merged blob wider or taller than the largest single object (plus slack
# for anti-aliasing and model sloppiness) suggests two subjects fused.
MERGE_SLACK = 1.15


def _assign(
    subjects: tuple[tuple[str, str | None], ...], dets: list[Detection]
) -> list[Detection | None]:
    """Best one-to-one subject -> detection assignment.

    Maximises (#shape matches, #shape+colour matches, total matched area)
    lexicographically by brute force; prompts have few subjects, and only the
    largest few candidate detections are considered.
    """
    wanted = {s for s, _ in subjects}
    candidates = [d for d in dets if d.shape in wanted][:8]
    pool: list[Detection | None] = candidates + [None] * len(subjects)
    best, best_key = [None] * len(subjects), (-1, -1, -1)
    for combo in itertools.permutations(range(len(pool)), len(subjects)):
        chosen = [pool[i] for i in combo]
        shape_ok = [d is not None and d.shape == s for d, (s, _) in zip(chosen, subjects)]
        color_ok = [
            ok and (c is None or d.color == c)
            for ok, d, (_, c) in zip(shape_ok, chosen, subjects)
        ]
        area = sum(d.area for d, ok in zip(chosen, shape_ok) if ok)
        key = (sum(shape_ok), sum(color_ok), area)
        if key > best_key:
            best, best_key = [d if ok else None for d, ok in zip(chosen, shape_ok)], key
    return best


def _looks_merged(dets: list[Detection], n_subjects: int, height: int) -> bool:
    """Heuristic: fewer detections than subjects, and some detection's box is
    wider or taller than MERGE_SLACK times the largest object size the
    sampler draws (max_size_frac of the canvas) -- i.e. two subjects were
    probably painted as one blob."""
    limit = PLACEMENT.max_size_frac * height * MERGE_SLACK
    too_big = any(max(d.box[2] - d.box[0], d.box[3] - d.box[1]) > limit for d in dets)
    return len(dets) < n_subjects and too_big


def score(image: np.ndarray, spec: PromptSpec, cfg: DetectConfig = DETECT_CONFIG) -> dict:
    """Score a uint8 (H, W, 3) image against a prompt.

    present: every subject has its own detection of the right shape (colour
    ignored). bound: present, and every coloured subject's detection also has
    that colour. no_extra: no more detections than subjects. correct: all
    three. boxes maps each found subject's shape to its detection's box (for
    a repeated shape the first subject wins).
    """
    dets = detect(image, cfg)
    chosen = _assign(spec.subjects, dets)
    present = all(d is not None for d in chosen)
    bound = present and all(c is None or d.color == c for d, (_, c) in zip(chosen, spec.subjects))
    no_extra = len(dets) <= len(spec.subjects)
    found_boxes: dict[str, tuple[float, float, float, float]] = {}
    for d, (s, _) in zip(chosen, spec.subjects):
        if d is not None:
            found_boxes.setdefault(s, d.box)
    return {
        "present": present,
        "bound": bound,
        "no_extra": no_extra,
        "correct": present and bound and no_extra,
        "n_detected": len(dets),
        "missing": [s for d, (s, _) in zip(chosen, spec.subjects) if d is None],
        "merged": _looks_merged(dets, len(spec.subjects), image.shape[0]),
        "boxes": found_boxes,
        "detected": [f"{d.color} {d.shape}" for d in dets],
    }


def colours_found(subjects, detected) -> bool | None:
    """Every subject's colour is found as an object of its own, whatever its shape: a score
    row's subjects [(shape, colour or None)] against its detections ["colour shape", ...].
    Two subjects of one colour need two objects of it. None if a subject names no colour.
    For a model that draws colour blobs rather than shapes, where "present" (shape-based)
    cannot tell a neglected subject from a badly drawn one."""
    from collections import Counter
    if any(c is None for _, c in subjects):
        return None
    wanted = Counter(c for _, c in subjects)
    found = Counter(d.split(" ", 1)[0] for d in detected)
    return all(found[c] >= n for c, n in wanted.items())


def _wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(
    scores: list[dict], keys: tuple[str, ...] = ("present", "bound", "no_extra", "correct")
) -> dict[str, tuple[float, float, float]]:
    """key -> (mean, ci_low, ci_high) with a 95% Wilson interval.

    An empty list gives (nan, 0.0, 1.0): nothing is known about the rate.
    """
    out = {}
    for k in keys:
        n = len(scores)
        if n == 0:
            out[k] = (float("nan"), 0.0, 1.0)
            continue
        hits = float(sum(bool(s[k]) for s in scores))
        lo, hi = _wilson(hits, n)
        mean = hits / n
        # Guard against float round-off at p = 0 or 1.
        out[k] = (mean, min(lo, mean), max(hi, mean))
    return out
