"""stats.dedup on small real corpora (gensim's Lee news articles) with planted near-duplicates."""

from __future__ import annotations

import json
import random
import re
import unicodedata

import numpy as np
import polars as pl
import pytest
from datasketch import MinHash, MinHashLSH

from corpora.store import StoreError, UnknownCorpus, compute_doc_id, make_documents
from stats import dedup
from stats.dedup import DedupConfig

try:
    from conftest import add_corpus, killed_tmp_dir
except ImportError:  # tests/ imported as a package
    from tests.conftest import add_corpus, killed_tmp_dir

CFG = DedupConfig(workers=1)


def exact_shingles(text: str, n: int = 5) -> set[str]:
    """The documented normalisation, written independently with Python's re."""
    words = re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def exact_jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = exact_shingles(a, n), exact_shingles(b, n)
    return len(sa & sb) / len(sa | sb)


def edit_words(text: str, rate: float, seed: int) -> str:
    """Replace a share `rate` of the words with a fixed foreign word."""
    rng = random.Random(seed)
    words = text.split()
    for k in rng.sample(range(len(words)), max(1, int(rate * len(words)))):
        words[k] = "zzyzx"
    return " ".join(words)


@pytest.fixture(scope="module")
def long_lee(lee_texts) -> list[str]:
    """Lee articles with at least 120 words, so one word edit moves Jaccard by little."""
    return [t for t in lee_texts if len(t.split()) >= 120]


def planted(long_lee):
    """40 unrelated articles plus: an exact copy of 0, a case/punctuation/spacing variant of 1,
    a one-word edit of 2 and a second one of 2 (a cluster of three)."""
    base = long_lee[:40]
    extra = [
        base[0],
        "  " + base[1].upper().replace(".", " ;") + "  ",
        edit_words(base[2], 0.005, seed=1),
        edit_words(base[2], 0.005, seed=2),
    ]
    return base + extra


# --------------------------------------------------------------------------------------- signatures
def test_signature_equals_datasketch_minhash(long_lee):
    sig, n_shingles, status = dedup.compute_signatures(long_lee[:5], CFG)
    for k in range(5):
        m = MinHash(num_perm=CFG.num_perm, seed=CFG.seed, hashfunc=int, scheme="affine32")
        m.update_batch([int(h) for h in dedup.shingle_hashes(long_lee[k], CFG)])
        assert np.array_equal(m.hashvalues, sig[k])
        # normalised words (NFKC, lower case, \w+ runs), then one shingle per run of `ngram` words
        n_words = len(re.findall(r"\w+", unicodedata.normalize("NFKC", long_lee[k]).lower()))
        assert n_shingles[k] == n_words - CFG.ngram + 1 > 0
        # and MinHashLSH accepts our LeanMinHash values
    lsh = MinHashLSH(threshold=0.8, num_perm=CFG.num_perm)
    lsh.insert("a", dedup.to_lean_minhash(sig[0], CFG))
    assert lsh.query(dedup.to_lean_minhash(sig[0], CFG)) == ["a"]
    assert status.tolist() == [dedup.STATUS_OK] * 5


def test_permutations_are_datasketchs():
    for num_perm, seed in ((128, 1), (64, 7)):
        a, b = dedup.build_permutations(DedupConfig(num_perm=num_perm, seed=seed))
        ref = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        assert np.array_equal(a, ref[0]) and np.array_equal(b, ref[1])


def test_signature_independent_of_batching(long_lee):
    whole, _, _ = dedup.compute_signatures(long_lee[:30], CFG)
    parts = [dedup.compute_signatures(long_lee[i:min(i + 7, 30)], CFG)[0] for i in range(0, 30, 7)]
    assert np.array_equal(whole, np.concatenate(parts))


