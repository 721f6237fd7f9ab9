"""Property-based tests of the text parsers: any string gives a parse or the pack's own
clear error (SubjectError, LayoutError), never another exception, and what parses is sane."""

import math

import torch
from hypothesis import example, given, settings, strategies as st

from ai_t2i_attention import PRECEDING, SubjectError, Tokenization, parse_attributes, parse_list, resolve
from ai_t2i_attention.layout_parse import LayoutError, assign_masks, parse_boxes

# Text that looks like what users type: words, separators, numbers, units, unicode.
ALPHABET = st.sampled_from(list("catdogredblu :;,#\n\t-0123456789.e+pxPXé日") + ["nan", "inf", "cat", "dog", " px"])
TEXT = st.one_of(st.text(max_size=60), st.lists(ALPHABET, max_size=30).map("".join))


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_parse_list_never_fails_and_strips(text):
    items = parse_list(text)
    assert all(i and i == i.strip() and not any(c in i for c in ",;\n") for i in items)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_parse_attributes_gives_pairs_or_its_error(text):
    try:
        got = parse_attributes(text)
    except SubjectError as e:
        assert "attribute:subject" in str(e)
        return
    assert got == PRECEDING or all(a and s and ":" not in a + s for a, s in got)


# Mostly numbers a box could use, with the odd ones (nan, inf, out of range, not a number) among them.
VALID = st.sampled_from(["0", "0.2", "0.5", "0.8", "1"])
NUMBER = st.one_of(VALID, VALID, VALID, VALID, st.sampled_from(["nan", "inf", "-inf", "-0.1", "1.5", "x"]),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10, 300).map(str))
ENTRY = st.tuples(st.sampled_from(["cat", "dog", "Cat ", "bird", ""]), st.one_of(st.lists(NUMBER, min_size=4, max_size=4), st.lists(NUMBER, max_size=5)),
                  st.sampled_from(["", " px", "px"])).map(lambda e: f"{e[0]}: {' '.join(e[1])}{e[2]}")
BOXES = st.one_of(TEXT, st.lists(ENTRY, min_size=1, max_size=3).map("; ".join))


@settings(max_examples=500, deadline=None)
@given(BOXES, st.one_of(st.none(), st.tuples(st.integers(-5, 2000), st.integers(-5, 2000))))
@example("cat: 0 nan 1 1", None)  # a NaN once slipped past every range check
def test_parse_boxes_gives_boxes_or_its_error(text, size):
    try:
        boxes = parse_boxes(text, ["cat", "dog"], size)
    except LayoutError as e:
        assert str(e)
        return
    for s, b in boxes.items():
        assert s in (0, 1)
        coords = (b.x0, b.y0, b.x1, b.y1)
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in coords), coords
        assert b.x0 < b.x1 and b.y0 < b.y1


# mask_subjects as typed: subject names (some unknown, some repeated), or any text.
MASK_NAMES = st.one_of(TEXT, st.lists(st.sampled_from(["cat", "dog", " Dog", "bird", ""]), max_size=5).map(", ".join))


@settings(max_examples=300, deadline=None)
@given(MASK_NAMES, st.sets(st.integers(1, 4)))
def test_assign_masks_gives_each_mask_one_subject_or_its_error(names, slots):
    # Each slot's mask holds its own value (slot / 4), so where it went can be read back.
    masks = {i: torch.full((1, 2, 2), i / 4) if i in slots else None for i in range(1, 5)}
    try:
        got = assign_masks(["cat", "dog"], masks, names)
    except LayoutError as e:
        assert str(e)
        return
    assert len(got) == 2
    placed = [round(float(m.max()) * 4) if m is not None else None for m in got]
    assert sorted(p for p in placed if p is not None) == sorted(slots)  # every mask placed, once
    if not parse_list(names):
        assert all(placed[i - 1] == i for i in slots)  # default: slot n is subject n


START, END, PAD = 49406, 49407, 0
VOCAB = {"a": [320], "cat": [2368], "and": [537], "dog": [1929], "red": [736]}


def _tokenize_word(word):
    return [VOCAB.get(w, [hash(w) % 40000 + 1000])[0] for w in word.lower().split()]


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT)
def test_resolve_gives_columns_or_its_error(subjects, attributes):
    prompt = "a red cat and a dog"
    ids = [i for w in prompt.split() for i in VOCAB[w]]
    tok = Tokenization(((START, *ids, END) + (PAD,) * (77 - len(ids) - 2),), frozenset({START, END, PAD}))
    try:
        groups = resolve(prompt, tok, _tokenize_word, parse_list(subjects), parse_attributes(attributes))
    except SubjectError as e:
        assert str(e)
        return
    assert all(cols and all(1 <= c <= 6 for c in cols) for cols in groups.subjects)
