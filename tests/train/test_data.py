"""Mixtures and validation sets on real text (gensim's Lee news corpus), and tokenizer training."""

from __future__ import annotations

import collections
import logging
import math
import shutil

import numpy as np
import polars as pl
import pytest

from tests.conftest import add_corpus
from corpora.store import Store, StoreError, UnknownCorpus
from corpora.tokenizers import load_tokenizer
from train.data import (MixtureConfig, MixtureError, allocate_tokens, build_mixture, build_valset,
                        open_mixture, parse_count, parse_parts)
from train.tokenizer import train_tokenizer

SEQ_LEN = 63  # rows of 64 tokens


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, lee_texts):
    """Built once per module (creating corpora is the slow part); tests that write get a copy."""
    store = Store(tmp_path_factory.mktemp("base") / "store", create=True)
    add_corpus(store, "cc", lee_texts[:200], shard_size=70)  # 3 shards
    add_corpus(store, "hq", lee_texts[200:208], kind="synthetic", synthetic_type="hq")
    add_corpus(store, "val", lee_texts[250:], role="test")
    store.create_corpus("empty", "natural", "train")
    return store


@pytest.fixture
def mix_store(base_store, tmp_path):
    """A private copy of base_store: a store is a directory with relative paths, so a copy is a store."""
    shutil.copytree(base_store.root, tmp_path / "store")
    return Store(tmp_path / "store")


@pytest.fixture
def checked_store(base_store):
    """For tests that must fail before writing anything (and check that nothing was written)."""
    return base_store


def _docs(texts, tok) -> list[tuple[int, ...]]:
    return [tuple(ids) + (tok.eot_id,) for ids in tok.encode_batch(texts)]


def _segments(store, name):
    seg = np.load(store.artifact_dir("mixtures", name) / "segments.npy")
    return seg[:, 0], seg[:, 1]


def test_exact_shares_and_every_token_comes_from_its_part(mix_store, lee_texts):
    cfg = MixtureConfig("m", {"cc": 0.67, "hq": 0.33}, "20k", seed=0, seq_len=SEQ_LEN)
    rows = build_mixture(mix_store, cfg).sort("corpus")
    train = np.load(mix_store.artifact_dir("mixtures", "m") / "train.npy", mmap_mode="r")
    total = 20_000 // (SEQ_LEN + 1) * (SEQ_LEN + 1)
    assert train.shape == (total // (SEQ_LEN + 1), SEQ_LEN + 1)
    assert rows["n_tokens"].to_list() == allocate_tokens([0.67, 0.33], total) == [13_379, 6_589]
    assert rows["total_tokens"].to_list() == [total, total]

    part_ids, lengths = _segments(mix_store, "m")
    assert np.bincount(part_ids, weights=lengths).astype(int).tolist() == [13_379, 6_589]
    # Every segment is a whole document of its own part (+ end-of-text), or that part's one cut-off doc.
    tok = load_tokenizer("cl100k_base")
    docs = [set(_docs(lee_texts[:200], tok)), set(_docs(lee_texts[200:208], tok))]
    flat, pos, cut = train.reshape(-1), 0, [0, 0]
    for part, n in zip(part_ids, lengths):
        seg = tuple(int(t) for t in flat[pos:pos + n])
        if seg not in docs[part]:
            assert any(d[:n] == seg for d in docs[part]), f"segment at {pos} is not from part {part}"
            cut[part] += 1
        pos += n
    assert cut[0] <= 1 and cut[1] <= 1
    # Both parts are spread over the whole stream, not one after the other.
    hq_pos = np.cumsum(lengths)[part_ids == 1] / total
    assert hq_pos.min() < 0.1 and hq_pos.max() > 0.9


def test_repeated_part_records_epochs_and_warns(mix_store, caplog):
    cfg = MixtureConfig("rep", {"cc": 0.5, "hq": 0.5}, "30k", seed=1, seq_len=SEQ_LEN)
    with caplog.at_level(logging.WARNING, logger="train.data"):
        rows = build_mixture(mix_store, cfg).sort("corpus")
    cc, hq = rows.to_dicts()
    assert not cc["repeated"] and cc["epochs"] < 1 and cc["warning"] is None
    assert hq["repeated"] and hq["epochs"] == pytest.approx(hq["n_tokens"] / hq["n_unique_tokens"])
    assert hq["epochs"] > 3 and "repeated" in hq["warning"]
    assert any("hq" in r.getMessage() and "repeated" in r.getMessage() for r in caplog.records)
    # Each epoch holds every document once: a document appears floor(epochs) or ceil(epochs) times.
    tok = load_tokenizer("cl100k_base")
    train = np.load(mix_store.artifact_dir("mixtures", "rep") / "train.npy").reshape(-1)
    part_ids, lengths = _segments(mix_store, "rep")
    ends = np.cumsum(lengths)
    counts = collections.Counter(tuple(train[e - n:e].tolist()) for p, n, e in zip(part_ids, lengths, ends) if p == 1)
    full = [counts[d] for d in _docs(mix_store.scan("hq").collect()["text"].to_list(), tok)]
    assert set(full) <= {math.floor(hq["epochs"]), math.ceil(hq["epochs"])}
    # The table is queryable by SQL through the store.
    (n,) = mix_store.sql("SELECT count(*) FROM mixtures WHERE repeated AND mixture = 'rep'").column(0).to_pylist()
    assert n == 1


def test_same_seed_same_array_other_seed_other_array(mix_store):
    arrays = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        build_mixture(mix_store, MixtureConfig(name, {"cc": 0.7, "hq": 0.3}, 8_000, seed=seed, seq_len=SEQ_LEN))
        arrays[name] = np.load(mix_store.artifact_dir("mixtures", name) / "train.npy")
    assert np.array_equal(arrays["a"], arrays["b"])
    assert arrays["a"].shape == arrays["c"].shape and not np.array_equal(arrays["a"], arrays["c"])


def _cached_rows(store) -> dict[str, set[int]]:
    """Rows tokenized so far, per shard content hash, read from the token cache's piece files."""
    out: dict[str, set[int]] = collections.defaultdict(set)
    for path in (store.root / "artifacts" / "tokens").glob("*/*/*.docs.npy"):
        rows = np.load(path)[:, 0].tolist()
        assert not out[path.parent.name] & set(rows), "a document was tokenized twice"
        out[path.parent.name] |= set(rows)
    return out


def _pieces(store) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (store.root / "artifacts" / "tokens").glob("*/*/*.*")}


