"""Mixtures: packed token streams with exact per-part token shares, built once, memory-mapped by the trainer.

A mixture (`MixtureConfig`) names store corpora and their token shares, e.g. {cc: 0.67, hq: 0.33}, a token
budget, a tokenizer, a sequence length and a seed. `build_mixture` turns it into
`store.artifact_dir("mixtures", NAME)/train.npy`, an (n_sequences, seq_len + 1) uint16/uint32 array
(row i: inputs tokens[i, :-1], targets tokens[i, 1:]), in four steps:

1. *tokenize* (map, cached): every shard is tokenized once per tokenizer into a flat stream of its
   documents, each followed by the end-of-text token, plus each document's length. The cache key is the
   shard's content hash and the tokenizer's fingerprint, so every mixture, valset and rerun reuses it.
2. *allocate*: the rows hold `n_sequences * (seq_len + 1)` tokens (the budget rounded down to whole
   rows); each part gets exactly `share * total` of them (largest remainder, so the parts sum to the total).
3. *draw*: a part takes whole documents in a seeded shuffled order; when it needs more tokens than the
   corpus has it starts another epoch with a fresh shuffle (the repetition is logged as a warning and
   recorded in the `mixtures` table); the last document drawn is cut at the part's quota.
4. *interleave*: each drawn document gets a key (its position in its part's stream, as a fraction, plus
   seeded jitter) and all documents are ordered by key, so every part is spread evenly over the whole
   stream and epochs stay in order. The stream is cut into rows and written atomically.

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

from corpora.executor import Executor, get_executor, resolve_engine
from corpora.store import CorpusInfo, ShardInfo, Store, StoreError, atomic_path, read_shard_batches

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "cl100k_base"
SHARE_TOLERANCE = 1e-3  # "0.333,0.333,0.334" is fine; "0.6,0.3" is a mistake
_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_COUNT_RE = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)
_PART_RE = re.compile(r"^([a-z][a-z0-9_]*)=([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)$")
_INTERLEAVE_STREAM = 1 << 31  # rng stream of the interleaving jitter; epochs use streams 0, 1, ...
_GATHER_BLOCK = 1 << 22  # tokens copied per block when writing a stream: bounds the index arrays' memory


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
    n_unique_tokens: int | None = None  # tokens of the corpus incl. end-of-text; known after tokenizing

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


# ---------------------------------------------------------------------------------------- tokenizing
def tokenizer_key(tokenizer) -> str:
    """An artifact-safe key for a tokenizer: its name (sanitized) and its fingerprint."""
    safe = re.sub(r"[^A-Za-z0-9_.=-]", "_", tokenizer.name).strip("._") or "tok"
    return f"{safe[:80]}-{tokenizer.fingerprint}"


def tokenize_shard(shard_path: Path, tokenizer, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Map step: one shard's documents as one stream, each document followed by end-of-text.

    Returns (tokens in tokenizer.dtype, per-document lengths including the end-of-text token)."""
    token_parts, length_parts = [], []
    for batch in read_shard_batches(shard_path, ["text"], batch_size):
        tokens, lengths = tokenizer.encode_batch_flat(batch.column(0).to_pylist())
        lengths = lengths.astype(np.int64) + 1
        out = np.empty(int(lengths.sum()), dtype=tokenizer.dtype)
        eot_pos = np.cumsum(lengths) - 1
        is_text = np.ones(len(out), dtype=bool)
        is_text[eot_pos] = False
        out[is_text] = tokens
        out[eot_pos] = tokenizer.eot_id
        token_parts.append(out)
        length_parts.append(lengths)
    if not token_parts:
        return np.zeros(0, tokenizer.dtype), np.zeros(0, np.int64)
    return np.concatenate(token_parts), np.concatenate(length_parts)


def _shard_cache(store: Store, shard: ShardInfo, tokenizer) -> tuple[Path, Path]:
    d = store.artifact_dir("tokens", tokenizer_key(tokenizer))
    return d / f"{shard.content_hash}.tokens.npy", d / f"{shard.content_hash}.lengths.npy"