def test_minhash_estimate_close_to_exact_jaccard(long_lee):
    """Pairs spanning Jaccard 0.05..1: estimate within 4 std of the exact value, mean error small."""
    texts_a, texts_b, exact = [], [], []
    for k, rate in enumerate([0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3] * 3):
        a = long_lee[k]
        b = edit_words(a, rate, seed=k) if rate else a
        texts_a.append(a), texts_b.append(b), exact.append(exact_jaccard(a, b))
    sa, _, _ = dedup.compute_signatures(texts_a, CFG)
    sb, _, _ = dedup.compute_signatures(texts_b, CFG)
    est = (sa == sb).mean(axis=1)
    exact = np.array(exact)
    assert exact.min() < 0.3 and exact.max() == 1.0
    std = np.sqrt(exact * (1 - exact) / CFG.num_perm)
    assert np.all(np.abs(est - exact) <= 4 * std + 1e-9), list(zip(est, exact))
    assert np.abs(est - exact).mean() < 0.03


def test_normalisation_ignores_case_punctuation_whitespace():
    text = "The quick brown fox jumps over the lazy dog near the river bank today"
    variant = "  THE quick, brown   fox -- jumps over the LAZY dog; near the river bank today!\n"
    a, _, _ = dedup.compute_signatures([text, variant], CFG)
    assert np.array_equal(a[0], a[1])


def test_empty_and_short_documents_are_counted_and_skipped():
    sig, n_sh, status = dedup.compute_signatures(["", None, "   ...  ", "one two three four", "a b c d e"], CFG)
    assert status.tolist() == [dedup.STATUS_EMPTY, dedup.STATUS_EMPTY, dedup.STATUS_EMPTY,
                               dedup.STATUS_TOO_SHORT, dedup.STATUS_OK]
    assert n_sh.tolist() == [0, 0, 0, 0, 1]
    assert np.all(sig[:4] == np.iinfo(np.uint32).max)


def test_config_rejects_bad_threshold():
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="threshold must be strictly between 0 and 1"):
            DedupConfig(threshold=bad)
    with pytest.raises(ValueError, match="ngram"):
        DedupConfig(ngram=0)


# --------------------------------------------------------------------------------------- within
def test_within_finds_planted_clusters(store, long_lee):
    texts = planted(long_lee) + ["", "too short text"]
    add_corpus(store, "cc", texts)
    report = dedup.analyze_corpus(store, "cc", CFG, progress=False)
    c = report.clusters
    got = sorted(sorted(g) for g in c.group_by("cluster_id").agg(pl.col("row"))["row"].to_list())
    assert got == [[0, 40], [1, 41], [2, 42, 43]]
    reps = sorted(c.filter(pl.col("is_representative"))["row"].to_list())
    assert reps == [0, 1, 2]  # the first document of each cluster in corpus order is kept
    s = report.summary
    assert (s["n_docs"], s["n_empty"], s["n_too_short"], s["n_docs_hashed"]) == (46, 1, 1, 44)
    assert (s["n_clusters"], s["n_docs_in_clusters"], s["n_duplicates"]) == (3, 7, 4)
    assert s["dup_rate"] == pytest.approx(4 / 46)
    # results are in the store for SQL; a rerun replaces its parts instead of adding rows
    dedup.analyze_corpus(store, "cc", CFG, progress=False)
    rows = store.sql("SELECT n_clusters, dup_rate FROM dup_summary WHERE corpus = 'cc'").to_pylist()
    assert rows == [{"n_clusters": 3, "dup_rate": pytest.approx(4 / 46)}]
    assert store.sql("SELECT count(*) AS n FROM dup_clusters").to_pylist() == [{"n": 7}]
    skipped = store.read_result("dup_skipped")
    assert sorted(skipped["reason"].to_list()) == ["empty", "too_short"]


