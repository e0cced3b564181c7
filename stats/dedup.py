"""Near-duplicate analysis with MinHash LSH (datasketch), within one corpus and across two.

Pipeline (in the shape of datatrove's MinHash stages, sharing one `DedupConfig`):

1. *signatures* (map, per shard, in worker processes): text -> normalised words -> word n-gram shingles
   -> one 32-bit hash per shingle -> MinHash signature of `num_perm` values, computed for a whole batch
   of documents at once with numpy (one matrix op for all permutations, no Python loop per shingle).
   Signatures are cached per (shard content hash, num_perm, ngram, seed) under
   `store.artifact_dir("dedup_signatures", corpus)`, so a rerun or a grown corpus only hashes new shards.
2. *candidates*: datasketch `MinHashLSH(threshold, num_perm, weights)` over `LeanMinHash` values built
   from the signatures; datasketch picks the band/row split, weighted towards recall (`lsh_fn_weight`)
   because step 3 removes the extra candidates.
3. *verification*: every candidate pair is kept only if its signature Jaccard estimate (share of equal
   signature values) is >= threshold.
4. *clusters*: connected components (union-find) over the verified pairs.

Text normalisation (what "the same text" means here): Unicode NFKC, lower case, then words are the
maximal runs of Unicode word characters (letters, digits, underscore, regex ``\\w+``); punctuation and
whitespace only separate words, so case, punctuation and spacing changes do not count as edits. A
shingle is `ngram` consecutive words. A document with no words is skipped as ``empty``; one with fewer
than `ngram` words is skipped as ``too_short``; both are counted and listed in result table `dup_skipped`.

datasketch compatibility: a signature equals, value for value,
``datasketch.MinHash(num_perm, seed, hashfunc=int, scheme="affine32").update_batch(shingle_hashes)``:
the permutations are datasketch's own seeded draws and the "affine32" formula (MurmurHash3 fmix32, then
``a * h + b mod 2**32``) is applied in numpy. `to_lean_minhash` wraps a row as a `LeanMinHash`, which is
what `MinHashLSH` indexes. The shingle hash is our own: BLAKE2b-64 of each distinct word, combined over
the n words of a shingle with a 64-bit multiply-and-fmix chain, top 32 bits (tests/stats/test_dedup.py
checks the equality with datasketch).

Result tables (parts keyed by corpus, other corpus and parameters, so reruns replace them):
`dup_summary` (one row per analysis), `dup_clusters` (one row per document in a cluster of >= 2),
`dup_pairs` (verified pairs with their Jaccard estimate), `dup_source` (synthetic documents: estimated
Jaccard to their own source document), `dup_skipped` (empty/too short documents), `dedup_dropped`
(documents `curate` left out of a curated corpus, and why).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from corpora.store import (
    CorpusInfo,
    Store,
    StoreError,
    atomic_path,
    read_shard_batches,
    resolve_store_path,
)

log = logging.getLogger(__name__)

# Bump when the shingle hash or the signature layout changes: it is part of every cache key.
SIGNATURE_VERSION = 1
SCHEME = "affine32"

STATUS_OK, STATUS_EMPTY, STATUS_TOO_SHORT = 0, 1, 2
SKIP_REASONS = {STATUS_EMPTY: "empty", STATUS_TOO_SHORT: "too_short"}

# Below this many documents to hash, auto mode (workers=0) stays in-process: a spawned worker needs ~1-2 s
# to import numpy/polars/pyarrow/duckdb, about the time one process takes to hash this many documents.
_MIN_DOCS_FOR_POOL = 8000

# Shingles hashed per numpy block: (block, num_perm) uint32 is 16 MiB at 128 permutations, which keeps
# a worker's peak memory flat however long a document is.
_BLOCK_SHINGLES = 32768
_U32 = np.uint32
_U64 = np.uint64
# Odd 64-bit multiplier (the golden ratio constant) for chaining word hashes; order-sensitive.
_CHAIN_MUL = _U64(0x9E3779B97F4A7C15)


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    """Parameters of one near-duplicate analysis; CLI flags map 1:1 to fields."""

    threshold: float = 0.8  # Jaccard similarity of shingle sets at or above which two docs are duplicates
    num_perm: int = 128  # MinHash permutations (signature length); estimate std ~ sqrt(J(1-J)/num_perm)
    ngram: int = 5  # words per shingle
    seed: int = 1  # seeds the MinHash permutations (datasketch's default seed)
    # MinHashLSH weights = (1 - w, w) on (false positive, false negative) area when datasketch picks the
    # band/row split. Candidates are verified, so a missed pair costs more than an extra candidate:
    # at 0.95 (16 bands x 8 rows for 128 permutations) a pair at J=0.8 becomes a candidate with
    # probability 0.95, against 0.40 with datasketch's default (0.5, 0.5).
    lsh_fn_weight: float = 0.95
    workers: int = 0  # signature worker processes; 0 = auto (cores, in-process for small jobs)
    batch_docs: int = 2048  # documents hashed per numpy batch inside a shard

    def __post_init__(self):
        if not (0.0 < float(self.threshold) < 1.0):
            raise ValueError(f"threshold must be strictly between 0 and 1 (a Jaccard similarity), "
                             f"got {self.threshold}")
        if self.num_perm < 2:
            raise ValueError(f"num_perm must be >= 2, got {self.num_perm}")
        if self.ngram < 1:
            raise ValueError(f"ngram must be >= 1 (words per shingle), got {self.ngram}")
        if not (0.0 < self.lsh_fn_weight < 1.0):
            raise ValueError(f"lsh_fn_weight must be strictly between 0 and 1, got {self.lsh_fn_weight}")
        if self.workers < 0 or self.batch_docs < 1:
            raise ValueError("workers must be >= 0 and batch_docs >= 1")

    @property
    def signature_key(self) -> str:
        """Cache key of the signatures (the threshold does not change them)."""
        return f"v{SIGNATURE_VERSION}_p{self.num_perm}_n{self.ngram}_s{self.seed}"

    @property
    def result_key(self) -> str:
        return f"t{self.threshold:g}_p{self.num_perm}_n{self.ngram}_s{self.seed}_w{self.lsh_fn_weight:g}"

    def build_lsh(self):
        """A datasketch MinHashLSH for this threshold and signature length."""
        from datasketch import MinHashLSH  # imported here: map workers never need it (and its scipy)

        w = round(self.lsh_fn_weight, 6)
        return MinHashLSH(threshold=self.threshold, num_perm=self.num_perm, weights=(round(1.0 - w, 6), w))

    def as_json(self) -> str:
        d = dataclasses.asdict(self)
        d.pop("workers")
        d.pop("batch_docs")
        return json.dumps(d, sort_keys=True)


# ---------------------------------------------------------------------------------------------- hashing
def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3 32-bit finalizer (datasketch pre-mixes every input hash with it)."""
    h = h ^ (h >> _U32(16))
    h = h * _U32(0x85EBCA6B)
    h = h ^ (h >> _U32(13))
    h = h * _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def build_permutations(cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's "affine32" permutation parameters (a, b), each (num_perm,) uint32, for cfg.seed.

    The same draws as `datasketch.MinHash(num_perm, seed).permutations` (datasketch 2.x
    `MinHash._init_permutations`); written out so map workers need not import datasketch, and checked
    against datasketch in tests/stats/test_dedup.py.
    """
    gen = np.random.RandomState(cfg.seed)
    a = gen.randint(0, 1 << 31, cfg.num_perm, dtype=_U32) * _U32(2) + _U32(1)  # odd: a bijection mod 2**32
    b = gen.randint(0, 1 << 32, cfg.num_perm, dtype=_U32)
    return a, b


def split_words(texts: Sequence[str | None]) -> tuple[pa.Array, np.ndarray]:
    """Normalised words of each text (NFKC, lower case, `\\w+` runs): flat words and per-text counts."""
    lists = (pl.Series("text", list(texts), dtype=pl.String).fill_null("")
             .str.normalize("NFKC").str.to_lowercase().str.extract_all(r"\w+")).to_arrow()
    n_words = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return pc.list_flatten(lists), n_words


def _hash_words(words: pa.Array) -> np.ndarray:
    """One uint64 per word: BLAKE2b-64 of each *distinct* word (a Python loop over the vocabulary only)."""
    if len(words) == 0:
        return np.zeros(0, dtype=_U64)
    enc = pc.dictionary_encode(words)
    vocab = enc.dictionary.to_pylist()
    digests = b"".join(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest() for w in vocab)
    vocab_hash = np.frombuffer(digests, dtype="<u8").astype(_U64)
    return vocab_hash[enc.indices.to_numpy(zero_copy_only=False)]


def compute_shingle_hashes(texts: Sequence[str | None], ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """32-bit hashes of every word n-gram of every text, concatenated in text order.

    Returns (hashes (n_shingles,) uint32, n_shingles per text (n_texts,) int64, status per text uint8).
    """
    words, n_words = split_words(texts)
    word_hash = _hash_words(words)
    offsets = np.concatenate([[0], np.cumsum(n_words)])[:-1]
    n_shingles = np.maximum(n_words - ngram + 1, 0)
    status = np.where(n_words == 0, STATUS_EMPTY, np.where(n_shingles == 0, STATUS_TOO_SHORT, STATUS_OK))
    total = int(n_shingles.sum())
    # start position (in the flat word array) of every shingle, without a Python loop over documents
    first = np.cumsum(n_shingles) - n_shingles
    text_of = np.repeat(np.arange(len(n_words)), n_shingles)
    pos = offsets[text_of] + (np.arange(total) - first[text_of])
    h = word_hash[pos]
    for k in range(1, ngram):
        h = _fmix64(h * _CHAIN_MUL + word_hash[pos + k])
    hashes = (_fmix64(h) >> _U64(32)).astype(_U32)
    return hashes, n_shingles.astype(np.int64), status.astype(np.uint8)


def shingle_hashes(text: str, cfg: DedupConfig) -> np.ndarray:
    """The shingle hashes of one text (what a datasketch MinHash would be updated with)."""
    return compute_shingle_hashes([text], cfg.ngram)[0]


def compute_signatures(texts: Sequence[str | None], cfg: DedupConfig,
                       permutations: tuple[np.ndarray, np.ndarray] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MinHash signatures of a batch of texts, all permutations at once.

    Returns (signatures (n_texts, num_perm) uint32, n_shingles (n_texts,), status (n_texts,)); rows of
    skipped texts hold the empty-sketch value 2**32 - 1 everywhere.
    """
    a, b = permutations or build_permutations(cfg)
    hashes, n_shingles, status = compute_shingle_hashes(texts, cfg.ngram)
    sig = np.full((len(n_shingles), cfg.num_perm), np.iinfo(np.uint32).max, dtype=_U32)
    if len(hashes) == 0:
        return sig, n_shingles, status
    hv = _fmix32(hashes)
    text_of = np.repeat(np.arange(len(n_shingles)), n_shingles)
    for start in range(0, len(hv), _BLOCK_SHINGLES):
        stop = min(start + _BLOCK_SHINGLES, len(hv))
        phv = hv[start:stop, None] * a[None, :] + b[None, :]  # (block, num_perm), wraps mod 2**32
        owner = text_of[start:stop]
        seg = np.concatenate([[0], np.flatnonzero(np.diff(owner)) + 1])
        rows = owner[seg]
        # a text may straddle two blocks, hence the min with what is already there
        sig[rows] = np.minimum(sig[rows], np.minimum.reduceat(phv, seg, axis=0))
    return sig, n_shingles, status


def to_lean_minhash(signature: np.ndarray, cfg: DedupConfig):
    """A signature row as the datasketch `LeanMinHash` that `MinHashLSH` indexes."""
    from datasketch import LeanMinHash

    return LeanMinHash(seed=cfg.seed, hashvalues=signature, scheme=SCHEME)


# ---------------------------------------------------------------------------------------------- map
@dataclasses.dataclass
class Signatures:
    """Signatures of a run of documents (one shard, or a whole corpus after `concat_signatures`)."""

    doc_id: np.ndarray  # (n,) str
    source_doc_id: np.ndarray  # (n,) str, "" when null
    shard: np.ndarray  # (n,) int32
    row: np.ndarray  # (n,) int32, row inside the shard
    status: np.ndarray  # (n,) uint8: STATUS_OK / STATUS_EMPTY / STATUS_TOO_SHORT
    n_shingles: np.ndarray  # (n,) int64
    signatures: np.ndarray  # (n, num_perm) uint32

    def __len__(self) -> int:
        return len(self.doc_id)

    @property
    def ok(self) -> np.ndarray:
        return self.status == STATUS_OK


def compute_shard_signatures(shard_path: Path, cfg: DedupConfig, shard: int = 0) -> Signatures:
    """Map: signatures of every document of one shard file (pure; reads only the shard)."""
    perms = build_permutations(cfg)
    parts = []
    for batch in read_shard_batches(Path(shard_path), ["doc_id", "text", "source_doc_id"], cfg.batch_docs):
        sig, n_sh, status = compute_signatures(batch.column("text").to_pylist(), cfg, perms)
        parts.append((batch.column("doc_id").to_numpy(zero_copy_only=False).astype(str),
                      pc.fill_null(batch.column("source_doc_id"), "").to_numpy(zero_copy_only=False).astype(str),
                      status, n_sh, sig))
    n = sum(len(p[0]) for p in parts)
    if not parts:
        return _empty_signatures(cfg)
    return Signatures(
        doc_id=np.concatenate([p[0] for p in parts]),
        source_doc_id=np.concatenate([p[1] for p in parts]),
        shard=np.full(n, shard, dtype=np.int32),
        row=np.arange(n, dtype=np.int32),
        status=np.concatenate([p[2] for p in parts]),
        n_shingles=np.concatenate([p[3] for p in parts]),
        signatures=np.concatenate([p[4] for p in parts]),
    )


def _empty_signatures(cfg: DedupConfig) -> Signatures:
    return Signatures(np.zeros(0, dtype=str), np.zeros(0, dtype=str), np.zeros(0, np.int32),
                      np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.int64),
                      np.zeros((0, cfg.num_perm), dtype=_U32))


