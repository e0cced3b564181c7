"""Mixtures: packed token streams with exact per-part token shares, built once, memory-mapped by the trainer.

A mixture (`MixtureConfig`) names store corpora and their token shares, e.g. {cc: 0.67, hq: 0.33}, a token
budget, a tokenizer, a sequence length and a seed. `build_mixture` turns it into
`store.artifact_dir("mixtures", NAME)/train.npy`, an (n_sequences, seq_len + 1) uint16/uint32 array
(row i: inputs tokens[i, :-1], targets tokens[i, 1:]), in four steps:

1. *allocate*: the rows hold `n_sequences * (seq_len + 1)` tokens (the budget rounded down to whole
   rows); each part gets exactly `share * total` of them (largest remainder, so the parts sum to the total).
2. *order* (tokenizing only what is taken): a part orders its corpus's documents by a seeded key per
   document (a hash of doc_id, seed, corpus and epoch: read from the shards' doc lists, no text) and takes
   whole documents in that order until its quota is met; the last one drawn is cut at the quota. Only
   those documents are tokenized, through the shared token cache (`corpora.tokens`: per shard content and
   tokenizer, documents tokenized on demand), so a later mixture, a larger budget, a validation set or a
   unigram count tokenizes only documents not cached yet. When a part needs more tokens than its corpus
   has, the whole corpus is tokenized and further epochs follow, each a fresh seeded order (the repetition
   is logged as a warning and recorded in the `mixtures` table).
   A budget that is small next to its corpus is drawn so that its I/O follows the budget, not the corpus
   size (`_order_by_row_groups`): row groups in a seeded order, and in each the documents whose key is
   below a fraction chosen so that the groups read hold ~GROUP_OVERSAMPLE times the text taken (and at
   least MIN_ROW_GROUPS groups); the part's stream orders the taken documents by their key, so it is
   shuffled across groups. Shares are exact either way; the chosen documents' length and source
   distributions match the corpus's (tests/train/test_mixture_sampling.py). (Such a part's stream for a
   larger budget does not start with its stream for a smaller one, as a draw over every document's does.)
3. *interleave*: each drawn document gets a key (its position in its part's stream, as a fraction, plus
   seeded jitter) and all documents are ordered by key, so every part is spread evenly over the whole
   stream and epochs stay in order.
4. *write*: tokens are copied from the cache's memory-mapped pieces straight into the output memmap, in
   bounded blocks, and the file is renamed into place.

Everything is a pure function of (corpus contents, tokenizer, config): the same seed gives the identical
array. `segments.npy` records the stream's provenance: one row per drawn document, (part index,
n_tokens), in stream order. Validation sets (`build_valset`) are built the same way from a test corpus,
without repetition. `open_mixture` hands the trainer memory maps and metadata; it never tokenizes
except to build a missing validation set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import re
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from corpora.results import declare
from corpora.store import CorpusInfo, ShardInfo, Store, StoreError, atomic_path
from corpora.tokens import (TokenCache, doc_id_hashes, read_doc_list, seeded_keys,  # noqa: F401 (re-export)
                            tokenizer_key)

log = logging.getLogger(__name__)

declare("mixtures", {
    "mixture": "str", "corpus": "str", "kind": "str", "synthetic_type": "str", "share": "float"},
    "One row per (mixture, corpus): the share and tokens each corpus gives a built mixture; part <mixture>. "
    "build_mixture writes every optional column too; a sweep simulated without training (tests) the shares only.",
    optional={
        "n_tokens": "int", "n_unique_tokens": "int", "n_unique_exact": "bool", "epochs": "float", "repeated": "bool",
        "warning": "str", "n_docs": "int", "content_hash": "str", "tokenizer": "str", "vocab_size": "int",
        "seq_len": "int", "seed": "int", "max_epochs": "float", "total_tokens": "int", "n_sequences": "int",
        "config": "json MixtureConfig", "path": "str"})
declare("valsets", {
    "valset": "str", "corpus": "str", "kind": "str", "synthetic_type": "str", "tokenizer": "str", "seq_len": "int",
    "n_tokens": "int", "n_unique_tokens": "int", "n_sequences": "int", "content_hash": "str"},
    "One row per validation set cut from a test corpus; part <valset>.")

DEFAULT_TOKENIZER = "cl100k_base"
SHARE_TOLERANCE = 1e-3  # "0.333,0.333,0.334" is fine; "0.6,0.3" is a mistake
_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT_RE = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)
_PART_RE = re.compile(r"^([a-z][a-z0-9_]*)=([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)$")
_INTERLEAVE_STREAM = 1 << 31  # rng stream of the interleaving jitter
_GATHER_BLOCK = 1 << 22  # tokens copied per block when writing a stream: bounds the index arrays' memory
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


# ---------------------------------------------------------------------------------------- parsing
def parse_count(value: str | int | float) -> int:
    """'20M' -> 20_000_000, '5k' -> 5_000, '1.5B', '1e6', 300 -> 300."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    m = _COUNT_RE.match(str(value))
    if not m:
        raise MixtureError(f"cannot read {value!r} as a count: write an integer with an optional k/M/B suffix, "
                           "e.g. 20M or 5k")
    n = float(m.group(1)) * _SUFFIXES[m.group(2).lower()]
    if not n.is_integer():
        raise MixtureError(f"{value!r} is not a whole number of tokens")
    return int(n)


