"""Token unigram statistics of corpora: counts, coverage, KL/JS divergence, entropy and shrinkage.

    python -m stats.unigram --train cc --test wiki
    python -m stats.unigram --train cc --train hq --train cc:0.67,hq:0.33 --test wiki --json

Definitions (P = test unigram distribution, Q = train distribution, both over the tokenizer's vocabulary
of V ids; logs are natural, so every divergence and entropy is in nats; bits = nats / ln 2):

- type coverage  = |{v : P(v) > 0, Q(v) > 0}| / |{v : P(v) > 0}|
- token coverage = sum of P(v) over v with Q(v) > 0 (share of test tokens whose type occurs in train)
- KL(P || Q)     = sum_v P(v) ln(P(v) / Q_alpha(v)), Q_alpha(v) = (c_Q(v) + alpha) / (N_Q + alpha V):
                   additive smoothing of the train counts, so a test type missing from train costs a
                   large but finite amount. A mixture's Q_alpha is the weighted mix of its components'
                   Q_alpha (each smoothed with its own counts).
- JS(P, Q)       = KL(P || M) / 2 + KL(Q || M) / 2 with M = (P + Q) / 2, on unsmoothed Q (0 <= JS <= ln 2)
- entropy H      = -sum_v P(v) ln P(v), unsmoothed
- shrinkage      = distinct types and entropy of a synthetic corpus and its source at an equal token budget
                   n = the smaller corpus's tokens: types are the exact rarefaction expectation
                   sum_v 1 - C(N - c_v, n) / C(N, n); entropy is the mean over seeded subsamples of n
                   tokens drawn without replacement (multivariate hypergeometric).

Counting is a pure map (`count_cached_shard(CountJob, tokenizer) -> UnigramCounts`: np.bincount over the
shard's tokens in the token cache that mixtures share, `corpora.tokens`, tokenizing first the documents
not cached yet) and an associative reduce (`reduce_counts`); `build_unigram_counts` is the driver: it maps
shards in worker processes, adopts the new token pieces, caches each shard's counts by content hash, and
stores the corpus's counts in the result table `unigram_counts` keyed by (corpus content hash,
tokenizer), so an unchanged corpus is never counted twice, and a corpus a mixture has tokenized is not
tokenized again. `count_unigrams(shard_path, cfg)` counts one shard straight from its text, without the
cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from corpora.executor import add_engine_args, get_executor
from corpora.store import (
    CorpusInfo,
    ShardInfo,
    Store,
    StoreError,
    read_shard_batches,
    resolve_store_path,
)
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
# Below this many bytes to count, worker start-up (~1 s each, spawned) costs more than it saves.
MIN_BYTES_FOR_WORKERS = 16 << 20


class UnigramError(StoreError):
    """Bad input to the unigram analysis (empty corpus, malformed mixture); the message says what to do."""


@dataclasses.dataclass
class UnigramConfig:
    train: list[str] = dataclasses.field(default_factory=list)  # corpus names or mixtures 'cc:0.67,hq:0.33'
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
        "counted_at": pa.array([dt.datetime.now(dt.timezone.utc)] * n, pa.timestamp("us", tz="UTC")),
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
    workers = cfg.workers or (cores if pending_bytes >= MIN_BYTES_FOR_WORKERS else 1)
    workers = max(1, min(workers, len(pending)))
    threads = cfg.threads or max(1, cores // workers)
    tok_run = tok.with_threads(threads)
    log.info("counting %d of %d shards of %s (%.1f MB) with %d processes x %d threads",
             len(pending), len(shards), info.name, pending_bytes / 1e6, workers, threads)

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
        with get_executor(cfg.engine, cfg.workers, cfg.ray_address) as ex:
            n = workers if ex.name == "local" else max(1, min(ex.workers, len(pending)))
            for k, result in ex.map(count_job, [(jobs[i], tok_run) for i in pending], max_workers=n,
                                    progress=False):
                done(pending[k], result)
    finally:
        bar.close()
        for job in jobs.values():
            shutil.rmtree(job.tmp_dir, ignore_errors=True)
    total = functools.reduce(reduce_counts, parts)
    _write_counts(store, info, tok, total, cfg)
    return total


# ---------------------------------------------------------------------------------------- distributions
@dataclasses.dataclass
class UnigramDistribution:
    """One side of a comparison: a corpus or a weighted mixture of corpora."""

    spec: str  # as written: 'cc' or 'cc:0.67,hq:0.33'
    components: list[tuple[str, float, UnigramCounts]]

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for _, w, c in self.components if w > 0)

    @property
    def present(self) -> np.ndarray:
        """Ids that occur in some component with a positive weight."""
        mask = np.zeros(len(self.components[0][2].counts), dtype=bool)
        for _, w, c in self.components:
            if w > 0:
                mask |= c.counts > 0
        return mask

    @property
    def n_types(self) -> int:
        return int(np.count_nonzero(self.present))

    def probs(self, alpha: float = 0.0) -> np.ndarray:
        """Mixture of the components' (additively smoothed) relative frequencies."""
        out = np.zeros(len(self.components[0][2].counts), dtype=np.float64)
        for _, w, c in self.components:
            if w > 0:
                out += w * (c.counts + alpha) / (c.n_tokens + alpha * len(c.counts))
        return out


