"""Mixtures: packed token streams with exact per-part token shares, built once, memory-mapped by the trainer.

A mixture (`MixtureConfig`) names store corpora and their token shares, e.g. {cc: 0.67, hq: 0.33}, a token
budget, a tokenizer, a sequence length and a seed. `build_mixture` turns it into
`store.artifact_dir("mixtures", NAME)/train.npy`, an (n_sequences, seq_len + 1) uint16/uint32 array
(row i: inputs tokens[i, :-1], targets tokens[i, 1:]), in four steps:

1. *allocate*: the rows hold `n_sequences * (seq_len + 1)` tokens (the budget rounded down to whole
   rows); each part gets exactly `share * total` of them (largest remainder, so the parts sum to the total).
2. *order* (`train.sampling`; tokenizing only what is taken): a part orders its corpus's documents by a seeded key per
   document (a hash of doc_id, seed, corpus and epoch: read from the shards' doc lists, no text) and takes
   whole documents in that order until its quota is met; the last one drawn is cut at the quota. Only
   those documents are tokenized, through the shared token cache (`corpora.tokens`: per shard content and
   tokenizer, documents tokenized on demand), so a later mixture, a larger budget, a validation set or a
   unigram count tokenizes only documents not cached yet. When a part needs more tokens than its corpus
   has, the whole corpus is tokenized and further epochs follow, each a fresh seeded order (the repetition
   is logged as a warning and recorded in the `mixtures` table).
   A budget that is small next to its corpus is drawn so that its I/O follows the budget, not the corpus
   size (`train.sampling._order_by_row_groups`): row groups in a seeded order, and in each the documents
   whose key is below a fraction chosen so that the groups read hold ~GROUP_OVERSAMPLE times the text taken
   (and at least MIN_ROW_GROUPS groups); the part's stream orders the taken documents by their key, so it is
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

from corpora.names import safe_name
from corpora.results import declare
from corpora.store import CorpusInfo, ShardInfo, Store, StoreError, atomic_path
from corpora.tokens import (TokenCache, doc_id_hashes, read_doc_list, seeded_keys,  # noqa: F401 (re-export)
                            tokenizer_key)
from train.sampling import MixtureError, cut_order, order_part
from train.sampling import BYTES_PER_TOKEN_GUESS, PILOT_BYTES, PartOrder, RowGroup  # noqa: F401 (re-export)
from train.sampling import GROUP_OVERSAMPLE, MIN_ROUND_SHARE, MIN_ROW_GROUPS, THRESHOLD_MARGIN  # noqa: F401 (re-export)

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


# ---------------------------------------------------------------------------------------- writing
def _rng(seed: int, corpus: str, stream: int) -> np.random.Generator:
    # Keyed by the corpus name, not its position, so adding a part leaves the others' draws unchanged.
    return np.random.default_rng([seed, zlib.crc32(corpus.encode()), stream])


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
    return f"{corpus}__{safe_name(tokenizer_name)}__{seq_len}"


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
