"""Which documents a mixture part takes, and in what order: the *order* step of `train.data.build_mixture`.

`order_part` orders a corpus's documents by a seeded key per document and tokenizes (through the shared
token cache) only the documents the part's quota needs, in rounds guided by the measured bytes per token;
a budget that is small next to its corpus is drawn from a seeded choice of row groups instead
(`_order_by_row_groups`), so its I/O follows the budget, not the corpus size. `cut_order` cuts the order
at the quota. No text is read except to tokenize: keys come from the shards' doc lists and footers.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpora.store import ShardInfo, StoreError
from corpora.tokens import TokenCache, doc_id_hashes, read_doc_list, seeded_keys

# The mixture build's one log: its lines keep the name they had before the split (benchmarks/mixture.py
# counts the rounds logged here on "train.data").
log = logging.getLogger("train.data")

# UTF-8 bytes per token (incl. end-of-text) when nothing is measured: below what BPE vocabularies of
# 8k-100k reach on English web text (3.5-4.5), so a round rarely tokenizes more than the budget needs.
BYTES_PER_TOKEN_GUESS = 3.0
PILOT_BYTES = 1 << 20  # text per shard of the corpus that the pilot measures bytes per token on (in one shard)
# A round aims this far past what it should need: documents tokenized beyond the quota cost tokenizing
# (and are cached for later), a second round costs reading the corpus's text again; the pilot's estimate
# of bytes per token is off by a few percent (measured: 3% on 400 documents).
THRESHOLD_MARGIN = 1.06
MIN_ROUND_SHARE = 0.05  # a further round asks for at least this share of the quota, so rounds stay few
# Budget-proportional draws (`_order_by_row_groups`): a part reads row groups holding about this many times
# the text it takes, and at least MIN_ROW_GROUPS of them, taking a seeded 1/GROUP_OVERSAMPLE (or less) of
# each one's documents, so its documents come from many places in the corpus while its I/O follows its budget.
GROUP_OVERSAMPLE = 4
MIN_ROW_GROUPS = 16


class MixtureError(StoreError, ValueError):
    """A mixture or validation set that cannot be built as asked; the message says what to change."""


@dataclasses.dataclass
class PartOrder:
    """A part's documents in draw order (epoch 0 first), with their token counts incl. end-of-text."""

    shards: list[ShardInfo]
    shard_idx: np.ndarray  # (n,) int64: index into shards
    rows: np.ndarray  # (n,) int64: row in the shard
    lengths: np.ndarray  # (n,) int64
    n_unique_tokens: int  # the corpus's tokens incl. end-of-text; estimated unless exhausted or cached
    exact: bool  # n_unique_tokens is a count, not an estimate
    exhausted: bool  # epoch 0 needed the whole corpus


def _key_range(shards: list[ShardInfo], seed: int, corpus: str, epoch: int, lo: int, hi: int):
    """Documents whose seeded key lies in [lo, hi), from the shards' doc lists (no text is read)."""
    keys, shard_idx, rows, n_bytes = [], [], [], []
    for i, shard in enumerate(shards):
        hashes, sizes = read_doc_list(shard.path)
        k = seeded_keys(hashes, seed, corpus, epoch)
        mask = k >= np.uint64(lo)
        if hi < 1 << 64:
            mask &= k < np.uint64(hi)
        sel = np.flatnonzero(mask)
        keys.append(k[sel])
        shard_idx.append(np.full(len(sel), i, dtype=np.int64))
        rows.append(sel.astype(np.int64))
        n_bytes.append(sizes[sel])
    return tuple(np.concatenate(x) for x in (keys, shard_idx, rows, n_bytes))


def _lengths(cache: TokenCache, shards: list[ShardInfo], shard_idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows), dtype=np.int64)
    for i in np.unique(shard_idx):
        sel = shard_idx == i
        out[sel] = cache.index(shards[i]).length[rows[sel]]
    if (out < 0).any():
        raise MixtureError("the token cache lost documents while a mixture was built; run the build again")
    return out