def format_count(n: int) -> str:
    """20_000_000 -> '20M' (exact suffixes only), for names and logs."""
    for suffix, unit in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def parse_parts(spec: str) -> dict[str, float]:
    """'cc=0.67,hq=0.33' -> {'cc': 0.67, 'hq': 0.33}; a malformed spec raises naming the bad item."""
    parts: dict[str, float] = {}
    items = [s.strip() for s in str(spec).split(",")]
    if not spec or not any(items):
        raise MixtureError("empty --parts: write corpus=share pairs, e.g. --parts cc=0.67,hq=0.33")
    for item in items:
        m = _PART_RE.match(item.replace(" ", ""))
        if not m:
            raise MixtureError(f"malformed part {item!r} in --parts {spec!r}: write corpus=share pairs "
                               "separated by commas, e.g. cc=0.67,hq=0.33")
        if m.group(1) in parts:
            raise MixtureError(f"corpus {m.group(1)!r} appears twice in --parts {spec!r}")
        parts[m.group(1)] = float(m.group(2))
    return parts


# ---------------------------------------------------------------------------------------- config
@dataclasses.dataclass
class MixtureConfig:
    name: str
    parts: dict[str, float]  # corpus -> token share; shares sum to 1
    tokens: int  # token budget, rounded down to whole rows of seq_len + 1
    seed: int = 0
    tokenizer: str = DEFAULT_TOKENIZER
    seq_len: int = 512
    max_epochs: float = 16.0  # refuse a mixture that would repeat a part more often than this

    def __post_init__(self):
        self.tokens = parse_count(self.tokens)
        self.parts = dict(self.parts)


@dataclasses.dataclass
class PartPlan:
    """One part of a mixture once its corpus has been checked (and later tokenized)."""
    corpus: CorpusInfo
    share: float
    n_tokens: int  # tokens this part contributes to the stream
    n_unique_tokens: int | None = None  # tokens of the corpus incl. end-of-text; known after drawing
    n_unique_exact: bool = False  # counted (the whole corpus was tokenized), else estimated from bytes

    @property
    def epochs(self) -> float:
        return self.n_tokens / self.n_unique_tokens if self.n_unique_tokens else math.inf


def allocate_tokens(shares: list[float], total: int) -> list[int]:
    """Split `total` by `shares` exactly (largest remainder; ties to the earlier part)."""
    raw = np.asarray(shares, dtype=np.float64) * total
    base = np.floor(raw).astype(np.int64)
    left = total - int(base.sum())
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:left]] += 1
    return [int(x) for x in base]