def test_rebuild_is_a_no_op_and_token_cache_is_shared(mix_store):
    cfg = MixtureConfig("m", {"cc": 0.8, "hq": 0.2}, 6_000, seq_len=SEQ_LEN)
    build_mixture(mix_store, cfg)
    pieces = _pieces(mix_store)
    assert pieces and all(p.endswith((".tokens", ".docs.npy")) for p in pieces)
    train_path = mix_store.artifact_dir("mixtures", "m") / "train.npy"
    built_at = train_path.stat().st_mtime_ns
    build_mixture(mix_store, cfg)  # same config, same corpora: nothing rebuilt
    assert train_path.stat().st_mtime_ns == built_at
    # Fewer tokens of each part, in the same seeded order, are a prefix of what m tokenized.
    build_mixture(mix_store, MixtureConfig("m2", {"cc": 0.75, "hq": 0.25}, 4_000, seq_len=SEQ_LEN))
    assert _pieces(mix_store) == pieces  # the second mixture tokenized nothing
    with pytest.raises(MixtureError, match="already exists"):
        build_mixture(mix_store, MixtureConfig("m", {"cc": 0.5, "hq": 0.5}, 6_000, seq_len=SEQ_LEN))
    build_mixture(mix_store, MixtureConfig("m", {"cc": 0.5, "hq": 0.5}, 6_000, seq_len=SEQ_LEN), overwrite=True)
    assert mix_store.read_result("mixtures", "m").sort("corpus")["share"].to_list() == [0.5, 0.5]