def _pilot_bytes_per_token(cache: TokenCache, shards: list[ShardInfo], corpus: str, seed: int, n_tokens: int,
                           total_bytes: int, progress: bool) -> float:
    """Bytes per token of the corpus, measured on the first documents of the order in one shard.

    Each round of `order_part` reads the text of every shard that holds a document it needs, which is
    every shard: a good first guess saves a second pass over the corpus. The pilot's documents are ones
    the part takes anyway (the lowest keys), so nothing is tokenized in vain."""
    want_bytes = min(n_tokens * BYTES_PER_TOKEN_GUESS, PILOT_BYTES * len(shards))
    hi = min(1 << 64, math.ceil(want_bytes / max(total_bytes, 1) * 2.0**64))
    _, shard_idx, rows, n_bytes = _key_range(shards[:1], seed, corpus, 0, 0, hi)
    if not len(rows):
        return BYTES_PER_TOKEN_GUESS
    cache.ensure([(shards[0], rows)], progress=False)
    lengths = _lengths(cache, shards, shard_idx, rows)
    return (int(n_bytes.sum()) + len(rows)) / int(lengths.sum())


@dataclasses.dataclass(frozen=True)
class RowGroup:
    shard: int  # index into the part's shards
    index: int  # row group within the shard
    start: int  # its first row in the shard
    n_rows: int
    n_bytes: float  # text bytes, estimated from the shard's mean document size (footer only, no data read)


def _row_groups(shards: list[ShardInfo], seed: int, corpus: str) -> list[RowGroup]:
    """Every row group of the shards, in a seeded order (a key per group from its shard's content hash
    and its index, so the order does not depend on where the shard sits in the corpus); footers only."""
    groups, names = [], []
    for i, shard in enumerate(shards):
        meta = pq.ParquetFile(shard.path).metadata
        start, per_row = 0, shard.n_bytes / max(shard.n_docs, 1)
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            groups.append(RowGroup(i, g, start, n, n * per_row))
            names.append(f"{shard.content_hash}/{g}")
            start += n
    keys = seeded_keys(doc_id_hashes(pa.array(names, pa.string())), seed, corpus, "row-groups")
    return [groups[i] for i in np.argsort(keys, kind="stable")]


def _group_docs(shard: ShardInfo, groups: list[RowGroup], seed: int, corpus: str, key_hi: int):
    """(keys, rows, n_bytes) of the documents of one shard's `groups` whose epoch-0 key is below key_hi:
    reads the doc_id and n_bytes columns of those row groups only."""
    table = pq.ParquetFile(shard.path).read_row_groups([g.index for g in groups], columns=["doc_id", "n_bytes"])
    rows = np.concatenate([np.arange(g.start, g.start + g.n_rows, dtype=np.int64) for g in groups])
    keys = seeded_keys(doc_id_hashes(table.column("doc_id")), seed, corpus, 0)
    sel = np.flatnonzero(keys < np.uint64(key_hi)) if key_hi < 1 << 64 else np.arange(len(keys))
    n_bytes = table.column("n_bytes").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return keys[sel], rows[sel], n_bytes[sel]


