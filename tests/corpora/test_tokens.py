"""corpora.tokens: seeded document keys and the token cache, on real text (gensim's Lee news corpus)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import add_corpus
from corpora.tokenizers import load_tokenizer
from corpora.tokens import TokenCache, doc_id_hashes, read_doc_list, seeded_keys


def test_doc_id_hashes_read_store_ids_and_hash_other_ids():
    ids = ["00ff00ff00ff00ff", "FFFFFFFFFFFFFFFF", "0123456789abcdef"]
    assert doc_id_hashes(pa.array(ids)).tolist() == [int(i, 16) for i in ids]
    other = ["doc-1", "0123456789abcdeg"]  # not 16 hex digits: a BLAKE2b of the id
    expected = [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "big") for i in other]
    assert doc_id_hashes(pa.array(other)).tolist() == expected
    sliced = pa.array(["x" * 16, *ids])[1:]  # an offset into the buffers
    assert doc_id_hashes(sliced).tolist() == [int(i, 16) for i in ids]


def test_seeded_keys_shuffle_by_salt():
    hashes = np.arange(10_000, dtype=np.uint64)  # consecutive ids: the worst case for a weak mixer
    a, b = seeded_keys(hashes, 0, "cc", 0), seeded_keys(hashes, 0, "cc", 1)
    assert np.array_equal(a, seeded_keys(hashes, 0, "cc", 0)) and len(np.unique(a)) == len(a)
    assert not np.array_equal(np.argsort(a), np.argsort(b))
    assert not np.array_equal(np.argsort(a), np.argsort(seeded_keys(hashes, 0, "hq", 0)))
    # keys are uniform: a threshold at a fraction f of the key space keeps about f of the documents
    assert abs((a < np.uint64(2**62)).mean() - 0.25) < 0.02
    # a document's key depends on its id only, not on its neighbours
    assert np.array_equal(seeded_keys(hashes[::7], 0, "cc", 0), a[::7])


def test_cache_tokenizes_missing_rows_once_and_locates_them(store, lee_texts):
    add_corpus(store, "cc", lee_texts[:120], shard_size=50)  # shards of 50, 50, 20 documents
    tok = load_tokenizer("cl100k_base")
    shards = store.shards("cc")
    cache = TokenCache(store, tok)
    assert cache.ensure([(shards[0], np.array([3, 7, 11])), (shards[2], None)], progress=False) == 23
    assert cache.ensure([(shards[0], np.array([7, 11, 12]))], progress=False) == 1  # only row 12 is new
    index = cache.index(shards[0])
    assert sorted(np.flatnonzero(index.piece >= 0).tolist()) == [3, 7, 11, 12] and not index.complete
    assert cache.index(shards[2]).complete and cache.index(shards[1]).missing().tolist() == list(range(50))
    for row in (3, 7, 11, 12):  # each document's tokens + end-of-text, where the index says
        tokens = cache.tokens(index.piece_paths[index.piece[row]])
        got = tokens[index.offset[row]:index.offset[row] + index.length[row]].tolist()
        assert got == tok.encode_batch([lee_texts[row]])[0] + [tok.eot_id]
    # a piece whose docs file never landed (an interrupted job) is not used
    stray = cache.shard_dir(shards[1]) / "deadbeef.tokens"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"\0" * 40)
    assert TokenCache(store, tok).index(shards[1]).missing().tolist() == list(range(50))
    # a damaged piece (tokens cut short) is ignored with a warning, and its documents tokenized again
    (piece,) = cache.shard_dir(shards[2]).glob("*.tokens")
    piece.write_bytes(piece.read_bytes()[:-8])
    fresh = TokenCache(store, tok)
    assert not fresh.index(shards[2]).complete
    assert fresh.ensure([(shards[2], None)], progress=False) == 20


def test_read_doc_list_is_the_shard_in_row_order(store, lee_texts):
    add_corpus(store, "cc", lee_texts[:30])
    (shard,) = store.shards("cc")
    hashes, n_bytes = read_doc_list(shard.path)
    table = store.scan("cc").collect()
    assert hashes.tolist() == [int(i, 16) for i in table["doc_id"]]
    assert n_bytes.tolist() == [len(t.encode()) for t in table["text"]]


@pytest.mark.slow  # spawns two worker processes that each load cl100k_base
def test_cache_in_worker_processes_matches_the_tokenizer(store, lee_texts):
    add_corpus(store, "cc", lee_texts[:90], shard_size=30)
    tok = load_tokenizer("cl100k_base")
    shards = store.shards("cc")
    pooled = TokenCache(store, tok)
    assert pooled.ensure([(s, None) for s in shards], workers=2, progress=False) == 90
    for s in shards:
        index = pooled.index(s)
        tokens = np.concatenate([pooled.tokens(p) for p in index.piece_paths])
        texts = lee_texts[s.shard * 30:(s.shard + 1) * 30]
        assert tokens.tolist() == [i for ids in tok.encode_batch(texts) for i in (*ids, tok.eot_id)]