def concat_signatures(parts: Sequence[Signatures], cfg: DedupConfig) -> Signatures:
    """Reduce: concatenate per-shard signatures in shard order (associative)."""
    if not parts:
        return _empty_signatures(cfg)
    fields = [f.name for f in dataclasses.fields(Signatures)]
    return Signatures(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})


def _save_signatures(sigs: Signatures, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **dataclasses.asdict(sigs))


def _load_signatures(path: Path, shard: int) -> Signatures:
    with np.load(path, allow_pickle=False) as z:
        sigs = Signatures(**{f.name: z[f.name] for f in dataclasses.fields(Signatures)})
    # the cache is keyed by content, so two byte-identical shards share a file: renumber on load
    sigs.shard = np.full(len(sigs), shard, dtype=np.int32)
    return sigs


def _map_shard(job: tuple[str, int], cfg: DedupConfig) -> tuple[int, Signatures]:
    path, shard = job
    return shard, compute_shard_signatures(Path(path), cfg, shard)


# ---------------------------------------------------------------------------------------------- driver
@dataclasses.dataclass
class CorpusSignatures:
    corpus: str
    content_hash: str
    sigs: Signatures
    n_shards_cached: int
    n_shards_computed: int


def build_signatures(store: Store, corpus: str, cfg: DedupConfig, progress: bool = True) -> CorpusSignatures:
    """Signatures of a whole corpus: cached shards are loaded, the others mapped in worker processes."""
    info = store.corpus(corpus)  # raises UnknownCorpus listing the store's corpora
    cache_dir = store.artifact_dir("dedup_signatures", corpus)
    shards = store.shards(corpus)
    cache = {s.shard: cache_dir / f"{s.content_hash}__{cfg.signature_key}.npz" for s in shards}
    todo = [(str(s.path), s.shard) for s in shards if not cache[s.shard].exists()]
    done: dict[int, Signatures] = {}
    if todo:
        workers = min(cfg.workers or os.cpu_count() or 1, len(todo))
        n_todo_docs = sum(s.n_docs for s in shards if not cache[s.shard].exists())
        if cfg.workers == 0 and n_todo_docs < _MIN_DOCS_FOR_POOL:
            workers = 1
        bar = tqdm(total=len(todo), desc=f"minhash {corpus}", unit="shard", disable=not progress)
        if workers <= 1:
            results = (_map_shard(job, cfg) for job in todo)
            pool = None
        else:
            # spawn, not fork: polars and numpy hold thread pools that fork would copy mid-flight
            pool = multiprocessing.get_context("spawn").Pool(workers)
            results = pool.imap_unordered(partial(_map_shard, cfg=cfg), todo)
        try:
            for shard, sigs in results:
                _save_signatures(sigs, cache[shard])
                done[shard] = sigs
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.close()
                pool.join()
    parts = [done[s.shard] if s.shard in done else _load_signatures(cache[s.shard], s.shard) for s in shards]
    current = set(cache.values())
    for stale in cache_dir.glob(f"*__{cfg.signature_key}.npz"):  # shards since rewritten or removed
        if stale not in current:
            stale.unlink(missing_ok=True)
    log.info("signatures of %s: %d shards computed, %d from cache", corpus, len(todo), len(shards) - len(todo))
    return CorpusSignatures(corpus, info.content_hash, concat_signatures(parts, cfg),
                            n_shards_cached=len(shards) - len(todo), n_shards_computed=len(todo))


