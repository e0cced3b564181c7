"""Reliability round 3 (issue 24): exports that cannot touch the store, hostile dataset folders, one bad
record never ends a file, damaged result parts, dead writers' temporaries, SQL guards, catalog errors that
name their cause, engines checked before work, names, study files. In-process where a signal is not needed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpora.documents import compute_doc_id
from corpora.executor import EngineError
from corpora.export import ExportConfig, export_corpus
from corpora.ingest import IngestConfig, ingest, ingest_hf_folder
from corpora.readers import InputError, ReaderConfig, read_hf_file, read_hf_folder, read_to_parts
from corpora.store import SqlLimits, Store, StoreError, atomic_path
from tests.conftest import REPO, add_corpus
from tests.reliability.conftest import one_line_error, popen_cli, run_cli, tree_digest


def _dead_pid() -> int:
    """The PID of a process that has exited (what a kill -9'd writer leaves in its temporaries' names)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------ data loss and store damage
def test_export_refuses_any_output_inside_the_store(small_store, tmp_path):
    before = tree_digest(small_store.root)
    link = tmp_path / "link"
    link.symlink_to(small_store.root / "shards")
    cases = [("hf", small_store.root / "shards" / "cc"), ("hf", link / "cc"), ("hf", small_store.root),
             ("hf", small_store.root.parent),  # a folder holding the store: --overwrite would replace it
             ("parquet", small_store.root / "results" / "scores" / "p1.parquet"),
             ("jsonl", small_store.root / "catalog.duckdb")]
    for fmt, out in cases:
        with pytest.raises(StoreError, match="store"):
            export_corpus(small_store, ExportConfig("cc", format=fmt, out=str(out), overwrite=True, tokenizer=None),
                          progress=False)
    # train export writes files into --out: inside the store is refused, a folder above it is fine
    with pytest.raises(StoreError, match="inside the store"):
        small_store.check_outside(link / "x", replaces=False)
    assert small_store.check_outside(small_store.root.parent, replaces=False) == small_store.root.parent.resolve()
    assert tree_digest(small_store.root) == before
    assert small_store.sql("SELECT count(*) AS n FROM documents").column("n").to_pylist() == [50]


def test_one_unparsable_jsonl_record_is_one_reject(tmp_path):
    good = [json.dumps({"text": f"document number {i}"}) for i in range(4)]
    lines = [good[0], "[" * 100_000 + "]" * 100_000, good[1], '{"text": "x", "n": ' + "9" * 5000 + "}", good[2],
             json.dumps({"text": "deep meta", "m": json.loads("[" * 900 + "]" * 900)}), good[3]]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "parts"
    out.mkdir()
    result = read_to_parts(str(path), None, ReaderConfig(), str(out), 1 << 30, 1 << 20)
    texts = pq.read_table(result.parts[0]).column("text").to_pylist()
    assert [t for t in texts if t.startswith("document")] == [f"document number {i}" for i in range(4)]
    rejects = result.rejects.to_pylist()
    assert [(r["source"].rsplit(":", 1)[1], r["reason"]) for r in rejects][:2] == [("2", "bad_json"), ("4", "bad_json")]
    assert "read_error" not in {r["reason"] for r in rejects}


def test_arrow_stream_cut_at_a_message_boundary_is_truncated(tmp_path):
    path = tmp_path / "data-00000-of-00001.arrow"
    ends = []
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, pa.schema([("text", pa.string())])) as w:
        for b in range(3):
            w.write_batch(pa.record_batch([pa.array([f"batch {b} row {i}" for i in range(10)])], names=["text"]))
            ends.append(sink.tell())
    whole = list(read_hf_file(path, ReaderConfig()))
    assert len(whole) == 30 and all(not hasattr(d, "reason") for d in whole)
    data = path.read_bytes()
    path.write_bytes(data[:ends[1]])  # cut exactly after the second batch's message
    items = list(read_hf_file(path, ReaderConfig()))
    assert [d.text for d in items[:20]] == [d.text for d in whole[:20]]
    assert items[-1].reason == "truncated_stream" and len(items) == 21