def test_a_mixture_tokenizes_only_what_it_takes_and_a_larger_one_only_the_extra(mix_store):
    cc_docs = mix_store.corpus("cc").n_docs
    small = build_mixture(mix_store, MixtureConfig("small", {"cc": 1.0}, 6_400, seed=3, seq_len=SEQ_LEN))
    first = _cached_rows(mix_store)
    taken_small = len(_segments(mix_store, "small")[0])
    n_first = sum(len(r) for r in first.values())
    # the documents taken, plus at most the margin of the last round: far from the whole corpus
    assert taken_small <= n_first <= taken_small * 1.25 + 3 and n_first < cc_docs / 2
    assert not small["n_unique_exact"][0]  # estimated from bytes, within a few percent of the count
    tok = load_tokenizer("cl100k_base")
    exact = sum(len(ids) + 1 for ids in tok.encode_batch(mix_store.scan("cc").collect()["text"].to_list()))
    assert small["n_unique_tokens"][0] == pytest.approx(exact, rel=0.1)

    pieces = _pieces(mix_store)
    build_mixture(mix_store, MixtureConfig("large", {"cc": 1.0}, 19_200, seed=3, seq_len=SEQ_LEN))
    after = _cached_rows(mix_store)  # asserts that no document was tokenized twice
    assert all(_pieces(mix_store)[p] == t for p, t in pieces.items())  # old pieces untouched
    taken_large = len(_segments(mix_store, "large")[0])
    n_after = sum(len(r) for r in after.values())
    assert taken_large <= n_after <= taken_large * 1.25 + 3 and n_after < cc_docs
    # One part, same seed: the small stream is the first 6,400 tokens of the large one.
    a = np.load(mix_store.artifact_dir("mixtures", "small") / "train.npy").reshape(-1)
    b = np.load(mix_store.artifact_dir("mixtures", "large") / "train.npy").reshape(-1)
    assert np.array_equal(a, b[:len(a)])


def test_array_is_identical_whatever_the_cache_holds(mix_store, base_store, tmp_path):
    from stats.unigram import UnigramConfig, build_unigram_counts

    cfg = MixtureConfig("m", {"cc": 0.6, "hq": 0.4}, 12_000, seed=5, seq_len=SEQ_LEN)
    build_mixture(mix_store, cfg)  # cold cache
    cold = np.load(mix_store.artifact_dir("mixtures", "m") / "train.npy")
    warm_store = Store(shutil.copytree(base_store.root, tmp_path / "warm"))
    build_mixture(warm_store, MixtureConfig("other", {"cc": 0.5, "hq": 0.5}, 9_000, seed=9, seq_len=SEQ_LEN))
    # counted over the pieces the mixture left plus the rest of cc: equal to a Counter over every document
    counts = build_unigram_counts(warm_store, "cc", UnigramConfig(progress=False))
    tok = load_tokenizer("cl100k_base")
    expected = collections.Counter(i for ids in tok.encode_batch(warm_store.scan("cc").collect()["text"].to_list())
                                   for i in ids)
    assert {i: int(c) for i, c in enumerate(counts.counts) if c} == dict(expected)
    assert all(len(rows) == s.n_docs for s, rows in
               zip(warm_store.shards("cc"), (_cached_rows(warm_store)[s.content_hash] for s in warm_store.shards("cc"))))
    pieces = _pieces(warm_store)
    rows = build_mixture(warm_store, cfg)
    assert _pieces(warm_store) == pieces  # the unigram count's tokens served the mixture
    assert rows.filter(rows["corpus"] == "cc")["n_unique_exact"][0]  # whole corpus cached: an exact count
    assert np.array_equal(np.load(warm_store.artifact_dir("mixtures", "m") / "train.npy"), cold)