def check_mixture_config(store: Store, cfg: MixtureConfig) -> list[PartPlan]:
    """Every check that needs no tokenizing: names, corpora, shares, budget, a lower bound on epochs."""
    try:
        store.artifact_dir("mixtures", cfg.name, create=False)
    except StoreError:
        raise MixtureError(f"invalid mixture name {cfg.name!r}: use letters, digits, '_', '.', '-'") from None
    if not cfg.parts:
        raise MixtureError("a mixture needs at least one part, e.g. --parts cc=0.67,hq=0.33")
    if cfg.seq_len < 1:
        raise MixtureError(f"seq_len must be positive, not {cfg.seq_len}")
    if cfg.max_epochs <= 0:
        raise MixtureError(f"max_epochs must be positive, not {cfg.max_epochs}")
    for corpus, share in cfg.parts.items():
        if not share > 0:
            raise MixtureError(f"share of {corpus!r} is {share}; shares must be > 0 (drop the part instead)")
    total_share = sum(cfg.parts.values())
    if abs(total_share - 1.0) > SHARE_TOLERANCE:
        spec = ",".join(f"{c}={s:g}" for c, s in cfg.parts.items())
        raise MixtureError(f"shares must sum to 1, but {spec} sums to {total_share:g}")
    row = cfg.seq_len + 1
    if cfg.tokens < row:
        raise MixtureError(f"token budget {cfg.tokens} is less than one sequence of seq_len + 1 = {row} tokens")
    infos = []
    for corpus in cfg.parts:
        info = store.corpus(corpus)  # UnknownCorpus names the store's corpora
        if info.n_docs == 0:
            raise MixtureError(f"corpus {corpus!r} is empty; ingest documents into it or drop it from the parts")
        if not info.is_train:
            raise MixtureError(f"corpus {corpus!r} has role {info.role!r} (held out for validation); "
                               "only train/both corpora can be mixture parts")
        infos.append(info)
    from corpora.tokenizers import load_tokenizer

    load_tokenizer(cfg.tokenizer, store)  # UnknownTokenizer says what names work; loads are cached
    total = (cfg.tokens // row) * row
    shares = [s / total_share for s in cfg.parts.values()]
    plans = [PartPlan(info, share, n) for info, share, n in zip(infos, shares, allocate_tokens(shares, total))]
    for plan in plans:
        if plan.n_tokens == 0:
            raise MixtureError(f"part {plan.corpus.name}={plan.share:g} gets no token of a {total}-token budget; "
                               "raise --tokens or the share")
        # A token is at least one byte for tiktoken and byte-level BPE, so bytes + end-of-text tokens bound
        # the corpus's token count from above: this catches hopeless budgets before tokenizing anything.
        upper = plan.corpus.n_bytes + plan.corpus.n_docs
        if plan.n_tokens / upper > cfg.max_epochs:
            raise MixtureError(_epochs_message(cfg, plan, plan.n_tokens / upper, bound=True))
    return plans


def _epochs_message(cfg: MixtureConfig, plan: PartPlan, epochs: float, bound: bool = False) -> str:
    at_least = "at least " if bound else ""
    return (f"part {plan.corpus.name!r} would be repeated {at_least}{epochs:.1f} times to supply its "
            f"{plan.n_tokens} tokens ({plan.share:.3g} of {cfg.tokens}), more than --max-epochs "
            f"{cfg.max_epochs:g}: lower --tokens or its share, add documents, or raise --max-epochs")


# ---------------------------------------------------------------------------------------- drawing
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


def _rng(seed: int, corpus: str, stream: int) -> np.random.Generator:
    # Keyed by the corpus name, not its position, so adding a part leaves the others' draws unchanged.
    return np.random.default_rng([seed, zlib.crc32(corpus.encode()), stream])


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


@dataclasses.dataclass
class TokenSources:
    """Every cache piece the drawn documents live in, memory-mapped, and each document's place."""

    pieces: list[np.ndarray]

    @classmethod
    def locate(cls, cache: TokenCache, draws: list[tuple[list[ShardInfo], np.ndarray, np.ndarray]]):
        """draws: per part (shards, shard_idx, rows) -> (sources, [(piece ids, offsets) per part])."""
        sources, base, out = cls([]), {}, []
        for shards, shard_idx, rows in draws:
            piece_ids = np.empty(len(rows), dtype=np.int64)
            offsets = np.empty(len(rows), dtype=np.int64)
            for i in np.unique(shard_idx):
                index = cache.index(shards[i])
                if shards[i].content_hash not in base:
                    base[shards[i].content_hash] = len(sources.pieces)
                    sources.pieces += [cache.tokens(p) for p in index.piece_paths]
                sel = shard_idx == i
                piece_ids[sel] = base[shards[i].content_hash] + index.piece[rows[sel]]
                offsets[sel] = index.offset[rows[sel]]
            out.append((piece_ids, offsets))
        return sources, out

    def write_rows(self, path: Path, piece_ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                   seq_len: int, dtype) -> int:
        """Copy the documents' tokens, in order, straight into an (n_rows, seq_len + 1) .npy memmap,
        in blocks of _GATHER_BLOCK tokens (vectorized per piece), written atomically."""
        total = int(lengths.sum())
        n_rows = total // (seq_len + 1)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        with atomic_path(path) as tmp:
            rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_rows, seq_len + 1))
            out = rows.reshape(-1)
            i = 0
            while i < len(lengths):
                j = max(i + 1, int(np.searchsorted(ends, starts[i] + _GATHER_BLOCK, side="right")))
                for p in np.unique(piece_ids[i:j]):
                    sel = np.flatnonzero(piece_ids[i:j] == p) + i
                    n = lengths[sel]
                    within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
                    out[np.repeat(starts[sel], n) + within] = self.pieces[p][np.repeat(offsets[sel], n) + within]
                i = j
            rows.flush()
            del rows, out
        return n_rows


