"""Near-duplicate analysis with MinHash LSH, within one corpus and across two, out of core.

Pipeline (the shape of datatrove's MinHash stages and text-dedup, sharing one `DedupConfig`):

1. *map, per shard* (`band_shard`, in worker processes): text -> normalised words -> word n-gram
   shingles -> one 32-bit hash per shingle -> MinHash signature of `num_perm` values, for a whole batch
   of documents at once with numpy -> band keys: the signature cut into `bands` bands of `rows` values
   (datasketch `MinHashLSH`'s split for the threshold), each band hashed to 64 bits. Written per shard
   under `store.artifact_dir("dedup_bands", corpus)`: signatures (`.sig.npy`, memory-mappable),
   document columns (`.docs.parquet`) and band keys (`.bands.parquet`: band, key, row), keyed by (shard
   content hash, parameters), so a rerun, a grown corpus or an interrupted run only maps the shards not
   yet done.
2. *candidates, one query* (`find_candidates`): DuckDB groups equal (band, key) over every band file
   (`GROUP BY`, join, `DISTINCT`; beyond `memory_limit` it spills to a temporary folder of the store),
   and each bucket gives its pairs. A bucket of more than `max_bucket` documents pairs every member with
   its first document only (no n^2 blow-up); the summary counts such buckets.
3. *verification* (`verify_candidates`): a candidate is kept if its signature Jaccard estimate (share
   of equal signature values) is >= threshold; signatures are read from the memory-mapped shard files
   in batches of pairs.
4. *clusters*: connected components (scipy.sparse.csgraph) over the verified pairs, on the documents that
   have one. The representative of a cluster is its first document in corpus order.

Memory is flat in the corpus size apart from 1 byte per document (its status) and what grows with the
pairs found; disk holds the per-shard files (about num_perm x 4 + bands x 14 bytes per document) and the
grouping's spill. Before any work, the analysis refuses with a one-line error when the store's disk lacks
room for them. `--against` (synthetic vs source, train vs test) runs the same banded join between two
corpora's band files.

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
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
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

from corpora.executor import EngineError, add_engine_args, get_executor
from corpora.store import (
    CorpusInfo,
    ShardInfo,
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
_MEMORY_RE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
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
    # band split of the signature: `bands` bands of `rows` values each (0, 0: datasketch's optimal split for
    # threshold, num_perm and lsh_fn_weight, as MinHashLSH picks it)
    bands: int = 0
    rows: int = 0
    # an LSH bucket (documents sharing one band) with more members than this is not expanded into all its
    # pairs: every member is compared with the bucket's first document only (boilerplate shared by
    # thousands of documents would otherwise give n^2 candidates); the summary counts such buckets
    max_bucket: int = 256
    memory_limit: str = "256MB"  # DuckDB memory for the candidate grouping; beyond it, it spills to disk
    threads: int = 0  # DuckDB threads; 0 = one per core
    workers: int = 0  # signature worker processes; 0 = auto (cores, in-process for small jobs)
    engine: str | None = None  # where shards are hashed: local | ray (None: $SYNTHMIX_ENGINE, else local)
    ray_address: str | None = None  # join this Ray cluster (None: $RAY_ADDRESS, else a local Ray)
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
        if (self.bands == 0) != (self.rows == 0) or self.bands < 0 or self.rows < 0 \
                or self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands and rows must both be 0 (automatic) or positive with bands x rows <= "
                             f"num_perm ({self.num_perm}), got {self.bands} x {self.rows}")
        if self.max_bucket < 2:
            raise ValueError(f"max_bucket must be >= 2, got {self.max_bucket}")
        if not _MEMORY_RE.match(self.memory_limit):
            raise ValueError(f"memory_limit must look like 256MB or 2GB, got {self.memory_limit!r}")
        if self.workers < 0 or self.batch_docs < 1 or self.threads < 0:
            raise ValueError("workers, threads must be >= 0 and batch_docs >= 1")

    @property
    def bands_rows(self) -> tuple[int, int]:
        """(bands, rows): the fields if set, else datasketch's choice for this threshold and weight."""
        if self.bands:
            return self.bands, self.rows
        return _optimal_bands(self.threshold, self.num_perm, round(self.lsh_fn_weight, 6))

    def with_bands(self) -> "DedupConfig":
        """This config with the band split resolved (so map workers never import datasketch)."""
        bands, rows = self.bands_rows
        return dataclasses.replace(self, bands=bands, rows=rows)

    @property
    def signature_key(self) -> str:
        """Cache key of the signatures (the threshold does not change them)."""
        return f"v{SIGNATURE_VERSION}_p{self.num_perm}_n{self.ngram}_s{self.seed}"

    @property
    def band_key(self) -> str:
        bands, rows = self.bands_rows
        return f"{self.signature_key}_b{bands}r{rows}"

    @property
    def result_key(self) -> str:
        return f"t{self.threshold:g}_p{self.num_perm}_n{self.ngram}_s{self.seed}_w{self.lsh_fn_weight:g}"

    def build_lsh(self):
        """The datasketch `MinHashLSH` with this band split (the in-memory reference the tests compare with)."""
        from datasketch import MinHashLSH

        w = round(self.lsh_fn_weight, 6)
        return MinHashLSH(threshold=self.threshold, num_perm=self.num_perm, weights=(round(1.0 - w, 6), w),
                          params=self.bands_rows)

    def as_json(self) -> str:
        d = dataclasses.asdict(self)
        for k in ("workers", "batch_docs", "memory_limit", "threads", "engine", "ray_address"):  # not results
            d.pop(k)
        d["bands"], d["rows"] = self.bands_rows
        return json.dumps(d, sort_keys=True)


