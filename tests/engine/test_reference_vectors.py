"""The loss terms against the reference code's own numbers.

data/reference_loss_vectors.npz holds maps (N, 16, 16, 77) and, computed in float64 by
the authors' AI-T2I pipeline and the official Attend-and-Excite pipeline, every term's
value and its gradient with respect to the maps. Each term is compared alone, value
and gradient, on every case, in float64: a drifting term fails under its own name.
Relative error: |value - ref| / |ref|, and max |grad - ref grad| / max |ref grad|.
"""
import pathlib

import numpy as np
import pytest
import torch

from ai_t2i_attention import LOSSES, LossWeights, TokenGroups, Tokenization, resolve, subject_maps
from ai_t2i_attention.losses import aggregation_term, attribute_term, isolation_term, presence_term

DATA = np.load(pathlib.Path(__file__).parent / "data" / "reference_loss_vectors.npz")
CASES = [str(c) for c in DATA["case"]]
TOLERANCE = 1e-6

# The reference prompt, "a red cat and a blue dog", as one 77-token chunk: the columns the
# reference reads are then resolved from words, the way the pack resolves them.
PROMPT = "a red cat and a blue dog"
VOCAB = {"a": [10], "red": [11], "cat": [12], "and": [13], "blue": [14], "dog": [15]}
START, END, PAD = 100, 101, 102


def _groups(with_attributes: bool) -> TokenGroups:
    ids = [VOCAB[w][0] for w in PROMPT.split()]
    chunk = (START, *ids, END) + (PAD,) * (77 - len(ids) - 2)
    tok = Tokenization((chunk,), frozenset({START, END, PAD}))
    pairs = [("red", "cat"), ("blue", "dog")] if with_attributes else []
    return resolve(PROMPT, tok, VOCAB.__getitem__, ["cat", "dog"], pairs)


def _ai_t2i(maps, w):
    return LOSSES["ai_t2i"](maps, w)["total"]


# name in the file -> (does it read attributes, value of the pack's maps)
TERMS = {
    "isolation_distance": (False, lambda m, w: 1.0 - isolation_term(m, w)),
    "aggregation": (False, aggregation_term),
    "attribute": (True, attribute_term),
    "presence": (False, presence_term),
    "attend_and_excite": (False, lambda m, w: LOSSES["attend_and_excite"](m, w)["total"]),
    "total": (True, _ai_t2i),
    "total_without_attribute": (False, _ai_t2i),
}


def test_the_file_holds_what_the_tests_read():
    assert set(TERMS) | {f"grad_{t}" for t in TERMS} | {"maps", "subjects", "attributes", "case"} == set(DATA.files)
    g = _groups(True)
    # the words resolve to the columns the reference used
    assert all(tuple(s) == (3, 7) for s in DATA["subjects"]) and g.subjects == ((3,), (7,))
    assert all(tuple(a) == (2, 6) for a in DATA["attributes"]) and g.attributes == (((2,), 0), ((6,), 1))
    assert g.text_columns == tuple(range(1, 76))


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASES)
@pytest.mark.parametrize("term", list(TERMS))
def test_term_matches_reference(term, case):
    attributes, fn = TERMS[term]
    maps = torch.tensor(DATA["maps"][case:case + 1], dtype=torch.float64, requires_grad=True)
    value = fn(subject_maps(maps, _groups(attributes)), LossWeights())
    (grad,) = torch.autograd.grad(value.sum(), maps)
    value = value.detach()
    ref, ref_grad = float(DATA[term][case]), DATA[f"grad_{term}"][case]
    err = abs(float(value) - ref) / abs(ref)
    assert err <= TOLERANCE, f"{term} drifts from the reference on {CASES[case]}: {float(value)!r} vs {ref!r} (rel {err:.2e})"
    gerr = np.abs(grad[0].numpy() - ref_grad).max() / np.abs(ref_grad).max()
    assert gerr <= TOLERANCE, f"the gradient of {term} drifts from the reference on {CASES[case]} (rel {gerr:.2e})"


def test_textbook_kernel_or_prompt_columns_would_be_caught():
    # The checks are sharp enough to see each convention the reference encodes: the
    # pack's former presence axis (the prompt's own columns) is off by far more than 1e-6.
    maps = torch.tensor(DATA["maps"][:1], dtype=torch.float64)
    g = _groups(False)
    own = TokenGroups(g.subjects, (), tuple(range(1, 8)))
    value = float(presence_term(subject_maps(maps, own), LossWeights()))
    assert abs(value - float(DATA["presence"][0])) / float(DATA["presence"][0]) > 1e-3