def _order_by_row_groups(cache: TokenCache, shards: list[ShardInfo], corpus: str, n_tokens: int, seed: int,
                         progress: bool) -> PartOrder | None:
    """Epoch 0 of a part whose budget is small next to its corpus, reading only what the budget needs.

    Row groups are taken in a seeded order (`_row_groups`) and, within each, the documents whose epoch-0
    key lies below a fraction `f` of the key range: `f` is set from the budget so that the groups read hold
    GROUP_OVERSAMPLE times the text taken (at least MIN_ROW_GROUPS groups). Rounds add groups until the
    documents cover n_tokens. The set taken is canonical: the documents in (group order, key order) up to
    the quota, whatever the rounds were; the part's stream then orders them by their key alone, so a part's
    documents, from many groups, are shuffled (no run of one row group in the stream). Returns None when
    the corpus is too small for this (it would read more than half of it) or the groups run out: the
    caller then orders every document (`order_part`)."""
    n_docs = sum(s.n_docs for s in shards)
    total_bytes = sum(s.n_bytes for s in shards) + n_docs
    groups = _row_groups(shards, seed, corpus)
    need_bytes = n_tokens * BYTES_PER_TOKEN_GUESS  # the most text the budget should need
    read_bytes = max(GROUP_OVERSAMPLE * need_bytes, MIN_ROW_GROUPS * total_bytes / max(len(groups), 1))
    if read_bytes > total_bytes / 2:
        return None
    fraction = need_bytes / read_bytes
    key_hi = math.ceil(fraction * 2.0**64)
    found, g, bytes_per_token, n_rounds = [], 0, BYTES_PER_TOKEN_GUESS, 0
    got_tokens = got_bytes = 0
    while got_tokens < n_tokens:
        if g >= len(groups):
            return None
        n_rounds += 1
        want_bytes = max(n_tokens - got_tokens, MIN_ROUND_SHARE * n_tokens) * bytes_per_token * THRESHOLD_MARGIN
        first, expected = g, 0.0
        while g < len(groups) and expected < want_bytes:
            expected += groups[g].n_bytes * fraction
            g += 1
        by_shard: dict[int, list[tuple[int, RowGroup]]] = {}
        for rank in range(first, g):
            by_shard.setdefault(groups[rank].shard, []).append((rank, groups[rank]))
        for i, ranked in sorted(by_shard.items()):
            ranked.sort(key=lambda x: x[1].index)
            keys, rows, n_bytes = _group_docs(shards[i], [r[1] for r in ranked], seed, corpus, key_hi)
            starts = np.array([r[1].start for r in ranked])
            ranks = np.array([r[0] for r in ranked])[np.searchsorted(starts, rows, side="right") - 1]
            found.append([keys, np.full(len(rows), i, dtype=np.int64), rows, n_bytes, ranks])
        new = found[len(found) - len(by_shard):]
        cache.ensure([(shards[f[1][0]], f[2]) for f in new if len(f[2])], progress=progress,
                     desc=f"tokenize {corpus}")
        for f in new:
            f.append(_lengths(cache, shards, f[1], f[2]))
            got_tokens += int(f[5].sum())
            got_bytes += int(f[3].sum()) + len(f[2])
        if got_tokens:
            bytes_per_token = got_bytes / got_tokens
    keys, shard_idx, rows, _, ranks, lengths = (np.concatenate(x) for x in zip(*found))
    canonical = np.lexsort((rows, shard_idx, keys, ranks))
    n = int(np.searchsorted(np.cumsum(lengths[canonical]), n_tokens)) + 1
    kept = canonical[:n]
    kept = kept[np.lexsort((rows[kept], shard_idx[kept], keys[kept]))]
    log.info("part %s: %d documents in %d round(s) from %d of %d row groups (%.3f of each), %.2f bytes per "
             "token, %d tokenized by this build", corpus, len(kept), n_rounds, g, len(groups), fraction,
             got_bytes / max(got_tokens, 1), cache.n_docs_tokenized)
    n_unique = got_tokens + round((total_bytes - got_bytes) * got_tokens / max(got_bytes, 1))
    return PartOrder(shards, shard_idx[kept], rows[kept], lengths[kept], n_unique, False, False)