def test_one_shard_and_three_shards_give_identical_results(store, long_lee):
    texts = planted(long_lee)
    add_corpus(store, "one", texts)
    add_corpus(store, "three", texts, shard_size=15)
    assert len(store.shards("three")) == 3
    r1 = dedup.analyze_corpus(store, "one", CFG, progress=False)
    r3 = dedup.analyze_corpus(store, "three", DedupConfig(workers=2), progress=False)  # worker pool path
    s1 = dedup.build_signatures(store, "one", CFG, progress=False).sigs
    s3 = dedup.build_signatures(store, "three", CFG, progress=False).sigs
    assert np.array_equal(s1.signatures, s3.signatures) and np.array_equal(s1.doc_id, s3.doc_id)
    cols = ["cluster_id", "doc_id", "cluster_size", "is_representative", "jaccard_to_representative"]
    assert r1.clusters.select(cols).sort("doc_id").equals(r3.clusters.select(cols).sort("doc_id"))
    for key in ("n_clusters", "n_docs_in_clusters", "dup_rate", "n_pairs"):
        assert r1.summary[key] == r3.summary[key]


def test_signature_cache_is_reused_and_follows_content(store, long_lee):
    add_corpus(store, "cc", long_lee[:30], shard_size=10)
    first = dedup.build_signatures(store, "cc", CFG, progress=False)
    assert (first.n_shards_computed, first.n_shards_cached) == (3, 0)
    files = sorted(store.artifact_dir("dedup_bands", "cc").glob("*"))
    assert len(files) == 9  # signatures, documents, band keys per shard
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = dedup.build_signatures(store, "cc", CFG, progress=False)
    assert (again.n_shards_computed, again.n_shards_cached) == (0, 3)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert np.array_equal(first.sigs.signatures, again.sigs.signatures)
    # another threshold: new band files from the cached signatures (not rewritten)
    sig_files = sorted(store.artifact_dir("dedup_bands", "cc").glob("*.sig.npy"))
    sig_mtimes = [f.stat().st_mtime_ns for f in sig_files]
    rebanded = dedup.build_bands(store, "cc", DedupConfig(workers=1, threshold=0.5), progress=False)
    assert rebanded.n_shards_computed == 3 and [f.stat().st_mtime_ns for f in sig_files] == sig_mtimes
    assert len(list(store.artifact_dir("dedup_bands", "cc").glob("*.bands.parquet"))) == 6
    # other parameters: a separate cache entry; a new shard: only that shard is hashed
    other = dedup.build_signatures(store, "cc", DedupConfig(workers=1, ngram=3), progress=False)
    assert other.n_shards_computed == 3
    store.append_shard("cc", make_documents([{"text": t} for t in long_lee[30:35]]))
    grown = dedup.build_signatures(store, "cc", CFG, progress=False)
    assert (grown.n_shards_computed, grown.n_shards_cached) == (1, 3)
    assert grown.content_hash != first.content_hash and len(grown.sigs) == 35


# --------------------------------------------------------------------------------------- across
def test_against_reports_overlap_and_source_similarity(store, long_lee):
    cc = long_lee[:40]
    add_corpus(store, "cc", cc)
    add_corpus(store, "wiki", long_lee[60:70])
    # a "synthetic" corpus: 4 near-copies of cc docs, 3 heavy rewrites of cc docs, 3 unrelated texts
    rows = ([{"text": edit_words(cc[k], 0.005, seed=k), "source_doc_id": compute_doc_id(cc[k])} for k in range(4)]
            + [{"text": edit_words(cc[k], 0.3, seed=k), "source_doc_id": compute_doc_id(cc[k])}
               for k in range(10, 13)]
            + [{"text": long_lee[50 + k], "source_doc_id": "nonexistent"} for k in range(3)])
    store.create_corpus("hq", "synthetic", "train", "hq", meta={"source": "cc"})
    store.append_shard("hq", make_documents(rows))
    report = dedup.analyze_against(store, "hq", "cc", CFG, progress=False)
    s = report.summary
    assert (s["n_with_match"], s["n_docs_hashed"]) == (4, 10)
    assert s["share_with_match"] == pytest.approx(0.4)
    pairs = report.pairs
    assert sorted(pairs["against_row"].to_list()) == [0, 1, 2, 3]
    assert pairs["jaccard_est"].min() >= 0.8
    src = report.source.sort("jaccard_est", nulls_last=True)
    assert (s["n_source_found"], s["n_source_missing"]) == (7, 3)
    heavy = [exact_jaccard(cc[k], rows[4 + i]["text"]) for i, k in enumerate(range(10, 13))]
    assert src["jaccard_est"].head(3).to_list() == pytest.approx(sorted(heavy), abs=0.15)
    assert s["source_share_near_dup"] == pytest.approx(4 / 7)
    # against an unrelated corpus: no overlap
    r2 = dedup.analyze_against(store, "hq", "wiki", CFG, progress=False)
    assert r2.summary["n_with_match"] == 0
    assert store.sql("SELECT count(*) AS n FROM dup_summary WHERE mode = 'across'").to_pylist() == [{"n": 2}]