def tokenize_shard_job(job: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The executor's map: (shard path, tokenizer) -> (tokens, lengths)."""
    path, tokenizer = job
    return tokenize_shard(Path(path), tokenizer)


def load_corpus_tokens(store: Store, corpus: str, tokenizer, progress: bool = True,
                       executor: Executor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Driver: the corpus's token stream and document lengths, tokenizing only shards not cached yet.

    Shards not cached are mapped on `executor` (default: the local engine in-process, one shard after
    another, since the tokenizer already uses every core; Ray's tasks when $SYNTHMIX_ENGINE=ray)."""
    shards = store.shards(corpus)
    caches = [_shard_cache(store, shard, tokenizer) for shard in shards]
    todo = [k for k, (t, n) in enumerate(caches) if not (t.exists() and n.exists())]
    if todo:
        ex = executor or get_executor(None, 1 if resolve_engine(None) == "local" else 0)
        try:
            for k, (tokens, lengths) in ex.map(tokenize_shard_job, [(shards[i].path, tokenizer) for i in todo],
                                               desc=f"tokenize {corpus}", sizes=[shards[i].n_bytes for i in todo],
                                               progress=progress and len(shards) >= 2):
                tokens_path, lengths_path = caches[todo[k]]
                with atomic_path(lengths_path) as tmp, open(tmp, "wb") as f:
                    np.save(f, lengths)
                with atomic_path(tokens_path) as tmp, open(tmp, "wb") as f:
                    np.save(f, tokens)
        finally:
            if executor is None:
                ex.close()
    token_parts, length_parts = [], []
    for tokens_path, lengths_path in caches:
        token_parts.append(np.load(tokens_path, mmap_mode="r"))
        length_parts.append(np.load(lengths_path))
    if not token_parts:
        return np.zeros(0, tokenizer.dtype), np.zeros(0, np.int64)
    if len(token_parts) == 1:
        return token_parts[0], length_parts[0]
    return np.concatenate(token_parts), np.concatenate(length_parts)


# ---------------------------------------------------------------------------------------- drawing
def _rng(seed: int, corpus: str, stream: int) -> np.random.Generator:
    # Keyed by the corpus name, not its position, so adding a part leaves the others' draws unchanged.
    return np.random.default_rng([seed, zlib.crc32(corpus.encode()), stream])


def draw_documents(lengths: np.ndarray, n_tokens: int, seed: int, corpus: str) -> tuple[np.ndarray, np.ndarray]:
    """Which documents a part takes, in order, and how many tokens of each (the last one may be cut).

    One seeded shuffle per epoch; as many epochs as needed to reach n_tokens."""
    n_unique = int(lengths.sum())
    n_epochs = max(1, -(-n_tokens // n_unique))
    order = np.concatenate([_rng(seed, corpus, epoch).permutation(len(lengths)) for epoch in range(n_epochs)])
    taken = lengths[order]
    ends = np.cumsum(taken)
    n_docs = int(np.searchsorted(ends, n_tokens)) + 1  # first document whose end reaches the quota
    order, taken = order[:n_docs], taken[:n_docs].copy()
    taken[-1] -= int(ends[n_docs - 1]) - n_tokens
    return order, taken


def _gather(src: np.ndarray, starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """out = concat(src[s:s+l] for s, l in zip(starts, lengths)), vectorized, in bounded blocks."""
    ends = np.cumsum(lengths)
    pos, i = 0, 0
    while i < len(lengths):
        j = max(i + 1, int(np.searchsorted(ends, pos + _GATHER_BLOCK, side="right")))
        n = int(ends[j - 1]) - pos
        offsets = np.repeat(starts[i:j] - (ends[i:j] - lengths[i:j] - pos), lengths[i:j])
        out[pos:pos + n] = src[offsets + np.arange(n)]
        pos, i = pos + n, j


def _write_rows(path: Path, src: np.ndarray, starts: np.ndarray, lengths: np.ndarray, seq_len: int, dtype) -> int:
    total = int(lengths.sum())
    n_rows = total // (seq_len + 1)
    with atomic_path(path) as tmp:
        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n_rows, seq_len + 1))
        _gather(src, starts, lengths, rows.reshape(-1))
        rows.flush()
        del rows
    return n_rows


# ---------------------------------------------------------------------------------------- mixtures
def _config_json(cfg: MixtureConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))  # parts keep their order: it is part of the config


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def build_mixture(store: Store, cfg: MixtureConfig, overwrite: bool = False, progress: bool = True,
                  executor: Executor | None = None) -> pl.DataFrame:
    """Materialise a mixture (see the module docstring); returns its `mixtures` table rows.

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

    streams = []
    for plan in plans:
        tokens, lengths = load_corpus_tokens(store, plan.corpus.name, tokenizer, progress, executor)
        plan.n_unique_tokens = int(lengths.sum())
        if plan.epochs > cfg.max_epochs:
            raise MixtureError(_epochs_message(cfg, plan, plan.epochs))
        streams.append((tokens, lengths))
    for plan in plans:
        if plan.epochs > 1:
            log.warning("mixture %s: part %s is repeated %.2f times (%d tokens from %d unique)", cfg.name,
                        plan.corpus.name, plan.epochs, plan.n_tokens, plan.n_unique_tokens)

    # Draw each part's documents, then order all drawn documents by their interleaving key.
    src = np.concatenate([t for t, _ in streams]) if len(streams) > 1 else np.asarray(streams[0][0])
    src_offset = np.cumsum([0] + [len(t) for t, _ in streams])
    starts, lengths, keys, part_ids = [], [], [], []
    for i, (plan, (_, doc_lengths)) in enumerate(zip(plans, streams)):
        order, taken = draw_documents(doc_lengths, plan.n_tokens, cfg.seed, plan.corpus.name)
        doc_starts = np.cumsum(doc_lengths) - doc_lengths + src_offset[i]
        pos = np.cumsum(taken) - taken
        jitter = _rng(cfg.seed, plan.corpus.name, _INTERLEAVE_STREAM).random(len(taken))
        starts.append(doc_starts[order])
        lengths.append(taken)
        keys.append((pos + jitter * taken) / plan.n_tokens)
        part_ids.append(np.full(len(taken), i, dtype=np.int64))
    order = np.argsort(np.concatenate(keys), kind="stable")
    starts, lengths = np.concatenate(starts)[order], np.concatenate(lengths)[order]
    part_ids = np.concatenate(part_ids)[order]

    out_dir.mkdir(parents=True, exist_ok=True)
    n_rows = _write_rows(out_dir / "train.npy", src, starts, lengths, cfg.seq_len, tokenizer.dtype)
    with atomic_path(out_dir / "segments.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.stack([part_ids, lengths], axis=1))
    created_at = _now()
    meta = {
        **identity, "name": cfg.name, "tokenizer": tokenizer.name, "vocab_size": tokenizer.n_vocab,
        "eot_id": tokenizer.eot_id, "dtype": str(tokenizer.dtype), "seq_len": cfg.seq_len,
        "n_sequences": n_rows, "total_tokens": n_rows * (cfg.seq_len + 1),
        "parts": [{"corpus": p.corpus.name, "share": p.share, "n_tokens": p.n_tokens,
                   "n_unique_tokens": p.n_unique_tokens, "epochs": p.epochs} for p in plans],
        "created_at": created_at.isoformat(),
    }
    with atomic_path(out_dir / "mixture.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    rows = pl.DataFrame([{
        "mixture": cfg.name, "corpus": p.corpus.name, "kind": p.corpus.kind,
        "synthetic_type": p.corpus.synthetic_type if p.corpus.kind == "synthetic" else None,
        "share": p.share, "n_tokens": p.n_tokens, "n_unique_tokens": p.n_unique_tokens, "epochs": p.epochs,
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
    tokens, lengths = load_corpus_tokens(store, corpus, tok, progress)
    n_unique = int(lengths.sum())
    n_tokens = min(max_tokens, n_unique) // (seq_len + 1) * (seq_len + 1)
    if n_tokens == 0:
        raise MixtureError(f"corpus {corpus!r} has {n_unique} tokens, less than one sequence of "
                           f"{seq_len + 1}; add documents or lower seq_len")
    order, taken = draw_documents(lengths, n_tokens, 0, corpus)
    doc_starts = np.cumsum(lengths) - lengths
    n_rows = _write_rows(out_dir / "val.npy", tokens, doc_starts[order], taken, seq_len, tok.dtype)
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