@functools.lru_cache(maxsize=None)
def _optimal_bands(threshold: float, num_perm: int, fn_weight: float) -> tuple[int, int]:
    from datasketch.lsh import _optimal_param  # the split MinHashLSH(threshold, num_perm, weights) uses

    return _optimal_param(threshold, num_perm, round(1.0 - fn_weight, 6), fn_weight)


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
    """Signatures of every document of one shard file (pure; reads only the shard)."""
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
    """Concatenate per-shard signatures in shard order (associative)."""
    if not parts:
        return _empty_signatures(cfg)
    fields = [f.name for f in dataclasses.fields(Signatures)]
    return Signatures(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) int64: a 64-bit hash of each band's `rows` signature values.

    Band b holds signature columns b*rows .. (b+1)*rows - 1, as in datasketch's `MinHashLSH`; two
    documents share a bucket when their band values are equal (up to a 2**-64 hash collision, which the
    verification step would drop anyway)."""
    n = len(sig)
    s = sig[:, :bands * rows].reshape(n, bands, rows).astype(_U64)
    h = np.broadcast_to((np.arange(bands, dtype=_U64) + _U64(1)) * _CHAIN_MUL, (n, bands)).copy()
    for k in range(rows):
        h = _fmix64(h * _CHAIN_MUL + s[:, :, k])
    return h.view(np.int64)


def shard_file_names(content_hash: str, cfg: DedupConfig) -> dict[str, str]:
    """File names of one shard's map outputs (keyed by shard content and the parameters they depend on)."""
    return {"sig": f"{content_hash}__{cfg.signature_key}.sig.npy",
            "docs": f"{content_hash}__{cfg.signature_key}.docs.parquet",
            "bands": f"{content_hash}__{cfg.band_key}.bands.parquet"}


def band_shard(job: tuple[str, str, str, str], cfg: DedupConfig) -> tuple[str, int]:
    """Map: one shard -> its signatures (.npy, memory-mappable), document columns and band keys (Parquet).

    `job` = (shard path, shard content hash, cache folder, temporary folder). Pure: reads the shard (or
    its cached signatures, when only the band split changed) and writes only under the temporary folder;
    the driver moves the files into the cache. Returns (content hash, number of documents)."""
    shard_path, content_hash, cache_dir, tmp_dir = job
    names = shard_file_names(content_hash, cfg)
    cached_sig, cached_docs = Path(cache_dir) / names["sig"], Path(cache_dir) / names["docs"]
    tmp = Path(tmp_dir)
    if cached_sig.exists() and cached_docs.exists():
        sig = np.load(cached_sig)
        status = pq.read_table(cached_docs, columns=["status"]).column("status").to_numpy()
    else:
        s = compute_shard_signatures(Path(shard_path), cfg)
        sig, status = s.signatures, s.status
        np.save(tmp / names["sig"], sig)
        pq.write_table(pa.table({
            "row": pa.array(s.row, pa.int32()), "doc_id": pa.array(s.doc_id.tolist(), pa.string()),
            "source_doc_id": pa.array(s.source_doc_id.tolist(), pa.string()),
            "status": pa.array(s.status, pa.uint8()), "n_shingles": pa.array(s.n_shingles, pa.int64()),
        }), tmp / names["docs"], compression="zstd")
    bands, rows = cfg.bands_rows
    ok_rows = np.flatnonzero(status == STATUS_OK).astype(np.int32)
    keys = band_keys(sig[ok_rows], bands, rows)  # (n_ok, bands)
    pq.write_table(pa.table({
        "band": pa.array(np.repeat(np.arange(bands, dtype=np.int16), len(ok_rows))),
        "key": pa.array(keys.T.ravel()),
        "row": pa.array(np.tile(ok_rows, bands)),
    }), tmp / names["bands"], compression="zstd")
    return content_hash, len(status)


def _run_map(fn, jobs: list, sizes: list[int], cfg: DedupConfig, desc: str, progress: bool):
    """Run the per-shard map through the project's executor (local processes or Ray: $SYNTHMIX_ENGINE),
    yielding results as they finish. Auto mode stays in-process for small jobs, where starting a worker
    (~1-2 s of imports) costs more than it saves."""
    small = cfg.workers == 0 and sum(sizes) < _MIN_DOCS_FOR_POOL
    with get_executor(cfg.engine, cfg.workers, cfg.ray_address) as ex:
        for _, result in ex.map(fn, jobs, desc=desc, sizes=sizes, max_workers=1 if small else None,
                                progress=progress):
            yield result


