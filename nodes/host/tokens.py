"""Tokenizing with the host's CLIP objects, for word -> column resolution.

The context a model attends to is one tokenizer's tokens (SD1.x/SD2.x/SDXL: CLIP, columns
chunk * 77 + position; SDXL's CLIP-L and CLIP-G share positions) or, for the joint-attention
models, the tokens of several encoders on the sequence axis (context_streams):
- SD3/SD3.5: CLIP-L and CLIP-G side by side on the channel axis (77 tokens per chunk, one
  set of columns: CLIP-L's, or CLIP-G's when only G is loaded), then T5-XXL's tokens (no
  start token, padded to 77). An encoder that is not loaded leaves its part out of the
  context, and the columns move accordingly (T5 alone: T5's columns from 0).
- Flux.1: T5-XXL's tokens only (padded to 256); CLIP-L gives the pooled vector alone.
A subject word is mapped in every stream the context holds (on SD3 its CLIP column and its
T5 columns): its map is the mean over all of them (ai_t2i_attention.resolve_streams).
"""
from __future__ import annotations

import hashlib

import torch
from comfy.text_encoders.flux import FluxClipModel
from comfy.text_encoders.sd3_clip import SD3ClipModel

from ...ai_t2i_attention import Tokenization, TokenStream

# SDXL tokenizes for CLIP-L and CLIP-G; both share the vocabulary and positions, so
# columns found on one hold for the concatenated context. SD2.x uses OpenCLIP-H.
TOKENIZER_ORDER = ("l", "g", "h")
# The presence term's token axis (tokens.PRESENCE_COLUMNS) by tokenizer: the official
# Attend-and-Excite code re-softmaxes over the prompt's own columns on SD 2.x (OpenCLIP-H);
# on SD 1.x, and by default, it keeps the end token and the padding (the reference's way).
PRESENCE_COLUMNS_BY_TOKENIZER = {"h": "prompt"}
# Token streams whose chunks open with no start token.
NO_START_TOKEN = frozenset({"t5xxl"})


def _key(token):
    """A hashable key per position: token ids stay ints, embedding vectors hash by value."""
    if isinstance(token, torch.Tensor):
        return ("vec", hashlib.sha1(token.detach().float().cpu().numpy().tobytes()).hexdigest())
    return int(token)


def _tokenizer_name(tokens: dict) -> str:
    for name in TOKENIZER_ORDER:
        if name in tokens:
            return name
    return next(iter(tokens))


def _chunks(tokens: dict, name: str) -> tuple[tuple, ...]:
    return tuple(tuple(_key(t[0]) for t in chunk) for chunk in tokens[name])


def presence_columns(tokens: dict) -> str:
    """Which presence token axis fits the text encoder that made `tokens` (host tokens)."""
    return PRESENCE_COLUMNS_BY_TOKENIZER.get(_tokenizer_name(tokens), "reference")


def tokenization(clip, text: str) -> tuple[Tokenization, callable, dict]:
    """(prompt Tokenization, tokenize_word, raw host tokens) for `text` on `clip`."""
    tokens = clip.tokenize(text)
    name = _tokenizer_name(tokens)
    empty = _chunks(clip.tokenize(""), name)[0]
    special = frozenset({empty[0], empty[1], empty[-1]}) if len(empty) > 1 else frozenset(empty)

    def tokenize_word(word: str):
        return [t for t in _chunks(clip.tokenize(word), name)[0] if t not in special]

    return Tokenization(_chunks(tokens, name), special), tokenize_word, tokens


def context_streams(clip) -> tuple[str, ...] | None:
    """The host token streams (keys of clip.tokenize's dict) that make the model's context,
    in sequence order, for text encoders whose context is not simply the first tokenizer's
    tokens (SD3/SD3.5, Flux.1: see the module docstring); None for every other encoder."""
    model = getattr(clip, "cond_stage_model", None)
    if isinstance(model, SD3ClipModel):
        streams = []
        if model.clip_l is not None or model.clip_g is not None:
            streams.append("l" if model.clip_l is not None else "g")
        if model.t5xxl is not None:
            streams.append("t5xxl")
        return tuple(streams)
    if isinstance(model, FluxClipModel):
        return ("t5xxl",)
    return None


def stream_tokenizations(tokenize, text: str, streams: tuple[str, ...]) -> tuple[list[TokenStream], dict]:
    """(a TokenStream per stream, raw host tokens) for `text`: tokenize is the host's
    tokenizer call (clip.tokenize, or a tokenizer's tokenize_with_weights); each stream's
    offset is the context column of its first token (the lengths of the streams before it)."""
    tokens = tokenize(text)
    empty = tokenize("")
    out, offset = [], 0
    for name in streams:
        chunks = _chunks(tokens, name)
        blank = _chunks(empty, name)[0]
        special = frozenset({blank[0], blank[1], blank[-1]}) if len(blank) > 1 else frozenset(blank)

        def tokenize_word(word: str, name=name, special=special):
            return [t for t in _chunks(tokenize(word), name)[0] if t not in special]

        out.append(TokenStream(Tokenization(chunks, special, start_token=name not in NO_START_TOKEN), tokenize_word,
                               offset))
        offset += sum(len(c) for c in chunks)
    return out, tokens


def subject_streams(clip, text: str) -> tuple[list[TokenStream], dict]:
    """(the context's token streams, raw host tokens) for `text` on `clip`: one stream at
    offset 0 for single-tokenizer encoders (the columns tokenization() gives)."""
    streams = context_streams(clip)
    if streams is None:
        prompt, tokenize_word, tokens = tokenization(clip, text)
        return [TokenStream(prompt, tokenize_word, 0)], tokens
    return stream_tokenizations(clip.tokenize, text, streams)
