"""Tokenizing with the host's CLIP objects, for word -> column resolution."""
from __future__ import annotations

import hashlib

import torch

from ...ai_t2i_attention import Tokenization

# SDXL tokenizes for CLIP-L and CLIP-G; both share the vocabulary and positions, so
# columns found on one hold for the concatenated context. SD2.x uses OpenCLIP-H.
TOKENIZER_ORDER = ("l", "g", "h")
# The presence term's token axis (tokens.PRESENCE_COLUMNS) by tokenizer: the official
# Attend-and-Excite code re-softmaxes over the prompt's own columns on SD 2.x (OpenCLIP-H);
# on SD 1.x, and by default, it keeps the end token and the padding (the reference's way).
PRESENCE_COLUMNS_BY_TOKENIZER = {"h": "prompt"}


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