# ---------------------------------------------------------------------------------------------- driver
@dataclasses.dataclass
class BandedCorpus:
    """A corpus after the map: per-shard signature, document and band files, addressed by a global index.

    A document's global index is its position in corpus order (shard after shard, row by row), so
    `bases[k] + row` addresses row `row` of the k-th shard; the first document of a cluster in corpus
    order is the one with the smallest index."""

    corpus: str
    content_hash: str
    shards: list[ShardInfo]
    bases: np.ndarray  # (n_shards + 1,) int64
    sig_paths: list[Path]
    docs_paths: list[Path]
    band_paths: list[Path]
    status: np.ndarray  # (n_docs,) uint8
    num_perm: int
    n_shards_cached: int
    n_shards_computed: int

    @property
    def n_docs(self) -> int:
        return int(self.bases[-1])

    @property
    def ok(self) -> np.ndarray:
        return self.status == STATUS_OK

    def band_files(self) -> list[tuple[str, int]]:
        return [(str(p), int(b)) for p, b in zip(self.band_paths, self.bases[:-1])]

    def docs_files(self) -> list[tuple[str, int]]:
        return [(str(p), int(b)) for p, b in zip(self.docs_paths, self.bases[:-1])]

    def locate(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position of the shard in `shards`, row inside it) of global indices."""
        pos = np.searchsorted(self.bases, docs, side="right") - 1
        return pos, docs - self.bases[pos]

    def _by_shard(self, docs: np.ndarray):
        pos, row = self.locate(np.asarray(docs, dtype=np.int64))
        order = np.argsort(pos, kind="stable")
        cuts = np.flatnonzero(np.diff(pos[order])) + 1
        for sel in np.split(order, cuts) if len(order) else []:
            yield int(pos[sel[0]]), sel, row[sel]

    def signatures(self, docs: np.ndarray) -> np.ndarray:
        """Signature rows of global indices, read from the memory-mapped shard files (not all in RAM)."""
        out = np.empty((len(docs), self.num_perm), dtype=_U32)
        for k, sel, rows in self._by_shard(docs):
            out[sel] = np.load(self.sig_paths[k], mmap_mode="r")[rows]
        return out

    def columns(self, docs: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """Document columns (doc_id, source_doc_id, n_shingles, ...) of global indices, shard by shard."""
        out: dict[str, list] = {n: [None] * len(docs) for n in names}
        for k, sel, rows in self._by_shard(docs):
            t = pq.read_table(self.docs_paths[k], columns=names).take(pa.array(rows))
            for n in names:
                vals = t.column(n).to_pylist()
                for s, v in zip(sel.tolist(), vals):
                    out[n][s] = v
        return {n: np.asarray(v, dtype=object if v and isinstance(v[0], str) else None) if v else np.zeros(0)
                for n, v in out.items()}


def estimate_disk_bytes(n_docs_to_hash: int, n_docs: int, cfg: DedupConfig) -> int:
    """Disk the analysis needs beyond what is cached: map outputs of the shards still to do, plus the
    grouping's worst-case spill (every band row of the corpus, as DuckDB holds it) and its output."""
    bands, _ = cfg.bands_rows
    map_bytes = n_docs_to_hash * (cfg.num_perm * 4 + 80 + bands * 14)
    spill_bytes = n_docs * bands * 32
    return int(map_bytes + spill_bytes)


def _check_disk(store: Store, corpus: str, need: int) -> None:
    folder = store.artifact_dir("dedup_bands", corpus)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise StoreError(
            f"not enough disk for the near-duplicate analysis of corpus {corpus!r}: about {need / 1e9:.1f} GB "
            f"needed under {folder.parent.parent}, {free / 1e9:.1f} GB free; free space there or use a smaller "
            f"--num-perm (signatures take num_perm x 4 bytes per document)")