# ---------------------------------------------------------------------------------------------- LSH + clusters
def _estimate(sig: np.ndarray, one: np.ndarray) -> np.ndarray:
    """Signature Jaccard estimate of `one` against every row of `sig`."""
    return np.count_nonzero(sig == one[None, :], axis=1) / sig.shape[1]


def find_pairs_within(sigs: np.ndarray, cfg: DedupConfig, progress: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified near-duplicate pairs (i < j) among the rows of `sigs` (n, num_perm)."""
    lsh = cfg.build_lsh()
    pi, pj, pe = [], [], []
    # query-then-insert: each pair is met once, from its later member
    for j in tqdm(range(len(sigs)), desc="lsh", unit="doc", disable=not progress, mininterval=1.0):
        m = to_lean_minhash(sigs[j], cfg)
        cand = lsh.query(m)
        if cand:
            cand = np.asarray(sorted(cand), dtype=np.int64)
            est = _estimate(sigs[cand], sigs[j])
            keep = est >= cfg.threshold
            pi.append(cand[keep])
            pj.append(np.full(int(keep.sum()), j, dtype=np.int64))
            pe.append(est[keep])
        lsh.insert(j, m, check_duplication=False)
    return _cat_pairs(pi, pj, pe)


def find_pairs_across(sigs_a: np.ndarray, sigs_b: np.ndarray, cfg: DedupConfig, progress: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Verified pairs (i in a, j in b) with estimated Jaccard >= threshold."""
    lsh = cfg.build_lsh()
    with lsh.insertion_session() as session:
        for j in range(len(sigs_b)):
            session.insert(j, to_lean_minhash(sigs_b[j], cfg), check_duplication=False)
    pi, pj, pe = [], [], []
    for i in tqdm(range(len(sigs_a)), desc="lsh query", unit="doc", disable=not progress, mininterval=1.0):
        cand = lsh.query(to_lean_minhash(sigs_a[i], cfg))
        if cand:
            cand = np.asarray(sorted(cand), dtype=np.int64)
            est = _estimate(sigs_b[cand], sigs_a[i])
            keep = est >= cfg.threshold
            pi.append(np.full(int(keep.sum()), i, dtype=np.int64))
            pj.append(cand[keep])
            pe.append(est[keep])
    return _cat_pairs(pi, pj, pe)


def _cat_pairs(pi, pj, pe):
    if not pi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return np.concatenate(pi), np.concatenate(pj), np.concatenate(pe)


def build_clusters(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cluster label per item: connected components (union-find) of the pair graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# ---------------------------------------------------------------------------------------------- analyses
@dataclasses.dataclass
class DedupReport:
    summary: dict
    clusters: pl.DataFrame  # dup_clusters rows (within) or empty
    pairs: pl.DataFrame  # dup_pairs rows
    source: pl.DataFrame | None  # dup_source rows for synthetic corpora
    examples: list[dict]  # largest clusters (within) or matches (across), with snippets

    def as_dict(self) -> dict:
        return {"summary": self.summary, "examples": self.examples}


def _params(cfg: DedupConfig) -> dict:
    return {"threshold": cfg.threshold, "num_perm": cfg.num_perm, "ngram": cfg.ngram, "seed": cfg.seed,
            "config": cfg.as_json()}


def _skip_counts(sigs: Signatures) -> dict:
    return {"n_docs": len(sigs), "n_docs_hashed": int(sigs.ok.sum()),
            "n_empty": int((sigs.status == STATUS_EMPTY).sum()),
            "n_too_short": int((sigs.status == STATUS_TOO_SHORT).sum())}


def _write_skipped(store: Store, cs: CorpusSignatures, cfg: DedupConfig) -> None:
    s = cs.sigs
    bad = np.flatnonzero(~s.ok)
    df = pl.DataFrame({"corpus": [cs.corpus] * len(bad), "doc_id": s.doc_id[bad].tolist(),
                       "shard": s.shard[bad], "row": s.row[bad],
                       "reason": [SKIP_REASONS[int(x)] for x in s.status[bad]],
                       "ngram": [cfg.ngram] * len(bad)},
                      schema={"corpus": pl.String, "doc_id": pl.String, "shard": pl.Int32, "row": pl.Int32,
                              "reason": pl.String, "ngram": pl.Int64})
    store.put_result("dup_skipped", f"{cs.corpus}__n{cfg.ngram}", df)


def read_snippets(store: Store, corpus: str, shard: np.ndarray, row: np.ndarray, n_chars: int = 160) -> list[str]:
    """The first characters of a few documents, addressed by (shard, row); each shard is read once."""
    paths = {s.shard: s.path for s in store.shards(corpus)}
    texts: dict[tuple[int, int], str] = {}
    for sh in sorted(set(shard.tolist())):
        wanted = sorted({int(r) for s_, r in zip(shard.tolist(), row.tolist()) if s_ == sh})
        column = pq.read_table(paths[sh], columns=["text"]).column("text").take(pa.array(wanted))
        texts.update({(sh, r): t or "" for r, t in zip(wanted, column.to_pylist())})
    return [" ".join(texts[(int(sh), int(r))].split())[:n_chars] for sh, r in zip(shard.tolist(), row.tolist())]


def analyze_corpus(store: Store, corpus: str, cfg: DedupConfig, progress: bool = True,
                   n_examples: int = 5) -> DedupReport:
    """Near-duplicate clusters inside one corpus; writes dup_clusters, dup_pairs, dup_summary."""
    t0 = time.perf_counter()
    cs = build_signatures(store, corpus, cfg, progress)
    s = cs.sigs
    idx = np.flatnonzero(s.ok)
    i, j, est = find_pairs_within(s.signatures[idx], cfg, progress)
    labels = build_clusters(len(idx), i, j)
    sizes = np.bincount(labels, minlength=len(idx)) if len(idx) else np.zeros(0, np.int64)
    in_cluster = sizes[labels] >= 2 if len(idx) else np.zeros(0, bool)
    # representative = first member in corpus order (shard, row): deterministic under resharding
    members = np.flatnonzero(in_cluster)
    lab = labels[members]
    uniq, first = np.unique(lab, return_index=True)  # members ascend, so `first` is the earliest
    rep_local = members[first[np.searchsorted(uniq, lab)]] if len(members) else np.zeros(0, np.int64)
    g = idx[members]
    # cluster_id names the representative by position ("shard:row"): doc_ids of exact copies coincide
    rep_g = idx[rep_local]
    cluster_key = [f"{a}:{b}" for a, b in zip(s.shard[rep_g].tolist(), s.row[rep_g].tolist())]
    est_to_rep = (np.count_nonzero(s.signatures[g] == s.signatures[idx[rep_local]], axis=1) / cfg.num_perm
                  if len(members) else np.zeros(0))
    params = _params(cfg)
    clusters = pl.DataFrame({
        "corpus": [corpus] * len(g), "cluster_id": cluster_key,
        "representative_doc_id": s.doc_id[rep_g].tolist(), "doc_id": s.doc_id[g].tolist(), "shard": s.shard[g], "row": s.row[g],
        "cluster_size": sizes[labels[members]].astype(np.int64) if len(members) else np.zeros(0, np.int64),
        "is_representative": (members == rep_local), "jaccard_to_representative": est_to_rep,
        "n_shingles": s.n_shingles[g],
    }, schema_overrides={"cluster_id": pl.String, "representative_doc_id": pl.String, "doc_id": pl.String}
    ).with_columns(
        **{k: pl.lit(v) for k, v in params.items()})
    pairs = _pairs_frame(corpus, corpus, "within", s, idx[i], s, idx[j], est, params)
    n_clusters = int((sizes >= 2).sum())
    n_in = int(len(members))
    counts = _skip_counts(s)
    summary = {
        "corpus": corpus, "against": None, "mode": "within", **counts,
        "n_clusters": n_clusters, "n_docs_in_clusters": n_in,
        "n_duplicates": n_in - n_clusters,
        "dup_rate": (n_in - n_clusters) / counts["n_docs"] if counts["n_docs"] else 0.0,
        "n_pairs": int(len(est)), "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "content_hash": cs.content_hash,
    }
    source = _source_if_synthetic(store, cs, cfg, progress, summary)
    summary.update(params, elapsed_s=time.perf_counter() - t0, created_at=datetime.now(timezone.utc).isoformat())
    part = f"{corpus}__{cfg.result_key}"
    store.put_result("dup_clusters", part, clusters)
    store.put_result("dup_pairs", f"{corpus}__vs__{corpus}__{cfg.result_key}", pairs)
    store.put_result("dup_summary", f"{corpus}__vs__{corpus}__{cfg.result_key}", pl.DataFrame([summary]))
    _write_skipped(store, cs, cfg)
    examples = []
    if n_clusters:
        top = (clusters.filter(pl.col("is_representative")).sort(["cluster_size", "shard", "row"],
                                                                  descending=[True, False, False]).head(n_examples))
        snippets = read_snippets(store, corpus, top["shard"].to_numpy(), top["row"].to_numpy())
        examples = [{"cluster_id": c, "cluster_size": int(n), "snippet": t}
                    for c, n, t in zip(top["cluster_id"], top["cluster_size"], snippets)]
    return DedupReport(summary, clusters, pairs, source, examples)


def analyze_against(store: Store, corpus: str, against: str, cfg: DedupConfig, progress: bool = True,
                    n_examples: int = 5) -> DedupReport:
    """Share of `corpus` documents with a near-duplicate in `against`; writes dup_pairs, dup_summary."""
    t0 = time.perf_counter()
    if against == corpus:
        raise ValueError(f"--against {against} is the corpus itself; leave out --against for the "
                         "near-duplicates inside one corpus")
    store.corpus(against)  # fail before hashing anything
    ca = build_signatures(store, corpus, cfg, progress)
    cb = build_signatures(store, against, cfg, progress)
    a, b = ca.sigs, cb.sigs
    ia, ib = np.flatnonzero(a.ok), np.flatnonzero(b.ok)
    i, j, est = find_pairs_across(a.signatures[ia], b.signatures[ib], cfg, progress)
    params = _params(cfg)
    pairs = _pairs_frame(corpus, against, "across", a, ia[i], b, ib[j], est, params)
    n_with = int(len(np.unique(i)))
    counts = _skip_counts(a)
    summary = {
        "corpus": corpus, "against": against, "mode": "across", **counts,
        "n_against_docs": len(b), "n_against_hashed": int(b.ok.sum()),
        "n_with_match": n_with,
        "share_with_match": n_with / counts["n_docs_hashed"] if counts["n_docs_hashed"] else 0.0,
        "n_pairs": int(len(est)), "content_hash": ca.content_hash, "against_content_hash": cb.content_hash,
    }
    source = _source_if_synthetic(store, ca, cfg, progress, summary)
    summary.update(params, elapsed_s=time.perf_counter() - t0, created_at=datetime.now(timezone.utc).isoformat())
    part = f"{corpus}__vs__{against}__{cfg.result_key}"
    store.put_result("dup_pairs", part, pairs)
    store.put_result("dup_summary", part, pl.DataFrame([summary]))
    _write_skipped(store, ca, cfg)
    examples = []
    if len(est):
        # the best match of each matched document, highest estimates first
        best = pairs.sort("jaccard_est", descending=True).unique("doc_id", keep="first", maintain_order=True)
        best = best.head(n_examples)
        sa = read_snippets(store, corpus, best["shard"].to_numpy(), best["row"].to_numpy())
        sb = read_snippets(store, against, best["against_shard"].to_numpy(), best["against_row"].to_numpy())
        examples = [{"doc_id": d, "against_doc_id": o, "jaccard_est": float(e), "snippet": x, "against_snippet": y}
                    for d, o, e, x, y in zip(best["doc_id"], best["against_doc_id"], best["jaccard_est"], sa, sb)]
    return DedupReport(summary, pl.DataFrame(), pairs, source, examples)


def _pairs_frame(corpus, against, mode, a: Signatures, ga, b: Signatures, gb, est, params) -> pl.DataFrame:
    return pl.DataFrame({
        "corpus": [corpus] * len(ga), "doc_id": a.doc_id[ga].tolist(), "shard": a.shard[ga], "row": a.row[ga],
        "against": [against] * len(ga), "against_doc_id": b.doc_id[gb].tolist(),
        "against_shard": b.shard[gb], "against_row": b.row[gb], "mode": [mode] * len(ga),
        "jaccard_est": np.asarray(est, dtype=np.float64),
    }, schema_overrides={"corpus": pl.String, "doc_id": pl.String, "against": pl.String,
                         "against_doc_id": pl.String, "mode": pl.String}).with_columns(
        **{k: pl.lit(v) for k, v in params.items()})


# ---------------------------------------------------------------------------------------------- source similarity
def find_source_corpora(store: Store, info: CorpusInfo) -> list[str]:
    """The corpus a synthetic corpus was generated from (meta['source']), else every natural corpus."""
    src = (info.meta or {}).get("source")
    if isinstance(src, str) and store.has_corpus(src):
        return [src]
    if src:
        log.warning("source corpus %r of %s is not in the store; searching all natural corpora", src, info.name)
    return [c.name for c in store.corpora() if c.kind == "natural" and c.name != info.name]


def compute_source_similarity(store: Store, cs: CorpusSignatures, cfg: DedupConfig,
                              progress: bool = True) -> pl.DataFrame:
    """Estimated Jaccard between each synthetic document and its own `source_doc_id` document."""
    s = cs.sigs
    est = np.full(len(s), np.nan)
    src_corpus = np.full(len(s), None, dtype=object)
    want = s.ok & (s.source_doc_id != "")
    for name in find_source_corpora(store, store.corpus(cs.corpus)):
        pending = np.flatnonzero(want & np.isnan(est))
        if not len(pending):
            break
        src = build_signatures(store, name, cfg, progress).sigs
        ok = np.flatnonzero(src.ok)
        # first occurrence of each source doc_id (doc_ids are content hashes, exact copies share one)
        ids, first = np.unique(src.doc_id[ok], return_index=True)
        pos = np.searchsorted(ids, s.source_doc_id[pending])
        pos = np.minimum(pos, max(len(ids) - 1, 0))
        found = (ids[pos] == s.source_doc_id[pending]) if len(ids) else np.zeros(len(pending), bool)
        rows_a = pending[found]
        rows_s = ok[first[pos[found]]]
        est[rows_a] = np.count_nonzero(s.signatures[rows_a] == src.signatures[rows_s], axis=1) / cfg.num_perm
        src_corpus[rows_a] = name
    has_src = s.source_doc_id != ""
    return pl.DataFrame({
        "corpus": [cs.corpus] * int(has_src.sum()), "doc_id": s.doc_id[has_src].tolist(),
        "source_doc_id": s.source_doc_id[has_src].tolist(), "source_corpus": src_corpus[has_src].tolist(),
        "jaccard_est": est[has_src],
    }, schema_overrides={"corpus": pl.String, "doc_id": pl.String, "source_doc_id": pl.String,
                         "source_corpus": pl.String}).with_columns(
        jaccard_est=pl.col("jaccard_est").fill_nan(None),
        num_perm=pl.lit(cfg.num_perm), ngram=pl.lit(cfg.ngram), seed=pl.lit(cfg.seed))


def _source_if_synthetic(store: Store, cs: CorpusSignatures, cfg: DedupConfig, progress: bool,
                         summary: dict) -> pl.DataFrame | None:
    info = store.corpus(cs.corpus)
    if info.kind != "synthetic":
        return None
    df = compute_source_similarity(store, cs, cfg, progress)
    j = df["jaccard_est"].drop_nulls()
    summary.update({
        "n_source_found": len(j), "n_source_missing": len(df) - len(j),
        "source_jaccard_mean": float(j.mean()) if len(j) else None,
        "source_jaccard_p10": float(j.quantile(0.1)) if len(j) else None,
        "source_jaccard_median": float(j.median()) if len(j) else None,
        "source_jaccard_p90": float(j.quantile(0.9)) if len(j) else None,
        "source_share_near_dup": float((j >= cfg.threshold).mean()) if len(j) else None,
    })
    store.put_result("dup_source", f"{cs.corpus}__{cfg.signature_key}", df)
    return df


# ---------------------------------------------------------------------------------------------- curation
@dataclasses.dataclass
class CurateResult:
    corpus: str
    out: str
    n_docs: int
    n_kept: int
    n_dropped: int
    n_already_written: int
    summary: dict

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def curate(store: Store, corpus: str, out: str, cfg: DedupConfig, progress: bool = True) -> CurateResult:
    """Write corpus `out`: `corpus` with one document per near-duplicate cluster (the first in corpus order).

    Dropped documents are listed in result table `dedup_dropped` (part `out`) with the document kept in
    their place and the reason. Empty and too-short documents are not duplicates and are kept. Rerunning
    after an interruption appends only the shards not yet written.
    """
    info = store.corpus(corpus)
    report = analyze_corpus(store, corpus, cfg, progress)
    c = report.clusters
    dropped = c.filter(~pl.col("is_representative"))
    reps = c.filter(pl.col("is_representative")).select(
        "cluster_id", kept_doc_id="doc_id", kept_shard="shard", kept_row="row")
    dropped_df = (dropped.join(reps, on="cluster_id", how="left")
                  .select(pl.lit(out).alias("out"), "corpus", "doc_id", "shard", "row", "cluster_id",
                          "cluster_size", "kept_doc_id", "kept_shard", "kept_row",
                          pl.col("jaccard_to_representative").alias("jaccard_est"),
                          pl.when(pl.col("jaccard_to_representative") >= 1.0)
                          .then(pl.lit("near_duplicate:identical_signature"))
                          .otherwise(pl.lit("near_duplicate")).alias("reason"),
                          "threshold", "num_perm", "ngram", "seed", "config"))
    meta = {"dedup_of": corpus, "dedup_config": json.loads(cfg.as_json()),
            "dedup_content_hash": report.summary["content_hash"],
            "n_dropped": dropped_df.height, **({"source": info.meta["source"]} if "source" in info.meta else {})}
    with store.lock(wait_s=60, purpose=f"dedup {corpus} -> {out}"):
        if store.has_corpus(out):
            cur = store.corpus(out)
            if cur.meta.get("dedup_of") != corpus or cur.meta.get("dedup_config") != meta["dedup_config"] \
                    or cur.meta.get("dedup_content_hash") != meta["dedup_content_hash"]:
                raise StoreError(f"corpus {out!r} already exists and is not this deduplication of {corpus!r}; "
                                 f"`python -m corpora rm {out}` first or pick another --out")
            # resuming: skip what an interrupted run already wrote
            written = np.array(sorted(store.doc_ids(out)), dtype=str)
        else:
            store.create_corpus(out, info.kind, info.role, info.synthetic_type, meta)
            written = np.zeros(0, dtype=str)
        drop_by_shard = {int(sh): np.asarray(rows, dtype=np.int64)
                         for sh, rows in dropped_df.group_by("shard").agg(pl.col("row")).iter_rows()}
        n_kept = n_prev = 0
        for s in tqdm(store.shards(corpus), desc=f"dedup {corpus} -> {out}", unit="shard", disable=not progress):
            table = pq.read_table(s.path)
            keep = np.ones(table.num_rows, dtype=bool)
            keep[drop_by_shard.get(s.shard, np.zeros(0, np.int64))] = False
            n_kept += int(keep.sum())
            if len(written):
                done = np.isin(table.column("doc_id").to_numpy(zero_copy_only=False).astype(str), written)
                n_prev += int((keep & done).sum())
                keep &= ~done
            if keep.any():
                store.append_shard(out, table.filter(pa.array(keep)))
    store.put_result("dedup_dropped", out, dropped_df)
    return CurateResult(corpus, out, report.summary["n_docs"], n_kept, dropped_df.height, n_prev, report.summary)


# ---------------------------------------------------------------------------------------------- CLI
def _add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=DedupConfig.threshold,
                   help="Jaccard similarity of word-shingle sets at or above which documents are duplicates "
                        "(default 0.8, must be in (0, 1))")
    p.add_argument("--num-perm", type=int, default=DedupConfig.num_perm, help="MinHash permutations (default 128)")
    p.add_argument("--ngram", type=int, default=DedupConfig.ngram, help="words per shingle (default 5)")
    p.add_argument("--seed", type=int, default=DedupConfig.seed, help="MinHash permutation seed (default 1)")
    p.add_argument("--lsh-fn-weight", type=float, default=DedupConfig.lsh_fn_weight,
                   help="weight of missed pairs vs extra candidates when datasketch picks LSH bands (default 0.95)")
    p.add_argument("--workers", type=int, default=0, help="signature worker processes (default 0: one per core, "
                        "or in-process when fewer than 8000 documents need hashing)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _config_from_args(args) -> DedupConfig:
    return DedupConfig(threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram, seed=args.seed,
                       lsh_fn_weight=args.lsh_fn_weight, workers=args.workers)


def add_curate_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m corpora dedup CORPUS --out NEW` (the caller adds --store)."""
    parser.add_argument("corpus", help="corpus to deduplicate")
    parser.add_argument("--out", required=True, help="name of the new, deduplicated corpus")
    _add_config_arguments(parser)


def run_curate_cli(args) -> int:
    """`python -m corpora dedup`: curate, print a summary; usage errors return 2."""
    try:
        cfg = _config_from_args(args)
        store = Store(resolve_store_path(getattr(args, "store", None)))
        result = curate(store, args.corpus, args.out, cfg, progress=not args.json)
    except (StoreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
        return 0
    print(f"{result.corpus} -> {result.out}: {result.n_docs} documents, kept {result.n_kept}, "
          f"dropped {result.n_dropped} near-duplicates "
          f"(threshold {cfg.threshold}, {cfg.ngram}-word shingles, {cfg.num_perm} permutations)")
    print(f"dropped documents and why: python -m corpora sql \"SELECT * FROM dedup_dropped WHERE out = '{result.out}'\"")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stats.dedup",
        description="Near-duplicate analysis with MinHash LSH, inside a corpus or against another corpus.",
        epilog="examples:\n  python -m stats.dedup --corpus cc\n  python -m stats.dedup --corpus hq --against cc\n"
               "text normalisation: NFKC, lower case, words = runs of letters/digits/_ (punctuation and "
               "whitespace ignored); a shingle is --ngram consecutive words",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="corpus to analyse")
    p.add_argument("--against", help="compare with this corpus instead of within --corpus")
    p.add_argument("--examples", type=int, default=5, help="clusters / matches to show (default 5)")
    p.add_argument("--store", help="store directory (default: $SYNTHMIX_STORE, else ./store)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    _add_config_arguments(p)
    return p


def _print_report(report: DedupReport) -> None:
    s = report.summary
    skipped = f" (skipped: {s['n_empty']} empty, {s['n_too_short']} shorter than one shingle)" \
        if s["n_empty"] or s["n_too_short"] else ""
    if s["mode"] == "within":
        print(f"{s['corpus']}: {s['n_docs']} documents{skipped}, {s['n_clusters']} near-duplicate clusters, "
              f"{s['n_docs_in_clusters']} documents in clusters, duplicate rate {s['dup_rate']:.2%} "
              f"(threshold {s['threshold']}, {s['ngram']}-word shingles, {s['num_perm']} permutations)")
        for e in report.examples:
            print(f"  [{e['cluster_size']} docs] {e['snippet']}")
    else:
        print(f"{s['corpus']} vs {s['against']}: {s['n_with_match']} of {s['n_docs_hashed']} documents "
              f"({s['share_with_match']:.2%}) have a near-duplicate in {s['against']}{skipped}")
        for e in report.examples:
            print(f"  J~{e['jaccard_est']:.2f} {e['snippet'][:70]!r}\n          ~ {e['against_snippet'][:70]!r}")
    if s.get("n_source_found") is not None:
        if s["n_source_found"]:
            print(f"similarity to own source document ({s['n_source_found']} found, {s['n_source_missing']} "
                  f"missing): mean {s['source_jaccard_mean']:.3f}, p10 {s['source_jaccard_p10']:.3f}, median "
                  f"{s['source_jaccard_median']:.3f}, p90 {s['source_jaccard_p90']:.3f}; "
                  f"{s['source_share_near_dup']:.2%} are near-copies of their source")
        else:
            print(f"similarity to own source document: no source document found ({s['n_source_missing']} missing)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = _config_from_args(args)
        store = Store(resolve_store_path(args.store))
        with store.writer("python -m stats.dedup"):
            if args.against:
                report = analyze_against(store, args.corpus, args.against, cfg, not args.json, args.examples)
            else:
                report = analyze_corpus(store, args.corpus, cfg, not args.json, args.examples)
    except (StoreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        _print_report(report)
    return 0


if __name__ == "__main__":
    from corpora.exits import run_command

    sys.exit(run_command("", main))
