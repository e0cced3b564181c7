"""The SIGINT/SIGKILL matrix over ingest, synth and train: Ctrl-C is one line and exit 130 (workers
included) with the run recorded as interrupted; kill -9 leaves nothing behind that the next run does
not clean, and the rerun completes without duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from corpora.store import Store
from tests.conftest import add_corpus
from tests.reliability.conftest import one_line_error, popen_cli, run_cli


def _wait_for(cond, proc, timeout=240, what=""):
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, (f"ended before {what}", proc.communicate())
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _stop(proc: subprocess.Popen, sig: int) -> tuple[str, str]:
    """Send `sig` as a terminal would (to the whole process group: workers too) and collect output."""
    os.killpg(proc.pid, sig)
    try:
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _inputs(tmp_path, lee_texts, n_files=4, copies=60):
    files = []
    for k in range(n_files):
        p = tmp_path / f"in{k}.jsonl"
        p.write_text("".join(json.dumps({"text": f"{k}-{i} {t}"}) + "\n"
                             for i in range(copies) for t in lee_texts[:50]))
        files.append(p)
    return files


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_ingest(tmp_path, lee_texts, sig):
    files = _inputs(tmp_path, lee_texts)
    root = tmp_path / "store"
    proc = popen_cli("corpora", "ingest", "cc", *map(str, files), "--workers", "2", store=root,
                     start_new_session=True)
    _wait_for(lambda: (root / "shards" / "cc").exists() and any((root / "shards" / "cc").glob("*.parquet")),
              proc, what="the first shard")
    out, err = _stop(proc, sig)
    store = Store(root)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "interrupted" in one_line_error(err, None)
        assert not list((root / "tmp" / "ingest").glob("*"))
    (status,) = store.sql("SELECT status FROM ingest_runs").column("status").to_pylist()
    assert status == ("interrupted" if sig == signal.SIGINT else "running")
    rerun = run_cli("corpora", "ingest", "cc", *map(str, files), "--workers", "1", "--json", store=root)
    assert rerun.returncode == 0, rerun.stderr
    statuses = sorted(store.sql("SELECT status FROM ingest_runs").column("status").to_pylist())
    assert statuses == ["done", "interrupted"]
    assert not list((root / "tmp" / "ingest").glob("*"))
    n_docs = store.corpus("cc").n_docs
    assert n_docs == len(files) * 60 * 50
    (per_file,) = store.sql("SELECT sum(n_docs) AS n FROM ingest_files WHERE corpus = 'cc'").column("n").to_pylist()
    assert per_file == n_docs


GENERATE = ("synth", "generate", "--type", "hq", "--source", "cc", "--out", "hq", "--limit", "3",
            "--max-new-tokens", "24", "--batch-size", "1", "--shard-docs", "1", "--num-threads", "1",
            "--no-progress")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_synth_generate(tmp_path, lee_texts, sig):
    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", sorted(lee_texts, key=len)[:3])
    proc = popen_cli(*GENERATE, store=store.root, start_new_session=True)
    chunks = store.root / "artifacts" / "synth_chunks" / "hq"
    _wait_for(lambda: chunks.exists() and any(chunks.glob("*.parquet")), proc, what="the first batch")
    out, err = _stop(proc, sig)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "interrupted" in one_line_error(err, None)
    rerun = run_cli(*GENERATE, store=store.root, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    docs = store.scan("hq").select("doc_id").collect()
    assert len(docs) == 3 and docs["doc_id"].n_unique() == 3


@pytest.fixture
def mixture_store(tmp_path, lee_texts) -> Store:
    from train.data import MixtureConfig, build_mixture

    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", lee_texts[:200])
    add_corpus(store, "wiki", lee_texts[200:220], role="test")
    build_mixture(store, MixtureConfig(name="m", parts={"cc": 1.0}, tokens=40_000, tokenizer="cl100k_base",
                                       seq_len=32), progress=False)
    return store


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_train_run(mixture_store, sig):
    store = mixture_store
    argv = ("train", "run", "--mixture", "m", "--model", "debugmodel", "--tokens", "16k", "--batch-size", "4",
            "--num-threads", "1", "--val-tokens", "2k", "--checkpoint-every-tokens", "2k", "-q")
    proc = popen_cli(*argv, store=store.root, start_new_session=True)

    def started():
        runs = store.read_result("runs")
        return runs is not None and runs["step"].max() >= 2

    _wait_for(started, proc, what="two steps")
    out, err = _stop(proc, sig)
    (run_id,) = store.result_parts("runs")
    status = store.read_result("runs", run_id)["status"][-1]
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err[-3000:]   # the process's own words when it is not
        assert "interrupted" in one_line_error(err, None)
        assert status == "interrupted"
    rerun = run_cli(*argv, "--json", store=store.root, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    row = store.read_result("runs", run_id).to_dicts()[-1]
    assert row["status"] == "done" and row["step"] == row["n_steps"]
