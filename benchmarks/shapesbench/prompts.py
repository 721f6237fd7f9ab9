"""The fixed two-subject evaluation prompt set.

Built by enumeration (no random numbers), so it is identical everywhere:
- every seen shape pair, once shape-only and once with colours;
- every held-out shape combination, once shape-only and once with colours;
- every held-out (shape, colour) pair next to a seen shape and colour.
"""

from __future__ import annotations

from .evaluate import PromptSpec
from .scenes import COLORS, HELD_OUT_COMBOS, HELD_OUT_PAIRS, SHAPES, join_phrases

Subject = tuple[str, str | None]


def _is_held_out(subjects: tuple[Subject, ...]) -> bool:
    shapes = frozenset(s for s, _ in subjects)
    pairs = {(s, c) for s, c in subjects if c is not None}
    return shapes in HELD_OUT_COMBOS or bool(pairs & HELD_OUT_PAIRS)


def make_spec(subjects: tuple[Subject, ...]) -> PromptSpec:
    """PromptSpec whose text lists the subjects, e.g. 'a red circle and a star'."""
    phrases = [s if c is None else f"{c} {s}" for s, c in subjects]
    return PromptSpec(join_phrases(phrases), tuple(subjects), _is_held_out(subjects))


def _seen_color(shape: str, start: int, taken: tuple[str, ...] = ()) -> str:
    """First colour, cycling from ``start``, that is not held out for ``shape``
    and not already used in the prompt."""
    names = tuple(COLORS)
    for k in range(len(names)):
        c = names[(start + k) % len(names)]
        if (shape, c) not in HELD_OUT_PAIRS and c not in taken:
            return c
    raise ValueError(f"no usable colour for {shape!r}")


def _colored(a: str, b: str, start: int) -> tuple[Subject, Subject]:
    ca = _seen_color(a, start)
    # Offset the second colour's start so colour pairs vary across prompts.
    cb = _seen_color(b, start + 2, (ca,))
    return (a, ca), (b, cb)


def _ordered(a: str, b: str, i: int) -> tuple[str, str]:
    # Alternate subject order so neither shape always comes first.
    return (a, b) if i % 2 == 0 else (b, a)


def _pair_prompts() -> list[PromptSpec]:
    """Shape-only and coloured prompts for every unordered shape pair."""
    plain, colored = [], []
    for i, (a, b) in enumerate((a, b) for j, a in enumerate(SHAPES) for b in SHAPES[j + 1:]):
        a, b = _ordered(a, b, i)
        plain.append(make_spec(((a, None), (b, None))))
        colored.append(make_spec(_colored(a, b, i)))
    return plain + colored


def _held_out_pair_prompts() -> list[PromptSpec]:
    """Each held-out (shape, colour) pair with a partner shape it was seen with."""
    specs = []
    for i, (shape, color) in enumerate(sorted(HELD_OUT_PAIRS)):
        partners = [
            s for s in SHAPES
            if s != shape and frozenset({shape, s}) not in HELD_OUT_COMBOS
        ]
        partner = partners[i % len(partners)]
        held = (shape, color)
        other = (partner, _seen_color(partner, i + 3, (color,)))
        specs.append(make_spec((held, other) if i % 2 == 0 else (other, held)))
    return specs


EVAL_PROMPTS: list[PromptSpec] = _pair_prompts() + _held_out_pair_prompts()


def subject_words(spec: PromptSpec) -> list[str]:
    """Shape words of the subjects, in prompt order."""
    return [shape for shape, _ in spec.subjects]


def attribute_pairs(spec: PromptSpec) -> list[tuple[str, str]]:
    """(colour word, shape word) for every subject that has a colour."""
    return [(color, shape) for shape, color in spec.subjects if color is not None]


def subject_prompt_inputs(spec: PromptSpec) -> dict:
    """The subjects and attributes widgets of AI-T2I Subject Prompt for this prompt."""
    return {"subjects": ", ".join(subject_words(spec)),
            "attributes": ", ".join(f"{c}:{s}" for c, s in attribute_pairs(spec))}
