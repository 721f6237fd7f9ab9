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


# Irregular English singular -> plural pairs; the regular ones (s, es, ies <-> y) are rules.
IRREGULAR_PLURALS = {
    "mouse": "mice", "louse": "lice", "person": "people", "man": "men", "woman": "women", "child": "children",
    "goose": "geese", "foot": "feet", "tooth": "teeth", "ox": "oxen", "leaf": "leaves", "wolf": "wolves",
    "knife": "knives", "wife": "wives", "life": "lives", "loaf": "loaves", "calf": "calves", "half": "halves",
    "shelf": "shelves", "thief": "thieves", "elf": "elves",
}
_IRREGULAR_BOTH_WAYS = {**IRREGULAR_PLURALS, **{p: s for s, p in IRREGULAR_PLURALS.items()}}
# What a prompt word is, for matching a subject typed in another form: no ':' (a weighted
# "(cat:1.2)" is the word cat), unlike prompt_words, which lists what the user sees.
_WORD = re.compile(r"[\w'-]+")


def inflections(word: str) -> set[str]:
    """The singular/plural counterparts of an English word (lowercase): circle <-> circles,
    box <-> boxes, berry <-> berries, mouse <-> mice. Over-generates on purpose ('circles'
    also gives 'circl'): only forms that are words of the prompt are ever used."""
    w = word.lower()
    forms = {w + "s", w + "es"}
    if len(w) > 1 and w.endswith("y") and w[-2] not in "aeiou":
        forms.add(w[:-1] + "ies")
    if w.endswith("ies"):
        forms.add(w[:-3] + "y")
    if w.endswith("es"):
        forms.add(w[:-2])
    if w.endswith("s") and not w.endswith("ss"):
        forms.add(w[:-1])
    if w in _IRREGULAR_BOTH_WAYS:
        forms.add(_IRREGULAR_BOTH_WAYS[w])
    return {f for f in forms if len(f) >= 2 and f != w}


def _stem(word: str) -> str:
    """A crude English stem for suggestions only: 'running' and 'runs' share 'run'."""
    for suffix in ("ing", "ies", "es", "ed", "er", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)]
            break
    return word[:-1] if len(word) > 3 and word[-1] == word[-2] else word  # runn -> run


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two strings."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _windows(prompt_text: str, n: int) -> list[list[str]]:
    """Every run of n consecutive words of the prompt, in the prompt's own case."""
    words = _WORD.findall(prompt_text)
    return [words[i:i + n] for i in range(len(words) - n + 1)]


def _quoted_choice(options: Sequence[str]) -> str:
    quoted = [repr(o) for o in options]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _typed_words(base: str) -> list[str] | None:
    """The words of a typed subject, or None when it is more than plain words separated by
    spaces (an 'embedding:name', punctuation): such a subject matches only as typed."""
    words = base.split()
    return words if words and all(_WORD.fullmatch(w) for w in words) else None


def _other_forms(prompt_text: str, prompt: Tokenization, tokenize_word, base: str,
                 nth: int) -> tuple[str, list[tuple[str, tuple[int, ...]]]]:
    """The prompt's phrases a subject typed in another form can stand for, as
    (tier, [(phrase, columns)]): tier "case" (the same words in another letter case) is
    tried first, then "inflection" (the last word singular <-> plural, the others in any
    case). Phrases with the same tokens count once. Empty list: nothing matches."""
    typed = _typed_words(base)
    if typed is None:
        return "", []
    lowered = [w.lower() for w in typed]
    forms = inflections(lowered[-1])
    for tier, last_ok in (("case", lambda w: w == lowered[-1]), ("inflection", lambda w: w in forms)):
        found, seen = [], set()
        for window in _windows(prompt_text, len(typed)):
            low = [w.lower() for w in window]
            if low[:-1] != lowered[:-1] or not last_ok(low[-1]):
                continue
            phrase = " ".join(window)
            keys = tuple(tokenize_word(phrase))
            if not keys or keys in seen:
                continue
            cols = find_columns(prompt, keys, nth)
            if cols is not None:
                seen.add(keys)
                found.append((phrase, cols))
        if found:
            return tier, found
    return "", []


