"""The token cache: each shard's documents tokenized on demand, once per (shard content, tokenizer).

Mixtures and validation sets (`train.data`) and unigram counts (`stats.unigram`) read tokens through it,
so a corpus is tokenized once, whichever step needs it first, and a step that needs only some documents
(a mixture's token budget) tokenizes only those; a later step tokenizes only the documents still missing.
Under `store.artifact_dir("tokens", tokenizer_key(tokenizer))`:

    <shard content hash>/<piece>.tokens    raw ids (tokenizer.dtype), each document followed by end-of-text
    <shard content hash>/<piece>.docs.npy  (n, 2) int64: the document's row in the shard, its token count
                                           including the end-of-text token, in the order of .tokens

A piece holds the documents one job tokenized (any subset of a shard's rows, in row order). Its docs file
is renamed into place last, so a piece without one is incomplete and ignored. The map step
(`tokenize_rows`, one shard per call) writes its piece into a temporary folder; the driver
(`TokenCache.ensure`) adopts it by renaming, so workers never touch the cache itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpora.names import safe_name
from corpora.store import ShardInfo, Store, StoreError

log = logging.getLogger(__name__)

# Text handed to the tokenizer per call: big enough that its threads share the work evenly, small
# enough that a worker holds a bounded amount of text and tokens at a time.
BATCH_BYTES = 8 << 20
_U64 = 1 << 64


def tokenizer_key(tokenizer) -> str:
    """An artifact-safe key for a tokenizer: its name (sanitized) and its fingerprint."""
    return f"{safe_name(tokenizer.name)[:80]}-{tokenizer.fingerprint}"


# ---------------------------------------------------------------------------------------- seeded order
def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer (Steele et al. 2014): uniform output for any distinct inputs."""
    with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is the point
        x = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def doc_id_hashes(doc_ids: pa.Array) -> np.ndarray:
    """doc_ids as uint64: the 16 hex digits of a store doc_id read as a number, else a BLAKE2b of the id."""
    arr = doc_ids.combine_chunks() if isinstance(doc_ids, pa.ChunkedArray) else doc_ids
    arr = arr.cast(pa.string())
    if len(arr) and arr.null_count == 0 and pc.all(pc.equal(pc.utf8_length(arr), 16)).as_py():
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
        chars = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].reshape(-1, 16)
        digits = np.full(256, 255, dtype=np.uint8)
        digits[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
        digits[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
        nibbles = digits[chars]
        if (nibbles != 255).all():
            weights = np.uint64(16) ** np.arange(15, -1, -1, dtype=np.uint64)
            return (nibbles.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return np.array([int.from_bytes(hashlib.blake2b((s or "").encode(), digest_size=8).digest(), "big")
                     for s in arr.to_pylist()], dtype=np.uint64)


def seeded_keys(hashes: np.ndarray, *salt: int | str) -> np.ndarray:
    """A seeded pseudo-random key per document: sorting by it shuffles documents, the same way for the
    same salt (seed, corpus, epoch...) whatever the shard layout, without reading any text."""
    s = np.uint64(0)
    for part in salt:
        v = zlib.crc32(part.encode()) if isinstance(part, str) else int(part) % _U64
        s = _splitmix64(np.asarray(s ^ np.uint64(v), dtype=np.uint64))
    return _splitmix64(np.asarray(hashes, dtype=np.uint64) ^ s)


def read_doc_list(shard_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(doc_id hashes uint64, n_bytes int64) of a shard's documents, in row order: two small columns."""
    table = pq.read_table(shard_path, columns=["doc_id", "n_bytes"])
    n_bytes = table.column("n_bytes").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return doc_id_hashes(table.column("doc_id")), n_bytes


# ---------------------------------------------------------------------------------------- the map
@dataclasses.dataclass(frozen=True)
class TokenizeJob:
    """Tokenize `rows` (sorted; None = every row) of one shard into a piece under `out_dir`."""

    shard_path: Path
    rows: np.ndarray | None
    out_dir: Path


@dataclasses.dataclass(frozen=True)
class Piece:
    name: str
    n_docs: int
    n_tokens: int
    n_bytes: int  # UTF-8 bytes of the documents' text


def piece_name(rows: np.ndarray | None) -> str:
    """Content-derived, so two jobs that tokenize the same rows write the same piece."""
    if rows is None:
        return "all"
    return hashlib.blake2b(np.ascontiguousarray(rows, dtype=np.int64).tobytes(), digest_size=8).hexdigest()


def iter_shard_texts(shard_path: Path, rows: np.ndarray | None = None, batch_bytes: int = BATCH_BYTES,
                     columns: tuple[str, ...] = ()) -> Iterator[tuple[np.ndarray, list[str], pa.Table]]:
    """(rows, texts, other columns) of a shard's documents `rows` (sorted; None = all), in row order, in
    batches of about `batch_bytes` of text; only row groups holding a wanted row are read."""
    pf = pq.ParquetFile(shard_path)
    starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
    wanted = None if rows is None else np.asarray(rows, dtype=np.int64)
    for g in range(pf.num_row_groups):
        lo, hi = int(starts[g]), int(starts[g + 1])
        group_rows = (np.arange(lo, hi) if wanted is None
                      else wanted[np.searchsorted(wanted, lo):np.searchsorted(wanted, hi)])
        if not len(group_rows):
            continue
        table = pf.read_row_group(g, columns=["text", "n_bytes", *columns])
        if wanted is not None:
            table = table.take(pa.array(group_rows - lo))
        sizes = table.column("n_bytes").to_numpy(zero_copy_only=False)
        cuts = np.searchsorted(np.cumsum(sizes), np.arange(batch_bytes, int(sizes.sum()) + 1, batch_bytes))
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), len(group_rows)]):
            if a < b:
                part = table.slice(a, b - a)
                # a null text is an empty document
                yield group_rows[a:b], pc.fill_null(part.column("text"), "").to_pylist(), part


def tokenize_rows(job: TokenizeJob, tokenizer) -> Piece:
    """Map step: the job's documents, each followed by end-of-text, streamed into `<piece>.tokens` and
    `<piece>.docs.npy` under job.out_dir, batch by batch (memory is bounded by BATCH_BYTES)."""
    name = piece_name(job.rows)
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc_rows, doc_lengths, n_bytes = [], [], 0
    pending: list[str] = []
    pending_rows: list[np.ndarray] = []
    pending_bytes = 0

    def flush(f) -> None:
        nonlocal pending, pending_rows, pending_bytes
        if not pending:
            return
        tokens, lengths = tokenizer.encode_batch_flat(pending)
        lengths = lengths + 1
        out = np.empty(int(lengths.sum()), dtype=tokenizer.dtype)
        eot_pos = np.cumsum(lengths) - 1
        is_text = np.ones(len(out), dtype=bool)
        is_text[eot_pos] = False
        out[is_text] = tokens
        out[eot_pos] = tokenizer.eot_id
        f.write(out.tobytes())
        doc_rows.append(np.concatenate(pending_rows))
        doc_lengths.append(lengths)
        pending, pending_rows, pending_bytes = [], [], 0

    with open(out_dir / f"{name}.tokens", "wb") as f:
        for rows, texts, table in iter_shard_texts(job.shard_path, job.rows):
            size = int(pc.sum(table.column("n_bytes")).as_py() or 0)
            n_bytes += size
            pending += texts
            pending_rows.append(rows)
            pending_bytes += size
            if pending_bytes >= BATCH_BYTES:
                flush(f)
        flush(f)
    docs = np.stack([np.concatenate(doc_rows) if doc_rows else np.zeros(0, np.int64),
                     np.concatenate(doc_lengths) if doc_lengths else np.zeros(0, np.int64)], axis=1)
    with open(out_dir / f"{name}.docs.npy", "wb") as f:
        np.save(f, docs.astype(np.int64))
    return Piece(name, len(docs), int(docs[:, 1].sum()), n_bytes)


class TokenizeStep:
    """`tokenize_rows` with its tokenizer bound: build it once per worker (`executor.Stateful`)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, job: TokenizeJob) -> Piece:
        return tokenize_rows(job, self.tokenizer)


# ---------------------------------------------------------------------------------------- the cache
@dataclasses.dataclass
class ShardTokens:
    """Where each document of one shard sits in the cache: piece, offset and token count (or -1)."""

    shard: ShardInfo
    piece_paths: list[Path]  # .tokens files
    piece: np.ndarray  # (n_docs,) int32, -1 where not tokenized yet
    offset: np.ndarray  # (n_docs,) int64, start of the document in its piece
    length: np.ndarray  # (n_docs,) int64, tokens incl. end-of-text; -1 where not tokenized yet

    def missing(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Rows (sorted) among `rows` (default: all) that are not tokenized yet."""
        rows = np.arange(len(self.piece)) if rows is None else np.asarray(rows, dtype=np.int64)
        return np.sort(rows[self.piece[rows] < 0])

    @property
    def complete(self) -> bool:
        return bool((self.piece >= 0).all())

    def add_piece(self, tokens_path: Path, docs: np.ndarray) -> None:
        """Register a piece (e.g. one just written, not yet adopted) for the documents it holds."""
        rows, lengths = docs[:, 0], docs[:, 1]
        new = self.piece[rows] < 0
        self.piece[rows[new]] = len(self.piece_paths)
        self.offset[rows[new]] = (np.cumsum(lengths) - lengths)[new]
        self.length[rows[new]] = lengths[new]
        self.piece_paths.append(tokens_path)


def read_shard_tokens(shard: ShardInfo, shard_dir: Path, itemsize: int) -> ShardTokens:
    """The index of one shard's cached pieces (a document in several pieces: the first one wins)."""
    index = ShardTokens(shard, [], np.full(shard.n_docs, -1, dtype=np.int32), np.zeros(shard.n_docs, dtype=np.int64),
                        np.full(shard.n_docs, -1, dtype=np.int64))
    for docs_path in sorted(shard_dir.glob("*.docs.npy")) if shard_dir.exists() else []:
        tokens_path = docs_path.with_name(docs_path.name[:-len(".docs.npy")] + ".tokens")
        try:
            docs = np.load(docs_path)
            ok = (docs.ndim == 2 and docs.shape[1] == 2 and (docs[:, 0] < shard.n_docs).all()
                  and tokens_path.stat().st_size == int(docs[:, 1].sum()) * itemsize)
        except (OSError, ValueError):
            ok = False
        if not ok:
            log.warning("ignoring damaged token cache piece %s", docs_path)
            continue
        index.add_piece(tokens_path, docs)
    return index


class TokenCache:
    """The driver side: which documents are tokenized, tokenizing the missing ones, locating tokens."""

    def __init__(self, store: Store, tokenizer, *, workers: int = 0, engine: str | None = None,
                 ray_address: str | None = None):
        """workers/engine/ray_address: where `ensure` tokenizes when its call does not say (see there)."""
        self.store = store
        self.tokenizer = tokenizer
        self.workers, self.engine, self.ray_address = workers, engine, ray_address
        self.root = store.artifact_dir("tokens", tokenizer_key(tokenizer), create=False)
        self._index: dict[str, ShardTokens] = {}
        self.n_docs_tokenized = 0  # by this cache object: how much work the cache saved shows here
        self.n_bytes_tokenized = 0

    def shard_dir(self, shard: ShardInfo) -> Path:
        return self.root / shard.content_hash

    def index(self, shard: ShardInfo) -> ShardTokens:
        if shard.content_hash not in self._index:
            self._index[shard.content_hash] = read_shard_tokens(shard, self.shard_dir(shard),
                                                                  self.tokenizer.dtype.itemsize)
        return self._index[shard.content_hash]

    def ensure(self, requests: list[tuple[ShardInfo, np.ndarray | None]], *, workers: int = 0,
               engine: str | None = None, progress: bool = True, desc: str = "tokenize") -> int:
        """Tokenize every requested row (None: the whole shard) not cached yet; returns documents tokenized.

        One job per shard (a pure map), run by the executor: in-process unless `workers` > 1 or the engine
        is Ray (`engine`, else the cache's, else $SYNTHMIX_ENGINE; workers 0 on Ray: the cluster's CPUs)."""
        from corpora.executor import ExecutorConfig, Stateful, cpu_count

        where = ExecutorConfig(engine or self.engine, workers or self.workers, self.ray_address)

        jobs, shards, sizes, n_missing = [], [], [], 0
        for shard, rows in requests:
            index = self.index(shard)
            missing = index.missing(rows)
            if not len(missing):
                continue
            whole = len(missing) == shard.n_docs
            tmp = self.tmp_dir()
            jobs.append(TokenizeJob(shard.path, None if whole else missing, tmp))
            shards.append(shard)
            n_missing += len(missing)
            # bytes to tokenize, for ordering and progress; the catalog has the shard's total only
            sizes.append(shard.n_bytes * len(missing) // max(shard.n_docs, 1))
        if not jobs:
            return 0
        # One process by default (auto_workers=1): the tokenizer's own threads already use every core
        # (benchmarks/mixture.py: as fast as the bare tokenizer), while each worker process would hold its own
        # tokenizer and Parquet buffers (two workers + driver passed 1 GB at 500 MB). workers=n (or Ray) for more.
        engine_name, n_workers = where.plan(len(jobs), auto_workers=1)
        in_process = where.in_process(len(jobs), auto_workers=1)
        tok = self.tokenizer.with_threads(1 if engine_name == "ray" else max(1, cpu_count() // n_workers))
        step = TokenizeStep(tok) if in_process else Stateful(TokenizeStep, tok)
        log.info("tokenizing %d documents (%.1f MB) of %d shards on %s with %s worker(s)",
                 n_missing, sum(sizes) / 1e6, len(jobs), engine_name, n_workers or "all the cluster's")
        n_docs = 0
        try:
            with where.executor(len(jobs), auto_workers=1) as ex:
                for i, piece in ex.map(step, jobs, desc=desc if progress else None, sizes=sizes):
                    self._adopt(shards[i], jobs[i].out_dir, piece)
                    n_docs += piece.n_docs
                    self.n_bytes_tokenized += piece.n_bytes
        finally:
            for job in jobs:
                shutil.rmtree(job.out_dir, ignore_errors=True)
        self.n_docs_tokenized += n_docs
        return n_docs

    def _adopt(self, shard: ShardInfo, tmp: Path, piece: Piece) -> None:
        dest = self.shard_dir(shard)
        dest.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / f"{piece.name}.tokens", dest / f"{piece.name}.tokens")
        os.replace(tmp / f"{piece.name}.docs.npy", dest / f"{piece.name}.docs.npy")  # last: marks it complete
        self._index.pop(shard.content_hash, None)

    def tokens(self, path: Path) -> np.ndarray:
        return read_piece_tokens(path, self.tokenizer.dtype)

    def adopt(self, shard: ShardInfo, tmp: Path, piece: Piece) -> None:
        """Move a piece a worker wrote (under `tmp`) into the shard's cache folder."""
        self._adopt(shard, tmp, piece)

    def tmp_dir(self) -> Path:
        """A fresh temporary folder for one job's piece, in the store's temporary area (a killed run's goes
        with the next `Store.tmp_dir` call or `Store.recover`)."""
        return self.store.tmp_dir("tokens")


def read_piece_tokens(path: Path, dtype) -> np.ndarray:
    """A piece's tokens, memory-mapped (read-only)."""
    if Path(path).stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class TokenCacheError(StoreError):
    """The cache cannot supply tokens it was asked for (a bug or a cache changed underneath)."""
