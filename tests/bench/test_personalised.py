"""New shapes for personalisation: rendered, never trained, recognised by the extended detector."""
import pathlib
import sys

sys.path.append(str(pathlib.Path(__file__).resolve().parents[2]))  # after the host: never shadow its `nodes`

import numpy as np

from benchmarks.shapesbench.evaluate import PromptSpec, detect
from benchmarks.shapesbench.personalised import detect_extended, prompt_specs, score_extended
from benchmarks.shapesbench.scenes import NEW_SHAPES, SHAPES, Scene, SceneObject, render, sample_scene, training_example


def test_new_shapes_are_never_trained():
    assert NEW_SHAPES and not set(NEW_SHAPES) & set(SHAPES)
    rng = np.random.default_rng(0)
    seen = {o.shape for _ in range(500) for o in training_example(rng)[0].objects}
    assert seen == set(SHAPES)


def test_extended_detector_recognises_every_shape():
    rng = np.random.default_rng(1)
    for shape in SHAPES + NEW_SHAPES:
        for _ in range(4):
            image, _ = render(sample_scene(rng, 1, shapes=(shape,), allow_held_out=True))
            assert [d.shape for d in detect_extended(image)] == [shape]


def test_score_new_and_known_shape():
    scene = Scene((SceneObject("diamond", "red", 36, 40, 40), SceneObject("circle", "blue", 92, 88, 38)), 0)
    image, _ = render(scene)
    spec = PromptSpec("a red diamond and a blue circle", (("diamond", "red"), ("circle", "blue")))
    result = score_extended(image, spec)
    assert result["present"] and result["bound"] and result["correct"] and result["found"] == [True, True]
    # The plain ShapesBench detector knows no diamond: it calls it something else.
    assert "diamond" not in [d.shape for d in detect(image)]
    swapped = PromptSpec("a red circle and a blue diamond", (("circle", "red"), ("diamond", "blue")))
    assert score_extended(image, swapped)["present"] and not score_extended(image, swapped)["bound"]
    lone = Scene((SceneObject("circle", "blue", 64, 64, 40),), 0)
    assert score_extended(render(lone)[0], spec)["found"] == [False, True]


def test_prompts_use_the_embedding_token():
    specs = prompt_specs("diamond", "embedding:diamond")
    assert all(text.count("embedding:diamond") == 1 and spec.subjects[0][0] == "diamond" for text, spec in specs)
    assert all(spec.subjects[1][0] in SHAPES for _, spec in specs) and len(specs) == 4
    # A known shape learned again (the pipeline's control) is never paired with itself.
    star = prompt_specs("star", "embedding:learned_star")
    assert len(star) == 4 and all(spec.subjects[1][0] != "star" for _, spec in star)
