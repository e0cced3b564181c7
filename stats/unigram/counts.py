"""Counting: the map (`count_cached_shard`, `count_unigrams`), the associative reduce (`reduce_counts`) and the
driver (`build_unigram_counts`) that caches counts per shard and per corpus in the store."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from corpora.executor import RunsOnExecutor
from corpora.results import declare
from corpora.store import CorpusInfo, ShardInfo, Store, StoreError, read_shard_batches
from corpora.tokenizers import DEFAULT_TOKENIZER, Tokenizer, load_tokenizer
from corpora.tokens import Piece, TokenCache, TokenizeJob, read_piece_tokens, read_shard_tokens, tokenize_rows


log = logging.getLogger(__name__)

# Pseudo-count added to every vocabulary id of the train side. 0.01 x 100k ids of cl100k_base is ~1000
# pseudo-tokens: ~1% of the mass of a 100k-token corpus, negligible for a large one, and it keeps a
# test type missing from train at a finite cost of about ln(P(v) N_Q / alpha).
DEFAULT_ALPHA = 0.01
COUNTS_TABLE = "unigram_counts"
COMPARISONS_TABLE = "unigram_comparisons"
SHRINKAGE_TABLE = "unigram_shrinkage"
declare(COUNTS_TABLE, {
    "corpus": "str", "tokenizer": "str", "token_id": "int", "token": "str", "count": "int", "content_hash": "str",
    "tokenizer_fingerprint": "str", "n_docs": "int", "n_bytes": "int", "n_tokens": "int"},
    "One row per token type seen in a corpus (a cache keyed by content hash and tokenizer fingerprint); "
    "part <corpus>__<tokenizer>.")
declare(COMPARISONS_TABLE, {
    "train": "str mixture spec", "test": "str mixture spec", "tokenizer": "str", "train_components": "json",
    "test_components": "json", "n_tokens_test": "int", "n_tokens_train": "int", "n_types_test": "int",
    "n_types_train": "int", "type_coverage": "float", "token_coverage": "float", "kl_nats": "float KL(test||train)",
    "kl_bits": "float", "js_nats": "float", "entropy_test_nats": "float", "entropy_train_nats": "float",
    "alpha": "float smoothing", "units": "str", "top_kl_tokens": "json", "train_content_hash": "str",
    "test_content_hash": "str", "tokenizer_fingerprint": "str", "config": "json UnigramConfig"},
    "One row per (train, test, tokenizer): how well the train unigram distribution covers the test one.")
declare(SHRINKAGE_TABLE, {
    "synthetic": "str", "source": "str", "tokenizer": "str", "budget_tokens": "int", "n_tokens_synthetic": "int",
    "n_tokens_source": "int", "n_types_synthetic": "int", "n_types_source": "int",
    "types_at_budget_synthetic": "float", "types_at_budget_source": "float", "types_ratio": "float",
    "entropy_at_budget_synthetic_nats": "float", "entropy_at_budget_source_nats": "float",
    "entropy_diff_nats": "float", "n_subsamples": "int", "seed": "int"},
    "One row per synthetic corpus: its vocabulary and entropy against its source at an equal token budget.")

# Below this many bytes to count, worker start-up (~1 s each, spawned) costs more than it saves.
MIN_BYTES_FOR_WORKERS = 16 << 20


class UnigramError(StoreError):
    """Bad input to the unigram analysis (empty corpus, malformed mixture); the message says what to do."""


@dataclasses.dataclass
class UnigramConfig(RunsOnExecutor):
    train: list[str] = dataclasses.field(default_factory=list)  # corpus names or mixtures 'cc=0.67,hq=0.33'
    test: list[str] = dataclasses.field(default_factory=list)
    tokenizer: str = DEFAULT_TOKENIZER
    alpha: float = DEFAULT_ALPHA  # additive smoothing of Q (train) for KL
    top: int = 10  # test tokens with the largest KL contribution to report
    workers: int = 0  # worker processes / Ray tasks, one shard each (0: cores, or none for small local jobs)
    engine: str | None = None  # local | ray (None: $SYNTHMIX_ENGINE, else local)
    ray_address: str | None = None  # join this Ray cluster (None: $RAY_ADDRESS, else a local Ray)
    threads: int = 0  # tokenizer threads per process (0: cores / processes)
    batch_size: int = 1024  # documents per Parquet record batch
    recount: bool = False  # ignore cached counts
    shrinkage: bool = True  # also compare each synthetic corpus named with its source
    n_subsamples: int = 5  # subsamples averaged for the entropy at an equal token budget
    seed: int = 0
    progress: bool = True


# ---------------------------------------------------------------------------------------- map + reduce
@dataclasses.dataclass
class UnigramCounts:
    """Counts per vocabulary id over some documents (a shard, a corpus)."""

    counts: np.ndarray  # (n_vocab,) int64
    n_docs: int = 0
    n_bytes: int = 0

    @property
    def n_tokens(self) -> int:
        return int(self.counts.sum())

    @property
    def n_types(self) -> int:
        return int(np.count_nonzero(self.counts))


def reduce_counts(a: UnigramCounts, b: UnigramCounts) -> UnigramCounts:
    """Associative and commutative: counts add."""
    return UnigramCounts(a.counts + b.counts, a.n_docs + b.n_docs, a.n_bytes + b.n_bytes)


def count_unigrams(shard_path: Path, cfg: UnigramConfig, tokenizer: Tokenizer | None = None,
                   on_batch: Callable[[int], None] | None = None) -> UnigramCounts:
    """Map: token counts of one Parquet shard straight from its text (reads only the shard; writes nothing;
    no token cache).

    `on_batch(n_bytes)` is called after each record batch (progress only)."""
    tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.tokenizer, num_threads=cfg.threads)
    counts = np.zeros(tok.n_vocab, dtype=np.int64)
    n_docs = n_bytes = 0

    def add(tokens: np.ndarray, batch_docs: int, batch_bytes: int) -> None:
        nonlocal counts, n_docs, n_bytes
        counts += np.bincount(tokens, minlength=tok.n_vocab)  # vectorised: no Python loop per token
        n_docs += batch_docs
        n_bytes += batch_bytes
        if on_batch is not None:
            on_batch(batch_bytes)

    # Double buffering: batch k is tokenized in the background while batch k+1 is read and turned into
    # Python strings and batch k-1 is counted, so the cores are not idle while Parquet is decoded.
    try:
        with ThreadPoolExecutor(1) as ahead:
            in_flight = None
            for batch in read_shard_batches(shard_path, ["text", "n_bytes"], cfg.batch_size):
                texts = pc.fill_null(batch.column(0), "").to_pylist()  # a null text counts as empty
                batch_bytes = int(pc.sum(batch.column(1)).as_py() or 0)
                future = ahead.submit(tok.encode_batch_flat, texts)
                if in_flight is not None:
                    add(in_flight[0].result()[0], *in_flight[1:])
                in_flight = (future, len(texts), batch_bytes)
            if in_flight is not None:
                add(in_flight[0].result()[0], *in_flight[1:])
    except (OSError, pa.ArrowException) as e:
        raise UnigramError(f"cannot read shard {shard_path}: {str(e).splitlines()[0]}; "
                           "check the file or re-ingest the corpus") from None
    return UnigramCounts(counts, n_docs, n_bytes)


@dataclasses.dataclass(frozen=True)
class CountJob:
    """Count one shard through the token cache shared with mixtures (`corpora.tokens`)."""

    shard: ShardInfo
    cache_dir: Path  # the shard's folder in the token cache
    tmp_dir: Path  # where the piece of its not-yet-tokenized documents goes; the driver adopts it


_BINCOUNT_BLOCK = 1 << 24  # tokens per np.bincount call: it copies its input to intp (8 bytes a token)


def count_cached_shard(job: CountJob, tok: Tokenizer) -> tuple[UnigramCounts, Piece | None]:
    """Map: one shard's counts from its cached tokens, tokenizing the documents not cached yet first.

    Reads the shard and its cache folder, writes only a new piece under job.tmp_dir (returned, for the
    driver to adopt). End-of-text tokens are not counted (ordinary encoding never produces that id)."""
    index = read_shard_tokens(job.shard, job.cache_dir, tok.dtype.itemsize)
    missing = index.missing()
    piece = None
    try:
        if len(missing):
            rows = None if len(missing) == job.shard.n_docs else missing
            piece = tokenize_rows(TokenizeJob(job.shard.path, rows, job.tmp_dir), tok)
            index.add_piece(job.tmp_dir / f"{piece.name}.tokens", np.load(job.tmp_dir / f"{piece.name}.docs.npy"))
    except (OSError, pa.ArrowException) as e:
        raise UnigramError(f"cannot read shard {job.shard.path}: {str(e).splitlines()[0]}; "
                           "check the file or re-ingest the corpus") from None
    counts = np.zeros(tok.n_vocab, dtype=np.int64)
    for p, path in enumerate(index.piece_paths):
        tokens = read_piece_tokens(path, tok.dtype)
        own = np.flatnonzero(index.piece == p)
        if int(index.length[own].sum()) != len(tokens):  # some documents of this piece are counted elsewhere
            n = index.length[own]
            tokens = tokens[np.repeat(index.offset[own], n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)]
        for i in range(0, len(tokens), _BINCOUNT_BLOCK):
            counts += np.bincount(tokens[i:i + _BINCOUNT_BLOCK], minlength=tok.n_vocab)
    counts[tok.eot_id] -= job.shard.n_docs
    return UnigramCounts(counts, job.shard.n_docs, job.shard.n_bytes), piece


def count_job(args: tuple) -> tuple[UnigramCounts, Piece | None]:
    """The executor's map: (CountJob, tokenizer) -> (counts, new token piece)."""
    job, tok = args
    return count_cached_shard(job, tok)


