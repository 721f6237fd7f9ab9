"""Deterministic synthetic scenes of coloured shapes on light backgrounds.

Coordinates are in canvas pixels: x grows to the right, y grows downwards,
and pixel (row i, column j) covers the square [j, j+1) x [i, i+1).
Every shape fits exactly inside the axis-aligned square of side ``size``
centred on (cx, cy); shapes are never rotated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross")
# Shapes the renderer draws that no training scene or benchmark prompt uses: new
# concepts for personalisation (learned later as textual-inversion embeddings).
NEW_SHAPES: tuple[str, ...] = ("diamond", "bar")

# Saturated mid-luminance colours: every pair is >= ~129 apart in RGB and every
# colour is >= ~180 away from every background, so a lossy autoencoder that
# desaturates or blurs a little still leaves the nearest palette entry right.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (40, 155, 50),
    "blue": (35, 70, 225),
    "yellow": (240, 205, 30),
    "purple": (155, 45, 165),
    "cyan": (20, 195, 195),
}


@dataclass(frozen=True)
class Background:
    """A light background, a vertical linear gradient from ``top`` to ``bottom``.

    A plain background has ``top == bottom``.
    """

    name: str
    top: tuple[int, int, int]
    bottom: tuple[int, int, int]


BACKGROUNDS: tuple[Background, ...] = (
    Background("white", (246, 246, 246), (246, 246, 246)),
    Background("light grey", (222, 222, 222), (222, 222, 222)),
    Background("beige", (240, 232, 210), (240, 232, 210)),
    Background("gradient", (250, 250, 250), (214, 220, 230)),
)

# Pairs never rendered for training: one per shape/colour, spread out so
# that every held-out pair's shape and colour are each seen elsewhere.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {
        ("circle", "purple"),
        ("triangle", "blue"),
        ("star", "red"),
        ("cross", "yellow"),
    }
)

# Shape combinations that never co-occur in a training scene; together they
# touch every shape at least once.
HELD_OUT_COMBOS: frozenset[frozenset[str]] = frozenset(
    {
        frozenset({"circle", "cross"}),
        frozenset({"square", "star"}),
        frozenset({"triangle", "heart"}),
        frozenset({"star", "heart"}),
    }
)


@dataclass(frozen=True)
class SceneObject:
    """One shape: centre (cx, cy) and bounding-square side ``size``, in pixels."""

    shape: str
    color: str
    cx: float
    cy: float
    size: float


@dataclass(frozen=True)
class Scene:
    """Objects are painted in order, so later ones occlude earlier ones."""

    objects: tuple[SceneObject, ...]
    background: int
    size: int = 128


# ---------------------------------------------------------------------------
# Shape geometry in unit coordinates: the shape's bounding box is centred on
# the origin and its larger side is exactly 1.
# ---------------------------------------------------------------------------


def _fit_unit(vertices: np.ndarray) -> np.ndarray:
    """Centre a polygon's bounding box on 0 and scale its larger side to 1.

    vertices: (V, 2) float as (x, y). Returns (V, 2).
    """
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return (vertices - (lo + hi) / 2) / (hi - lo).max()


def _square() -> np.ndarray:
    return np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def _triangle() -> np.ndarray:
    # Equilateral, pointing up (negative y is up on the canvas).
    h = np.sqrt(3) / 2
    return _fit_unit(np.array([[0.0, -h], [0.5, 0.0], [-0.5, 0.0]]))


def _star(points: int = 5, inner_ratio: float = 0.5) -> np.ndarray:
    # A chunky star (inner radius half the outer one) keeps the tips thick
    # enough to survive 128 px renders and a lossy autoencoder.
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner_ratio)
    return _fit_unit(np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1))


def _cross(arm: float = 0.36) -> np.ndarray:
    a = arm / 2
    return np.array(
        [
            [-a, -0.5], [a, -0.5], [a, -a], [0.5, -a], [0.5, a], [a, a],
            [a, 0.5], [-a, 0.5], [-a, a], [-0.5, a], [-0.5, -a], [-a, -a],
        ]
    )


def _diamond() -> np.ndarray:
    # A square standing on a corner: equal diagonals, half the area of its box.
    return np.array([[0.0, -0.5], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0]])


def _bar() -> np.ndarray:
    # A lying rectangle twice as wide as it is high.
    return np.array([[-0.5, -0.25], [0.5, -0.25], [0.5, 0.25], [-0.5, 0.25]])


def _heart(n: int = 96) -> np.ndarray:
    # Classic parametric heart; y is negated so the lobes are on top.
    t = np.arange(n) * 2 * np.pi / n
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return _fit_unit(np.stack([x, y], axis=1))


_POLYGONS: dict[str, np.ndarray] = {
    "square": _square(),
    "triangle": _triangle(),
    "star": _star(),
    "cross": _cross(),
    "heart": _heart(),
    "diamond": _diamond(),
    "bar": _bar(),
}


def _inside_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test.

    u, v: (...) unit coordinates of sample points; poly: (V, 2).
    Returns a bool array shaped like u.
    """
    inside = np.zeros(u.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0)):
        if y1 == y2:
            continue  # a horizontal edge is never crossed by a horizontal ray
        straddles = (y1 > v) != (y2 > v)
        x_cross = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
        inside ^= straddles & (u < x_cross)
    return inside


