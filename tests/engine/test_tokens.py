import pytest

from ai_t2i_attention import (MAX_SUBJECTS, PRECEDING, SubjectError, TokenGroups, Tokenization, parse_attributes,
                              parse_list, parse_pairs, resolve)
from ai_t2i_attention.tokens import find_columns

START, END, PAD = 49406, 49407, 0
VOCAB = {
    "a": [320], "photo": [1125], "of": [539], "and": [537], "cat": [2368], "dog": [1929], "red": [736],
    "blue": [1746], "bird": [3329], "hippopotamus": [5321, 5322],  # a word the tokenizer splits in two
    "hat": [3801], "fox": [3240], "owl": [4387], "cow": [3388], "pig": [4169], "bee": [5028], "ant": [5029],
}


def tokenize_word(word):
    return list(VOCAB.get(word.lower(), [99999]))


def tokenize(prompt, chunk_len=77):
    """CLIP-like: ids split into chunks of 75, each chunk wrapped in start/end and padded to 77."""
    ids = [i for w in prompt.lower().split() for i in VOCAB[w]]
    body = chunk_len - 2
    chunks = []
    for c in range(0, max(len(ids), 1), body):
        part = [START] + ids[c:c + body] + [END]
        chunks.append(tuple(part + [PAD] * (chunk_len - len(part))))
    return Tokenization(tuple(chunks), frozenset({START, END, PAD}))


PROMPT = "a photo of a red cat and a dog"


def res(subjects, attributes=(), prompt=PROMPT):
    return resolve(prompt, tokenize(prompt), tokenize_word, subjects, attributes)


def test_single_token_words():
    g = res(["cat", "dog"])
    assert isinstance(g, TokenGroups)
    # columns: 0 start, 1 a, 2 photo, 3 of, 4 a, 5 red, 6 cat, 7 and, 8 a, 9 dog, 10 end
    assert g.subjects == ((6,), (9,))
    assert g.attributes == ()
    # The presence axis, as the reference: columns 1..75, end token and padding included.
    assert g.text_columns == tuple(range(1, 76))
    # SD 2.x's official Attend-and-Excite: the prompt's own columns only.
    own = resolve(PROMPT, tokenize(PROMPT), tokenize_word, ["cat", "dog"], presence_columns="prompt")
    assert own.text_columns == tuple(range(1, 10))
    with pytest.raises(ValueError, match="presence columns"):
        resolve(PROMPT, tokenize(PROMPT), tokenize_word, ["cat"], presence_columns="words")


def test_word_split_into_two_tokens():
    prompt = "a hippopotamus and a cat"
    g = res(["hippopotamus", "cat"], prompt=prompt)
    assert g.subjects == ((2, 3), (6,))
    own = resolve(prompt, tokenize(prompt), tokenize_word, ["hippopotamus", "cat"], presence_columns="prompt")
    assert own.text_columns == (1, 2, 3, 4, 5, 6)


def test_word_in_second_chunk():
    filler = " ".join(["a photo of"] * 26)  # 78 tokens: the second chunk holds 3 of them + the rest
    prompt = f"{filler} bird and cat"
    tok = tokenize(prompt)
    assert len(tok.chunks) == 2 and all(len(c) == 77 for c in tok.chunks)
    g = resolve(prompt, tok, tokenize_word, ["bird", "cat"])
    # second chunk: start, "a photo of" (3 tokens), bird at position 4
    assert g.subjects == ((77 + 4,), (77 + 6,))
    assert tok.flat()[77 + 4] == VOCAB["bird"][0]
    # each chunk loses its start token and its last column
    assert 0 not in g.text_columns and 76 not in g.text_columns and 77 not in g.text_columns
    assert 78 in g.text_columns and 152 in g.text_columns and 153 not in g.text_columns
    assert len(g.text_columns) == 2 * 75


