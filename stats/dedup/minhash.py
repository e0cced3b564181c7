"""Map, per batch of texts: normalised words -> word n-gram shingles -> 32-bit shingle hashes -> MinHash
signatures (all permutations in one numpy expression), bit-identical to datasketch's "affine32" scheme."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from corpora.store import read_shard_batches
from stats.dedup.config import SCHEME, STATUS_EMPTY, STATUS_OK, STATUS_TOO_SHORT, DedupConfig


# Shingles hashed per numpy block: (block, num_perm) uint32 is 16 MiB at 128 permutations, which keeps
# a worker's peak memory flat however long a document is.
_BLOCK_SHINGLES = 32768
_U32 = np.uint32
_U64 = np.uint64
# Odd 64-bit multiplier (the golden ratio constant) for chaining word hashes; order-sensitive.
_CHAIN_MUL = _U64(0x9E3779B97F4A7C15)


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

