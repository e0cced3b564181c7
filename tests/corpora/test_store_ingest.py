"""Ingest into a real store: demo counts, dedup, rejects, kill-and-resume, the writer lock, read-only SQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corpora.demo import build_demo
from corpora.ingest import IngestConfig, ingest
from corpora.results import declare
from corpora.store import Store, StoreError, StoreLocked, UnknownCorpus, compute_doc_id, normalize_text
from tests.conftest import REPO

declare("my_analysis", {"k": "int", "v": "str"}, "A new analysis's table: a view appears in SQL.")


def _cli(*args, store: Path, check=True, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "corpora", "--store", str(store), *args], capture_output=True,
                          text=True, cwd=REPO, env=env, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("demo") / "store", create=True)
    build_demo(store, progress=False)
    return store


def test_demo_counts(demo_store, lee_texts):
    rows = {r["corpus"]: r["n"] for r in
            demo_store.sql("SELECT corpus, count(*) AS n FROM documents GROUP BY corpus").to_pylist()}
    distinct = len({normalize_text(t) for t in lee_texts})  # lee_background.cor repeats 7 articles verbatim
    assert rows == {"cc": distinct, "wiki": 106}
    (cc_run,) = demo_store.sql("SELECT n_docs, n_duplicates FROM ingest_runs WHERE corpus = 'cc'").to_pylist()
    assert cc_run == {"n_docs": distinct, "n_duplicates": len(lee_texts) - distinct}
    assert demo_store.corpus("wiki").is_test and demo_store.corpus("cc").is_train
    redirects = demo_store.sql("SELECT count(*) AS n FROM rejects WHERE corpus='wiki' AND reason='wiki_redirect'")
    assert redirects.to_pylist()[0]["n"] >= 99


def test_demo_is_idempotent(demo_store):
    before = {c.name: c.content_hash for c in demo_store.corpora()}
    reports = build_demo(demo_store, progress=False)
    assert all(r.n_docs == 0 and r.n_files_skipped == 1 for r in reports)
    assert {c.name: c.content_hash for c in demo_store.corpora()} == before


def test_doc_ids_are_content_derived(demo_store):
    df = demo_store.scan("cc").select("doc_id", "text", "n_bytes").collect()
    assert df["doc_id"].n_unique() == len(df)
    for row in df.head(20).iter_rows(named=True):
        assert row["doc_id"] == compute_doc_id(row["text"]) and row["n_bytes"] == len(row["text"].encode())


def test_unknown_corpus_lists_corpora(demo_store):
    with pytest.raises(UnknownCorpus, match="has: cc, wiki"):
        demo_store.shards("nope")


@pytest.mark.parametrize("query", [
    "DELETE FROM corpora", "DROP VIEW documents", "INSERT INTO corpora VALUES ('x')",
    "COPY corpora TO '/tmp/x.csv'", "ATTACH '/tmp/other.duckdb'", "CREATE TABLE t AS SELECT 1",
    "SELECT 1; DELETE FROM corpora", "UPDATE shards SET n_docs = 0",
])
def test_sql_is_read_only(demo_store, query):
    before = demo_store.sql("SELECT count(*) AS n FROM documents").to_pylist()
    with pytest.raises(StoreError, match="refused|one SQL statement|read-only"):
        demo_store.sql(query)
    assert demo_store.sql("SELECT count(*) AS n FROM documents").to_pylist() == before


def test_sql_cli_json_and_error(demo_store, run_cli):
    out = run_cli("corpora.__main__", "--store", demo_store.root, "sql",
                  "SELECT corpus, count(*) AS n FROM documents GROUP BY corpus ORDER BY corpus", "--json")
    assert out.code == 0, out.err
    assert [r["corpus"] for r in json.loads(out.out)] == ["cc", "wiki"]
    bad = run_cli("corpora.__main__", "--store", demo_store.root, "sql", "DELETE FROM documents")
    assert bad.code == 2 and bad.err.startswith("error: refused") and len(bad.err.splitlines()) == 1


def test_ingest_rejects_are_kept_and_summarised(store, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"text": "good one"}\n{"text": oops}\n{"text": "bad \xff"}\n{"x": 1}\n{"text": ""}\n'
                     b'{"text": "good  ONE"}\n{"text": "good two"}\n')
    report = ingest(store, [path], IngestConfig("web"), progress=False)
    assert report.n_docs == 2 and report.n_duplicates == 1  # "good  ONE" normalizes to "good one"
    assert report.rejects_by_reason == {"bad_json": 1, "bad_utf8": 1, "missing_text_field": 1, "empty_text": 1}
    rows = store.sql("SELECT source, reason FROM rejects ORDER BY source").to_pylist()
    assert rows[0] == {"source": f"{path}:2", "reason": "bad_json"}


def test_nothing_ingested_exits_nonzero(tmp_path, run_cli):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"text": ""}\n{"nope": 1}\n')
    proc = run_cli("corpora.__main__", "--store", tmp_path / "s", "ingest", "x", path)
    assert proc.code == 2 and "no documents in" in proc.err  # bad input: the same on every run
    proc = run_cli("corpora.__main__", "--store", tmp_path / "s", "ingest", "x", tmp_path / "missing.jsonl")
    assert proc.code == 2 and "missing.jsonl: no such file" in proc.err


def test_shared_corpora_ingest_in_parallel(store, shared_data):
    files = [shared_data / "cc" / n for n in ("c4_sample.jsonl", "ccnet_head-0091.jsonl.gz",
                                              "ccnet_head-0174.jsonl.gz", "cc-sample-0000.warc.gz",
                                              "cc-sample-0001.warc.gz")]
    report = ingest(store, files, IngestConfig("cc", workers=2), progress=False)
    assert report.n_docs > 449 and report.n_files == 5
    wiki = ingest(store, [shared_data / "wiki" / "wikitext2_test.txt"],
                  IngestConfig("wikitext", role="test", reader=IngestConfig.__dataclass_fields__["reader"].default
                               .__class__(text_mode="wikitext")), progress=False)
    assert wiki.n_docs == 62
    n_by_file = store.sql("SELECT file, n_docs FROM ingest_files WHERE corpus='cc'").to_pylist()
    assert sum(r["n_docs"] for r in n_by_file) == report.n_docs == store.corpus("cc").n_docs


def _many_files(tmp_path: Path, texts: list[str], n_files: int) -> list[Path]:
    paths = []
    for i in range(n_files):
        p = tmp_path / f"part{i:03d}.jsonl"
        p.write_text("".join(json.dumps({"text": f"{t} (copy {i})"}) + "\n" for t in texts), encoding="utf-8")
        paths.append(p)
    return paths


def test_killed_ingest_resumes_without_duplicates(tmp_path, lee_texts):
    files = _many_files(tmp_path, lee_texts, 12)
    clean = Store(tmp_path / "clean", create=True)
    clean_report = ingest(clean, files, IngestConfig("cc", workers=1), progress=False)
    expected = clean.doc_ids("cc")

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "corpora", "--store", str(killed), "ingest", "cc",
                             *map(str, files), "--workers", "1"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        if (killed / "shards" / "cc").exists() and len(list((killed / "shards" / "cc").glob("*.parquet"))) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(killed)
    partial = store.corpus("cc").n_docs
    assert 0 < partial < len(expected), "the kill should land mid-ingest"
    # a shard file written but not registered (killed between the two) must not count
    (killed / "shards" / "cc" / "999.parquet").write_bytes(b"garbage")

    report = ingest(store, files, IngestConfig("cc", workers=2), progress=False)
    assert store.doc_ids("cc") == expected
    assert store.corpus("cc").n_docs == len(expected)  # no duplicates
    assert report.n_docs == len(expected) - partial
    assert report.n_files_skipped >= 1
    # every real duplicate (lee_background.cor repeats 7 articles) counted once over both runs, none twice
    (n_dup,) = store.sql("SELECT sum(n_duplicates) AS n FROM ingest_files WHERE corpus = 'cc'").column("n").to_pylist()
    assert n_dup == clean_report.n_duplicates
    assert not (killed / "shards" / "cc" / "999.parquet").exists()


def test_second_writer_is_refused_readers_work(store, tmp_path, lee_texts):
    (path,) = _many_files(tmp_path, lee_texts[:5], 1)
    ingest(store, [path], IngestConfig("cc"), progress=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from corpora.store import Store; s = Store(sys.argv[1]);\n"
         "with s.lock(purpose='test holder'):\n    print('locked', flush=True); time.sleep(60)", str(store.root)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLocked, match=f"locked by PID {holder.pid}"):
            ingest(store, [path], IngestConfig("other"), progress=False)
        assert store.corpus("cc").n_docs == 5  # readers keep working
        assert store.sql("SELECT count(*) AS n FROM documents").to_pylist() == [{"n": 5}]
        proc = _cli("ingest", "other", str(path), store=store.root, check=False)
        assert proc.returncode == 2 and f"locked by PID {holder.pid}" in proc.stderr
    finally:
        holder.kill()
        holder.wait()
    ingest(store, [path], IngestConfig("other"), progress=False)  # free again
    assert store.corpus("other").n_docs == 5


def test_result_tables_are_views(store):
    import polars as pl

    store.put_result("my_analysis", "a", pl.DataFrame({"k": [1, 2], "v": ["x", "y"]}))
    store.put_result("my_analysis", "b", pl.DataFrame({"k": [3], "v": ["z"]}))
    store.put_result("my_analysis", "a", pl.DataFrame({"k": [10], "v": ["replaced"]}))
    assert store.sql("SELECT k FROM my_analysis ORDER BY k").column("k").to_pylist() == [3, 10]
    assert store.read_result("my_analysis")["k"].sort().to_list() == [3, 10]
    store.delete_result("my_analysis", "a")
    assert store.sql("SELECT k FROM my_analysis").column("k").to_pylist() == [3]
    with pytest.raises(StoreError, match="catalog table"):
        store.put_result("documents", "x", pl.DataFrame({"a": [1]}))


def test_export_roundtrip(demo_store, tmp_path, run_cli):
    out = tmp_path / "wiki.jsonl"
    assert run_cli("corpora.__main__", "--store", demo_store.root, "export", "wiki", "--out", out).code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 106 and {r["doc_id"] for r in rows} == demo_store.doc_ids("wiki")


def test_cli_every_command_has_help():
    from corpora.__main__ import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"ingest", "list", "show", "sql", "export", "rm", "demo"} <= set(sub.choices)
    for name, sp in sub.choices.items():
        assert sp.description and "usage:" in sp.format_help(), f"corpora {name} has no help text"
    assert "--text-field" in sub.choices["ingest"].format_help()