def _inside_shape(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which unit-coordinate sample points (u, v) lie inside ``shape``."""
    if shape == "circle":
        return u * u + v * v <= 0.25
    if shape not in _POLYGONS:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES + NEW_SHAPES}")
    return _inside_polygon(u, v, _POLYGONS[shape])


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

SUPERSAMPLE = 4


def _background_image(bg: Background, height: int, width: int) -> np.ndarray:
    """Float (height, width, 3) background, sampled at row centres."""
    t = (np.arange(height, dtype=np.float32) + 0.5) / height
    top = np.asarray(bg.top, np.float32)
    bottom = np.asarray(bg.bottom, np.float32)
    rows = top[None, :] * (1 - t[:, None]) + bottom[None, :] * t[:, None]
    return np.broadcast_to(rows[:, None, :], (height, width, 3)).copy()


def _object_window(obj: SceneObject, hi_size: int, factor: int) -> tuple[slice, slice]:
    """Supersampled row/column slices covering the object's bounding square."""
    half = obj.size / 2

    def span(c: float) -> slice:
        lo = max(int(np.floor((c - half) * factor)), 0)
        hi = min(int(np.ceil((c + half) * factor)) + 1, hi_size)
        return slice(lo, max(lo, hi))

    return span(obj.cy), span(obj.cx)


def _paint_owner(owner: np.ndarray, obj: SceneObject, index: int, factor: int) -> None:
    """Write ``index`` into the supersampled owner map wherever ``obj`` covers.

    owner: (H*factor, W*factor) int16, modified in place.
    """
    rows, cols = _object_window(obj, owner.shape[0], factor)
    ys = (np.arange(rows.start, rows.stop) + 0.5) / factor
    xs = (np.arange(cols.start, cols.stop) + 0.5) / factor
    u = (xs[None, :] - obj.cx) / obj.size
    v = (ys[:, None] - obj.cy) / obj.size
    u, v = np.broadcast_arrays(u, v)
    covered = _inside_shape(obj.shape, u, v)
    owner[rows, cols][covered] = index


def _block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Box-downsample (H*f, W*f, ...) to (H, W, ...) by averaging f x f blocks."""
    h, w = a.shape[0] // factor, a.shape[1] // factor
    return a.reshape(h, factor, w, factor, *a.shape[2:]).mean(axis=(1, 3))


def render(scene: Scene, supersample: int = SUPERSAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene with anti-aliased edges.

    Returns image: uint8 (H, W, 3) and masks: bool (n_objects, H, W) where
    masks[i] marks pixels whose area is at least half covered by the visible
    (non-occluded) part of object i. H = W = scene.size.
    """
    n, f = scene.size, supersample
    owner = np.full((n * f, n * f), -1, dtype=np.int16)
    for i, obj in enumerate(scene.objects):
        _paint_owner(owner, obj, i, f)

    # The palette lookup puts the background at index 0 and object i at i + 1.
    bg = _background_image(BACKGROUNDS[scene.background], n * f, n * f)
    palette = np.array([[0, 0, 0]] + [COLORS[o.color] for o in scene.objects], np.float32)
    hi = np.where(owner[..., None] >= 0, palette[owner + 1], bg)
    image = np.rint(_block_mean(hi, f)).clip(0, 255).astype(np.uint8)

    ids = np.arange(len(scene.objects), dtype=np.int16)
    coverage = _block_mean((owner[None] == ids[:, None, None]).transpose(1, 2, 0), f)
    masks = coverage.transpose(2, 0, 1) >= 0.5
    return image, masks


def boxes(masks: np.ndarray) -> np.ndarray:
    """Tight pixel boxes of masks.

    masks: bool (n, H, W). Returns float (n, 4) as (x0, y0, x1, y1) with
    x1/y1 exclusive (x1 - x0 is the width in pixels); NaN rows for empty masks.
    """
    out = np.full((len(masks), 4), np.nan)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


# ---------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------


def with_article(phrase: str) -> str:
    """'red circle' -> 'a red circle' ('an' before a vowel)."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def join_phrases(phrases: list[str]) -> str:
    """['x', 'y', 'z'] -> 'a x, a y and a z'."""
    items = [with_article(p) for p in phrases]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption(scene: Scene, with_colors: bool = True) -> str:
    """Caption listing objects in painting order, e.g. 'a red circle and a blue square'."""
    phrases = [f"{o.color} {o.shape}" if with_colors else o.shape for o in scene.objects]
    return join_phrases(phrases)


# ---------------------------------------------------------------------------
# Random scenes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Object sizes (fraction of the canvas side) and spacing (pixels)."""

    min_size_frac: float = 0.22
    max_size_frac: float = 0.40
    margin: float = 2.0  # free pixels between a box and the canvas edge
    gap: float = 4.0  # free pixels between two objects' boxes
    tries: int = 200  # placement attempts before shrinking the size range


PLACEMENT = Placement()


def _is_held_out_set(shapes: tuple[str, ...]) -> bool:
    return any(
        frozenset({a, b}) in HELD_OUT_COMBOS
        for i, a in enumerate(shapes)
        for b in shapes[i + 1:]
    )


def _pick_shapes(
    rng: np.random.Generator, n: int, shapes: tuple[str, ...], allow_held_out: bool
) -> tuple[str, ...]:
    """n distinct shapes, avoiding held-out combinations unless allowed."""
    if n > len(shapes):
        raise ValueError(f"need {n} distinct shapes, only {len(shapes)} available")
    for _ in range(1000):
        picked = tuple(shapes[i] for i in rng.permutation(len(shapes))[:n])
        if allow_held_out or not _is_held_out_set(picked):
            return picked
    raise ValueError(f"no {n}-shape set of {shapes} avoids the held-out combos")


def _pick_colors(
    rng: np.random.Generator,
    shapes: tuple[str, ...],
    colors: tuple[str, ...],
    allow_held_out: bool,
) -> tuple[str, ...]:
    """One distinct colour per shape, avoiding held-out pairs unless allowed."""
    picked: list[str] = []
    for shape in shapes:
        options = [
            c for c in colors
            if c not in picked and (allow_held_out or (shape, c) not in HELD_OUT_PAIRS)
        ]
        if not options:
            raise ValueError(f"no colour left for {shape!r} among {colors}")
        picked.append(options[rng.integers(len(options))])
    return tuple(picked)


def _separated(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    """Boxes (x0, y0, x1, y1) are at least ``gap`` apart along x or y."""
    dx = max(a[0] - b[2], b[0] - a[2])
    dy = max(a[1] - b[3], b[1] - a[3])
    return max(dx, dy) >= gap


def _place(
    rng: np.random.Generator, n: int, canvas: int, cfg: Placement
) -> list[tuple[float, float, float]]:
    """Random non-overlapping (cx, cy, size) triples, by rejection sampling.

    If ``cfg.tries`` attempts fail, the largest size is shrunk by 10% and the
    search repeats, so crowded scenes still terminate (deterministically).
    """
    lo, hi = cfg.min_size_frac * canvas, cfg.max_size_frac * canvas
    while True:
        for _ in range(cfg.tries):
            sizes = rng.uniform(lo, hi, n)
            placed: list[np.ndarray] = []
            for s in sizes:
                c = rng.uniform(cfg.margin + s / 2, canvas - cfg.margin - s / 2, 2)
                box = np.array([c[0] - s / 2, c[1] - s / 2, c[0] + s / 2, c[1] + s / 2])
                if not all(_separated(box, p, cfg.gap) for p in placed):
                    break
                placed.append(box)
            else:  # no break: every object found a free spot
                return [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0]) for b in placed]
        hi *= 0.9
        lo = min(lo, hi)


