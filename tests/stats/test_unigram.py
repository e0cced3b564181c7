"""stats.unigram: counts against collections.Counter, every metric against a hand computation in plain
Python, mixtures, shrinkage, the cache (reuse and invalidation) and the CLI, on real text."""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from tests.conftest import add_corpus

from corpora.store import Store
from corpora.tokenizers import load_tokenizer
from stats.unigram import (
    COMPARISONS_TABLE,
    COUNTS_TABLE,
    SHRINKAGE_TABLE,
    UnigramConfig,
    UnigramCounts,
    UnigramError,
    build_distribution,
    build_unigram_counts,
    compare_unigrams,
    count_unigrams,
    main,
    parse_mixture,
    rarefied_types,
    reduce_counts,
    run_unigram,
    subsampled_entropy_nats,
)

CFG = UnigramConfig(progress=False)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("cl100k_base")


def token_counter(tok, texts) -> Counter:
    """The naive reference: per-document encode and a Counter."""
    c: Counter = Counter()
    for t in texts:
        c.update(tok.encoding.encode_ordinary(t))
    return c


def as_dict(counts: UnigramCounts) -> dict[int, int]:
    ids = np.flatnonzero(counts.counts)
    return dict(zip(ids.tolist(), counts.counts[ids].tolist()))


# ------------------------------------------------------------------------------------------ hand metrics
def hand_metrics(p_counts: Counter, q_counts: Counter, n_vocab: int, alpha: float) -> dict:
    """Every definition of the README, written out over dicts in plain Python."""
    n_p, n_q = sum(p_counts.values()), sum(q_counts.values())
    p = {v: c / n_p for v, c in p_counts.items()}
    q = {v: c / n_q for v, c in q_counts.items()}
    q_alpha = lambda v: (q_counts.get(v, 0) + alpha) / (n_q + alpha * n_vocab)
    m = {v: (p.get(v, 0) + q.get(v, 0)) / 2 for v in set(p) | set(q)}
    return {
        "type_coverage": sum(1 for v in p if v in q) / len(p),
        "token_coverage": sum(p_counts[v] for v in p if v in q) / n_p,
        "kl_nats": sum(pv * math.log(pv / q_alpha(v)) for v, pv in p.items()),
        "js_nats": 0.5 * sum(pv * math.log(pv / m[v]) for v, pv in p.items())
        + 0.5 * sum(qv * math.log(qv / m[v]) for v, qv in q.items()),
        "entropy_test_nats": -sum(pv * math.log(pv) for pv in p.values()),
        "entropy_train_nats": -sum(qv * math.log(qv) for qv in q.values()),
        "n_types_test": len(p), "n_types_train": len(q), "n_tokens_test": n_p, "n_tokens_train": n_q,
    }


