"""Subject columns on the real SD3 and Flux tokenizers, and the context streams of the
loaded text encoders (nodes/host/tokens.py)."""
import pytest
import torch

from ai_t2i_pack import ai_t2i_attention as engine
from ai_t2i_pack.nodes.host import tokens


def _streams(tokenizer, streams, text, subjects, attributes=()):
    found, raw = tokens.stream_tokenizations(tokenizer.tokenize_with_weights, text, streams)
    return engine.resolve_streams(text, found, subjects, attributes, tokens.presence_columns(raw)), raw


def _find(ids, word_ids):
    """Positions of the first run of word_ids inside ids (the tokenizer library's own ids)."""
    n = len(word_ids)
    start = next(i for i in range(len(ids) - n + 1) if ids[i:i + n] == word_ids)
    return tuple(range(start, start + n))


def test_sd3_columns_are_the_words_clip_and_t5_columns():
    from comfy.text_encoders.sd3_clip import SD3Tokenizer
    tok = SD3Tokenizer()
    groups, raw = _streams(tok, ("l", "t5xxl"), "a photo of a cat and a teddy bear", ["cat", "teddy bear"])
    clip_len = 77 * len(raw["l"])
    t5_ids = [t[0] for t in raw["t5xxl"][0]]
    clip_ids = [t[0] for t in raw["l"][0]]
    t5 = lambda w: tok.t5xxl.tokenizer(w, add_special_tokens=False)["input_ids"]  # noqa: E731
    clip = lambda w: tok.clip_l.tokenizer(w, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert clip_len == 77 and len(t5_ids) == 77  # SD3 pads T5 to 77 tokens
    cat_t5 = tuple(clip_len + c for c in _find(t5_ids, t5("cat")))
    assert groups.subjects[0] == (5,) + cat_t5 and _find(clip_ids, clip("cat")) == (5,)  # start, a, photo, of, a, cat
    teddy_t5 = tuple(clip_len + c for c in _find(t5_ids, t5("teddy bear")))
    assert len(teddy_t5) > 2  # T5 splits "teddy" into pieces: all are the subject's columns
    assert groups.subjects[1] == _find(clip_ids, clip("teddy bear")) + teddy_t5
    # presence axis: CLIP's columns 1..75, then every T5 column (no start token in T5)
    assert groups.text_columns == tuple(range(1, 76)) + tuple(range(clip_len, clip_len + len(t5_ids)))
    t5_only, _ = _streams(tok, ("t5xxl",), "a photo of a cat", ["cat"])
    assert t5_only.subjects == (_find(t5_ids, t5("cat")),)  # T5 alone (no CLIP loaded): its columns from 0


def test_flux_columns_are_t5_only():
    from comfy.text_encoders.flux import FluxTokenizer
    tok = FluxTokenizer()
    groups, raw = _streams(tok, ("t5xxl",), "a red car next to a blue bird", ["car", "bird"],
                           [("red", "car"), ("blue", "bird")])
    ids = [t[0] for t in raw["t5xxl"][0]]
    t5 = lambda w: tok.t5xxl.tokenizer(w, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert len(ids) == 256  # Flux pads T5 to 256 tokens
    assert groups.subjects == (_find(ids, t5("car")), _find(ids, t5("bird")))
    assert groups.attributes == ((_find(ids, t5("red")), 0), (_find(ids, t5("blue")), 1))
    assert groups.text_columns == tuple(range(256))
    with pytest.raises(ValueError, match="'horse' is not in the prompt. Words in the prompt: a, red, car"):
        _streams(tok, ("t5xxl",), "a red car next to a blue bird", ["car", "horse"])


def test_context_streams_follow_the_encoders_loaded():
    """Which streams make the context, read from the host's own text-encoder classes
    (built without weights: no encoder loaded, then a stand-in module per loaded one)."""
    from types import SimpleNamespace
    from comfy.text_encoders.sd3_clip import SD3ClipModel
    sd3 = SD3ClipModel(clip_l=False, clip_g=False, t5=False)
    assert tokens.context_streams(SimpleNamespace(cond_stage_model=sd3)) == ()
    sd3.t5xxl = torch.nn.Identity()
    assert tokens.context_streams(SimpleNamespace(cond_stage_model=sd3)) == ("t5xxl",)
    sd3.clip_g = torch.nn.Identity()
    assert tokens.context_streams(SimpleNamespace(cond_stage_model=sd3)) == ("g", "t5xxl")
    sd3.clip_l = torch.nn.Identity()
    assert tokens.context_streams(SimpleNamespace(cond_stage_model=sd3)) == ("l", "t5xxl")
    assert tokens.context_streams(SimpleNamespace(cond_stage_model=torch.nn.Identity())) is None