# ---------------------------------------------------------------------------------------- driver + cache
def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", name).strip("-.")[:60] or "tok"


def counts_part(corpus: str, tok: Tokenizer) -> str:
    """The `unigram_counts` part of one (corpus, tokenizer): rewritten, never duplicated, on recount."""
    return f"{corpus}__{_slug(tok.name)}-{tok.fingerprint}"


def _shard_cache_dir(store: Store, tok: Tokenizer) -> Path:
    return store.artifact_dir("unigram_shards", f"{_slug(tok.name)}-{tok.fingerprint}")


def _save_shard_counts(path: Path, part: UnigramCounts) -> None:
    from corpora.store import atomic_path

    ids = np.flatnonzero(part.counts).astype(np.int32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=ids, counts=part.counts[ids], meta=np.array([part.n_docs, part.n_bytes]))


def _load_shard_counts(path: Path, n_vocab: int) -> UnigramCounts | None:
    try:
        with np.load(path) as z:
            counts = np.zeros(n_vocab, dtype=np.int64)
            counts[z["ids"]] = z["counts"]
            n_docs, n_bytes = (int(x) for x in z["meta"])
    except (OSError, ValueError, KeyError, IndexError):
        return None  # unreadable cache entry: count the shard again
    return UnigramCounts(counts, n_docs, n_bytes)