def build_bands(store: Store, corpus: str, cfg: DedupConfig, progress: bool = True) -> BandedCorpus:
    """Map every shard not yet done to its signature, document and band files (cached by shard content).

    An interrupted run resumes here: shards whose files are complete are not read again."""
    info = store.corpus(corpus)  # raises UnknownCorpus listing the store's corpora
    cfg = cfg.with_bands()
    shards = store.shards(corpus)
    cache_dir = store.artifact_dir("dedup_bands", corpus)
    names = {s.shard: shard_file_names(s.content_hash, cfg) for s in shards}
    done = {h for h in {s.content_hash for s in shards}
            if all((cache_dir / n).exists() for n in shard_file_names(h, cfg).values())}
    todo = {}
    for s in shards:
        if s.content_hash not in done:
            todo.setdefault(s.content_hash, s)  # byte-identical shards share their files
    n_todo_docs = sum(s.n_docs for s in todo.values())
    _check_disk(store, corpus, estimate_disk_bytes(n_todo_docs, info.n_docs, cfg))
    if todo:
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
        jobs = [(str(s.path), h, str(cache_dir), str(tmp)) for h, s in todo.items()]
        try:
            for h, _ in _run_map(partial(band_shard, cfg=cfg), jobs, [s.n_docs for s in todo.values()], cfg,
                                 f"minhash {corpus}", progress):
                # adopt: signatures and documents first, bands last (their presence marks the shard done)
                for kind in ("sig", "docs", "bands"):
                    src = tmp / shard_file_names(h, cfg)[kind]
                    if src.exists():
                        os.replace(src, cache_dir / src.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    current = {n for s in shards for n in names[s.shard].values()}
    for kind, key in (("sig.npy", cfg.signature_key), ("docs.parquet", cfg.signature_key),
                      ("bands.parquet", cfg.band_key)):
        for stale in cache_dir.glob(f"*__{key}.{kind}"):  # shards since rewritten or removed
            if stale.name not in current:
                stale.unlink(missing_ok=True)
    counts = np.array([s.n_docs for s in shards], dtype=np.int64)
    bases = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    status = (np.concatenate([pq.read_table(cache_dir / names[s.shard]["docs"], columns=["status"])
                              .column("status").to_numpy() for s in shards])
              if shards else np.zeros(0, np.uint8))
    bc = BandedCorpus(corpus, info.content_hash, shards, bases,
                      [cache_dir / names[s.shard]["sig"] for s in shards],
                      [cache_dir / names[s.shard]["docs"] for s in shards],
                      [cache_dir / names[s.shard]["bands"] for s in shards],
                      status, cfg.num_perm, n_shards_cached=len(shards) - sum(s.content_hash in todo for s in shards),
                      n_shards_computed=len(todo))
    log.info("bands of %s: %d shards computed, %d from cache", corpus, bc.n_shards_computed, bc.n_shards_cached)
    return bc


@dataclasses.dataclass
class CorpusSignatures:
    corpus: str
    content_hash: str
    sigs: Signatures
    n_shards_cached: int
    n_shards_computed: int


def build_signatures(store: Store, corpus: str, cfg: DedupConfig, progress: bool = True) -> CorpusSignatures:
    """All signatures of a corpus in memory (small corpora, tests, notebooks); the analyses do not use it."""
    bc = build_bands(store, corpus, cfg, progress)
    docs = np.arange(bc.n_docs, dtype=np.int64)
    cols = bc.columns(docs, ["doc_id", "source_doc_id", "n_shingles"]) if bc.n_docs else {}
    pos, row = bc.locate(docs)
    shard_no = np.array([s.shard for s in bc.shards], dtype=np.int32)
    sigs = Signatures(doc_id=np.asarray(cols.get("doc_id", []), dtype=str),
                      source_doc_id=np.asarray(cols.get("source_doc_id", []), dtype=str),
                      shard=shard_no[pos] if len(docs) else np.zeros(0, np.int32), row=row.astype(np.int32),
                      status=bc.status, n_shingles=np.asarray(cols.get("n_shingles", []), dtype=np.int64),
                      signatures=bc.signatures(docs))
    return CorpusSignatures(corpus, bc.content_hash, sigs, bc.n_shards_cached, bc.n_shards_computed)


# ---------------------------------------------------------------------------------------------- candidates
def _duckdb(cfg: DedupConfig, tmp_dir: Path | None):
    """A DuckDB connection for one grouping: `memory_limit`, and spilling to `tmp_dir` (None: no spilling)."""
    import duckdb

    if tmp_dir is not None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"memory_limit": cfg.memory_limit,
                                 "temp_directory": str(tmp_dir) if tmp_dir is not None else "",
                                 "threads": cfg.threads or os.cpu_count() or 1,
                                 "preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false")
    return con


def _band_view(con, name: str, files: list[tuple[str, int]]) -> None:
    """View `name`(band, key, doc) over band files, `doc` = the file's base + row (paths never in SQL text)."""
    paths = sorted({p for p, _ in files})
    con.register(f"{name}_bases", pa.table({"filename": [p for p, _ in files],
                                            "base": pa.array([b for _, b in files], pa.int64())}))
    if paths:
        con.read_parquet(paths, filename=True).create_view(f"{name}_raw")
    else:
        con.execute(f"CREATE TEMP VIEW {name}_raw AS SELECT NULL::SMALLINT AS band, NULL::BIGINT AS key, "
                    "NULL::INTEGER AS row, NULL::VARCHAR AS filename WHERE false")
    con.execute(f"CREATE TEMP VIEW {name} AS SELECT r.band, r.key, r.row + f.base AS doc "
                f"FROM {name}_raw r JOIN {name}_bases f USING (filename)")


def find_candidates(files: list[tuple[str, int]], out_path: Path, cfg: DedupConfig, tmp_dir: Path,
                    against_files: list[tuple[str, int]] | None = None) -> dict:
    """Reduce: candidate pairs (i, j) of documents sharing a (band, key) bucket, written to `out_path`.

    One DuckDB query over every band file (`files`: (path, base) per shard), out of core: the GROUP BY,
    the join and the DISTINCT spill to `tmp_dir` beyond `cfg.memory_limit`. Within a corpus i < j;
    `against_files` given: i in `files`, j in `against_files`. A bucket of more than `cfg.max_bucket`
    documents is not expanded into all its pairs: each member is paired with the bucket's first document
    only (counted in the returned `n_capped_buckets`, `n_docs_in_capped_buckets`)."""
    con = _duckdb(cfg, tmp_dir)
    try:
        _band_view(con, "a", files)
        if against_files is None:
            con.execute("CREATE TEMP TABLE bk AS SELECT band, key, count(*) AS n, min(doc) AS rep "
                        "FROM a GROUP BY band, key HAVING count(*) > 1")
            query = """
                WITH m AS (SELECT a.band, a.key, a.doc, bk.n, bk.rep FROM a JOIN bk USING (band, key)),
                     s AS (SELECT band, key, doc FROM m WHERE n <= $cap)
                SELECT DISTINCT i, j FROM (
                    SELECT x.doc AS i, y.doc AS j FROM s x JOIN s y
                        ON x.band = y.band AND x.key = y.key AND x.doc < y.doc
                    UNION ALL
                    SELECT rep AS i, doc AS j FROM m WHERE n > $cap AND doc <> rep)"""
        else:
            _band_view(con, "b", against_files)
            con.execute("CREATE TEMP TABLE bk AS SELECT b.band, b.key, count(*) AS n, min(b.doc) AS rep "
                        "FROM b SEMI JOIN a USING (band, key) GROUP BY b.band, b.key")
            query = """
                WITH m AS (SELECT a.doc AS i, bk.band, bk.key, bk.n, bk.rep FROM a JOIN bk USING (band, key))
                SELECT DISTINCT i, j FROM (
                    SELECT m.i, b.doc AS j FROM m JOIN b USING (band, key) WHERE m.n <= $cap
                    UNION ALL
                    SELECT i, rep AS j FROM m WHERE n > $cap)"""
        [(n_capped, n_in_capped)] = con.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM bk WHERE n > $cap", {"cap": cfg.max_bucket}).fetchall()
        reader = con.sql(query, params={"cap": cfg.max_bucket}).to_arrow_reader(1 << 17)
        n = 0
        schema = pa.schema([("i", pa.int64()), ("j", pa.int64())])
        with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as w:
            for batch in reader:
                w.write_batch(batch.cast(schema) if batch.schema != schema else batch)
                n += batch.num_rows
    finally:
        con.close()
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return {"n_candidates": n, "n_capped_buckets": int(n_capped), "n_docs_in_capped_buckets": int(n_in_capped)}


