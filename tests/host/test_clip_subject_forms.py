"""A subject typed in another form than the prompt's word, on the host's real CLIP tokenizer:
the Subject Prompt resolves it to the prompt's word and the run log says which word."""
import pytest

from runner import encode, guided_sampler, patch, plain, run

SUBJECTS_KEY = "ai_t2i_subjects"


def test_singular_subject_finds_the_prompts_plural(pack, sd15_small):
    model, clip = sd15_small
    cond = encode(pack, clip, "two red circles and a square", "circle, square")
    spec = cond[0][1][SUBJECTS_KEY]
    # CLIP: 0 start, 1 two, 2 red, 3 circles, 4 and, 5 a, 6 square (each one token)
    assert spec.subjects == ("circle", "square") and spec.matched == ("circles", "square")
    assert spec.groups.subjects == ((3,), (6,))
    circles = clip.tokenize("circles")["l"][0][1][0]
    assert clip.tokenize("two red circles and a square")["l"][0][3][0] == circles
    sampler = guided_sampler(pack)
    run(patch(pack, model), sampler, cond, plain(clip), size=16, steps=2)
    assert sampler.runs.latest().log_text().startswith("AI-T2I run: subjects=circle -> circles, square ")


def test_ambiguous_and_absent_subjects_name_the_candidates(pack, sd15_small):
    _, clip = sd15_small
    with pytest.raises(ValueError, match="subject 'person' is not in the prompt; did you mean 'people' or 'persons'"):
        encode(pack, clip, "two people and three persons", "person")
    with pytest.raises(ValueError, match="Did you mean 'circles'"):
        encode(pack, clip, "two red circles", "circel")