def order_part(cache: TokenCache, shards: list[ShardInfo], corpus: str, n_tokens: int, seed: int,
               repeat: bool = True, max_epochs: float = math.inf, refuse=None, progress: bool = True) -> PartOrder:
    """The documents a part takes, in order, tokenizing only those (see the module docstring).

    A budget that is small next to the corpus is drawn from a seeded choice of row groups
    (`_order_by_row_groups`), so its I/O follows the budget; otherwise, as follows.

    Epoch 0 orders the corpus by a seeded key per document (from its doc_id) and takes documents until
    their tokens reach n_tokens. Only documents whose key falls below a threshold are tokenized; the
    threshold starts from the byte count the budget should need and grows, in rounds guided by the
    measured bytes per token, until it covers n_tokens (or the whole corpus). When epoch 0 is the whole
    corpus and `repeat`, further epochs follow, each a fresh seeded order of every document, as many as
    needed; `refuse(epochs)` is called first when that is more than `max_epochs`."""
    grouped = _order_by_row_groups(cache, shards, corpus, n_tokens, seed, progress)
    if grouped is not None:
        return grouped
    n_docs = sum(s.n_docs for s in shards)
    total_bytes = sum(s.n_bytes for s in shards) + n_docs  # + 1 per document for its end-of-text token
    bytes_per_token = _pilot_bytes_per_token(cache, shards, corpus, seed, n_tokens, total_bytes, progress)
    found, lo, hi = [], 0, 0
    got_tokens = got_bytes = 0
    while hi < 1 << 64:
        want_bytes = max(n_tokens - got_tokens, MIN_ROUND_SHARE * n_tokens) * bytes_per_token * THRESHOLD_MARGIN
        hi = min(1 << 64, lo + max(1, math.ceil(want_bytes / max(total_bytes, 1) * 2.0**64)))
        keys, shard_idx, rows, n_bytes = _key_range(shards, seed, corpus, 0, lo, hi)
        cache.ensure([(shards[i], rows[shard_idx == i]) for i in np.unique(shard_idx)], progress=progress,
                     desc=f"tokenize {corpus}")
        lengths = _lengths(cache, shards, shard_idx, rows)
        found.append((keys, shard_idx, rows, lengths))
        got_tokens += int(lengths.sum())
        got_bytes += int(n_bytes.sum()) + len(rows)
        if got_tokens >= n_tokens:
            break
        if got_tokens:
            bytes_per_token = got_bytes / got_tokens
        lo = hi
    log.info("part %s: %d documents in %d round(s) (%.2f bytes per token), %d tokenized by this build",
             corpus, sum(len(f[2]) for f in found), len(found), got_bytes / max(got_tokens, 1),
             cache.n_docs_tokenized)
    keys, shard_idx, rows, lengths = (np.concatenate(x) for x in zip(*found))
    order = np.lexsort((rows, shard_idx, keys))  # ties (equal doc_ids) by position
    shard_idx, rows, lengths = shard_idx[order], rows[order], lengths[order]
    exhausted = hi >= 1 << 64 and len(rows) == n_docs
    if exhausted:
        n_unique, exact = int(lengths.sum()), True
    elif all(cache.index(s).complete for s in shards):  # cached whole earlier (a unigram count, a mixture)
        n_unique, exact = int(sum(int(cache.index(s).length.sum()) for s in shards)), True
    else:  # the documents not tokenized, at the bytes per token measured on those that were
        n_unique, exact = got_tokens + round((total_bytes - got_bytes) * got_tokens / max(got_bytes, 1)), False
    if exhausted and repeat and n_tokens > n_unique:
        n_epochs = -(-n_tokens // n_unique)
        if n_tokens / n_unique > max_epochs and refuse is not None:
            refuse(n_tokens / n_unique)
        orders = [(shard_idx, rows, lengths)]
        all_idx = np.concatenate([np.full(s.n_docs, i, dtype=np.int64) for i, s in enumerate(shards)])
        all_rows = np.concatenate([np.arange(s.n_docs, dtype=np.int64) for s in shards])
        all_lengths = _lengths(cache, shards, all_idx, all_rows)
        hashes = np.concatenate([read_doc_list(s.path)[0] for s in shards])
        for epoch in range(1, n_epochs):
            order = np.lexsort((all_rows, all_idx, seeded_keys(hashes, seed, corpus, epoch)))
            orders.append((all_idx[order], all_rows[order], all_lengths[order]))
        shard_idx, rows, lengths = (np.concatenate(x) for x in zip(*orders))
    return PartOrder(shards, shard_idx, rows, lengths, n_unique, exact, exhausted)


def cut_order(order: PartOrder, n_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shard_idx, rows, tokens taken) of the first documents whose tokens reach n_tokens; the last is cut."""
    ends = np.cumsum(order.lengths)
    if n_tokens > (int(ends[-1]) if len(ends) else 0):
        raise MixtureError(f"cannot take {n_tokens} tokens from {int(ends[-1]) if len(ends) else 0}")
    n = int(np.searchsorted(ends, n_tokens)) + 1  # first document whose end reaches the quota
    taken = order.lengths[:n].copy()
    taken[-1] -= int(ends[n - 1]) - n_tokens
    return order.shard_idx[:n], order.rows[:n], taken