# ---------------------------------------------------------------------------------------- mixtures
def _config_json(cfg: MixtureConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))  # parts keep their order: it is part of the config


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def build_mixture(store: Store, cfg: MixtureConfig, overwrite: bool = False, progress: bool = True, *,
                  workers: int = 0, engine: str | None = None, ray_address: str | None = None) -> pl.DataFrame:
    """Materialise a mixture (see the module docstring); returns its `mixtures` table rows. workers, engine
    and ray_address say where documents are tokenized (`TokenCache.ensure`); the array does not depend on them.

    Rebuilding an existing mixture with the same config on unchanged corpora returns its rows without
    work; a different config under an existing name needs `overwrite=True`."""
    from corpora.tokenizers import load_tokenizer

    plans = check_mixture_config(store, cfg)
    tokenizer = load_tokenizer(cfg.tokenizer, store)
    out_dir = store.artifact_dir("mixtures", cfg.name, create=False)
    identity = {"config": json.loads(_config_json(cfg)), "tokenizer_fingerprint": tokenizer.fingerprint,
                "content_hashes": {p.corpus.name: p.corpus.content_hash for p in plans}}
    existing = read_mixture_meta(store, cfg.name)
    if existing is not None:
        if {k: existing.get(k) for k in identity} == identity and (out_dir / "train.npy").exists():
            log.info("mixture %s is up to date", cfg.name)
            rows = store.read_result("mixtures", cfg.name)
            if rows is not None:
                return rows
        elif not overwrite:
            raise MixtureError(f"mixture {cfg.name!r} already exists with another config or older corpora; "
                               "pass --force to rebuild it, or choose another name")

    # Each part: its documents in order, tokenizing only what it takes; then its quota's worth of them.
    cache = TokenCache(store, tokenizer, workers=workers, engine=engine, ray_address=ray_address)
    draws = []
    for plan in plans:
        def refuse(epochs: float, plan=plan) -> None:
            raise MixtureError(_epochs_message(cfg, plan, epochs))

        order = order_part(cache, store.shards(plan.corpus.name), plan.corpus.name, plan.n_tokens, cfg.seed,
                           max_epochs=cfg.max_epochs, refuse=refuse, progress=progress)
        plan.n_unique_tokens, plan.n_unique_exact = order.n_unique_tokens, order.exact
        draws.append((order.shards, *cut_order(order, plan.n_tokens)))
    for plan in plans:
        if plan.epochs > 1:
            log.warning("mixture %s: part %s is repeated %.2f times (%d tokens from %d unique)", cfg.name,
                        plan.corpus.name, plan.epochs, plan.n_tokens, plan.n_unique_tokens)
    log.info("mixture %s: %d documents tokenized (%.1f MB), the rest came from the token cache", cfg.name,
             cache.n_docs_tokenized, cache.n_bytes_tokenized / 1e6)

    # Order all drawn documents by their interleaving key.
    sources, places = TokenSources.locate(cache, [(shards, idx, rows) for shards, idx, rows, _ in draws])
    piece_ids, offsets, lengths, keys, part_ids = [], [], [], [], []
    for i, (plan, (_, _, _, taken), (pieces, offs)) in enumerate(zip(plans, draws, places)):
        pos = np.cumsum(taken) - taken
        jitter = _rng(cfg.seed, plan.corpus.name, _INTERLEAVE_STREAM).random(len(taken))
        piece_ids.append(pieces)
        offsets.append(offs)
        lengths.append(taken)
        keys.append((pos + jitter * taken) / plan.n_tokens)
        part_ids.append(np.full(len(taken), i, dtype=np.int64))
    order = np.argsort(np.concatenate(keys), kind="stable")
    piece_ids, offsets = np.concatenate(piece_ids)[order], np.concatenate(offsets)[order]
    lengths, part_ids = np.concatenate(lengths)[order], np.concatenate(part_ids)[order]

    out_dir.mkdir(parents=True, exist_ok=True)
    n_rows = sources.write_rows(out_dir / "train.npy", piece_ids, offsets, lengths, cfg.seq_len, tokenizer.dtype)
    with atomic_path(out_dir / "segments.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.stack([part_ids, lengths], axis=1))
    created_at = _now()
    meta = {
        **identity, "name": cfg.name, "tokenizer": tokenizer.name, "vocab_size": tokenizer.n_vocab,
        "eot_id": tokenizer.eot_id, "dtype": str(tokenizer.dtype), "seq_len": cfg.seq_len,
        "n_sequences": n_rows, "total_tokens": n_rows * (cfg.seq_len + 1),
        "parts": [{"corpus": p.corpus.name, "share": p.share, "n_tokens": p.n_tokens,
                   "n_unique_tokens": p.n_unique_tokens, "n_unique_exact": p.n_unique_exact,
                   "epochs": p.epochs} for p in plans],
        "order": "seeded doc_id keys (corpora.tokens.seeded_keys), one order per epoch",
        "created_at": created_at.isoformat(),
    }
    with atomic_path(out_dir / "mixture.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    rows = pl.DataFrame([{
        "mixture": cfg.name, "corpus": p.corpus.name, "kind": p.corpus.kind,
        "synthetic_type": p.corpus.synthetic_type if p.corpus.kind == "synthetic" else None,
        "share": p.share, "n_tokens": p.n_tokens, "n_unique_tokens": p.n_unique_tokens,
        "n_unique_exact": p.n_unique_exact, "epochs": p.epochs,
        "repeated": p.epochs > 1,
        "warning": (f"repeated {p.epochs:.2f} times" if p.epochs > 1 else None),
        "n_docs": p.corpus.n_docs, "content_hash": p.corpus.content_hash,
        "tokenizer": tokenizer.name, "vocab_size": tokenizer.n_vocab, "seq_len": cfg.seq_len,
        "seed": cfg.seed, "max_epochs": cfg.max_epochs, "total_tokens": n_rows * (cfg.seq_len + 1),
        "n_sequences": n_rows, "config": _config_json(cfg), "path": str(out_dir / "train.npy"),
        "created_at": created_at,
    } for p in plans], schema_overrides={"synthetic_type": pl.Utf8, "warning": pl.Utf8})
    store.put_result("mixtures", cfg.name, rows)
    log.info("mixture %s: %d sequences of %d tokens", cfg.name, n_rows, cfg.seq_len + 1)
    return rows


