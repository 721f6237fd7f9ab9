"""Subject words -> context columns, on the model's real tokenization.

The host gives the prompt's tokens as chunks (77 per chunk for CLIP) of hashable keys
(token ids, or a key per textual-inversion vector) and a function that tokenizes a
single word the same way. A token's context column is chunk * chunk_len + position.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

from .maps import TokenGroups

MAX_SUBJECTS = 8


class SubjectError(ValueError):
    """A subject or attribute the prompt cannot provide. The message names the fix."""


@dataclass(frozen=True)
class Tokenization:
    """chunks: per chunk, one key per position; special: start/end/pad keys.
    start_token: each chunk opens with a start token (CLIP); T5 has none."""

    chunks: tuple[tuple[Hashable, ...], ...]
    special: frozenset
    start_token: bool = True

    def flat(self) -> list[Hashable]:
        return [t for chunk in self.chunks for t in chunk]

    def text_columns(self) -> tuple[int, ...]:
        """The prompt's own columns: no start, end or padding tokens."""
        return tuple(i for i, t in enumerate(self.flat()) if t not in self.special)

    def reference_columns(self) -> tuple[int, ...]:
        """Every column but each chunk's first (start token) and last: the token axis the
        reference code's presence term re-softmaxes over (columns 1..75 of a 77-token
        prompt; the end token and the padding stay in)."""
        if not self.start_token:  # T5: no start token to leave out; every column, end and padding in
            return tuple(range(len(self.flat())))
        cols, offset = [], 0
        for chunk in self.chunks:
            cols += range(offset + 1, offset + len(chunk) - 1)
            offset += len(chunk)
        return tuple(cols)


# Which token axis the presence term re-softmaxes over (TokenGroups.text_columns):
# "reference": as the AI-T2I and Attend-and-Excite reference code on SD 1.x (end token and
# padding kept); "prompt": the prompt's own words only, as the official Attend-and-Excite
# code does on SD 2.x (its normalize_eot option).
PRESENCE_COLUMNS = ("reference", "prompt")
PRECEDING = "preceding"  # the attributes text that pairs each subject with the token before it


def prompt_words(prompt: str) -> list[str]:
    """The words a user sees in the prompt, for error messages."""
    return re.findall(r"[\w:'-]+", prompt.lower())


def parse_list(text: str) -> list[str]:
    """'cat, dog' or one per line -> ['cat', 'dog']."""
    return [w.strip() for w in re.split(r"[,\n;]", text) if w.strip()]


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """'red:cat, blue:dog' -> [('red', 'cat'), ('blue', 'dog')]."""
    pairs = []
    for item in parse_list(text):
        if item.count(":") != 1 or not all(p.strip() for p in item.split(":")):
            raise SubjectError(f"attribute pair {item!r} is not of the form attribute:subject, e.g. 'red:cat'")
        a, s = (p.strip() for p in item.split(":"))
        pairs.append((a, s))
    return pairs


def parse_attributes(text: str) -> list[tuple[str, str]] | str:
    """The attributes widget: attribute:subject pairs (parse_pairs), or the keyword
    'preceding' (PRECEDING: the reference code's token-before-the-noun rule)."""
    if text.strip().lower() == PRECEDING:
        return PRECEDING
    return parse_pairs(text)


def _occurrence(word: str) -> tuple[str, int]:
    """'cat#2' -> ('cat', 2): pick the second occurrence of a repeated word."""
    m = re.fullmatch(r"(.+?)#(\d+)", word)
    return (m.group(1).strip(), int(m.group(2))) if m else (word, 1)


def find_columns(prompt: Tokenization, word_keys: Sequence[Hashable], occurrence: int = 1) -> tuple[int, ...] | None:
    """Columns of the occurrence-th match of word_keys inside one chunk, or None."""
    n = len(word_keys)
    seen = 0
    offset = 0
    for chunk in prompt.chunks:
        for i in range(len(chunk) - n + 1):
            if tuple(chunk[i:i + n]) == tuple(word_keys):
                seen += 1
                if seen == occurrence:
                    return tuple(range(offset + i, offset + i + n))
        offset += len(chunk)
    return None