def parse_mixture(spec: str) -> list[tuple[str, float]]:
    """'cc' -> [('cc', 1.0)]; 'cc:0.67,hq:0.33' -> [('cc', 0.67), ('hq', 0.33)]; weights must sum to 1."""
    spec = spec.strip()
    if not spec:
        raise UnigramError("empty corpus or mixture name; give e.g. cc or cc:0.67,hq:0.33")
    if ":" not in spec and "," not in spec:
        return [(spec, 1.0)]
    out: list[tuple[str, float]] = []
    for item in spec.split(","):
        name, sep, weight = item.strip().partition(":")
        name = name.strip()
        if not name or not sep:
            raise UnigramError(f"malformed mixture {spec!r}: write every component as NAME:WEIGHT, "
                               "e.g. cc:0.67,hq:0.33")
        try:
            w = float(weight)
        except ValueError:
            raise UnigramError(f"malformed mixture {spec!r}: weight {weight.strip()!r} of {name!r} "
                               "is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise UnigramError(f"malformed mixture {spec!r}: weight of {name!r} must be >= 0, not {weight.strip()}")
        if name in (n for n, _ in out):
            raise UnigramError(f"malformed mixture {spec!r}: {name!r} appears twice")
        out.append((name, w))
    total = sum(w for _, w in out)
    if abs(total - 1.0) > 1e-6:
        raise UnigramError(f"mixture {spec!r}: weights sum to {total:g}, not 1; adjust them so they do")
    return out


def build_distribution(store: Store, spec: str, cfg: UnigramConfig, tok: Tokenizer,
                       infos: dict[str, CorpusInfo] | None = None) -> UnigramDistribution:
    infos = infos if infos is not None else {c.name: c for c in store.corpora()}
    components = []
    for name, w in parse_mixture(spec):
        info = infos.get(name) or store.corpus(name)  # raises UnknownCorpus listing the store's corpora
        components.append((name, w, build_unigram_counts(store, info, cfg, tok)))
    return UnigramDistribution(spec, components)


# ---------------------------------------------------------------------------------------- metrics
def _xlogy_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p ln(p / q) with 0 ln 0 = 0."""
    out = np.zeros_like(p)
    nz = p > 0
    out[nz] = p[nz] * np.log(p[nz] / q[nz])
    return out


def entropy_nats(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def compare_unigrams(test: UnigramDistribution, train: UnigramDistribution, tok: Tokenizer,
                     alpha: float = DEFAULT_ALPHA, top: int = 10) -> dict:
    """Every metric of one (train, test) pair, as one row of `unigram_comparisons`."""
    if alpha <= 0:
        raise UnigramError(f"alpha must be > 0 (got {alpha}); a zero in Q would make KL infinite")
    p = test.probs()
    q = train.probs()
    q_smooth = train.probs(alpha)
    test_types = p > 0
    in_train = train.present
    contrib = _xlogy_ratio(p, q_smooth)
    m = (p + q) / 2
    kl_nats = float(contrib.sum())
    js_nats = float(0.5 * _xlogy_ratio(p, m).sum() + 0.5 * _xlogy_ratio(q, m).sum())

    order = np.argsort(-contrib, kind="stable")[: max(top, 0)]
    order = order[contrib[order] > 0]
    test_counts = sum(c.counts for _, w, c in test.components if w > 0)
    train_counts = sum(c.counts for _, w, c in train.components if w > 0)
    top_tokens = [
        {"token_id": int(i), "token": tok.token_str(i), "p_test": float(p[i]), "q_train": float(q[i]),
         "count_test": int(test_counts[i]), "count_train": int(train_counts[i]), "kl_nats": float(contrib[i])}
        for i in order
    ]
    return {
        "train": train.spec,
        "test": test.spec,
        "tokenizer": tok.name,
        "train_components": json.dumps({n: w for n, w, _ in train.components}),
        "test_components": json.dumps({n: w for n, w, _ in test.components}),
        "n_tokens_test": test.n_tokens,
        "n_tokens_train": train.n_tokens,
        "n_types_test": int(test_types.sum()),
        "n_types_train": train.n_types,
        "type_coverage": float((test_types & in_train).sum() / max(test_types.sum(), 1)),
        # from integer counts, so that full and zero coverage come out exactly 1 and 0
        "token_coverage": float(sum(w * c.counts[in_train].sum() / c.n_tokens for _, w, c in test.components if w > 0)),
        "kl_nats": kl_nats,
        "kl_bits": kl_nats / math.log(2),
        "js_nats": js_nats,
        "entropy_test_nats": entropy_nats(p),
        "entropy_train_nats": entropy_nats(q),
        "alpha": float(alpha),
        "units": "nats",
        "top_kl_tokens": json.dumps(top_tokens, ensure_ascii=False),
    }


def rarefied_types(counts: np.ndarray, n_tokens: int) -> float:
    """Expected distinct types in n_tokens drawn without replacement (exact rarefaction)."""
    from scipy.special import (
        gammaln,  # imported here: scipy.special alone costs ~0.5 s of CLI start-up
    )

    c = counts[counts > 0].astype(np.float64)
    total = c.sum()
    if n_tokens >= total:
        return float(len(c))
    rest = total - c
    # P(type absent) = C(N - c, n) / C(N, n); zero when fewer than n tokens are of other types
    log_absent = np.full_like(c, -np.inf)
    ok = rest >= n_tokens
    log_absent[ok] = (gammaln(rest[ok] + 1) - gammaln(rest[ok] - n_tokens + 1)
                      - gammaln(total + 1) + gammaln(total - n_tokens + 1))
    return float((1.0 - np.exp(log_absent)).sum())


def subsampled_entropy_nats(counts: np.ndarray, n_tokens: int, n_subsamples: int, seed: int) -> float:
    """Mean plug-in entropy of n_tokens drawn without replacement (seeded)."""
    c = counts[counts > 0].astype(np.int64)
    if n_tokens >= c.sum():
        return entropy_nats(c / c.sum())
    rng = np.random.default_rng(seed)
    values = [entropy_nats(rng.multivariate_hypergeometric(c, n_tokens, method="marginals") / n_tokens)
              for _ in range(n_subsamples)]
    return float(np.mean(values))


def compute_shrinkage(synthetic: str, source: str, a: UnigramCounts, b: UnigramCounts, tok: Tokenizer,
                      n_subsamples: int = 5, seed: int = 0) -> dict:
    """Types and entropy of a synthetic corpus (a) and its source (b) at the smaller one's token budget."""
    budget = min(a.n_tokens, b.n_tokens)
    types_syn, types_src = rarefied_types(a.counts, budget), rarefied_types(b.counts, budget)
    h_syn = subsampled_entropy_nats(a.counts, budget, n_subsamples, seed)
    h_src = subsampled_entropy_nats(b.counts, budget, n_subsamples, seed)
    return {
        "synthetic": synthetic, "source": source, "tokenizer": tok.name, "budget_tokens": budget,
        "n_tokens_synthetic": a.n_tokens, "n_tokens_source": b.n_tokens,
        "n_types_synthetic": a.n_types, "n_types_source": b.n_types,
        "types_at_budget_synthetic": types_syn, "types_at_budget_source": types_src,
        "types_ratio": types_syn / types_src if types_src else float("nan"),
        "entropy_at_budget_synthetic_nats": h_syn, "entropy_at_budget_source_nats": h_src,
        "entropy_diff_nats": h_syn - h_src, "n_subsamples": n_subsamples, "seed": seed,
    }


def find_source_corpus(store: Store, info: CorpusInfo) -> str | None:
    """The corpus a synthetic corpus was generated from: its meta, else where its source_doc_ids live."""
    names = set(store.corpus_names())
    for key in ("source_corpus", "source"):
        value = info.meta.get(key)
        if isinstance(value, str) and value in names and value != info.name:
            return value
    rows = store.sql(
        """SELECT n.corpus, count(*) AS n_docs
           FROM (SELECT DISTINCT source_doc_id FROM documents WHERE corpus = ? AND source_doc_id IS NOT NULL) s
           JOIN documents n ON n.doc_id = s.source_doc_id
           WHERE n.corpus <> ? GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""",
        [info.name, info.name],
    ).to_pylist()
    return rows[0]["corpus"] if rows else None


# ---------------------------------------------------------------------------------------- the step
@dataclasses.dataclass
class UnigramReport:
    comparisons: list[dict]
    shrinkage: list[dict]
    elapsed_s: float


def _comparison_part(row: dict) -> str:
    key = json.dumps([row["train"], row["test"], row["tokenizer"], row["alpha"]])
    return "cmp-" + hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def run_unigram(store: Store, cfg: UnigramConfig) -> UnigramReport:
    """Compare every (train, test) pair of cfg, store each comparison, and return them."""
    t0 = time.perf_counter()
    if not cfg.train or not cfg.test:
        raise UnigramError("give at least one --train and one --test corpus (or mixture)")
    if not cfg.alpha > 0:
        raise UnigramError(f"alpha must be > 0 (got {cfg.alpha}); a zero in Q would make KL infinite")
    specs = {s: parse_mixture(s) for s in [*cfg.train, *cfg.test]}  # all spec errors before any counting
    infos = {c.name: c for c in store.corpora()}
    for parts in specs.values():
        for name, _ in parts:
            if name not in infos:
                store.corpus(name)  # raises UnknownCorpus with the list
            if infos[name].n_docs == 0:
                raise UnigramError(f"corpus {name!r} is empty (no documents); ingest documents into it first")
    tok = load_tokenizer(cfg.tokenizer, store)
    dists = {s: build_distribution(store, s, cfg, tok, infos) for s in specs}
    now = dt.datetime.now(dt.timezone.utc)
    config_json = json.dumps(dataclasses.asdict(cfg))
    comparisons = []
    for train in cfg.train:
        for test in cfg.test:
            row = compare_unigrams(dists[test], dists[train], tok, cfg.alpha, cfg.top)
            row.update(
                train_content_hash=",".join(infos[n].content_hash for n, _ in specs[train]),
                test_content_hash=",".join(infos[n].content_hash for n, _ in specs[test]),
                tokenizer_fingerprint=tok.fingerprint, config=config_json, created_at=now,
            )
            store.put_result(COMPARISONS_TABLE, _comparison_part(row), pa.Table.from_pylist([row]))
            comparisons.append(row)

    shrinkage = []
    if cfg.shrinkage:
        named = dict.fromkeys(n for parts in specs.values() for n, _ in parts)
        for name in named:
            if infos[name].kind != "synthetic":
                continue
            source = find_source_corpus(store, infos[name])
            if source is None:
                log.info("no source corpus found for synthetic corpus %s; no shrinkage row", name)
                continue
            row = compute_shrinkage(
                name, source, build_unigram_counts(store, infos[name], cfg, tok),
                build_unigram_counts(store, infos[source], cfg, tok), tok, cfg.n_subsamples, cfg.seed)
            row.update(created_at=now)
            store.put_result(SHRINKAGE_TABLE, f"{name}__{source}__{_slug(tok.name)}", pa.Table.from_pylist([row]))
            shrinkage.append(row)
    return UnigramReport(comparisons, shrinkage, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------- CLI
def format_report(report: UnigramReport) -> str:
    lines = []
    for r in report.comparisons:
        lines += [
            (f"train={r['train']}  test={r['test']}  tokenizer={r['tokenizer']}  "
             f"alpha={r['alpha']:g} (additive smoothing of train; logs in nats)"),
            f"  tokens          test {r['n_tokens_test']:>12,}   train {r['n_tokens_train']:>12,}",
            f"  distinct types  test {r['n_types_test']:>12,}   train {r['n_types_train']:>12,}",
            f"  type coverage   {r['type_coverage']:.4f}    token coverage {r['token_coverage']:.4f}",
            f"  KL(test||train) {r['kl_nats']:.4f} nats ({r['kl_bits']:.4f} bits)    JS {r['js_nats']:.4f} nats",
            f"  entropy         test {r['entropy_test_nats']:.4f} nats   train {r['entropy_train_nats']:.4f} nats",
        ]
        top = json.loads(r["top_kl_tokens"])
        if top:
            lines.append(f"  top {len(top)} test tokens by KL contribution:")
            lines.append(f"    {'token':<24} {'p_test':>10} {'q_train':>10} {'n_test':>8} {'n_train':>8} {'KL nats':>9}")
            for t in top:
                shown = repr(t["token"])  # quoted, so leading spaces and newlines show
                lines.append(f"    {shown:<24} {t['p_test']:>10.2e} {t['q_train']:>10.2e} "
                             f"{t['count_test']:>8,} {t['count_train']:>8,} {t['kl_nats']:>9.5f}")
        lines.append("")
    if len(report.comparisons) > 1:
        trains = list(dict.fromkeys(r["train"] for r in report.comparisons))
        tests = list(dict.fromkeys(r["test"] for r in report.comparisons))
        cell = {(r["train"], r["test"]): r for r in report.comparisons}
        width = max(12, *(len(t) + 2 for t in tests))
        for metric in ("kl_nats", "token_coverage", "type_coverage"):
            lines.append(f"{metric} (rows: train, columns: test)")
            lines.append(" " * 24 + "".join(f"{t:>{width}}" for t in tests))
            for tr in trains:
                lines.append(f"{tr[:23]:<24}" + "".join(f"{cell[tr, te][metric]:>{width}.4f}" for te in tests))
            lines.append("")
    for s in report.shrinkage:
        lines.append(
            f"shrinkage {s['synthetic']} vs source {s['source']} at {s['budget_tokens']:,} tokens: types "
            f"{s['types_at_budget_synthetic']:,.0f} vs {s['types_at_budget_source']:,.0f} "
            f"(ratio {s['types_ratio']:.3f}), entropy {s['entropy_at_budget_synthetic_nats']:.4f} vs "
            f"{s['entropy_at_budget_source_nats']:.4f} nats")
    lines.append(f"({report.elapsed_s:.2f} s)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stats.unigram",
        description="Token unigram coverage, KL(test||train), JS and entropy between training and test corpora "
                    "(nats; additive smoothing alpha on train). Example: "
                    "python -m stats.unigram --train cc --train cc:0.67,hq:0.33 --test wiki",
    )
    p.add_argument("--store", help="store directory (default: $SYNTHMIX_STORE, else ./store)")
    p.add_argument("--train", action="extend", nargs="+", default=[], metavar="CORPUS|MIX",
                   help="training corpus, or mixture NAME:WEIGHT,... with weights summing to 1 (e.g. cc:0.67,hq:0.33); "
                        "several (--train cc hq, or --train repeated) give the full matrix")
    p.add_argument("--test", action="extend", nargs="+", default=[], metavar="CORPUS|MIX",
                   help="test corpus or mixture; several give the full matrix")
    p.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                   help="cl100k_base (offline), a tiktoken name or .tiktoken file, smollm2, a tokenizer.json/"
                        "GGUF/directory, or a tokenizer registered in the store (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="additive smoothing pseudo-count per vocabulary id of train for KL (default: %(default)s)")
    p.add_argument("--top", type=int, default=10, help="test tokens with the largest KL contribution to list")
    p.add_argument("--workers", type=int, default=0,
                   help="worker processes (or Ray tasks), one shard each (0: automatic)")
    add_engine_args(p)
    p.add_argument("--threads", type=int, default=0, help="tokenizer threads per process (0: automatic)")
    p.add_argument("--batch-size", type=int, default=1024, help="documents per record batch")
    p.add_argument("--recount", action="store_true", help="ignore cached counts and count again")
    p.add_argument("--no-shrinkage", dest="shrinkage", action="store_false",
                   help="skip the shrinkage comparison of synthetic corpora with their sources")
    p.add_argument("--n-subsamples", type=int, default=5, help="subsamples for entropy at equal token budget")
    p.add_argument("--seed", type=int, default=0, help="seed of those subsamples")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.add_argument("--json", action="store_true", help="print the comparisons as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(UnigramConfig)}
    cfg = UnigramConfig(**{k: v for k, v in vars(args).items() if k in fields})
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        store = Store(resolve_store_path(args.store))
        with store.writer("python -m stats.unigram"):
            report = run_unigram(store, cfg)
    except StoreError as e:  # UnknownCorpus, UnknownTokenizer, UnigramError: the user can fix these
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        out = {
            "comparisons": [{**r, "top_kl_tokens": json.loads(r["top_kl_tokens"]),
                             "created_at": r["created_at"].isoformat()} for r in report.comparisons],
            "shrinkage": [{**s, "created_at": s["created_at"].isoformat()} for s in report.shrinkage],
            "elapsed_s": report.elapsed_s,
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0


if __name__ == "__main__":
    from corpora.exits import run_command

    sys.exit(run_command("", main))