def test_a_damaged_result_part_is_skipped_and_reported_once(tmp_path, caplog):
    import polars as pl

    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", ["one document", "another document"])
    for p in ("p0", "p1"):
        store.put_result("scores", p, pl.DataFrame({"x": [1.0, 2.0]}))
    (tmp_path / "store" / "results" / "scores" / "p2.parquet").write_bytes(b"")
    (tmp_path / "store" / "results" / "scores" / "p3.parquet").write_bytes(b"PAR1" + b"\0" * 50 + b"PAR1")
    with caplog.at_level(logging.WARNING, logger="corpora.catalog"):
        assert store.sql("SELECT 1 AS one").column("one").to_pylist() == [1]
        assert store.sql("SELECT count(*) AS n FROM scores").column("n").to_pylist() == [4]
        assert store.read_result("scores").height == 4
        assert store.read_result("scores", "p2") is None  # damaged reads as absent: the step rewrites it
        store.put_result("scores", "p4", pl.DataFrame({"x": [3.0]}))  # writers keep working
        assert store.sql("SELECT count(*) AS n FROM scores").column("n").to_pylist() == [5]
    damaged = [r.getMessage() for r in caplog.records if "damaged result part" in r.getMessage()]
    assert len(damaged) == 2 and any("p2.parquet" in m for m in damaged) and any("p3.parquet" in m for m in damaged)


def test_temporaries_of_a_dead_writer_are_removed_by_the_next_run(small_store, tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    out = tmp_path / "cc_hf"
    stale_dir = tmp_path / f".cc_hf.tmp-{dead}"
    (stale_dir / "data").mkdir(parents=True)
    (stale_dir / "data" / "train-00000-of-00001.parquet").write_bytes(b"x" * 1000)
    stale_file = tmp_path / f".cc.jsonl.gz.tmp-{dead}"
    stale_file.write_bytes(b"partial")
    live = tmp_path / f".cc.jsonl.gz.tmp-{alive}"  # another process still writing: left alone
    live.write_bytes(b"partial")
    export_corpus(small_store, ExportConfig("cc", format="hf", out=str(out), tokenizer=None), progress=False)
    export_corpus(small_store, ExportConfig("cc", format="jsonl", out=str(tmp_path / "cc.jsonl.gz"), tokenizer=None),
                  progress=False)
    assert not stale_dir.exists() and not stale_file.exists() and live.exists()
    # every atomic write (train export's .bin/.idx, checkpoints, reports) goes through atomic_path
    target = tmp_path / "mix_text_document.bin"
    (tmp_path / f".mix_text_document.bin.tmp-{dead}").write_bytes(b"x" * 100)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.glob(".mix*")) == []
    # the store's own scratch folders: a dead process's are removed by the next tmp_dir call or recover
    store = Store(tmp_path / "store", create=True)
    orphan = store.root / "tmp" / "bands" / f"{dead}-deadbeef"
    orphan.mkdir(parents=True)
    mine = store.tmp_dir("bands")
    assert mine.is_dir() and not orphan.exists()


