"""ShapesBench: deterministic coloured-shape scenes and an exact evaluator."""

from .evaluate import (
    Detection,
    PromptSpec,
    detect,
    score,
    summarize,
)
from .prompts import EVAL_PROMPTS, attribute_pairs, subject_words
from .scenes import (
    BACKGROUNDS,
    COLORS,
    HELD_OUT_COMBOS,
    HELD_OUT_PAIRS,
    SHAPES,
    Background,
    Scene,
    SceneObject,
    boxes,
    caption,
    render,
    sample_scene,
    training_example,
)

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "EVAL_PROMPTS",
    "HELD_OUT_COMBOS",
    "HELD_OUT_PAIRS",
    "SHAPES",
    "Background",
    "Detection",
    "PromptSpec",
    "Scene",
    "SceneObject",
    "attribute_pairs",
    "boxes",
    "caption",
    "detect",
    "render",
    "sample_scene",
    "score",
    "subject_words",
    "summarize",
    "training_example",
]
