"""Split source documents into chunks of at most N tokens at sentence boundaries.

Rephrasing works best on passages of a few hundred tokens (WRAP rephrases ~300-token chunks): short
enough that a small generator keeps every fact, long enough to carry context. A chunk never splits a
sentence unless that one sentence is longer than the limit, which is then cut at token boundaries.
"""

from __future__ import annotations

import re
from typing import Protocol

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace, or at a
# line break; the separator stays with the sentence so that chunks join back into the original text.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+|\n+")


class Encoder(Protocol):
    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...
    def decode(self, ids: list[int]) -> str: ...


class HFEncoder:
    """A Hugging Face tokenizer seen through the `Encoder` protocol (no special tokens)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def split_sentences(text: str) -> list[str]:
    """Sentences with their trailing separators; `''.join(split_sentences(t)) == t`."""
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.end() > start:
            pieces.append(text[start:m.end()])
            start = m.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _pack(pieces: list[str], lengths: list[int], max_tokens: int, encoder: Encoder) -> list[str]:
    """Greedily join consecutive pieces into chunks of at most `max_tokens` (summed piece lengths).

    Token counts of joined pieces may differ from the sum by a token at each seam; the sum is what we
    bound, close enough for a prompt budget. A piece over the budget is split into words, and a single
    word over the budget (rare: long URLs, base64) at token boundaries."""
    chunks: list[str] = []
    current, n_current = [], 0
    for piece, n in zip(pieces, lengths):
        if n > max_tokens:
            if current:
                chunks.append("".join(current))
                current, n_current = [], 0
            words = re.findall(r"\S+\s*", piece)
            if len(words) > 1:
                chunks += _pack(words, [len(ids) for ids in encoder.encode_batch(words)], max_tokens, encoder)
            else:
                ids = encoder.encode_batch([piece])[0]
                chunks += [encoder.decode(ids[i:i + max_tokens]) for i in range(0, len(ids), max_tokens)]
            continue
        if current and n_current + n > max_tokens:
            chunks.append("".join(current))
            current, n_current = [], 0
        current.append(piece)
        n_current += n
    if current:
        chunks.append("".join(current))
    return chunks


def chunk_documents(texts: list[str], encoder: Encoder, max_tokens: int) -> list[list[str]]:
    """For each text, its chunks (stripped, in order), each at most about `max_tokens` tokens.

    All sentences of all texts are encoded in one batch call (fast tokenizers run it in parallel)."""
    if max_tokens < 8:
        raise ValueError(f"max_chunk_tokens must be at least 8, not {max_tokens}")
    sentences = [split_sentences(t) for t in texts]
    lengths = [len(ids) for ids in encoder.encode_batch([s for doc in sentences for s in doc])]
    out, start = [], 0
    for doc in sentences:
        chunks = _pack(doc, lengths[start:start + len(doc)], max_tokens, encoder)
        start += len(doc)
        out.append([c.strip() for c in chunks if c.strip()])
    return out