def _read_cached_counts(store: Store, info: CorpusInfo, tok: Tokenizer) -> UnigramCounts | None:
    df = store.read_result(COUNTS_TABLE, counts_part(info.name, tok))
    if df is None or df.height == 0 or df["content_hash"][0] != info.content_hash:
        return None
    counts = np.zeros(tok.n_vocab, dtype=np.int64)
    counts[df["token_id"].to_numpy()] = df["count"].to_numpy()
    return UnigramCounts(counts, int(df["n_docs"][0]), int(df["n_bytes"][0]))


def _write_counts(store: Store, info: CorpusInfo, tok: Tokenizer, total: UnigramCounts, cfg: UnigramConfig):
    ids = np.flatnonzero(total.counts)
    n = len(ids)
    table = pa.table({
        "corpus": pa.array([info.name] * n, pa.string()),
        "tokenizer": pa.array([tok.name] * n, pa.string()),
        "token_id": pa.array(ids.astype(np.int32)),
        "token": pa.array(tok.token_strs(ids), pa.string()),
        "count": pa.array(total.counts[ids]),
        "content_hash": pa.array([info.content_hash] * n, pa.string()),
        "tokenizer_fingerprint": pa.array([tok.fingerprint] * n, pa.string()),
        "n_docs": pa.array([total.n_docs] * n, pa.int64()),
        "n_bytes": pa.array([total.n_bytes] * n, pa.int64()),
        "n_tokens": pa.array([total.n_tokens] * n, pa.int64()),
    })
    store.put_result(COUNTS_TABLE, counts_part(info.name, tok), table)


