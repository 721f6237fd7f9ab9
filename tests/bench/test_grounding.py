"""The grounding metrics on hand-made maps: they read what they claim to read."""
import pathlib
import sys

sys.path.append(str(pathlib.Path(__file__).resolve().parents[2]))  # after the host: never shadow its `nodes`

import numpy as np
import pytest
import torch

from ai_t2i_attention import TokenGroups
from benchmarks.shapesbench.grounding import _aggregate, measure

T = 77
TEXT = tuple(range(1, 8))  # "a red circle and a blue square" -> columns 1..7
GROUPS = TokenGroups(((3,), (7,)))


def _masks():
    m = np.zeros((2, 128, 128), bool)
    m[0, 16:48, 16:48] = True  # subject 0 top-left
    m[1, 80:112, 80:112] = True  # subject 1 bottom-right
    return m


def _avg(grounded: bool):
    """(1, 16, 16, T) probabilities: start 0.1, padding 0.6, words 0.3 shared evenly, and
    (grounded) the subjects' columns high on their own object only."""
    a = torch.zeros(1, 16, 16, T, dtype=torch.float64)
    a[..., 0] = 0.1
    a[..., 8:] = 0.6 / (T - 8)
    a[..., 1:8] = 0.3 / 7
    if grounded:
        a[0, 2:6, 2:6, 3] += 1.0
        a[0, 10:14, 10:14, 7] += 1.0
    return a / a.sum(-1, keepdim=True)


def test_shares_sum_to_one_and_split_as_built():
    m = measure(_avg(False), GROUPS, TEXT, _masks())
    s = m["share"]
    assert s["start"] + s["words"] + s["end+padding"] == pytest.approx(1.0)
    assert s["start"] == pytest.approx(0.1) and s["words"] == pytest.approx(0.3)


def test_grounded_maps_point_and_separate_ungrounded_do_not():
    good = measure(_avg(True), GROUPS, TEXT, _masks())
    assert good["pointing"] == [True, True]
    assert min(good["ratio"]) > 3 and good["cosine"] < 0.5
    flat = measure(_avg(False), GROUPS, TEXT, _masks())
    assert flat["ratio"] == pytest.approx([1.0, 1.0]) and flat["cosine"] == pytest.approx(1.0)
    agg = _aggregate([good, flat])
    assert agg["n"] == 2 and agg["pointing"] == pytest.approx((2 + flat["pointing"].count(True)) / 4)


def test_colours_bound_reads_each_subjects_caption_colour():
    from benchmarks.shapesbench.evaluate import Detection
    from benchmarks.shapesbench.grounding import colours_bound

    def det(shape, color):
        return Detection(shape, color, (0, 0, 1, 1), 1, np.zeros((2, 2), bool))

    subjects = [("circle", "red"), ("square", "blue")]
    assert colours_bound([det("circle", "red"), det("square", "blue")], subjects)
    assert not colours_bound([det("circle", "blue"), det("square", "red")], subjects)  # colours swapped
    assert not colours_bound([det("circle", "red"), det("square", "green")], subjects)
    assert colours_bound([det("circle", "green"), det("square", "blue")], [("circle", None), ("square", "blue")])


def test_colour_pointing_finds_each_colour_on_its_own_object():
    """The ceiling column on a clean render: each subject's colour lies on its own object;
    with the colours swapped it lies on the other one; on a blank image on neither."""
    from benchmarks.shapesbench import scenes
    from benchmarks.shapesbench.grounding import colour_pointing

    scene = scenes.sample_scene(np.random.default_rng(3), 2)
    image, masks = scenes.render(scene)
    img = image.astype(np.float64) / 255.0
    colours = [scenes.COLORS[o.color] for o in scene.objects]
    assert colour_pointing(img, colours, masks, (16, 16)) == [True, True]
    assert colour_pointing(img, colours[::-1], masks, (16, 16)) == [False, False]
    blank = np.full_like(img, 0.9)
    blank[:8, :8] = np.array(colours[0]) / 255.0  # a patch of the first colour on neither object
    assert colour_pointing(blank, colours[:1] + colours[:1], masks, (16, 16)) == [False, False]


def _report(joint: bool):
    """A one-layer-set report as grounding.run returns it: one level, a measured row and an empty one."""
    from benchmarks.shapesbench.grounding import FLOW_LEVELS, UNET_LEVELS
    level = (FLOW_LEVELS if joint else UNET_LEVELS)[0]
    good = measure(_avg(True), GROUPS, TEXT, _masks(), joint=joint)
    good["x0_pointing"] = [True, False]
    return {"set": {"layers": "some layers", "joint": joint,
                    "levels": {level.label: {"sigma": 0.898, "column": level.column(0.898)}},
                    "rows": {("renders", level.label): _aggregate([good]), ("own images", level.label): _aggregate([])}}}


def test_table_columns_follow_the_family():
    from benchmarks.shapesbench.grounding import table

    for joint, noise, level in ((False, "t", "500"), (True, "step (σ)", "3 of 20 (σ 0.898)")):
        lines = table(_report(joint), "m.safetensors").splitlines()
        header = next(l for l in lines if l.startswith("| layers"))
        assert header.split(" | ")[2] == noise and ("| image |" in header) == joint
        rows = [l for l in lines if l.startswith("| set:")]
        assert [r.split(" | ")[2] for r in rows] == [level, level]
        # every row, measured or empty, has the header's cells
        assert {r.count("|") for r in rows} == {header.count("|")}
        assert rows[0].split(" | ")[-1] == "0.50 |"  # x0 finds: one of the two subjects


def test_joint_shares_give_the_image_keys_the_rest():
    a = _avg(True) * 0.25  # a joint attention putting a quarter of each pixel's weight on the text keys
    m = measure(a, GROUPS, TEXT, _masks(), joint=True)
    assert m["share"]["image"] == pytest.approx(0.75) and sum(m["share"].values()) == pytest.approx(1.0)
    assert "image" not in measure(_avg(True), GROUPS, TEXT, _masks())["share"]
    # a common scale leaves what the maps say about place unchanged
    full = measure(_avg(True), GROUPS, TEXT, _masks())
    assert m["pointing"] == full["pointing"] and m["ratio"] == pytest.approx(full["ratio"])