def _suggestions(prompt_text: str, base: str, limit: int = 3) -> list[str]:
    """Prompt phrases close to a subject that matched nothing: the same stem, or an edit
    distance of 1 (words of up to 4 letters) or 2 (longer words) to the phrase or to one of
    its singular/plural forms. Closest first."""
    typed = _typed_words(base)
    if typed is None:
        return []
    target = " ".join(typed).lower()
    allowed = 1 if len(target) <= 4 else 2
    scored = {}
    for window in _windows(prompt_text, len(typed)):
        phrase = " ".join(window)
        low = [w.lower() for w in window]
        variants = [" ".join(low[:-1] + [f]) for f in inflections(low[-1]) | {low[-1]}]
        distance = min(edit_distance(target, v) for v in variants)
        if low[:-1] == [w.lower() for w in typed[:-1]] and _stem(low[-1]) == _stem(typed[-1].lower()):
            distance = min(distance, 1)
        if distance <= allowed and phrase.lower() != target:
            scored.setdefault(phrase.lower(), (distance, phrase))
    return [phrase for _, phrase in sorted(scored.values(), key=lambda dp: dp[0])][:limit]


def resolve(prompt_text: str, prompt: Tokenization, tokenize_word: Callable[[str], Sequence[Hashable]],
            subjects: Sequence[str], attributes: Sequence[tuple[str, str]] | str = (),
            presence_columns: str = "reference") -> TokenGroups:
    """Resolve subject words and attribute:subject pairs to context columns.

    A word is first looked up as typed (its tokens); one that is not in the prompt so may
    stand for a word of the prompt in another letter case ('Cat' for 'cat' on a
    case-sensitive tokenizer), or else for its singular/plural form ('circle' for
    'circles', 'mouse' for 'mice'; of a phrase, its last word), when exactly one word of
    the prompt fits (resolve_words says which word each subject stands for).
    attributes: explicit (attribute, subject) word pairs, or PRECEDING: each subject's
        attribute is the token right before its first token, as the reference code
        assumes (in "a cat" that is "a"; in "a red cat", "red").
    presence_columns: one of PRESENCE_COLUMNS.
    Raises SubjectError with the prompt's words listed when a word is not in the prompt.
    """
    return resolve_words(prompt_text, prompt, tokenize_word, subjects, attributes, presence_columns)[0]


def resolve_words(prompt_text: str, prompt: Tokenization, tokenize_word: Callable[[str], Sequence[Hashable]],
                  subjects: Sequence[str], attributes: Sequence[tuple[str, str]] | str = (),
                  presence_columns: str = "reference") -> tuple[TokenGroups, tuple[str, ...]]:
    """resolve(), and for each subject the prompt's words it stands for: the subject as
    typed (without '#n') where it matched as typed, else the prompt's own phrase."""
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

    def columns(word: str, role: str) -> tuple[tuple[int, ...], str]:
        """(columns, the prompt's words they hold) of a typed word."""
        base, nth = _occurrence(word)
        keys = list(tokenize_word(base))
        if not keys:
            raise SubjectError(f"{role} {word!r} produces no tokens: type a word of the prompt")
        cols = find_columns(prompt, keys, nth)
        if cols is not None:  # as typed: always preferred to another form
            return cols, base
        tier, found = _other_forms(prompt_text, prompt, tokenize_word, base, nth)
        if len(found) == 1:
            return found[0][1], found[0][0]
        if found:
            raise SubjectError(f"{role} {base!r} is not in the prompt; did you mean "
                               f"{_quoted_choice([phrase for phrase, _ in found])}? Type the one you mean as it "
                               f"is written in the prompt.")
        if base.isdigit():
            raise SubjectError(f"{role} {base!r} looks like a token index, and no such word is in the prompt: "
                               f"type the {role} words themselves (e.g. 'cat, dog'), not their token positions")
        if not prompt.text_columns():
            raise SubjectError(f"{role} {base!r} is not in the prompt. Words in the prompt: (empty prompt). "
                               f"Write a prompt that names the {role} (e.g. 'a photo of a {base}') and list its "
                               f"words here.")
        where = f"occurrence {nth} of " if nth > 1 else ""
        close = _suggestions(prompt_text, base)
        hint = f" Did you mean {_quoted_choice(close)}?" if close else ""
        raise SubjectError(f"{role} {where}{base!r} is not in the prompt. Words in the prompt: "
                           f"{', '.join(prompt_words(prompt_text)) or '(empty prompt)'}. "
                           f"Type the {role} exactly as it is written in the prompt.{hint}")

    resolved = [columns(s, "subject") for s in subjects]
    subject_cols = tuple(cols for cols, _ in resolved)
    matched = tuple(words for _, words in resolved)
    for i, j in ((i, j) for i in range(len(subjects)) for j in range(i)):
        if subject_cols[i] == subject_cols[j]:
            raise SubjectError(f"subjects {subjects[j]!r} and {subjects[i]!r} both stand for the prompt's "
                               f"{matched[i]!r}: list it once (write '{matched[i]}#2' for a second occurrence)")
    softmax_cols = prompt.reference_columns() if presence_columns == "reference" else prompt.text_columns()
    if attributes == PRECEDING:
        # The reference's rule, kept reachable: no check that the token is an attribute word.
        first = [s for s, cols in zip(subjects, subject_cols) if cols[0] == 0]
        if first:  # only without a start token (T5) can a subject sit in column 0
            raise SubjectError(f"subject {first[0]!r} is the prompt's first token, so 'preceding' finds no attribute "
                               f"before it: write explicit attribute:subject pairs, or put a word before it")
        pairs = tuple(((cols[0] - 1,), i) for i, cols in enumerate(subject_cols))
        return TokenGroups(subject_cols, pairs, softmax_cols), matched
    by_name = {s.lower(): i for i, s in enumerate(subjects)}
    for i, words in enumerate(matched):  # a pair may name the subject as the prompt writes it
        by_name.setdefault(words.lower(), i)
    attr = []
    for a, s in attributes:
        if s.lower() not in by_name:
            raise SubjectError(f"attribute pair '{a}:{s}' names {s!r}, which is not one of the subjects ({', '.join(subjects)})")
        attr.append((columns(a, "attribute")[0], by_name[s.lower()]))
    overlap = set().union(*map(set, subject_cols)) if subject_cols else set()
    for cols, s in attr:
        if set(cols) & overlap:
            raise SubjectError(f"an attribute shares tokens with a subject ({subjects[s]!r}): give the attribute word alone, e.g. 'red:cat'")
    return TokenGroups(subject_cols, tuple(attr), softmax_cols), matched