def verify_candidates(cand_path: Path, left: BandedCorpus, right: BandedCorpus, cfg: DedupConfig,
                      progress: bool = False, batch_pairs: int = 1 << 16
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs whose signature Jaccard estimate is >= threshold: (i, j, estimate), sorted.

    Reads the candidates in batches and the two signatures of each pair from the memory-mapped shard
    files; memory is one batch (batch_pairs x num_perm x 8 bytes) plus the pairs kept."""
    pf = pq.ParquetFile(cand_path)
    pi, pj, pe = [], [], []
    bar = tqdm(total=pf.metadata.num_rows, desc="verify", unit="pair", disable=not progress, mininterval=1.0)
    for batch in pf.iter_batches(batch_size=batch_pairs, columns=["i", "j"]):
        i = batch.column("i").to_numpy()
        j = batch.column("j").to_numpy()
        est = np.count_nonzero(left.signatures(i) == right.signatures(j), axis=1) / cfg.num_perm
        keep = est >= cfg.threshold
        pi.append(i[keep]), pj.append(j[keep]), pe.append(est[keep])
        bar.update(len(i))
    bar.close()
    if not pi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    i, j, e = np.concatenate(pi), np.concatenate(pj), np.concatenate(pe)
    order = np.lexsort((j, i))
    return i[order], j[order], e[order]


def build_clusters(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cluster label per item: connected components of the pair graph (scipy.sparse.csgraph)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _work_dir(store: Store, corpus: str, cfg: DedupConfig, against: str | None = None) -> Path:
    return store.artifact_dir("dedup_work", corpus) / f"{against or corpus}__{cfg.result_key}"


# ---------------------------------------------------------------------------------------------- analyses
@dataclasses.dataclass
class DedupReport:
    summary: dict
    clusters: pl.DataFrame  # dup_clusters rows (within) or empty
    pairs: pl.DataFrame  # dup_pairs rows
    source: pl.DataFrame | None  # dup_source rows for synthetic corpora
    examples: list[dict]  # largest clusters (within) or matches (across), with snippets
    candidates_path: Path | None = None  # the unverified candidate pairs (global indices), kept for inspection

    def as_dict(self) -> dict:
        return {"summary": self.summary, "examples": self.examples}


def _params(cfg: DedupConfig) -> dict:
    return {"threshold": cfg.threshold, "num_perm": cfg.num_perm, "ngram": cfg.ngram, "seed": cfg.seed,
            "config": cfg.as_json()}


def _skip_counts(bc: BandedCorpus) -> dict:
    return {"n_docs": bc.n_docs, "n_docs_hashed": int(bc.ok.sum()),
            "n_empty": int((bc.status == STATUS_EMPTY).sum()),
            "n_too_short": int((bc.status == STATUS_TOO_SHORT).sum())}


def _shard_row(bc: BandedCorpus, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos, row = bc.locate(docs)
    shard_no = np.array([s.shard for s in bc.shards], dtype=np.int32)
    return (shard_no[pos] if len(docs) else np.zeros(0, np.int32)), row.astype(np.int32)


def _write_skipped(store: Store, bc: BandedCorpus, cfg: DedupConfig) -> None:
    bad = np.flatnonzero(~bc.ok)
    doc_id = bc.columns(bad, ["doc_id"])["doc_id"] if len(bad) else np.zeros(0, dtype=object)
    shard, row = _shard_row(bc, bad)
    df = pl.DataFrame({"corpus": [bc.corpus] * len(bad), "doc_id": list(doc_id), "shard": shard, "row": row,
                       "reason": [SKIP_REASONS[int(x)] for x in bc.status[bad]],
                       "ngram": [cfg.ngram] * len(bad)},
                      schema={"corpus": pl.String, "doc_id": pl.String, "shard": pl.Int32, "row": pl.Int32,
                              "reason": pl.String, "ngram": pl.Int64})
    store.put_result("dup_skipped", f"{bc.corpus}__n{cfg.ngram}", df)


def read_snippets(store: Store, corpus: str, shard: np.ndarray, row: np.ndarray, n_chars: int = 160) -> list[str]:
    """The first characters of a few documents, addressed by (shard, row); each shard is read once."""
    paths = {s.shard: s.path for s in store.shards(corpus)}
    texts: dict[tuple[int, int], str] = {}
    for sh in sorted(set(shard.tolist())):
        wanted = sorted({int(r) for s_, r in zip(shard.tolist(), row.tolist()) if s_ == sh})
        column = pq.read_table(paths[sh], columns=["text"]).column("text").take(pa.array(wanted))
        texts.update({(sh, r): t or "" for r, t in zip(wanted, column.to_pylist())})
    return [" ".join(texts[(int(sh), int(r))].split())[:n_chars] for sh, r in zip(shard.tolist(), row.tolist())]


def _band_summary(cfg: DedupConfig, cand: dict) -> dict:
    bands, rows = cfg.bands_rows
    return {"bands": bands, "rows_per_band": rows, "max_bucket": cfg.max_bucket, **cand}


def _capped_note(summary: dict) -> str:
    if not summary.get("n_capped_buckets"):
        return ""
    return (f"; {summary['n_capped_buckets']} LSH buckets had more than {summary['max_bucket']} documents "
            f"({summary['n_docs_in_capped_buckets']} in all): their members were compared with one "
            "representative each, not with each other")


def analyze_corpus(store: Store, corpus: str, cfg: DedupConfig, progress: bool = True,
                   n_examples: int = 5) -> DedupReport:
    """Near-duplicate clusters inside one corpus; writes dup_clusters, dup_pairs, dup_summary."""
    t0 = time.perf_counter()
    bc = build_bands(store, corpus, cfg, progress)
    t_map = time.perf_counter()
    work = _work_dir(store, corpus, cfg)
    cand = find_candidates(bc.band_files(), work / "candidates.parquet", cfg, work / "duckdb_tmp")
    t_cand = time.perf_counter()
    i, j, est = verify_candidates(work / "candidates.parquet", bc, bc, cfg, progress)
    t_verify = time.perf_counter()
    # clusters over the documents that have a verified pair; memory grows with the pairs, not the corpus
    nodes, inv = np.unique(np.concatenate([i, j]), return_inverse=True)
    labels = build_clusters(len(nodes), inv[:len(i)], inv[len(i):])
    sizes = np.bincount(labels, minlength=len(nodes)) if len(nodes) else np.zeros(0, np.int64)
    # representative = first member in corpus order (smallest global index; nodes ascend)
    uniq, first = np.unique(labels, return_index=True)
    rep = nodes[first[np.searchsorted(uniq, labels)]] if len(nodes) else np.zeros(0, np.int64)
    cols = bc.columns(nodes, ["doc_id", "n_shingles"]) if len(nodes) else {"doc_id": [], "n_shingles": []}
    rep_doc_id = dict(zip(nodes.tolist(), list(cols["doc_id"])))
    shard, row = _shard_row(bc, nodes)
    rep_shard, rep_row = _shard_row(bc, rep)
    est_to_rep = (np.count_nonzero(bc.signatures(nodes) == bc.signatures(rep), axis=1) / cfg.num_perm
                  if len(nodes) else np.zeros(0))
    params = _params(cfg)
    # cluster_id names the representative by position ("shard:row"): doc_ids of exact copies coincide
    clusters = pl.DataFrame({
        "corpus": [corpus] * len(nodes),
        "cluster_id": [f"{a}:{b}" for a, b in zip(rep_shard.tolist(), rep_row.tolist())],
        "representative_doc_id": [rep_doc_id[r] for r in rep.tolist()], "doc_id": list(cols["doc_id"]),
        "shard": shard, "row": row, "cluster_size": sizes[labels].astype(np.int64),
        "is_representative": nodes == rep, "jaccard_to_representative": est_to_rep,
        "n_shingles": np.asarray(cols["n_shingles"], dtype=np.int64),
    }, schema_overrides={"cluster_id": pl.String, "representative_doc_id": pl.String, "doc_id": pl.String}
    ).with_columns(**{k: pl.lit(v) for k, v in params.items()})
    pairs = _pairs_frame(corpus, corpus, "within", bc, i, bc, j, est, params)
    n_clusters = len(uniq)
    n_in = len(nodes)
    counts = _skip_counts(bc)
    summary = {
        "corpus": corpus, "against": None, "mode": "within", **counts,
        "n_clusters": n_clusters, "n_docs_in_clusters": n_in,
        "n_duplicates": n_in - n_clusters,
        "dup_rate": (n_in - n_clusters) / counts["n_docs"] if counts["n_docs"] else 0.0,
        "n_pairs": int(len(est)), "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "content_hash": bc.content_hash, **_band_summary(cfg, cand),
        "map_s": t_map - t0, "candidates_s": t_cand - t_map, "verify_s": t_verify - t_cand,
    }
    source = _source_if_synthetic(store, bc, cfg, progress, summary)
    summary.update(params, elapsed_s=time.perf_counter() - t0, created_at=datetime.now(timezone.utc).isoformat())
    part = f"{corpus}__{cfg.result_key}"
    store.put_result("dup_clusters", part, clusters)
    store.put_result("dup_pairs", f"{corpus}__vs__{corpus}__{cfg.result_key}", pairs)
    store.put_result("dup_summary", f"{corpus}__vs__{corpus}__{cfg.result_key}", pl.DataFrame([summary]))
    _write_skipped(store, bc, cfg)
    examples = []
    if n_clusters:
        top = (clusters.filter(pl.col("is_representative")).sort(["cluster_size", "shard", "row"],
                                                                  descending=[True, False, False]).head(n_examples))
        snippets = read_snippets(store, corpus, top["shard"].to_numpy(), top["row"].to_numpy())
        examples = [{"cluster_id": c, "cluster_size": int(n), "snippet": t}
                    for c, n, t in zip(top["cluster_id"], top["cluster_size"], snippets)]
    return DedupReport(summary, clusters, pairs, source, examples, work / "candidates.parquet")


def analyze_against(store: Store, corpus: str, against: str, cfg: DedupConfig, progress: bool = True,
                    n_examples: int = 5) -> DedupReport:
    """Share of `corpus` documents with a near-duplicate in `against`; writes dup_pairs, dup_summary."""
    t0 = time.perf_counter()
    if against == corpus:
        raise ValueError(f"--against {against} is the corpus itself; leave out --against for the "
                         "near-duplicates inside one corpus")
    store.corpus(against)  # fail before hashing anything
    a = build_bands(store, corpus, cfg, progress)
    b = build_bands(store, against, cfg, progress)
    work = _work_dir(store, corpus, cfg, against)
    cand = find_candidates(a.band_files(), work / "candidates.parquet", cfg, work / "duckdb_tmp",
                           against_files=b.band_files())
    i, j, est = verify_candidates(work / "candidates.parquet", a, b, cfg, progress)
    params = _params(cfg)
    pairs = _pairs_frame(corpus, against, "across", a, i, b, j, est, params)
    n_with = int(len(np.unique(i)))
    counts = _skip_counts(a)
    summary = {
        "corpus": corpus, "against": against, "mode": "across", **counts,
        "n_against_docs": b.n_docs, "n_against_hashed": int(b.ok.sum()),
        "n_with_match": n_with,
        "share_with_match": n_with / counts["n_docs_hashed"] if counts["n_docs_hashed"] else 0.0,
        "n_pairs": int(len(est)), "content_hash": a.content_hash, "against_content_hash": b.content_hash,
        **_band_summary(cfg, cand),
    }
    source = _source_if_synthetic(store, a, cfg, progress, summary)
    summary.update(params, elapsed_s=time.perf_counter() - t0, created_at=datetime.now(timezone.utc).isoformat())
    part = f"{corpus}__vs__{against}__{cfg.result_key}"
    store.put_result("dup_pairs", part, pairs)
    store.put_result("dup_summary", part, pl.DataFrame([summary]))
    _write_skipped(store, a, cfg)
    examples = []
    if len(est):
        # the best match of each matched document, highest estimates first
        best = pairs.sort("jaccard_est", descending=True).unique("doc_id", keep="first", maintain_order=True)
        best = best.head(n_examples)
        sa = read_snippets(store, corpus, best["shard"].to_numpy(), best["row"].to_numpy())
        sb = read_snippets(store, against, best["against_shard"].to_numpy(), best["against_row"].to_numpy())
        examples = [{"doc_id": d, "against_doc_id": o, "jaccard_est": float(e), "snippet": x, "against_snippet": y}
                    for d, o, e, x, y in zip(best["doc_id"], best["against_doc_id"], best["jaccard_est"], sa, sb)]
    return DedupReport(summary, pl.DataFrame(), pairs, source, examples, work / "candidates.parquet")


def _pairs_frame(corpus, against, mode, a: BandedCorpus, i, b: BandedCorpus, j, est, params) -> pl.DataFrame:
    ida = a.columns(i, ["doc_id"])["doc_id"] if len(i) else []
    idb = b.columns(j, ["doc_id"])["doc_id"] if len(j) else []
    sa, ra = _shard_row(a, i)
    sb, rb = _shard_row(b, j)
    return pl.DataFrame({
        "corpus": [corpus] * len(i), "doc_id": list(ida), "shard": sa, "row": ra,
        "against": [against] * len(i), "against_doc_id": list(idb),
        "against_shard": sb, "against_row": rb, "mode": [mode] * len(i),
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


def _docs_view(con, name: str, files: list[tuple[str, int]]) -> None:
    con.register(f"{name}_bases", pa.table({"filename": [p for p, _ in files],
                                            "base": pa.array([b for _, b in files], pa.int64())}))
    con.read_parquet(sorted({p for p, _ in files}), filename=True).create_view(f"{name}_raw")
    con.execute(f"CREATE TEMP VIEW {name} AS SELECT r.* EXCLUDE (filename), r.row + f.base AS doc "
                f"FROM {name}_raw r JOIN {name}_bases f USING (filename)")


def compute_source_similarity(store: Store, bc: BandedCorpus, cfg: DedupConfig,
                              progress: bool = True) -> pl.DataFrame:
    """Estimated Jaccard between each synthetic document and its own `source_doc_id` document.

    The doc_id match is one DuckDB join over the document files (out of core); the estimates read the
    two signatures of each match from the memory-mapped shard files, in batches."""
    frames = []
    pending_files = bc.docs_files()
    found = np.zeros(0, np.int64)
    if not bc.shards:
        return _source_frame(bc.corpus, [], cfg)
    for name in find_source_corpora(store, store.corpus(bc.corpus)):
        src = build_bands(store, name, cfg, progress)
        if not src.shards:
            continue
        work = _work_dir(store, bc.corpus, cfg, f"source_{name}")
        con = _duckdb(cfg, work / "duckdb_tmp")
        try:
            _docs_view(con, "s", pending_files)
            _docs_view(con, "t", src.docs_files())
            con.register("done", pa.table({"doc": pa.array(found, pa.int64())}))
            # first occurrence of each source doc_id (doc_ids are content hashes, exact copies share one)
            reader = con.sql("""
                WITH t1 AS (SELECT doc_id, min(doc) AS j FROM t WHERE status = 0 GROUP BY doc_id)
                SELECT s.doc AS i, t1.j FROM s JOIN t1 ON s.source_doc_id = t1.doc_id
                WHERE s.status = 0 AND s.source_doc_id <> '' AND s.doc NOT IN (SELECT doc FROM done)
                ORDER BY s.doc""").to_arrow_reader(1 << 16)
            for batch in reader:
                i, j = batch.column("i").to_numpy(), batch.column("j").to_numpy()
                est = np.count_nonzero(bc.signatures(i) == src.signatures(j), axis=1) / cfg.num_perm
                frames.append(pl.DataFrame({"doc": i, "source_corpus": [name] * len(i), "jaccard_est": est},
                                           schema_overrides={"source_corpus": pl.String}))
                found = np.concatenate([found, i])
        finally:
            con.close()
            shutil.rmtree(work / "duckdb_tmp", ignore_errors=True)
    return _source_frame(bc.corpus, frames, cfg, bc)


def _source_frame(corpus: str, frames: list[pl.DataFrame], cfg: DedupConfig, bc: BandedCorpus | None = None
                  ) -> pl.DataFrame:
    rows = []
    if bc is not None:  # every document that names a source, matched or not
        for k, (path, base) in enumerate(bc.docs_files()):
            t = pl.read_parquet(path, columns=["row", "doc_id", "source_doc_id"]).filter(
                pl.col("source_doc_id") != "")
            rows.append(t.select(pl.lit(corpus).alias("corpus"), "doc_id", "source_doc_id",
                                 (pl.col("row").cast(pl.Int64) + base).alias("doc")))
    base = (pl.concat(rows) if rows else pl.DataFrame(schema={"corpus": pl.String, "doc_id": pl.String,
                                                              "source_doc_id": pl.String, "doc": pl.Int64}))
    match = (pl.concat(frames) if frames else
             pl.DataFrame(schema={"doc": pl.Int64, "source_corpus": pl.String, "jaccard_est": pl.Float64}))
    return (base.join(match, on="doc", how="left").sort("doc").drop("doc")
            .with_columns(num_perm=pl.lit(cfg.num_perm), ngram=pl.lit(cfg.ngram), seed=pl.lit(cfg.seed)))


def _source_if_synthetic(store: Store, bc: BandedCorpus, cfg: DedupConfig, progress: bool,
                         summary: dict) -> pl.DataFrame | None:
    info = store.corpus(bc.corpus)
    if info.kind != "synthetic":
        return None
    df = compute_source_similarity(store, bc, cfg, progress)
    j = df["jaccard_est"].drop_nulls()
    summary.update({
        "n_source_found": len(j), "n_source_missing": len(df) - len(j),
        "source_jaccard_mean": float(j.mean()) if len(j) else None,
        "source_jaccard_p10": float(j.quantile(0.1)) if len(j) else None,
        "source_jaccard_median": float(j.median()) if len(j) else None,
        "source_jaccard_p90": float(j.quantile(0.9)) if len(j) else None,
        "source_share_near_dup": float((j >= cfg.threshold).mean()) if len(j) else None,
    })
    store.put_result("dup_source", f"{bc.corpus}__{cfg.signature_key}", df)
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
    p.add_argument("--max-bucket", type=int, default=DedupConfig.max_bucket,
                   help="LSH buckets with more documents pair each member with the first one only (default 256)")
    p.add_argument("--memory-limit", default=DedupConfig.memory_limit,
                   help="DuckDB memory for grouping band keys; beyond it the grouping spills to the store's "
                        "disk (default 256MB)")
    p.add_argument("--workers", type=int, default=0, help="signature worker processes (default 0: one per core, "
                        "or in-process when fewer than 8000 documents need hashing)")
    add_engine_args(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _config_from_args(args) -> DedupConfig:
    return DedupConfig(threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram, seed=args.seed,
                       lsh_fn_weight=args.lsh_fn_weight, max_bucket=args.max_bucket,
                       memory_limit=args.memory_limit, workers=args.workers, engine=args.engine,
                       ray_address=args.ray_address)


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
    except (StoreError, ValueError, EngineError) as e:
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
              f"(threshold {s['threshold']}, {s['ngram']}-word shingles, {s['num_perm']} permutations)"
              f"{_capped_note(s)}")
        for e in report.examples:
            print(f"  [{e['cluster_size']} docs] {e['snippet']}")
    else:
        print(f"{s['corpus']} vs {s['against']}: {s['n_with_match']} of {s['n_docs_hashed']} documents "
              f"({s['share_with_match']:.2%}) have a near-duplicate in {s['against']}{skipped}{_capped_note(s)}")
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