def test_source_lookup_without_meta_searches_natural_corpora(store, long_lee):
    add_corpus(store, "news", long_lee[:10])
    rows = [{"text": long_lee[k], "source_doc_id": compute_doc_id(long_lee[k])} for k in range(3)]
    store.create_corpus("qa", "synthetic", "train", "qa")  # no meta['source']
    store.append_shard("qa", make_documents(rows))
    report = dedup.analyze_corpus(store, "qa", CFG, progress=False)
    assert report.source["source_corpus"].to_list() == ["news"] * 3
    assert report.source["jaccard_est"].to_list() == [1.0, 1.0, 1.0]


def test_unknown_corpus_lists_corpora(store, long_lee):
    add_corpus(store, "cc", long_lee[:3])
    with pytest.raises(UnknownCorpus, match="has: cc"):
        dedup.analyze_corpus(store, "nope", CFG, progress=False)
    with pytest.raises(UnknownCorpus, match="has: cc"):
        dedup.analyze_against(store, "cc", "nope", CFG, progress=False)
    with pytest.raises(ValueError, match="is the corpus itself"):
        dedup.analyze_against(store, "cc", "cc", CFG, progress=False)


# --------------------------------------------------------------------------------------- curation
def test_curate_keeps_one_document_per_cluster(store, long_lee):
    texts = planted(long_lee) + [""]
    add_corpus(store, "cc", texts, shard_size=20)
    result = dedup.curate(store, "cc", "cc_dedup", CFG, progress=False)
    assert (result.n_docs, result.n_dropped, result.n_kept) == (45, 4, 41)
    out = store.corpus("cc_dedup")
    assert out.n_docs == 41 and out.meta["dedup_of"] == "cc" and out.meta["n_dropped"] == 4
    assert (out.kind, out.role) == ("natural", "train")
    kept = store.scan("cc_dedup").select("text").collect()["text"].to_list()
    assert kept == [t for k, t in enumerate(texts) if k not in (40, 41, 42, 43)]
    dropped = store.read_result("dedup_dropped", "cc_dedup")
    assert sorted(dropped["row"].to_list()) == [0, 1, 2, 3]  # rows 40..43 are rows 0..3 of shard 2
    assert set(dropped["reason"]) <= {"near_duplicate", "near_duplicate:identical_signature"}
    assert dropped.filter(pl.col("reason") == "near_duplicate:identical_signature").height >= 2
    # rerun (as after an interruption): nothing is written twice
    again = dedup.curate(store, "cc", "cc_dedup", CFG, progress=False)
    assert again.n_already_written == 41 and store.corpus("cc_dedup").n_docs == 41
    # an existing corpus of another origin is not overwritten
    add_corpus(store, "other", long_lee[:3])
    with pytest.raises(StoreError, match="already exists"):
        dedup.curate(store, "cc", "other", CFG, progress=False)