@dataclass(frozen=True)
class ResolvedSubjects:
    """A prompt's subjects as words and as context columns (what the sampler reads).

    subjects: as the user typed them (the layout names them so).
    matched: per subject, the prompt's words it stands for ('circles' for a typed
        'circle', resolve_words); empty: each subject as typed."""

    prompt: str
    subjects: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]
    groups: TokenGroups
    matched: tuple[str, ...] = ()

    def labels(self) -> tuple[str, ...]:
        """Each subject for the run log: 'circle -> circles' where the prompt's word is
        another form of the typed one, else the subject as typed."""
        matched = self.matched or tuple(_occurrence(s)[0] for s in self.subjects)
        return tuple(s if _occurrence(s)[0] == m else f"{s} -> {m}" for s, m in zip(self.subjects, matched))


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
    return resolve_stream_words(prompt_text, streams, subjects, attributes, presence_columns)[0]


def resolve_stream_words(prompt_text: str, streams: Sequence[TokenStream], subjects: Sequence[str],
                         attributes: Sequence[tuple[str, str]] | str = (),
                         presence_columns: str = "reference") -> tuple[TokenGroups, tuple[str, ...]]:
    """resolve_streams(), and for each subject the prompt's words it stands for (as
    resolve_words): where the streams differ (a case-insensitive tokenizer beside a
    case-sensitive one), the first stream's words that are not the subject as typed."""
    if not streams:
        raise SubjectError("the text encoder gives no token streams: load a CLIP or T5 text encoder")
    resolved = [resolve_words(prompt_text, s.tokenization, s.tokenize_word, subjects, attributes, presence_columns)
                for s in streams]
    groups = [g for g, _ in resolved]
    matched = tuple(next((m[i] for _, m in resolved if m[i] != _occurrence(subjects[i])[0]), resolved[0][1][i])
                    for i in range(len(subjects)))

    def shift(cols, offset):
        return tuple(c + offset for c in cols)

    subject_cols = tuple(tuple(c for g, s in zip(groups, streams) for c in shift(g.subjects[i], s.offset))
                         for i in range(len(subjects)))
    attrs = tuple((tuple(c for g, s in zip(groups, streams) for c in shift(g.attributes[j][0], s.offset)),
                   groups[0].attributes[j][1]) for j in range(len(groups[0].attributes)))
    text = tuple(c for g, s in zip(groups, streams) for c in shift(g.text_columns, s.offset))
    return TokenGroups(subject_cols, attrs, text), matched