def build_unigram_counts(store: Store, corpus: str | CorpusInfo, cfg: UnigramConfig,
                         tokenizer: Tokenizer | None = None) -> UnigramCounts:
    """Driver: a corpus's counts, from the store's cache when its content is unchanged, else counted."""
    info = corpus if isinstance(corpus, CorpusInfo) else store.corpus(corpus)
    if info.n_docs == 0:
        raise UnigramError(f"corpus {info.name!r} is empty (no documents); ingest documents into it first")
    tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.tokenizer, store)
    if not cfg.recount:
        cached = _read_cached_counts(store, info, tok)
        if cached is not None:
            log.info("unigram counts of %s (%s) from the store's cache", info.name, tok.name)
            return cached

    shards = store.shards(info.name)
    cache_dir = _shard_cache_dir(store, tok)
    parts: list[UnigramCounts | None] = [None] * len(shards)
    if not cfg.recount:
        for i, s in enumerate(shards):
            if (cache_dir / f"{s.content_hash}.npz").exists():
                parts[i] = _load_shard_counts(cache_dir / f"{s.content_hash}.npz", tok.n_vocab)
    # largest shards first, so that no worker is left with a big one at the end
    pending = sorted((i for i, p in enumerate(parts) if p is None), key=lambda i: -shards[i].n_bytes)
    pending_bytes = sum(shards[i].n_bytes for i in pending)
    cores = os.cpu_count() or 1
    where = cfg.execution
    auto = cores if pending_bytes >= MIN_BYTES_FOR_WORKERS else 1  # a pool pays off only for large jobs
    engine, workers = where.plan(len(pending), auto)
    threads = cfg.threads or (1 if engine == "ray" else max(1, cores // workers))
    tok_run = tok.with_threads(threads)
    log.info("counting %d of %d shards of %s (%.1f MB) on %s, %s worker(s) x %d threads",
             len(pending), len(shards), info.name, pending_bytes / 1e6, engine, workers or "all", threads)

    bar = tqdm(total=pending_bytes / 1e6, unit="MB", unit_scale=False, desc=f"unigrams {info.name}",
               disable=not cfg.progress or not pending, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} MB "
               "[{elapsed}<{remaining}, {rate_fmt}]")

    tokens = TokenCache(store, tok)  # the token cache shared with mixtures: a corpus is tokenized once
    jobs = {i: CountJob(shards[i], tokens.shard_dir(shards[i]), tokens.tmp_dir()) for i in pending}

    def done(i: int, result: tuple[UnigramCounts, Piece | None]) -> None:
        part, piece = result
        if piece is not None:
            tokens.adopt(shards[i], jobs[i].tmp_dir, piece)
        _save_shard_counts(cache_dir / f"{shards[i].content_hash}.npz", part)  # a rerun skips this shard
        parts[i] = part
        bar.update(shards[i].n_bytes / 1e6)

    try:
        # the executor (corpora.executor): in-process, local spawned processes, or Ray (--engine)
        with where.executor(len(pending), auto) as ex:
            for k, result in ex.map(count_job, [(jobs[i], tok_run) for i in pending], progress=False):
                done(pending[k], result)
    finally:
        bar.close()
        for job in jobs.values():
            shutil.rmtree(job.tmp_dir, ignore_errors=True)
    total = functools.reduce(reduce_counts, parts)
    _write_counts(store, info, tok, total, cfg)
    return total
