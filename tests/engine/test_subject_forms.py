"""A subject typed in another form than the prompt's word: another letter case, or the
singular/plural of it. Resolved to the prompt's own word when only one fits; refused with
the candidates when several do; a word that fits nothing gets a "did you mean"."""

import pytest

from ai_t2i_attention import ResolvedSubjects, SubjectError, Tokenization, parse_pairs, resolve
from ai_t2i_attention.tokens import TokenStream, edit_distance, inflections, resolve_stream_words, resolve_words

START, END, PAD = 1, 2, 0


class Vocab:
    """A word-level tokenizer: each distinct word (case-sensitive, like T5's, unless
    lower=True, like CLIP's) gets its own id, so no two words ever share a token."""

    def __init__(self, lower: bool):
        self.lower, self.ids = lower, {}

    def word(self, text):
        words = text.lower().split() if self.lower else text.split()
        return [self.ids.setdefault(w, 100 + len(self.ids)) for w in words]

    def prompt(self, text, chunk_len=77):
        ids = self.word(text.replace(",", " "))
        return Tokenization(((START, *ids, END) + (PAD,) * (chunk_len - len(ids) - 2),), frozenset({START, END, PAD}))


def res(prompt, subjects, lower=True, attributes=()):
    vocab = Vocab(lower)
    return resolve_words(prompt, vocab.prompt(prompt), vocab.word, subjects, attributes)


def test_plural_in_the_prompt_resolves_to_it():
    # columns: 0 start, 1 two, 2 red, 3 circles, 4 and, 5 a, 6 square
    groups, matched = res("two red circles and a square", ["circle", "square"])
    assert groups.subjects == ((3,), (6,))
    assert matched == ("circles", "square")


def test_singular_in_the_prompt_resolves_to_it():
    groups, matched = res("a box and a berry and a mouse", ["boxes", "berries", "mice"])
    assert groups.subjects == ((2,), (5,), (8,))
    assert matched == ("box", "berry", "mouse")


@pytest.mark.parametrize("typed, written", [
    ("glass", "glasses"), ("fly", "flies"), ("person", "people"), ("child", "children"), ("foot", "feet"),
    ("goose", "geese"), ("tooth", "teeth"), ("woman", "women"), ("man", "men"), ("mice", "mouse")])
def test_regular_and_irregular_pairs(typed, written):
    groups, matched = res(f"three {written} and a cat", [typed, "cat"])
    assert groups.subjects == ((2,), (5,)) and matched == (written, "cat")


def test_case_on_a_case_sensitive_tokenizer():
    # T5-like: 'Cat' and 'cat' are different tokens, so 'cat' is not in the prompt as typed.
    groups, matched = res("a Cat and a dog", ["cat", "DOG"], lower=False)
    assert groups.subjects == ((2,), (5,))
    assert matched == ("Cat", "dog")


def test_exact_match_wins_over_an_inflected_one():
    # Both 'cat' and 'cats' are in the prompt: the typed word is the subject, not its plural.
    groups, matched = res("two cats and a cat", ["cat", "cats"])
    assert groups.subjects == ((5,), (2,)) and matched == ("cat", "cats")
    # Case before number: 'Cats' on a case-sensitive tokenizer is the prompt's 'cats', not 'cat'.
    groups, matched = res("a cat and two cats", ["Cats"], lower=False)
    assert groups.subjects == ((5,),) and matched == ("cats",)


def test_several_candidates_are_refused_with_each_named():
    with pytest.raises(SubjectError) as e:
        res("two people and three persons", ["person"])
    msg = str(e.value)
    assert msg.startswith("subject 'person' is not in the prompt; did you mean 'people' or 'persons'?")
    with pytest.raises(SubjectError, match="did you mean 'Dog' or 'DOG'"):
        res("a Dog and a DOG", ["dog"], lower=False)


def test_a_repeated_prompt_word_is_one_candidate():
    groups, matched = res("two circles and three circles", ["circle", "circle#2"])
    assert groups.subjects == ((2,), (5,)) and matched == ("circles", "circles")


def test_no_match_keeps_the_message_and_adds_a_close_word():
    with pytest.raises(SubjectError) as e:
        res("two red circles and a square", ["circel"])
    msg = str(e.value)
    assert "subject 'circel' is not in the prompt. Words in the prompt: two, red, circles, and, a, square" in msg
    assert "Type the subject exactly as it is written in the prompt." in msg
    assert msg.endswith("Did you mean 'circles'?")
    with pytest.raises(SubjectError, match="Did you mean 'cat'"):
        res("a cat and a dog", ["car"])
    # Nothing close: today's message alone.
    with pytest.raises(SubjectError) as e:
        res("a cat and a dog", ["horse"])
    assert "did you mean" not in str(e.value).lower()
    # Same stem: 'runs' for the prompt's 'running'.
    with pytest.raises(SubjectError, match="Did you mean 'running'"):
        res("a running fox", ["runs"])


def test_multi_word_subjects_inflect_their_last_word():
    groups, matched = res("two teddy bears and a cat", ["teddy bear", "cat"])
    assert groups.subjects == ((2, 3), (6,)) and matched == ("teddy bears", "cat")
    groups, matched = res("a Teddy Bear", ["teddy bears"], lower=False)
    assert groups.subjects == ((2, 3),) and matched == ("Teddy Bear",)
    with pytest.raises(SubjectError, match="not in the prompt"):
        res("two bears and a teddy", ["teddy bear"])  # the words must stand together


def test_two_subjects_on_one_word_are_refused():
    with pytest.raises(SubjectError, match="'circle' and 'circles' both stand for the prompt's 'circles'"):
        res("two circles", ["circle", "circles"])


def test_attribute_pairs_may_name_either_form():
    groups, _ = res("two red circles and a square", ["circle", "square"], attributes=parse_pairs("red:circles"))
    assert groups.attributes == (((2,), 0),)
    groups, _ = res("two red circles and a square", ["circle", "square"], attributes=parse_pairs("red:circle"))
    assert groups.attributes == (((2,), 0),)


def test_resolve_gives_the_same_columns():
    vocab = Vocab(True)
    prompt = "two red circles and a square"
    assert resolve(prompt, vocab.prompt(prompt), vocab.word, ["circle"]).subjects == ((3,),)


def test_streams_report_the_form_a_case_sensitive_stream_needed():
    clip, t5 = Vocab(True), Vocab(False)
    prompt = "a Cat and a dog"
    groups, matched = resolve_stream_words(prompt, [TokenStream(clip.prompt(prompt), clip.word, 0),
                                                    TokenStream(t5.prompt(prompt), t5.word, 77)], ["cat", "dog"])
    assert groups.subjects == ((2, 79), (5, 82))
    assert matched == ("Cat", "dog")


def test_labels_show_the_prompts_word():
    groups, matched = res("two red circles and a square", ["circle", "square"])
    spec = ResolvedSubjects("two red circles and a square", ("circle", "square"), (), groups, matched)
    assert spec.labels() == ("circle -> circles", "square")
    # Made without the matched words (older graphs): the subjects as typed.
    assert ResolvedSubjects("", ("cat#2", "dog"), (), groups).labels() == ("cat#2", "dog")


def test_inflections_and_edit_distance():
    assert {"circles"} <= inflections("circle") and "circle" in inflections("circles")
    assert "berries" in inflections("berry") and "boies" not in inflections("boy")
    assert "mice" in inflections("mouse") and "mouse" in inflections("Mice")
    assert edit_distance("circel", "circle") == 2 and edit_distance("cat", "cat") == 0
    assert edit_distance("", "dog") == 3 and edit_distance("kitten", "sitting") == 3