def sample_scene(
    rng: np.random.Generator,
    n_objects: int,
    shapes: tuple[str, ...] = SHAPES,
    colors: tuple[str, ...] = tuple(COLORS),
    allow_held_out: bool = False,
    size: int = 128,
    placement: Placement = PLACEMENT,
) -> Scene:
    """A random scene of ``n_objects`` distinct shapes with distinct colours.

    Boxes keep ``placement.gap`` pixels apart, so objects never touch. With
    allow_held_out=False no object is a HELD_OUT_PAIRS pair and no two shapes
    form a HELD_OUT_COMBOS combination.
    """
    picked_shapes = _pick_shapes(rng, n_objects, tuple(shapes), allow_held_out)
    picked_colors = _pick_colors(rng, picked_shapes, tuple(colors), allow_held_out)
    spots = _place(rng, n_objects, size, placement)
    background = int(rng.integers(len(BACKGROUNDS)))
    objects = tuple(
        SceneObject(s, c, float(cx), float(cy), float(sz))
        for s, c, (cx, cy, sz) in zip(picked_shapes, picked_colors, spots)
    )
    return Scene(objects=objects, background=background, size=size)


@dataclass(frozen=True)
class TrainingMix:
    """Probabilities of object counts and of colour words in captions."""

    p_one: float = 0.70
    p_two: float = 0.25  # three objects take the remaining probability
    p_colors: float = 0.8


TRAINING_MIX = TrainingMix()


def training_example(
    rng: np.random.Generator, mix: TrainingMix = TRAINING_MIX, size: int = 128
) -> tuple[Scene, str]:
    """One training scene and its caption; never contains held-out pairs/combos."""
    r = rng.random()
    n = 1 if r < mix.p_one else 2 if r < mix.p_one + mix.p_two else 3
    scene = sample_scene(rng, n, size=size)
    return scene, caption(scene, with_colors=bool(rng.random() < mix.p_colors))