# ------------------------------------------------------------------------------ hostile dataset folders
def _hf_folder(root: Path, card: str, rows: list[dict] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    rows = rows or [{"text": f"row {i} of a dataset folder"} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "train-00000-of-00001.parquet")
    (root / "README.md").write_text(card)
    return root


def test_card_yaml_is_bounded_and_json_safe(tmp_path, capsys):
    from corpora.__main__ import main

    bomb = "---\na: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
        f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "---\n"
    t0 = time.monotonic()
    with pytest.raises(InputError, match="aliases"):
        read_hf_folder(_hf_folder(tmp_path / "bomb", bomb))
    assert time.monotonic() - t0 < 5
    with pytest.raises(InputError, match="larger than"):
        read_hf_folder(_hf_folder(tmp_path / "huge", "---\nx: '" + "y" * (2 << 20) + "'\n---\n"))
    odd = ("---\ndate: 2024-01-01\nts: 2024-01-01 10:00:00\ns: !!set {a, b}\nbin: !!binary aGVsbG8=\n"
           "n: .nan\ni: .inf\nbig: 123456789012345678901234567890\n---\n")
    folder = _hf_folder(tmp_path / "odd", odd)
    store_dir = str(tmp_path / "store")
    assert main(["--store", store_dir, "ingest", "odd", str(folder), "--json"]) == 0
    capsys.readouterr()
    assert main(["--store", store_dir, "show", "odd", "--json"]) == 0

    def no_constants(name):
        raise AssertionError(f"invalid JSON constant {name}")

    card = json.loads(capsys.readouterr().out, parse_constant=no_constants)["meta"]["hf"]["card"]
    assert card == {"date": "2024-01-01", "ts": "2024-01-01T10:00:00", "s": ["a", "b"], "bin": None, "n": None,
                    "i": None, "big": None}


def test_folder_metadata_names_only_files_inside_the_folder(tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    pq.write_table(pa.table({"text": ["a secret outside the folder"]}), outside / "s.parquet")
    for pattern in ["/etc/*", str(outside / "*.parquet"), "../secret/*.parquet", "data/../../secret/*"]:
        card = f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: '{pattern}'\n---\n"
        with pytest.raises(InputError, match="README.md"):
            read_hf_folder(_hf_folder(tmp_path / "f", card))
        shutil.rmtree(tmp_path / "f")
    link = _hf_folder(tmp_path / "link", "# no header\n")
    (link / "data" / "train-00001-of-00001.parquet").symlink_to(outside / "s.parquet")
    with pytest.raises(InputError, match="outside the folder"):
        read_hf_folder(link)
    saved = tmp_path / "saved"
    saved.mkdir()
    for state, match in [({"_data_files": [{"filename": "../secret/s.parquet"}]}, "climbs out"),
                         ({"_data_files": [{"filename": "/etc/passwd"}]}, "not a path inside"),
                         ({"_data_files": "x"}, "state.json"), ([1, 2], "state.json")]:
        (saved / "state.json").write_text(json.dumps(state))
        with pytest.raises(InputError, match=match):
            read_hf_folder(saved)
    (saved / "state.json").write_text(json.dumps({"_data_files": []}))
    (saved / "dataset_info.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="dataset_info.json"):
        read_hf_folder(saved)
    dd = tmp_path / "dd"
    dd.mkdir()
    for splits in ['{"splits": "train"}', '{"splits": ["../secret"]}', '["train"]', "{not json"]:
        (dd / "dataset_dict.json").write_text(splits)
        with pytest.raises(InputError, match="dataset_dict.json"):
            read_hf_folder(dd)


def test_folder_doc_ids_are_recomputed_from_the_text(tmp_path):
    rows = [{"text": "the first text", "doc_id": compute_doc_id("a text already in the corpus")},
            {"text": "the second text", "doc_id": "../../etc/passwd"}]
    card = "---\nsynthmix:\n  kind: natural\n  role: train\n---\n"  # claims to be our export
    folder = _hf_folder(tmp_path / "forged", card, rows)
    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", ["a text already in the corpus"])
    ingest_hf_folder(store, folder, "cc", progress=False)
    assert store.doc_ids("cc") == {compute_doc_id(t) for t in
                                   ("a text already in the corpus", "the first text", "the second text")}


# ------------------------------------------------------------------------------ signals, messages, validation
def test_sql_limits_and_odd_values(small_store, capsys):
    from corpora.__main__ import main

    forever = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r"
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="longer than 1 s|memory"):
        small_store.sql(forever, limits=SqlLimits(timeout_s=1, memory_mb=512))
    assert time.monotonic() - t0 < 30
    with pytest.raises(StoreError, match="more than 1,000 rows"):
        small_store.sql("SELECT * FROM range(5000)", limits=SqlLimits(max_rows=1000))
    with pytest.raises(StoreError, match="larger than 1 MB"):
        small_store.sql("SELECT repeat('x', 1000) AS s FROM range(5000)", limits=SqlLimits(memory_mb=1))
    assert small_store.sql("SELECT * FROM range(5000)").num_rows == 5000  # library code: no cap by default
    query = "SELECT 'infinity'::DATE AS d, '-infinity'::TIMESTAMP AS t, DATE '2024-01-01' AS ok"
    for mode in ([], ["--json"], ["--csv"]):
        assert main(["--store", str(small_store.root), "sql", query, *mode]) == 0
        out = capsys.readouterr().out
        assert "infinity" in out and "-infinity" in out and "2024-01-01" in out
    assert main(["--store", str(small_store.root), "sql", "SELECT * FROM range(10)", "--max-rows", "5"]) == 2
    assert "--max-rows" in capsys.readouterr().err


def test_ctrl_c_stops_a_long_sql_query(small_store):
    forever = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1e12) SELECT max(i) FROM r"
    proc = popen_cli("corpora", "sql", forever, "--timeout", "0", "--memory-limit", "0",
                     store=small_store.root, start_new_session=True)
    time.sleep(4)  # past start-up, into the query
    assert proc.poll() is None
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 130 and "interrupted" in one_line_error(err, None)


def test_ctrl_c_during_a_catalog_statement_marks_the_ingest_interrupted(tmp_path, monkeypatch):
    import duckdb

    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(5)))
    store = Store(tmp_path / "store", create=True)

    def interrupted(*a, **k):  # what DuckDB raises when SIGINT arrives while it runs a statement
        raise duckdb.InterruptException("INTERRUPT Error: Query interrupted")

    monkeypatch.setattr(Store, "record_ingest_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ingest(store, [path], IngestConfig("cc", workers=1), progress=False)
    assert store.sql("SELECT status FROM ingest_runs").column("status").to_pylist() == ["interrupted"]


def test_ctrl_c_while_a_cli_is_still_importing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "train", "run", "--mixture", "m", "--model", "debugmodel",
                             "--tokens", "1k", "--store", str(tmp_path / "none")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(0.6)  # python is up, torch/DuckDB are loading
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in one_line_error(err, None)


def test_catalog_errors_name_their_cause(tmp_path, lee_texts):
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs chattr and root to make a file immutable")
    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", lee_texts[:3])
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"text": "a new document"}) + "\n")
    for target in (store.root / "catalog.duckdb", store.root):
        if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode != 0:
            pytest.skip("this filesystem does not support the immutable attribute")
        try:
            with pytest.raises(StoreError) as e:
                ingest(store, [path], IngestConfig("cc", workers=1), progress=False)
        finally:
            subprocess.run(["chattr", "-i", str(target)], check=True)
        msg = str(e.value)
        assert "no transaction" not in msg and "damaged" not in msg and "permissions" in msg, msg
    half = tmp_path / "half"
    shutil.copytree(store.root, half)
    catalog = half / "catalog.duckdb"
    os.truncate(catalog, catalog.stat().st_size // 2)
    with pytest.raises(StoreError, match="damaged.*restore it from a backup"):
        Store(half).corpora()


def test_failed_commit_shows_its_cause_not_the_rollback(tmp_path, monkeypatch):
    import duckdb

    import corpora.catalog as catalog_module

    store = Store(tmp_path / "store", create=True)
    real_connect = duckdb.connect

    class DiskFull:  # a catalog connection whose COMMIT fails as on a full disk (the transaction is gone)
        def __init__(self, con):
            self.con = con

        def execute(self, sql, *a):
            if sql == "COMMIT":
                self.con.execute("ROLLBACK")
                raise duckdb.IOException('IO Error: Could not write file "catalog.duckdb.wal": No space left on device')
            return self.con.execute(sql, *a)

        def __getattr__(self, name):
            return getattr(self.con, name)

    monkeypatch.setattr(catalog_module.duckdb, "connect",
                        lambda path, *a, **k: DiskFull(real_connect(path, *a, **k)) if path != ":memory:"
                        else real_connect(path, *a, **k))
    with pytest.raises(StoreError, match="no space left"):
        store.create_corpus("cc", "natural", "train")


def test_engine_is_checked_before_any_work(tmp_path, monkeypatch):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"text": "a document"}) + "\n")
    store = Store(tmp_path / "store", create=True)
    monkeypatch.setenv("SYNTHMIX_ENGINE", "bogus")
    with pytest.raises(EngineError, match="SYNTHMIX_ENGINE"):
        ingest(store, [path], IngestConfig("cc", workers=1), progress=False)
    folder = _hf_folder(tmp_path / "hf", "# card\n")
    with pytest.raises(EngineError, match="bogus"):
        ingest_hf_folder(store, folder, "hf", progress=False)
    monkeypatch.delenv("SYNTHMIX_ENGINE")
    pytest.importorskip("ray")
    with pytest.raises(EngineError, match="no Ray cluster"):
        ingest_hf_folder(store, folder, "hf", engine="ray", ray_address="127.0.0.1:9", progress=False)
    assert store.corpora() == [] and store.sql("SELECT count(*) AS n FROM ingest_runs").column("n").to_pylist() == [0]