def assert_metrics(row: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


# ------------------------------------------------------------------------------------------ counting
def test_counts_equal_counter_and_land_in_the_view(store, lee_texts, tok):
    add_corpus(store, "cc", lee_texts, shard_size=100)
    counts = build_unigram_counts(store, "cc", CFG)
    assert as_dict(counts) == dict(token_counter(tok, lee_texts))
    assert counts.n_docs == len(lee_texts)
    assert counts.n_bytes == sum(len(t.encode()) for t in lee_texts)
    rows = store.sql(f"SELECT token_id, token, count, tokenizer FROM {COUNTS_TABLE} WHERE corpus = 'cc'").to_pylist()
    assert {r["token_id"]: r["count"] for r in rows} == as_dict(counts)  # only nonzero ids are stored
    assert all(r["tokenizer"] == "cl100k_base" and r["token"] == tok.token_str(r["token_id"]) for r in rows)
    top = store.sql(f"SELECT token, count FROM {COUNTS_TABLE} WHERE corpus='cc' ORDER BY count DESC LIMIT 1")
    (most_id, most_n), = token_counter(tok, lee_texts).most_common(1)
    assert top.to_pylist() == [{"token": tok.token_str(most_id), "count": most_n}]


def test_map_reduce_is_shard_and_process_independent(store, lee_texts, tok):
    add_corpus(store, "one", lee_texts)
    add_corpus(store, "three", lee_texts, shard_size=100)
    maps = [count_unigrams(s.path, CFG, tok) for s in store.shards("three")]
    a, b, c = maps
    left, right = reduce_counts(reduce_counts(a, b), c), reduce_counts(a, reduce_counts(b, c))
    assert as_dict(left) == as_dict(right) == as_dict(reduce_counts(c, reduce_counts(b, a)))
    one = build_unigram_counts(store, "one", CFG)
    three_pool = build_unigram_counts(store, "three", UnigramConfig(progress=False, workers=2))
    assert as_dict(one) == as_dict(left) == as_dict(three_pool)
    assert three_pool.n_docs == one.n_docs == len(lee_texts)


def test_cache_reused_and_invalidated_by_new_shards(store, lee_texts, tok):
    add_corpus(store, "cc", lee_texts[:200], shard_size=100)
    build_unigram_counts(store, "cc", CFG)
    shard_files = {p.name: p.stat().st_mtime_ns for p in store.root.glob("artifacts/unigram_shards/*/*.npz")}
    assert len(shard_files) == 2
    first = store.read_result(COUNTS_TABLE)
    build_unigram_counts(store, "cc", CFG)  # unchanged corpus: read back, nothing counted or written
    assert store.read_result(COUNTS_TABLE)["created_at"].to_list() == first["created_at"].to_list()

    from corpora.store import make_documents

    store.append_shard("cc", make_documents({"text": t} for t in lee_texts[200:]))  # content changes
    counts = build_unigram_counts(store, "cc", CFG)
    assert as_dict(counts) == dict(token_counter(tok, lee_texts))
    after = {p.name: p.stat().st_mtime_ns for p in store.root.glob("artifacts/unigram_shards/*/*.npz")}
    assert len(after) == 3 and all(after[k] == v for k, v in shard_files.items())  # old shards not recounted
    view = store.read_result(COUNTS_TABLE)
    assert view["content_hash"].unique().to_list() == [store.corpus("cc").content_hash]  # replaced, no dups
    assert view["count"].sum() == sum(token_counter(tok, lee_texts).values())


def test_other_tokenizer_gets_its_own_counts(store, lee_texts, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(lee_texts, trainers.BpeTrainer(vocab_size=500, show_progress=False,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf.save(str(store.artifact_dir("tokenizers", "lee500") / "tokenizer.json"))
    add_corpus(store, "cc", lee_texts[:50])
    mine = build_unigram_counts(store, "cc", UnigramConfig(tokenizer="lee500", progress=False))
    ref = Counter(i for e in hf.encode_batch(lee_texts[:50], add_special_tokens=False) for i in e.ids)
    assert as_dict(mine) == dict(ref)
    build_unigram_counts(store, "cc", CFG)
    assert sorted(store.read_result(COUNTS_TABLE)["tokenizer"].unique().to_list()) == ["cl100k_base", "lee500"]


# ------------------------------------------------------------------------------------------ metrics
def test_metrics_match_hand_computation_on_real_text(store, lee_texts, tok):
    train_texts, test_texts = lee_texts[:40], lee_texts[200:230]
    add_corpus(store, "train", train_texts)
    add_corpus(store, "test", test_texts, role="test")
    for alpha in (0.01, 0.5):
        cfg = UnigramConfig(alpha=alpha, progress=False)
        p = build_distribution(store, "test", cfg, tok)
        q = build_distribution(store, "train", cfg, tok)
        row = compare_unigrams(p, q, tok, alpha=alpha, top=5)
        assert_metrics(row, hand_metrics(token_counter(tok, test_texts), token_counter(tok, train_texts),
                                         tok.n_vocab, alpha))
        assert 0 < row["type_coverage"] < 1 and 0 < row["token_coverage"] < 1
        assert row["kl_bits"] == pytest.approx(row["kl_nats"] / math.log(2))
        top = json.loads(row["top_kl_tokens"])
        assert len(top) == 5 and [t["kl_nats"] for t in top] == sorted((t["kl_nats"] for t in top), reverse=True)
        assert sum(t["kl_nats"] for t in top) <= row["kl_nats"]
        for t in top:
            assert t["token"] == tok.token_str(t["token_id"])
            assert t["count_test"] == token_counter(tok, test_texts)[t["token_id"]]


def test_identical_corpora_kl_zero_coverage_one(store, lee_texts, tok):
    add_corpus(store, "a", lee_texts[:60])
    add_corpus(store, "b", lee_texts[:60], role="test")  # same texts, a separate corpus
    cfg = UnigramConfig(alpha=1e-9, progress=False)
    row = compare_unigrams(build_distribution(store, "b", cfg, tok), build_distribution(store, "a", cfg, tok),
                           tok, alpha=1e-9)
    assert row["type_coverage"] == 1.0 and row["token_coverage"] == 1.0
    assert row["js_nats"] == pytest.approx(0.0, abs=1e-12)
    assert row["kl_nats"] == pytest.approx(0.0, abs=1e-6)  # -> 0 as alpha -> 0
    assert row["entropy_test_nats"] == pytest.approx(row["entropy_train_nats"])


def test_disjoint_corpora_coverage_zero_finite_kl(store, tok):
    test_texts, train_texts = ["12 34 56 12"], ["apple banana cherry"]
    c_test, c_train = token_counter(tok, test_texts), token_counter(tok, train_texts)
    assert not set(c_test) & set(c_train)  # hand-checkable: digits vs words share no token
    add_corpus(store, "nums", test_texts, role="test")
    add_corpus(store, "words", train_texts)
    row = compare_unigrams(build_distribution(store, "nums", CFG, tok), build_distribution(store, "words", CFG, tok),
                           tok, alpha=0.01)
    assert row["type_coverage"] == 0.0 and row["token_coverage"] == 0.0
    assert math.isfinite(row["kl_nats"]) and row["kl_nats"] > 0
    assert row["js_nats"] == pytest.approx(math.log(2))  # disjoint supports: JS is maximal
    assert_metrics(row, hand_metrics(c_test, c_train, tok.n_vocab, 0.01))


def test_mixture_is_weighted_mix_of_components(store, lee_texts, tok):
    add_corpus(store, "cc", lee_texts[:100])
    add_corpus(store, "hq", [t.lower() for t in lee_texts[100:150]], kind="synthetic", synthetic_type="hq")
    add_corpus(store, "wiki", lee_texts[250:], role="test")
    cfg = UnigramConfig(progress=False)
    mix = build_distribution(store, "cc=0.67,hq=0.33", cfg, tok)
    cc, hq = build_distribution(store, "cc", cfg, tok), build_distribution(store, "hq", cfg, tok)
    assert np.allclose(mix.probs(), 0.67 * cc.probs() + 0.33 * hq.probs(), rtol=0, atol=1e-15)
    assert np.allclose(mix.probs(0.01), 0.67 * cc.probs(0.01) + 0.33 * hq.probs(0.01), rtol=0, atol=1e-15)
    assert mix.probs().sum() == pytest.approx(1.0) and mix.probs(0.01).sum() == pytest.approx(1.0)

    # hand: KL against the mix of the components' smoothed distributions; coverage against their union
    p_c = token_counter(tok, lee_texts[250:])
    c_cc, c_hq = token_counter(tok, lee_texts[:100]), token_counter(tok, [t.lower() for t in lee_texts[100:150]])
    n_p, n_cc, n_hq, V = sum(p_c.values()), sum(c_cc.values()), sum(c_hq.values()), tok.n_vocab
    q = lambda v: (0.67 * (c_cc.get(v, 0) + 0.01) / (n_cc + 0.01 * V)
                   + 0.33 * (c_hq.get(v, 0) + 0.01) / (n_hq + 0.01 * V))
    wiki = build_distribution(store, "wiki", cfg, tok)
    row = compare_unigrams(wiki, mix, tok, alpha=0.01)
    assert row["kl_nats"] == pytest.approx(sum(n / n_p * math.log(n / n_p / q(v)) for v, n in p_c.items()), rel=1e-9)
    assert row["token_coverage"] == pytest.approx(sum(n for v, n in p_c.items() if v in c_cc or v in c_hq) / n_p)
    assert row["n_tokens_train"] == n_cc + n_hq and row["n_types_train"] == len(set(c_cc) | set(c_hq))
    single = compare_unigrams(wiki, build_distribution(store, "cc:1.0", cfg, tok), tok)
    assert single["kl_nats"] == compare_unigrams(wiki, cc, tok)["kl_nats"]


@pytest.mark.parametrize("spec, message", [
    ("cc=0.5,hq=0.4", "sum to 0.9"),
    ("cc=0.5,hq", "NAME=WEIGHT"),
    ("cc=x,hq=0.5", "not a number"),
    ("cc=-0.5,hq=1.5", ">= 0"),
    ("cc=0.5,cc=0.5", "twice"),
    ("=1", "NAME=WEIGHT"),
    ("cc:0.5,hq:0.4", "sum to 0.9"),  # the deprecated NAME:WEIGHT syntax is checked the same way
])
def test_malformed_mixtures(spec, message):
    with pytest.raises(UnigramError, match=message):
        parse_mixture(spec)


def test_parse_mixture():
    assert parse_mixture("cc") == [("cc", 1.0)]
    assert parse_mixture(" cc=0.67, hq=0.33 ") == [("cc", 0.67), ("hq", 0.33)]
    assert parse_mixture(" cc:0.67, hq:0.33 ") == [("cc", 0.67), ("hq", 0.33)]  # the old syntax, deprecated
    assert parse_mixture("cc:0.3,hq:0.3,qa:0.4") == [("cc", 0.3), ("hq", 0.3), ("qa", 0.4)]


# ------------------------------------------------------------------------------------------ shrinkage
def test_rarefaction_matches_enumeration():
    counts = np.array([3, 0, 1, 2, 0, 1])
    tokens = [v for v, c in enumerate(counts) for _ in range(c)]
    for n in range(1, len(tokens) + 1):
        subsets = list(combinations(range(len(tokens)), n))
        exact = sum(len({tokens[i] for i in s}) for s in subsets) / len(subsets)
        assert rarefied_types(counts, n) == pytest.approx(exact, rel=1e-9)
    full = counts[counts > 0] / counts.sum()
    assert subsampled_entropy_nats(counts, counts.sum(), 3, 0) == pytest.approx(-(full * np.log(full)).sum())
    assert subsampled_entropy_nats(counts, 4, 3, 0) < -(full * np.log(full)).sum()


def test_shrinkage_of_synthetic_corpus_against_its_source(store, lee_texts):
    from corpora.store import compute_doc_id

    add_corpus(store, "cc", lee_texts)
    add_corpus(store, "wiki", lee_texts[:20], role="test")
    # stand-in for a rephrasing with a narrower vocabulary: each article's first sentence, lowercased
    rows = [{"text": t.split(". ")[0].lower(), "source_doc_id": compute_doc_id(t), "generator": "test",
             "prompt_id": "first-sentence"} for t in lee_texts[:150]]
    add_corpus(store, "hq", None, kind="synthetic", synthetic_type="hq", rows=rows)
    report = run_unigram(store, UnigramConfig(train=["hq"], test=["wiki"], progress=False, n_subsamples=2))
    (s,) = report.shrinkage
    assert (s["synthetic"], s["source"]) == ("hq", "cc")
    assert s["budget_tokens"] == s["n_tokens_synthetic"] < s["n_tokens_source"]
    assert s["types_at_budget_synthetic"] == s["n_types_synthetic"]  # the smaller side is not subsampled
    assert s["n_types_synthetic"] < s["types_at_budget_source"] < s["n_types_source"]
    assert s["types_ratio"] < 1
    assert store.read_result(SHRINKAGE_TABLE).height == 1


# ------------------------------------------------------------------------------------------ the step, CLI
def test_run_unigram_matrix_is_stored_once_per_pair(store, lee_texts):
    add_corpus(store, "cc", lee_texts[:100])
    add_corpus(store, "wiki", lee_texts[200:], role="test")
    add_corpus(store, "news", lee_texts[150:200], role="test")
    cfg = UnigramConfig(train=["cc", "cc=0.5,news=0.5"], test=["wiki", "news"], progress=False)
    report = run_unigram(store, cfg)
    assert [(r["train"], r["test"]) for r in report.comparisons] == [
        ("cc", "wiki"), ("cc", "news"), ("cc=0.5,news=0.5", "wiki"), ("cc=0.5,news=0.5", "news")]
    run_unigram(store, cfg)  # idempotent: same pairs replace their rows
    table = store.read_result(COMPARISONS_TABLE)
    assert table.height == 4 and set(table["alpha"]) == {cfg.alpha} and set(table["units"]) == {"nats"}
    assert json.loads(table["config"][0])["alpha"] == cfg.alpha


@pytest.mark.parametrize("args, message", [
    (["--train", "nope", "--test", "wiki"], "unknown corpus 'nope'"),
    (["--train", "cc", "--test", "empty"], "'empty' is empty"),
    (["--train", "cc", "--test", "wiki", "--tokenizer", "no_such_tok"], "unknown tokenizer 'no_such_tok'"),
    (["--train", "cc=0.7,wiki", "--test", "wiki"], "malformed mixture"),
    (["--train", "cc=0.7,wiki=0.7", "--test", "wiki"], "sum to 1.4"),
    (["--train", "cc", "--test", "wiki", "--alpha", "0"], "alpha must be > 0"),
])
def test_cli_bad_input_is_one_line_exit_2(store, lee_texts, args, message, capsys):
    add_corpus(store, "cc", lee_texts[:5])
    add_corpus(store, "wiki", lee_texts[5:10], role="test")
    store.create_corpus("empty", "natural", "test")
    assert main(["--store", str(store.root), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    if "unknown corpus" in message:
        assert "cc, empty, wiki" in err  # lists what the store has


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Store:
    from corpora.demo import build_demo

    store = Store(tmp_path_factory.mktemp("demo") / "store", create=True)
    build_demo(store, progress=False)
    return store


@pytest.mark.slow  # builds the demo store
def test_cli_on_demo_store(demo_store, run_cli):
    out = run_cli("stats.unigram", "--store", demo_store.root, "--train", "cc", "--test", "wiki", "--json",
                  "--no-progress")
    assert out.code == 0, out.err
    (row,) = json.loads(out.out)["comparisons"]
    assert (row["train"], row["test"], row["tokenizer"], row["units"]) == ("cc", "wiki", "cl100k_base", "nats")
    assert 0 < row["type_coverage"] < row["token_coverage"] < 1  # frequent types are the shared ones
    assert 0 < row["js_nats"] < math.log(2) and row["kl_nats"] > row["js_nats"]
    assert len(row["top_kl_tokens"]) == 10 and row["top_kl_tokens"][0]["count_train"] == 0
    wiki_tokens = demo_store.sql("SELECT sum(count) AS n FROM unigram_counts WHERE corpus = 'wiki'").to_pylist()
    assert wiki_tokens == [{"n": row["n_tokens_test"]}]
    text = run_cli("stats.unigram", "--store", demo_store.root, "--train", "cc", "--test", "wiki", "--top", "3",
                   "--no-progress")
    assert text.code == 0 and "KL(test||train)" in text.out and "alpha=0.01" in text.out
    sql = run_cli("corpora.__main__", "sql", "--store", demo_store.root,
                  "SELECT token, count FROM unigram_counts WHERE corpus='wiki' ORDER BY count DESC LIMIT 20")
    assert sql.code == 0, sql.err
    assert " the" in sql.out and "(20 rows)" in sql.out


def test_corrupt_shard_is_a_clear_error(tmp_path):
    path = tmp_path / "0.parquet"
    path.write_bytes(b"PAR1 this is not parquet" * 10)
    with pytest.raises(UnigramError, match=f"cannot read shard {path}"):
        count_unigrams(path, CFG)