def read_mixture_meta(store: Store, name: str) -> dict | None:
    try:
        path = store.artifact_dir("mixtures", name, create=False) / "mixture.json"
    except StoreError:
        return None
    return json.loads(path.read_text()) if path.exists() else None


def mixture_config(store: Store, name: str) -> MixtureConfig:
    """The config an existing mixture was built with; a clear error naming the built mixtures if none."""
    meta = read_mixture_meta(store, name)
    if meta is None:
        built = ", ".join(store.result_parts("mixtures")) or "(none)"
        raise MixtureError(f"unknown mixture {name!r}; the store has: {built} "
                           "(build one with `python -m train mix NAME --parts cc=0.67,hq=0.33 --tokens 20M`)")
    return MixtureConfig(**meta["config"])


# ---------------------------------------------------------------------------------------- valsets
def valset_name(corpus: str, tokenizer_name: str, seq_len: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.=-]", "_", tokenizer_name).strip("._") or "tok"
    return f"{corpus}__{safe}__{seq_len}"


def build_valset(store: Store, corpus: str, tokenizer: str, seq_len: int, max_tokens: int = 1_000_000,
                 progress: bool = True) -> Path:
    """A validation set from a (test-role) corpus: documents in a fixed shuffled order, EOS-separated,
    at most `max_tokens` tokens in whole rows, no repetition. Cached; rebuilt when the corpus changes."""
    from corpora.tokenizers import load_tokenizer

    info = store.corpus(corpus)
    if info.n_docs == 0:
        raise MixtureError(f"corpus {corpus!r} is empty; it cannot be a validation set")
    max_tokens = parse_count(max_tokens)
    if seq_len < 1 or max_tokens < seq_len + 1:
        raise MixtureError(f"a validation set needs max_tokens >= seq_len + 1 (got {max_tokens}, {seq_len})")
    tok = load_tokenizer(tokenizer, store)
    name = valset_name(corpus, tok.name, seq_len)
    out_dir = store.artifact_dir("valsets", name)
    identity = {"corpus": corpus, "content_hash": info.content_hash, "tokenizer": tok.name,
                "tokenizer_fingerprint": tok.fingerprint, "seq_len": seq_len, "max_tokens": max_tokens}
    meta_path = out_dir / "valset.json"
    if meta_path.exists() and (out_dir / "val.npy").exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in identity} == identity:
            return out_dir / "val.npy"
    cache = TokenCache(store, tok)
    row = seq_len + 1
    order = order_part(cache, store.shards(corpus), corpus, max_tokens // row * row, 0, repeat=False,
                       progress=progress)
    n_unique = order.n_unique_tokens
    n_tokens = min(max_tokens, n_unique) // row * row
    if n_tokens == 0:
        raise MixtureError(f"corpus {corpus!r} has {n_unique} tokens, less than one sequence of "
                           f"{seq_len + 1}; add documents or lower seq_len")
    shard_idx, rows, taken = cut_order(order, n_tokens)
    sources, [(piece_ids, offsets)] = TokenSources.locate(cache, [(order.shards, shard_idx, rows)])
    n_rows = sources.write_rows(out_dir / "val.npy", piece_ids, offsets, taken, seq_len, tok.dtype)
    meta = {**identity, "n_sequences": n_rows, "n_tokens": n_tokens, "n_unique_tokens": n_unique,
            "vocab_size": tok.n_vocab, "created_at": _now().isoformat()}
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    store.put_result("valsets", name, pl.DataFrame([{
        "valset": name, "corpus": corpus, "kind": info.kind, "synthetic_type": info.synthetic_type,
        "tokenizer": tok.name, "seq_len": seq_len, "n_tokens": n_tokens, "n_unique_tokens": n_unique,
        "n_sequences": n_rows, "content_hash": info.content_hash, "created_at": _now(),
    }], schema_overrides={"synthetic_type": pl.Utf8}))
    return out_dir / "val.npy"