def resolve(prompt_text: str, prompt: Tokenization, tokenize_word: Callable[[str], Sequence[Hashable]],
            subjects: Sequence[str], attributes: Sequence[tuple[str, str]] | str = (),
            presence_columns: str = "reference") -> TokenGroups:
    """Resolve subject words and attribute:subject pairs to context columns.

    attributes: explicit (attribute, subject) word pairs, or PRECEDING: each subject's
        attribute is the token right before its first token, as the reference code
        assumes (in "a cat" that is "a"; in "a red cat", "red").
    presence_columns: one of PRESENCE_COLUMNS.
    Raises SubjectError with the prompt's words listed when a word is not in the prompt.
    """
    if presence_columns not in PRESENCE_COLUMNS:
        raise ValueError(f"unknown presence columns {presence_columns!r}; use one of {', '.join(PRESENCE_COLUMNS)}")
    if len(subjects) < 1:
        raise SubjectError("no subject given: type the subject words of the prompt, e.g. 'cat, dog'")
    if len(subjects) > MAX_SUBJECTS:
        raise SubjectError(f"{len(subjects)} subjects given; at most {MAX_SUBJECTS} are supported: keep the main ones")
    lowered = [s.lower() for s in subjects]
    dupes = sorted({s for s in lowered if lowered.count(s) > 1})
    if dupes:
        raise SubjectError(f"subject {dupes[0]!r} is listed twice; to use a word that appears twice in the prompt, "
                           f"write '{dupes[0]}#2' for its second occurrence")

    def columns(word: str, role: str) -> tuple[int, ...]:
        base, nth = _occurrence(word)
        keys = list(tokenize_word(base))
        if not keys:
            raise SubjectError(f"{role} {word!r} produces no tokens: type a word of the prompt")
        cols = find_columns(prompt, keys, nth)
        if cols is None and base.isdigit():
            raise SubjectError(f"{role} {base!r} looks like a token index, and no such word is in the prompt: "
                               f"type the {role} words themselves (e.g. 'cat, dog'), not their token positions")
        if cols is None and not prompt.text_columns():
            raise SubjectError(f"{role} {base!r} is not in the prompt. Words in the prompt: (empty prompt). "
                               f"Write a prompt that names the {role} (e.g. 'a photo of a {base}') and list its "
                               f"words here.")
        if cols is None:
            where = f"occurrence {nth} of " if nth > 1 else ""
            raise SubjectError(f"{role} {where}{base!r} is not in the prompt. Words in the prompt: "
                               f"{', '.join(prompt_words(prompt_text)) or '(empty prompt)'}. "
                               f"Type the {role} exactly as it is written in the prompt.")
        return cols

    subject_cols = tuple(columns(s, "subject") for s in subjects)
    softmax_cols = prompt.reference_columns() if presence_columns == "reference" else prompt.text_columns()
    if attributes == PRECEDING:
        # The reference's rule, kept reachable: no check that the token is an attribute word.
        first = [s for s, cols in zip(subjects, subject_cols) if cols[0] == 0]
        if first:  # only without a start token (T5) can a subject sit in column 0
            raise SubjectError(f"subject {first[0]!r} is the prompt's first token, so 'preceding' finds no attribute "
                               f"before it: write explicit attribute:subject pairs, or put a word before it")
        pairs = tuple(((cols[0] - 1,), i) for i, cols in enumerate(subject_cols))
        return TokenGroups(subject_cols, pairs, softmax_cols)
    by_name = {s.lower(): i for i, s in enumerate(subjects)}
    attr = []
    for a, s in attributes:
        if s.lower() not in by_name:
            raise SubjectError(f"attribute pair '{a}:{s}' names {s!r}, which is not one of the subjects ({', '.join(subjects)})")
        attr.append((columns(a, "attribute"), by_name[s.lower()]))
    overlap = set().union(*map(set, subject_cols)) if subject_cols else set()
    for cols, s in attr:
        if set(cols) & overlap:
            raise SubjectError(f"an attribute shares tokens with a subject ({subjects[s]!r}): give the attribute word alone, e.g. 'red:cat'")
    return TokenGroups(subject_cols, tuple(attr), softmax_cols)


@dataclass(frozen=True)
class ResolvedSubjects:
    """A prompt's subjects as words and as context columns (what the sampler reads)."""

    prompt: str
    subjects: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]
    groups: TokenGroups


@dataclass(frozen=True)
class TokenStream:
    """One text encoder's tokens inside a context that holds several on its sequence axis
    (SD3: CLIP-L/G's columns, then T5's). offset: the context column of its first token."""

    tokenization: Tokenization
    tokenize_word: Callable[[str], Sequence[Hashable]]
    offset: int = 0


def resolve_streams(prompt_text: str, streams: Sequence[TokenStream], subjects: Sequence[str],
                    attributes: Sequence[tuple[str, str]] | str = (), presence_columns: str = "reference") -> TokenGroups:
    """resolve() in every stream of the context, merged: each subject's (and attribute's)
    columns are its columns in every stream, shifted by the stream's offset, and the
    presence term's token axis is every stream's, so a word's maps average over all the
    encoders that carry it (on SD3: its CLIP column and its T5 columns). A word must be in
    every stream (all encode the same prompt); the first stream's error is raised."""
    if not streams:
        raise SubjectError("the text encoder gives no token streams: load a CLIP or T5 text encoder")
    groups = [resolve(prompt_text, s.tokenization, s.tokenize_word, subjects, attributes, presence_columns)
              for s in streams]

    def shift(cols, offset):
        return tuple(c + offset for c in cols)

    subject_cols = tuple(tuple(c for g, s in zip(groups, streams) for c in shift(g.subjects[i], s.offset))
                         for i in range(len(subjects)))
    attrs = tuple((tuple(c for g, s in zip(groups, streams) for c in shift(g.attributes[j][0], s.offset)),
                   groups[0].attributes[j][1]) for j in range(len(groups[0].attributes)))
    text = tuple(c for g, s in zip(groups, streams) for c in shift(g.text_columns, s.offset))
    return TokenGroups(subject_cols, attrs, text)
