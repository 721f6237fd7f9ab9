import pathlib
import sys

sys.path.append(str(pathlib.Path(__file__).resolve().parents[2]))  # after the host: never shadow its `nodes`

import numpy as np
import pytest
from scipy import ndimage

from benchmarks.shapesbench import (
    BACKGROUNDS,
    COLORS,
    EVAL_PROMPTS,
    HELD_OUT_COMBOS,
    HELD_OUT_PAIRS,
    SHAPES,
    PromptSpec,
    Scene,
    SceneObject,
    attribute_pairs,
    boxes,
    caption,
    detect,
    render,
    sample_scene,
    score,
    subject_words,
    summarize,
    training_example,
)


@pytest.fixture(scope="module")
def training_samples():
    """2000 training (scene, caption) pairs from a fixed seed (no rendering)."""
    rng = np.random.default_rng(123)
    return [training_example(rng) for _ in range(2000)]


def _two_object_scene() -> Scene:
    return Scene(
        (
            SceneObject("circle", "red", 35.0, 40.0, 40.0),
            SceneObject("square", "blue", 90.0, 85.0, 36.0),
        ),
        background=0,
    )


# --- palette and renderer -------------------------------------------------


def test_palette_is_well_separated():
    cols = np.array(list(COLORS.values()), float)
    bgs = np.array([b.top for b in BACKGROUNDS] + [b.bottom for b in BACKGROUNDS], float)
    pair = np.linalg.norm(cols[:, None] - cols[None], axis=-1)
    assert len(SHAPES) >= 6 and len(COLORS) >= 6
    assert pair[~np.eye(len(cols), dtype=bool)].min() > 100
    assert np.linalg.norm(cols[:, None] - bgs[None], axis=-1).min() > 150


def test_same_seed_gives_identical_images():
    def images(seed):
        rng = np.random.default_rng(seed)
        return [(render(s)[0], c) for s, c in (training_example(rng) for _ in range(5))]

    a, b, other = images(7), images(7), images(8)
    for (ia, ca), (ib, cb) in zip(a, b):
        assert ca == cb and np.array_equal(ia, ib)
    assert not all(np.array_equal(ia, io) for (ia, _), (io, _) in zip(a, other))


def test_masks_and_boxes_match_image():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3):
        scene = sample_scene(rng, n)
        image, masks = render(scene)
        assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
        assert masks.dtype == bool and masks.shape == (n, 128, 128)
        assert masks.sum(axis=0).max() <= 1  # visible masks are disjoint
        for obj, mask, box in zip(scene.objects, masks, boxes(masks)):
            # Pixels whose 8 neighbours are all in the mask carry the exact
            # object colour; only edge pixels are blended.
            interior = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool))
            assert np.all(image[interior] == COLORS[obj.color])
            x0, y0, x1, y1 = box
            assert x0 <= obj.cx <= x1 and y0 <= obj.cy <= y1
            assert max(x1 - x0, y1 - y0) == pytest.approx(obj.size, abs=1.5)
        # Far from every object only background remains.
        far = ~ndimage.binary_dilation(masks.any(axis=0), iterations=2)
        for color in (COLORS[o.color] for o in scene.objects):
            dist = np.linalg.norm(image[far].astype(float) - color, axis=-1)
            assert dist.min() > 100


def test_later_objects_occlude_earlier_ones():
    scene = Scene(
        (
            SceneObject("square", "red", 60.0, 60.0, 50.0),
            SceneObject("circle", "blue", 80.0, 60.0, 40.0),
        ),
        background=1,
    )
    image, masks = render(scene)
    assert not masks[0, 60, 80] and masks[1, 60, 80]
    assert tuple(image[60, 80]) == COLORS["blue"]
    assert masks[0, 60, 40]


def test_boxes_of_empty_mask_are_nan():
    out = boxes(np.zeros((1, 8, 8), bool))
    assert out.shape == (1, 4) and np.isnan(out).all()


def test_captions():
    scene = _two_object_scene()
    assert caption(scene) == "a red circle and a blue square"
    assert caption(scene, with_colors=False) == "a circle and a square"
    three = Scene(scene.objects + (SceneObject("star", "yellow", 100, 20, 30),), 0)
    assert caption(three) == "a red circle, a blue square and a yellow star"
    assert caption(Scene(scene.objects[:1], 0)) == "a red circle"


# --- training data ----------------------------------------------------------


def test_training_never_contains_held_out(training_samples):
    for scene, _ in training_samples:
        shapes = [o.shape for o in scene.objects]
        assert not any((o.shape, o.color) in HELD_OUT_PAIRS for o in scene.objects)
        assert not any(
            frozenset({a, b}) in HELD_OUT_COMBOS
            for i, a in enumerate(shapes)
            for b in shapes[i + 1:]
        )


def test_training_mix_proportions(training_samples):
    counts = np.bincount([len(s.objects) for s, _ in training_samples], minlength=4)
    frac = counts / len(training_samples)
    assert frac[0] == 0
    assert frac[1] == pytest.approx(0.70, abs=0.04)
    assert frac[2] == pytest.approx(0.25, abs=0.04)
    assert frac[3] == pytest.approx(0.05, abs=0.02)
    colored = np.mean([caption(s) == c for s, c in training_samples])
    assert colored == pytest.approx(0.8, abs=0.04)