def test_names_with_a_trailing_newline_are_refused(tmp_path):
    store = Store(tmp_path / "store", create=True)
    for bad in ("g\n", "g\r\n", "g\n\n"):
        with pytest.raises(StoreError, match="invalid"):
            store.create_corpus(bad, "natural", "train")
        with pytest.raises(StoreError, match="invalid"):
            store.artifact_dir("mixtures", bad)
        with pytest.raises(StoreError, match="invalid"):
            store.put_result(bad, "p", pa.table({"x": [1]}))
    assert store.corpora() == []


STUDY = """name = "s"
store = "STORE"
types = ["hq"]
[generate]
limit = 4
[unigram]
tokenizer = "cl100k_base"
[dedup]
threshold = 0.8
[scaling]
n_boot = 5
[mixtures]
ratios = [0.0, 0.5]
[sweep.grid]
models = ["debugmodel"]
tokens = ["48k"]
"""


@pytest.mark.parametrize("edit, where", [
    (("[generate]", "[generate]\nbogus = 1"), "[generate] unknown key 'bogus'"),
    (("[unigram]", "[unigram]\nbogus = 1"), "[unigram] unknown key 'bogus'"),
    (("[dedup]", "[dedup]\nbogus = 1"), "[dedup] unknown key 'bogus'"),
    (("[scaling]", "[scaling]\nbogus = 1"), "[scaling] unknown key 'bogus'"),
    (('store = "STORE"', "store = 5"), "store = 5 must be str"),
    (("limit = 4", "limit = -1"), "[generate] limit = -1 must be at least 1"),
    (("limit = 4", 'limit = "4"'), "[generate] limit = '4' must be int"),
    (("ratios = [0.0, 0.5]", "ratios = [-0.5, 0.5]"), "[mixtures] ratios"),
    (("n_boot = 5", "n_boot = -1"), "[scaling] n_boot = -1 must be at least 1"),
    (('models = ["debugmodel"]', 'models = ["no-such-model"]'), "unknown model preset 'no-such-model'"),
    (('tokens = ["48k"]', 'tokens = ["lots"]'), "[sweep]"),
])
def test_study_file_is_validated_before_the_first_step(tmp_path, capsys, edit, where):
    from reports.__main__ import main

    path = tmp_path / "study.toml"
    assert edit[0] in STUDY
    path.write_text(STUDY.replace(edit[0], edit[1], 1).replace("STORE", str(tmp_path / "store")))
    assert main(["study", "--config", str(path)]) == 2
    line = one_line_error(capsys.readouterr().err, None)
    assert str(path) in line and where in line, line
    assert not (tmp_path / "store").exists()  # refused before the first step