def test_second_occurrence():
    prompt = "a cat and a dog and a cat"
    g = res(["cat", "cat#2"], prompt=prompt)
    assert g.subjects == ((2,), (8,))
    g2 = res(["dog", "a#3"], prompt=prompt)
    assert g2.subjects == ((5,), (7,))
    with pytest.raises(SubjectError, match="occurrence 3"):
        res(["cat#3"], prompt=prompt)


def test_absent_word_lists_prompt_words():
    with pytest.raises(SubjectError) as e:
        res(["cat", "horse"])
    msg = str(e.value)
    assert "'horse'" in msg and "not in the prompt" in msg
    for w in ("photo", "red", "cat", "dog"):
        assert w in msg
    assert isinstance(e.value, ValueError)


def test_split_word_must_match_all_its_tokens():
    # only the first token of "hippopotamus" present: not a match
    tok = Tokenization(((START, 320, 5321, 537, 2368, END) + (PAD,) * 71,), frozenset({START, END, PAD}))
    with pytest.raises(SubjectError):
        resolve("a hippo and cat", tok, tokenize_word, ["hippopotamus"])
    assert find_columns(tok, [5321]) == (2,)
    assert find_columns(tok, [5321, 5322]) is None


def test_duplicate_subject_raises():
    with pytest.raises(SubjectError, match="twice"):
        res(["cat", "dog", "cat"])
    with pytest.raises(SubjectError, match="cat#2"):
        res(["cat", "Cat"])


def test_too_many_subjects_raise():
    words = ["cat", "dog", "bird", "hat", "fox", "owl", "cow", "pig", "bee"]
    prompt = " and ".join(words)
    assert MAX_SUBJECTS == 8
    g = res(words[:8], prompt=prompt)
    assert len(g.subjects) == 8
    with pytest.raises(SubjectError, match="at most 8"):
        res(words, prompt=prompt)


def test_empty_subject_list_raises():
    with pytest.raises(SubjectError, match="no subject"):
        res([])


def test_parse_list():
    assert parse_list("cat, dog") == ["cat", "dog"]
    assert parse_list(" cat \n dog;bird,, ") == ["cat", "dog", "bird"]
    assert parse_list("") == []


def test_parse_pairs():
    assert parse_pairs("red:cat") == [("red", "cat")]
    assert parse_pairs("red:cat, blue : dog\nbig:bird") == [("red", "cat"), ("blue", "dog"), ("big", "bird")]
    assert parse_pairs("") == []


@pytest.mark.parametrize("bad", ["red", "red:cat:dog", ":cat", "red:", "red:cat, blue"])
def test_malformed_pair_raises(bad):
    with pytest.raises(SubjectError, match="attribute:subject"):
        parse_pairs(bad)


def test_attribute_pairs_resolve():
    prompt = "a red cat and a blue dog"
    g = res(["cat", "dog"], parse_pairs("red:cat, blue:dog"), prompt=prompt)
    assert g.subjects == ((3,), (7,))
    assert g.attributes == (((2,), 0), ((6,), 1))
    g2 = res(["cat", "dog"], [("blue", "DOG")], prompt=prompt)
    assert g2.attributes == (((6,), 1),)


def test_preceding_attributes_are_the_references_rule():
    # "a photo of a red cat and a dog": the token before cat is "red", before dog "a".
    assert parse_attributes(" Preceding ") == PRECEDING
    assert parse_attributes("red:cat") == [("red", "cat")]
    g = res(["cat", "dog"], PRECEDING)
    assert g.subjects == ((6,), (9,))
    assert g.attributes == (((5,), 0), ((8,), 1))


def test_attribute_naming_non_subject_raises():
    with pytest.raises(SubjectError, match="not one of the subjects"):
        res(["cat"], [("red", "dog")])


def test_attribute_absent_from_prompt_raises():
    with pytest.raises(SubjectError, match="attribute 'blue' is not in the prompt"):
        res(["cat"], [("blue", "cat")])


def test_attribute_sharing_subject_tokens_raises():
    with pytest.raises(SubjectError, match="shares tokens"):
        res(["cat", "dog"], [("cat", "dog")])