def test_sample_scene_sizes_and_spacing():
    rng = np.random.default_rng(11)
    for _ in range(50):
        scene = sample_scene(rng, 3, allow_held_out=True)
        objs = scene.objects
        assert len({o.shape for o in objs}) == 3
        for o in objs:
            assert 0.2 * 128 <= o.size <= 0.4 * 128 + 1e-9
            assert o.size / 2 <= o.cx <= 128 - o.size / 2
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                gap_x = abs(a.cx - b.cx) - (a.size + b.size) / 2
                gap_y = abs(a.cy - b.cy) - (a.size + b.size) / 2
                assert max(gap_x, gap_y) >= 4 - 1e-9


# --- evaluator ----------------------------------------------------------------


def test_detector_accuracy_on_clean_scenes():
    rng = np.random.default_rng(2024)
    correct = 0
    n = 200
    for i in range(n):
        scene = sample_scene(rng, 1 + i % 2, allow_held_out=True)
        image, _ = render(scene)
        truth = sorted((o.shape, o.color) for o in scene.objects)
        found = sorted((d.shape, d.color) for d in detect(image))
        correct += truth == found
    assert correct / n >= 0.98


def test_score_accepts_correct_two_subject_render():
    image, masks = render(_two_object_scene())
    spec = PromptSpec("a red circle and a blue square", (("circle", "red"), ("square", "blue")), False)
    result = score(image, spec)
    assert result["correct"] and result["present"] and result["bound"] and result["no_extra"]
    assert result["n_detected"] == 2 and result["missing"] == [] and not result["merged"]
    expected = boxes(masks)
    assert result["boxes"]["circle"] == tuple(expected[0])
    assert result["boxes"]["square"] == tuple(expected[1])


def test_score_detects_swapped_colours():
    image, _ = render(_two_object_scene())
    spec = PromptSpec("a blue circle and a red square", (("circle", "blue"), ("square", "red")), False)
    result = score(image, spec)
    assert result["present"] and not result["bound"] and not result["correct"]


def test_score_reports_missing_subject():
    scene = Scene(_two_object_scene().objects[:1], background=2)
    image, _ = render(scene)
    spec = PromptSpec("a circle and a square", (("circle", None), ("square", None)), False)
    result = score(image, spec)
    assert not result["present"] and not result["correct"]
    assert result["missing"] == ["square"] and result["n_detected"] == 1


def test_score_flags_extra_objects():
    scene = Scene(
        _two_object_scene().objects + (SceneObject("star", "green", 100.0, 25.0, 34.0),), 0
    )
    image, _ = render(scene)
    spec = PromptSpec("a circle and a square", (("circle", None), ("square", None)), False)
    result = score(image, spec)
    assert result["present"] and not result["no_extra"] and not result["correct"]


def test_score_merged_heuristic():
    # One oversized blob where two subjects were asked for.
    image, _ = render(Scene((SceneObject("square", "red", 64.0, 64.0, 80.0),), 0))
    spec = PromptSpec("a circle and a square", (("circle", None), ("square", None)), False)
    assert score(image, spec)["merged"]
    image, _ = render(_two_object_scene())
    assert not score(image, spec)["merged"]


def test_summarize_wilson_interval():
    rows = [{"present": True, "bound": i % 3 == 0, "no_extra": False, "correct": i < 1} for i in range(30)]
    summary = summarize(rows)
    assert set(summary) == {"present", "bound", "no_extra", "correct"}
    for mean, lo, hi in summary.values():
        assert 0.0 <= lo <= mean <= hi <= 1.0
    assert summary["present"][0] == 1.0 and summary["present"][1] < 1.0
    assert summary["no_extra"][0] == 0.0 and summary["no_extra"][2] > 0.0
    mean, lo, hi = summary["bound"]
    assert mean == pytest.approx(10 / 30) and lo == pytest.approx(0.1923, abs=1e-3)
    assert hi == pytest.approx(0.5122, abs=1e-3)


# --- prompts ------------------------------------------------------------------


def test_eval_prompts():
    assert len(EVAL_PROMPTS) >= 24
    assert sum(p.held_out for p in EVAL_PROMPTS) >= 6
    assert len({p.text for p in EVAL_PROMPTS}) == len(EVAL_PROMPTS)
    plain = [p for p in EVAL_PROMPTS if all(c is None for _, c in p.subjects)]
    colored = [p for p in EVAL_PROMPTS if all(c is not None for _, c in p.subjects)]
    assert plain and colored and len(plain) + len(colored) == len(EVAL_PROMPTS)
    for p in EVAL_PROMPTS:
        assert len(p.subjects) == 2
        shapes = frozenset(subject_words(p))
        pairs = {(s, c) for c, s in attribute_pairs(p)}
        assert p.held_out == (shapes in HELD_OUT_COMBOS or bool(pairs & HELD_OUT_PAIRS))
        for word in subject_words(p) + [c for c, _ in attribute_pairs(p)]:
            assert word in p.text


def test_prompt_helpers():
    spec = PromptSpec("a red circle and a star", (("circle", "red"), ("star", None)), False)
    assert subject_words(spec) == ["circle", "star"]
    assert attribute_pairs(spec) == [("red", "circle")]