def val_corpora(store: Store) -> list[str]:
    """Every non-empty test-role corpus (role 'test' or 'both')."""
    return [c.name for c in store.corpora() if c.is_test and c.n_docs > 0]


# ---------------------------------------------------------------------------------------- opening
@dataclasses.dataclass
class MixtureData:
    name: str
    train: np.ndarray  # (n_sequences, seq_len + 1), memory-mapped
    val_sets: dict[str, np.ndarray]  # validation corpus -> (n, seq_len + 1), memory-mapped
    tokenizer: str
    vocab_size: int
    seq_len: int
    eot_id: int
    config: MixtureConfig


def open_mixture(store: Store, name: str, val_corpora_names: list[str] | None = None,
                 val_tokens: int = 1_000_000, progress: bool = True) -> MixtureData:
    """Memory-map a built mixture and its validation sets (every test-role corpus unless named),
    building any missing validation set with the mixture's tokenizer and seq_len."""
    cfg = mixture_config(store, name)
    meta = read_mixture_meta(store, name)
    path = store.artifact_dir("mixtures", name, create=False) / "train.npy"
    if not path.exists():
        raise MixtureError(f"mixture {name!r} has no train.npy (interrupted build?); rebuild it with --force")
    val_sets = {}
    for corpus in val_corpora(store) if val_corpora_names is None else list(val_corpora_names):
        try:
            val_sets[corpus] = np.load(build_valset(store, corpus, cfg.tokenizer, cfg.seq_len, val_tokens,
                                                    progress), mmap_mode="r")
        except MixtureError as e:
            if val_corpora_names is not None:  # asked for by name: the user must fix it
                raise
            log.warning("no validation set from %s: %s", corpus, e)
    return MixtureData(name=name, train=np.load(path, mmap_mode="r"), val_sets=val_sets,
                       tokenizer=meta["tokenizer"], vocab_size=int(meta["vocab_size"]),
                       seq_len=int(meta["seq_len"]), eot_id=int(meta["eot_id"]), config=cfg)