@pytest.mark.parametrize("parts, tokens, kwargs, error, match", [
    ({"cc": 0.5, "nope": 0.5}, 5_000, {}, UnknownCorpus, "unknown corpus 'nope'.*cc, empty, hq, val"),
    ({"cc": 0.5, "empty": 0.5}, 5_000, {}, MixtureError, "corpus 'empty' is empty"),
    ({"cc": 0.5, "val": 0.5}, 5_000, {}, MixtureError, "role 'test'"),
    ({"cc": 0.6, "hq": 0.3}, 5_000, {}, MixtureError, "sum to 1.*0.9"),
    ({"cc": 1.0, "hq": 0.0}, 5_000, {}, MixtureError, "must be > 0"),
    ({"cc": 1.0}, 10, {}, MixtureError, "less than one sequence"),
    # 8 news articles are ~40 KB: 2M tokens would repeat them far beyond 16 epochs whatever the tokenizer.
    ({"hq": 1.0}, "2M", {}, MixtureError, "'hq' would be repeated at least .* --max-epochs 16"),
    ({"cc": 0.9, "hq": 0.1}, "20k", {"max_epochs": 0.0}, MixtureError, "max_epochs must be positive"),
])
def test_bad_mixtures_fail_before_any_work(checked_store, parts, tokens, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_mixture(checked_store, MixtureConfig("bad", parts, tokens, seq_len=SEQ_LEN, **kwargs))
    assert not (checked_store.root / "artifacts").exists()  # nothing tokenized, nothing written
    assert checked_store.read_result("mixtures") is None


def test_exact_epoch_limit_is_checked_after_tokenizing(mix_store):
    # The byte bound lets 2.5 "epochs" of tokens through (a token is ~4 bytes), the exact count does not.
    hq = mix_store.corpus("hq")
    tokens = int((hq.n_bytes + hq.n_docs) * 0.5 * 2)  # hq's half is about one byte-bound epoch
    with pytest.raises(MixtureError, match=r"'hq' would be repeated \d+\.\d times .* --max-epochs 2"):
        build_mixture(mix_store, MixtureConfig("bad", {"cc": 0.5, "hq": 0.5}, tokens, seq_len=SEQ_LEN,
                                               max_epochs=2))
    assert not (mix_store.root / "artifacts" / "mixtures" / "bad" / "train.npy").exists()


def test_valsets_and_open_mixture(mix_store):
    build_mixture(mix_store, MixtureConfig("m", {"cc": 0.67, "hq": 0.33}, 10_000, seq_len=SEQ_LEN))
    data = open_mixture(mix_store, "m", val_tokens=3_000)
    assert list(data.val_sets) == ["val"]  # the only test-role corpus
    val = data.val_sets["val"]
    assert val.shape == (3_000 // (SEQ_LEN + 1), SEQ_LEN + 1) and isinstance(val, np.memmap)
    assert data.train.shape[1] == SEQ_LEN + 1 and data.seq_len == SEQ_LEN
    assert data.tokenizer == "cl100k_base" and data.vocab_size == 100_277 and data.train.dtype == np.uint32
    path = mix_store.artifact_dir("valsets", f"val__cl100k_base__{SEQ_LEN}") / "val.npy"
    assert path.exists()
    # A rebuild with the same inputs is cached; the whole corpus when max_tokens exceeds it.
    built_at = path.stat().st_mtime_ns
    assert build_valset(mix_store, "val", "cl100k_base", SEQ_LEN, 3_000) == path
    assert path.stat().st_mtime_ns == built_at
    whole = np.load(build_valset(mix_store, "val", "cl100k_base", SEQ_LEN, "10M"))
    n_unique = int(mix_store.read_result("valsets")["n_unique_tokens"][0])
    assert whole.size == n_unique // (SEQ_LEN + 1) * (SEQ_LEN + 1)
    with pytest.raises(MixtureError, match="unknown mixture 'nope'.*m"):
        open_mixture(mix_store, "nope")


def test_parse_count_and_parts():
    assert [parse_count(x) for x in ("20M", "5k", "1.5B", "300", 7, "2e3")] == [20_000_000, 5_000, 1_500_000_000,
                                                                                300, 7, 2_000]
    for bad in ("", "M", "5x", "1.5", "-3"):
        with pytest.raises(MixtureError, match="count|whole number"):
            parse_count(bad)
    assert parse_parts("cc=0.67, hq=0.33") == {"cc": 0.67, "hq": 0.33}
    for bad, match in (("cc:0.5,hq=0.5", "malformed part 'cc:0.5'"), ("cc=0.5,cc=0.5", "twice"),
                       ("", "empty"), ("cc=,hq=1", "malformed part 'cc='")):
        with pytest.raises(MixtureError, match=match):
            parse_parts(bad)


def test_train_tokenizer_on_real_text_and_mix_with_it(store, lee_texts):
    add_corpus(store, "cc", lee_texts[:250])
    add_corpus(store, "held", lee_texts[250:], role="test")
    row = train_tokenizer(store, "lee_bpe", ["cc"], vocab_size=1024)
    assert row["n_vocab"] == 1024 and row["eot_id"] == 0
    tok = load_tokenizer("lee_bpe", store)
    assert tok.n_vocab == 1024 and tok.eot_id == 0 and tok.dtype == np.uint16
    held = lee_texts[250:]
    assert [tok.decode(ids) for ids in tok.encode_batch(held)] == held  # byte-level: lossless
    n_tokens = sum(len(ids) for ids in tok.encode_batch(held))
    n_bytes = sum(len(t.encode()) for t in held)
    assert n_bytes / n_tokens > 2.5  # merges learnt on news compress unseen news (bytes alone: 1.0)
    assert store.read_result("tokenizers", "lee_bpe")["corpora"].to_list() == ["cc"]
    build_mixture(store, MixtureConfig("m", {"cc": 1.0}, 4_000, tokenizer="lee_bpe", seq_len=SEQ_LEN))
    data = open_mixture(store, "m", val_tokens=2_000)
    assert data.train.dtype == np.uint16 and data.vocab_size == 1024 and data.eot_id == 0
    assert int(data.train.max()) < 1024 and set(data.val_sets) == {"held"}


def test_train_tokenizer_errors(store, lee_texts):
    add_corpus(store, "cc", lee_texts[:10])
    store.create_corpus("empty", "natural", "train")
    with pytest.raises(UnknownCorpus, match="unknown corpus 'wiki'"):
        train_tokenizer(store, "t", ["cc", "wiki"], 1024)
    with pytest.raises(StoreError, match="empty"):
        train_tokenizer(store, "t", ["empty"], 1024)
    with pytest.raises(StoreError, match="too small"):
        train_tokenizer(store, "t", ["cc"], 100)


def test_tokenizer_trains_on_a_bounded_seeded_sample(store, lee_texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from corpora.tokens import doc_id_hashes, seeded_keys

    add_corpus(store, "cc", lee_texts[:200], shard_size=70)
    add_corpus(store, "hq", lee_texts[200:250], kind="synthetic", synthetic_type="hq")
    docs = pl.concat([store.scan(c).select("doc_id", "text", "n_bytes").collect() for c in ("cc", "hq")])
    limit = int(docs["n_bytes"].sum()) // 3
    row = train_tokenizer(store, "s0", ["cc", "hq"], vocab_size=600, sample_bytes=limit, seed=4)
    assert not row["sample_whole"] and row["sample_bytes"] <= limit and row["sample_docs"] < docs.height
    sample = pl.read_parquet(row["sample_path"])
    assert sample.height == row["sample_docs"] and set(sample["corpus"]) == {"cc", "hq"}
    # The sample is the prefix, by bytes, of the documents in seeded key order.
    keys = seeded_keys(doc_id_hashes(docs["doc_id"].to_arrow()), 4, "tokenizer-sample")
    ordered = docs[np.argsort(keys, kind="stable")]
    n = int(np.searchsorted(np.cumsum(ordered["n_bytes"].to_numpy()), limit, side="right"))
    assert set(sample["doc_id"]) == set(ordered["doc_id"][:n]) and row["sample_bytes"] > limit * 0.9
    # The trainer saw exactly those texts: the same BPE trained on them directly is the same tokenizer.
    by_id = dict(zip(docs["doc_id"], docs["text"]))
    direct = Tokenizer(models.BPE())
    direct.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    direct.decoder = decoders.ByteLevel()
    direct.train_from_iterator([by_id[d] for d in sample["doc_id"]], trainers.BpeTrainer(
        vocab_size=600, min_frequency=2, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    saved = Tokenizer.from_file(row["path"])
    assert saved.get_vocab() == direct.get_vocab()
    # Same seed, same sample; another seed, another one; a limit above the corpora takes them whole.
    assert train_tokenizer(store, "s0b", ["cc", "hq"], 600, sample_bytes=limit, seed=4)["sample_hash"] == row["sample_hash"]
    assert train_tokenizer(store, "s1", ["cc", "hq"], 600, sample_bytes=limit, seed=5)["sample_hash"] != row["sample_hash"]
    whole = train_tokenizer(store, "all", ["cc", "hq"], 600, sample_bytes=10**9)
    assert whole["sample_whole"] and whole["sample_docs"] == docs.height


def test_our_bpe_runs_on_tiktoken_with_the_same_ids(store, lee_texts, shared_data):
    import json as _json

    from tokenizers import Tokenizer

    from corpora.tokenizers import TiktokenTokenizer

    add_corpus(store, "cc", lee_texts)
    row = train_tokenizer(store, "bpe", ["cc"], vocab_size=2048)
    tok = load_tokenizer("bpe", store)
    assert isinstance(tok, TiktokenTokenizer) and tok.eot_id == 0 and tok.n_vocab == 2048
    texts = [_json.loads(line)["text"] for line in (shared_data / "cc" / "c4_sample.jsonl").open()][:150]
    texts += (shared_data / "wiki" / "wikitext2_test.txt").read_text(encoding="utf-8").split("\n\n")[:150]
    hf = Tokenizer.from_file(row["path"])
    assert tok.encode_batch(texts) == [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