def test_curate_resumes_after_partial_write(store, long_lee):
    texts = planted(long_lee)
    add_corpus(store, "cc", texts, shard_size=20)
    full = dedup.curate(store, "cc", "full", CFG, progress=False)
    # simulate an interruption after the first shard: same meta, only shard 0 written
    info = store.corpus("full")
    store.create_corpus("part", "natural", "train", meta=info.meta)
    store.append_shard("part", store.scan("full").head(20).collect())
    resumed = dedup.curate(store, "cc", "part", CFG, progress=False)
    assert resumed.n_already_written == 20
    assert store.scan("part").select("doc_id").collect().equals(store.scan("full").select("doc_id").collect())
    assert resumed.n_kept == full.n_kept


# --------------------------------------------------------------------------------------- CLI
def test_cli_within_and_against(store, long_lee, capsys):
    add_corpus(store, "cc", planted(long_lee))
    add_corpus(store, "wiki", long_lee[60:65])
    assert dedup.main(["--corpus", "cc", "--store", str(store.root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 near-duplicate clusters" in out and "7 documents in clusters" in out
    assert dedup.main(["--corpus", "cc", "--against", "wiki", "--store", str(store.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["n_with_match"] == 0 and data["summary"]["against"] == "wiki"
    assert dedup.main(["--corpus", "nope", "--store", str(store.root)]) == 2
    assert "has: cc, wiki" in capsys.readouterr().err
    assert dedup.main(["--corpus", "cc", "--threshold", "1.2", "--store", str(store.root)]) == 2
    assert "threshold must be strictly between 0 and 1" in capsys.readouterr().err


def test_curate_command_and_its_synthmix_spelling(store, long_lee, capsys):
    """`synthmix corpora dedup` runs `python -m stats.dedup curate`; the old `python -m corpora dedup` still runs
    it (deprecated alias, in a child process) and says where it went."""
    from corpora.__main__ import main as corpora_main
    from reports import cli

    add_corpus(store, "cc", planted(long_lee))
    rc = cli.main(["corpora", "dedup", "cc", "--out", "cc_dedup", "--store", str(store.root), "--json",
                   "--workers", "1"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["n_kept"] == 40
    assert store.corpus("cc_dedup").n_docs == 40
    assert corpora_main(["--store", str(store.root), "dedup", "cc", "--out", "x", "--workers", "1", "-q"]) == 0
    assert "python -m stats.dedup curate" in capsys.readouterr().err
    assert store.corpus("x").n_docs == 40
    # an --out that is another corpus is refused, unless --overwrite
    add_corpus(store, "other", ["an unrelated document of several words here"])
    args = ["curate", "cc", "--out", "other", "--store", str(store.root), "--workers", "1", "--json"]
    assert dedup.main(args) == 2 and "is not this deduplication" in capsys.readouterr().err
    assert dedup.main([*args, "--overwrite"]) == 0 and store.corpus("other").n_docs == 40
    assert dedup.main(["curate", "cc", "--out", "cc", "--store", str(store.root), "--overwrite"]) == 2
    assert store.corpus("cc").n_docs == len(planted(long_lee))  # the source is never the one replaced


# --------------------------------------------------------------------------------------- shared data
def test_c4_sample_planted_copies_found(store, shared_data):
    texts = [json.loads(line)["text"] for line in (shared_data / "cc" / "c4_sample.jsonl").open()][:200]
    copies = [edit_words(t, 0.005, seed=k) for k, t in enumerate(texts[:20]) if len(t.split()) >= 200]
    add_corpus(store, "c4", texts + copies)
    report = dedup.analyze_corpus(store, "c4", CFG, progress=False)
    pairs = {(a, b) for a, b in zip(report.pairs["row"].to_list(), report.pairs["against_row"].to_list())}
    originals = [k for k, t in enumerate(texts[:20]) if len(t.split()) >= 200]
    for copy_row, k in enumerate(originals, start=len(texts)):
        assert (k, copy_row) in pairs or (copy_row, k) in pairs


# --------------------------------------------------------------------------------------- out of core
def reference_pairs(sigs: np.ndarray, cfg: DedupConfig) -> set[tuple[int, int]]:
    """The in-memory reference: datasketch MinHashLSH (same band split), query-then-insert, verified."""
    lsh = cfg.build_lsh()
    out = set()
    for j, sig in enumerate(sigs):
        m = dedup.to_lean_minhash(sig, cfg)
        for i in lsh.query(m):
            if np.count_nonzero(sigs[i] == sig) / cfg.num_perm >= cfg.threshold:
                out.add((i, j))
        lsh.insert(j, m, check_duplication=False)
    return out


def test_banded_join_equals_datasketch_lsh(store, long_lee):
    """Same verified pairs as datasketch's in-memory MinHashLSH, on planted copies at several edit rates."""
    texts = planted(long_lee) + [edit_words(long_lee[k], r, seed=k) for k, r in
                                 zip(range(3, 30), [0.01, 0.03, 0.05, 0.08, 0.1] * 6)]
    add_corpus(store, "cc", texts, shard_size=17)
    report = dedup.analyze_corpus(store, "cc", CFG, progress=False)
    sigs, _, _ = dedup.compute_signatures(texts, CFG)
    ref = reference_pairs(sigs, CFG)
    got = {(17 * s + r, 17 * s2 + r2) for s, r, s2, r2 in report.pairs.select(
        "shard", "row", "against_shard", "against_row").iter_rows()}
    assert len(ref) > 10 and got == ref
    assert report.summary["n_candidates"] >= len(ref) and report.summary["n_capped_buckets"] == 0
    assert (report.summary["bands"], report.summary["rows_per_band"]) == (16, 8)  # datasketch's choice


def _band_files(tmp_path, n_files: int, n_docs: int, bands: int = 16):
    """Band files of random keys, with every 500th document sharing band 3 with the next one."""
    rng = np.random.default_rng(0)
    files = []
    for f in range(n_files):
        keys = rng.integers(-2**63, 2**63 - 1, size=(n_docs, bands))
        keys[1::500, 3] = keys[0::500, 3][: len(keys[1::500])]
        path = tmp_path / f"{f}.bands.parquet"
        pl.DataFrame({"band": np.repeat(np.arange(bands, dtype=np.int16), n_docs), "key": keys.T.ravel(),
                      "row": np.tile(np.arange(n_docs, dtype=np.int32), bands)}).write_parquet(path)
        files.append((str(path), f * n_docs))
    return files


def _expected_pairs(files) -> set[tuple[int, int]]:
    df = pl.concat([pl.read_parquet(p).with_columns(doc=pl.col("row").cast(pl.Int64) + b) for p, b in files])
    groups = df.group_by("band", "key").agg(pl.col("doc").sort()).filter(pl.col("doc").list.len() > 1)
    return {(g[a], g[b]) for g in groups["doc"].to_list() for a in range(len(g)) for b in range(a + 1, len(g))}


def test_candidate_grouping_spills_to_disk_with_same_pairs(tmp_path):
    """The data does not fit in a 24 MB DuckDB budget (without a temporary folder the query runs out of
    memory); with one, DuckDB spills and the pairs equal those of a generous budget and of polars."""
    import duckdb

    files = _band_files(tmp_path, 2, 20_000)
    expected = _expected_pairs(files)
    assert len(expected) == 80

    def pairs(memory_limit, tmp):
        out = tmp_path / "cand.parquet"
        stats = dedup.find_candidates(files, out, DedupConfig(memory_limit=memory_limit, threads=1), tmp)
        got = set(map(tuple, pl.read_parquet(out).select("i", "j").rows()))
        assert stats["n_candidates"] == len(got)
        return got

    assert pairs("1GB", tmp_path / "spill") == expected
    with pytest.raises(duckdb.OutOfMemoryException):
        pairs("24MB", None)  # no temporary folder: no spilling
    assert pairs("24MB", tmp_path / "spill") == expected
    assert not (tmp_path / "spill").exists()  # the spill folder is removed afterwards


def test_large_buckets_are_capped(store, long_lee):
    """12 exact copies share a bucket in every band: with max_bucket=5 each is compared with the first
    copy only (11 pairs, not 66), the summary says so, and the cluster is the same."""
    texts = long_lee[:20] + [long_lee[0]] * 11
    add_corpus(store, "cc", texts)
    full = dedup.analyze_corpus(store, "cc", CFG, progress=False)
    assert full.summary["n_pairs"] == 66 and full.summary["n_capped_buckets"] == 0
    capped_cfg = DedupConfig(workers=1, max_bucket=5)
    capped = dedup.analyze_corpus(store, "cc", capped_cfg, progress=False)
    s = capped.summary
    assert (s["n_candidates"], s["n_pairs"]) == (11, 11)
    assert (s["n_capped_buckets"], s["n_docs_in_capped_buckets"]) == (16, 16 * 12)
    assert set(capped.pairs["row"].to_list()) == {0}  # every pair is (first copy, member)
    cols = ["cluster_id", "doc_id", "row", "cluster_size", "is_representative"]
    assert capped.clusters.select(cols).sort("row").equals(full.clusters.select(cols).sort("row"))
    assert capped.summary["n_clusters"] == 1 and capped.summary["largest_cluster"] == 12
    assert "compared with one representative" in dedup._capped_note(s)


def test_temp_folders_of_a_killed_run_are_cleaned(store, long_lee):
    """A run killed with -9 leaves its map folder behind: Store.recover removes it (the folder lives in the
    store's temporary area, Store.tmp_dir), and a leftover `.tmp-*` folder in the cache (older versions) goes
    on the next run."""
    add_corpus(store, "cc", long_lee[:6])
    killed = killed_tmp_dir(store, "dedup_bands")
    legacy = store.artifact_dir("dedup_bands", "cc") / ".tmp-abc123"
    legacy.mkdir()
    with store.writer("test"):
        store.recover()
    assert not killed.exists() and legacy.exists()
    dedup.build_bands(store, "cc", CFG, progress=False)
    assert not legacy.exists()
    assert not list((store.root / "tmp" / "dedup_bands").glob("*"))


def test_interrupted_run_resumes_from_banded_shards(store, long_lee, monkeypatch):
    texts = planted(long_lee)
    add_corpus(store, "cc", texts, shard_size=11)  # 4 shards
    add_corpus(store, "ref", texts, shard_size=11)
    real, calls = dedup.band_shard, []

    def interrupted(job, cfg):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job)
        return real(job, cfg)

    monkeypatch.setattr(dedup.bands, "band_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dedup.analyze_corpus(store, "cc", CFG, progress=False)
    monkeypatch.setattr(dedup.bands, "band_shard", real)
    cache = store.artifact_dir("dedup_bands", "cc")
    assert len(list(cache.glob("*.bands.parquet"))) == 2 and not list(cache.glob(".tmp-*"))
    assert not list((store.root / "tmp" / "dedup_bands").glob("*"))
    resumed = dedup.build_bands(store, "cc", CFG, progress=False)
    assert (resumed.n_shards_computed, resumed.n_shards_cached) == (2, 2)
    r1 = dedup.analyze_corpus(store, "cc", CFG, progress=False)
    r2 = dedup.analyze_corpus(store, "ref", CFG, progress=False)
    cols = ["cluster_id", "doc_id", "cluster_size", "is_representative", "jaccard_to_representative"]
    assert r1.clusters.select(cols).sort("doc_id").equals(r2.clusters.select(cols).sort("doc_id"))
    assert r1.summary["n_clusters"] == 3


def test_not_enough_disk_is_refused_before_work(store, long_lee, monkeypatch, capsys):
    """The free space cannot be made small here, so shutil.disk_usage is faked (the store is real)."""
    import collections
    import shutil

    add_corpus(store, "cc", long_lee[:20])
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(StoreError, match="not enough disk .* corpus 'cc'"):
        dedup.analyze_corpus(store, "cc", CFG, progress=False)
    assert not list(store.artifact_dir("dedup_bands", "cc").glob("*"))
    assert dedup.main(["--corpus", "cc", "--store", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not enough disk") and err.count("\n") == 1
