"""Group token positions into the units a person reads: words, sentences, paragraphs, or spans they name.

Each group is suppressed in one pass (docs/method.md, "Groups") and gets one row of relevance, with its text and
character span. Tokens are assigned to a group by the character span they cover (leading whitespace ignored);
tokens that cover only whitespace, or no characters (special tokens), belong to no group at coarser granularities.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from atman_onnx.core.errors import InputError

GRANULARITIES = ("token", "word", "sentence", "paragraph", "document", "spans")
_PATTERNS = {
    "word": re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+"),
    # a sentence ends at its punctuation, or at a blank line (so that sentences nest in paragraphs), or at the end
    "sentence": re.compile(r"\S.*?(?:[.!?]+(?=\s|$)|(?=\n\s*\n)|$)", re.DOTALL),
    "paragraph": re.compile(r"\S.*?(?=\n\s*\n|$)", re.DOTALL),
}


@dataclass(frozen=True)
class Group:
    """A unit of suppression: positions into the token list and the character span they stand for."""

    start: int
    end: int
    positions: tuple[int, ...]


def text_spans(
    text: str,
    granularity: str,
    spans: list[tuple[int, int]] | None = None,
    delimiter: str | None = None,
    within: list[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    """Character spans of ``text`` at ``granularity``; "spans" takes ``spans`` or splits on ``delimiter``.

    ``within`` (optional) limits matching to these character ranges (e.g. the contents of chat messages).
    """
    if granularity not in GRANULARITIES or granularity == "token":
        raise InputError(f"unknown granularity {granularity!r}; available: {', '.join(GRANULARITIES)}")
    regions = within if within is not None else [(0, len(text))]
    if granularity == "spans" and spans is not None:
        for start, end in spans:
            if not 0 <= start < end <= len(text):
                raise InputError(f"span ({start}, {end}) is empty or outside the prompt of {len(text)} characters")
        return sorted(spans)
    if granularity == "spans" and not delimiter:
        raise InputError("granularity 'spans' needs character spans or a delimiter")
    pieces = []
    for lo, hi in regions:
        if granularity == "spans":
            at = lo  # the pieces between delimiters, none of them holding one (a trailing one included)
            assert delimiter  # spans were not given, so a delimiter was (checked above)
            for m in re.compile(re.escape(delimiter)).finditer(text, lo, hi):
                pieces.append((at, m.start()))
                at = m.end()
            pieces.append((at, hi))
        else:
            pieces += [m.span() for m in _PATTERNS[granularity].finditer(text, lo, hi)]
    return [_strip(text, a, b) for a, b in pieces if text[a:b].strip()]


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink a span to exclude surrounding whitespace."""
    chunk = text[start:end]
    return start + len(chunk) - len(chunk.lstrip()), end - len(chunk) + len(chunk.rstrip())


def visible_start(text: str, start: int, end: int) -> int:
    """Where the visible text of ``text[start:end]`` begins: its first non-whitespace character (``end`` if none).
    Byte-level BPE tokens carry their leading space; a token belongs where its visible text lies."""
    while start < end and text[start].isspace():
        start += 1
    return start


def token_groups(offsets: list[tuple[int, int]], text: str, char_spans: list[tuple[int, int]]) -> list[Group]:
    """Assign tokens (by character offsets into ``text``) to the character spans their visible text falls in."""
    groups = []
    for lo, hi in char_spans:
        members = []
        for position, (start, end) in enumerate(offsets):
            start = visible_start(text, start, end)
            if start < end and start < hi and end > lo:
                members.append(position)
        if members:
            groups.append(Group(lo, hi, tuple(members)))
    return groups


TARGET_GRANULARITIES = ("token", "sentence", "complete")


def target_columns(text: str, offsets: list[tuple[int, int]], granularity: str) -> list[tuple[int, ...]]:
    """The target's tokens (by character ``offsets`` into the target ``text``) as columns of relevance: one per
    token, one per sentence of the target, or one for all of it ("complete"). A token that starts no sentence's
    visible text (whitespace) joins the sentence before it."""
    if granularity == "token":
        return [(t,) for t in range(len(offsets))]
    if granularity == "complete":
        return [tuple(range(len(offsets)))]
    starts = [a for a, _ in text_spans(text, "sentence")] or [0]
    columns: list[list[int]] = [[] for _ in starts]
    for t, (start, end) in enumerate(offsets):
        at = visible_start(text, start, end)
        columns[max(0, sum(s <= at for s in starts) - 1)].append(t)
    return [tuple(c) for c in columns if c]


def token_columns(texts: list[str], granularity: str) -> list[tuple[int, ...]]:
    """``target_columns`` of tokens given by their texts, laid end to end (the target as its tokens decode)."""
    ends = list(itertools.accumulate(len(t) for t in texts))
    return target_columns("".join(texts), [(e - len(t), e) for t, e in zip(texts, ends)], granularity)
