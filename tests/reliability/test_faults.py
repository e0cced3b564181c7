"""Faults and messages: a store path that cannot work, a damaged catalog, invalid parameters, a dead
writer's leftovers: one line that names the path and what to do, exit 2, never a traceback."""

from __future__ import annotations

import errno
import json

import pytest

from corpora.exits import run_command
from corpora.store import Store, StoreError
from tests.conftest import add_corpus, killed_tmp_dir
from tests.reliability.conftest import one_line_error, run_cli


def test_store_path_that_is_a_file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    for argv in (("corpora", "list"), ("corpora", "ingest", "c", str(f))):
        line = one_line_error(run_cli(*argv, store=f), 2)
        assert str(f) in line and "is a file" in line


def test_store_path_with_a_question_mark(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    line = one_line_error(run_cli("corpora", "ingest", "c", str(tmp_path / "in.jsonl"), store=tmp_path / "a?b"), 2)
    assert "'?'" in line and str(tmp_path / "a?b") in line


def test_truncated_catalog(tmp_path, lee_texts):
    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", lee_texts[:5])
    cat = store.root / "catalog.duckdb"
    cat.write_bytes(cat.read_bytes()[:5000])
    for argv in (("corpora", "list"), ("corpora", "sql", "SELECT 1"), ("corpora", "rm", "cc")):
        line = one_line_error(run_cli(*argv, store=store.root), 2)
        assert str(cat) in line and "backup" in line


def test_unwritable_store_directory(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if (parent / "probe").touch() is None:  # root ignores permissions: nothing to test here
            pytest.skip("running as root: directory permissions are not enforced")
    except PermissionError:
        pass
    finally:
        (parent / "probe").unlink(missing_ok=True)
    try:
        line = one_line_error(run_cli("corpora", "demo", store=parent / "store"), 2)
        assert str(parent / "store") in line
    finally:
        parent.chmod(0o700)


@pytest.mark.parametrize("err, words", [
    (OSError(errno.ENOSPC, "No space left on device", "/s/shards/cc/1.parquet"), "no space left"),
    (PermissionError(errno.EACCES, "Permission denied", "/s/catalog.duckdb"), "permissions"),
])
def test_os_errors_become_one_line(err, words, capsys):
    def command():
        raise err

    assert run_command("python -m x", command) == 2
    line = one_line_error(capsys.readouterr().err)
    assert err.filename in line and words in line


def test_store_open_errors_are_store_errors(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        Store(tmp_path / "nothing")


def test_parameters_are_checked_before_any_work(tmp_path, lee_texts):
    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", lee_texts[:20])
    line = one_line_error(run_cli("synth", "generate", "--source", "cc", "--limit", "-1", store=store.root), 2)
    assert "--limit" in line
    line = one_line_error(run_cli("synth", "generate", "--source", "cc", "--max-new-tokens", "0", store=store.root), 2)
    assert "--max-new-tokens" in line
    from train.data import MixtureConfig, build_mixture

    build_mixture(store, MixtureConfig(name="m", parts={"cc": 1.0}, tokens=4000, tokenizer="cl100k_base",
                                       seq_len=32), progress=False)
    before = store.result_parts("runs")
    line = one_line_error(run_cli("train", "run", "--mixture", "m", "--model", "debugmodel", "--tokens", "10",
                                  store=store.root), 2)
    assert "--tokens 10" in line and "one optimizer step" in line
    assert store.result_parts("runs") == before and not (store.root / "artifacts" / "valsets").exists()


def test_dead_writer_is_cleaned_up_by_the_next_writer(tmp_path, lee_texts):
    """A writer killed with -9 leaves its PID in the lock file, its temporaries and a `running` run;
    the next writer (any command) removes the temporaries and marks the run interrupted."""
    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", lee_texts[:5])
    with store.lock(purpose="ingest cc"):
        store.execute("INSERT INTO ingest_runs VALUES ('r1', 'cc', now(), NULL, '[]', 0, 0, 0, '{}', 'running')")
    live = store.tmp_dir("ingest")  # this process's folder: kept
    tmp = killed_tmp_dir(store, "ingest")
    assert (tmp / "part.parquet").exists()
    (store.root / ".writer.lock").write_text("999999 (ingest cc)")  # what kill -9 leaves
    store.put_result("anything", "p", __import__("polars").DataFrame({"a": [1]}))
    assert not tmp.exists() and live.is_dir()
    assert store.sql("SELECT status FROM ingest_runs WHERE run_id = 'r1'").to_pylist() == [{"status": "interrupted"}]
    assert (store.root / ".writer.lock").read_text() == ""
