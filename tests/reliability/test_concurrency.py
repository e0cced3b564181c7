"""Concurrency: every command that writes takes the writer lock (a second writer is refused with the
holder's PID before doing any work), and a reader never makes a writer fail."""

from __future__ import annotations

import os
import time

import pytest

from corpora.store import Store
from tests.conftest import add_corpus
from tests.reliability.conftest import one_line_error, popen_cli, run_cli, tree_digest


@pytest.fixture
def cc_store(tmp_path, lee_texts) -> Store:
    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", sorted(lee_texts, key=len)[:4])
    return store


GENERATE = ("synth", "generate", "--type", "hq", "--source", "cc", "--out", "hq", "--limit", "1",
            "--max-new-tokens", "4", "--num-threads", "1", "--no-progress")
WRITERS = {
    "synth generate": GENERATE,
    "train mix": ("train", "mix", "m", "--parts", "cc=1", "--tokens", "2k", "--seq-len", "32", "-q"),
    "stats.unigram": ("stats.unigram", "--train", "cc", "--test", "cc", "--no-progress"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_second_writer_is_refused_with_the_holders_pid(cc_store, writer):
    module, *args = WRITERS[writer]
    before = tree_digest(cc_store.root)
    with cc_store.writer("test holder"):
        proc = run_cli(module, *args, store=cc_store.root, timeout=240)
    line = one_line_error(proc, 2)
    assert f"locked by PID {os.getpid()} (test holder)" in line
    assert tree_digest(cc_store.root) == before


def _lock_text(store: Store) -> str:
    try:
        return (store.root / ".writer.lock").read_text()
    except OSError:
        return ""


@pytest.mark.slow
def test_two_generate_runs_at_once_do_not_duplicate(cc_store):
    """The first run holds the writer lock for its whole length (the old one only locked each append,
    so a second run wrote the same documents beside it); the second is refused naming the first."""
    first = popen_cli(*GENERATE, store=cc_store.root)
    try:
        deadline = time.monotonic() + 240
        while f"{first.pid} (python -m synth generate" not in _lock_text(cc_store):
            assert first.poll() is None, ("the first run ended without holding the lock for its length",
                                          first.communicate())
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = run_cli(*GENERATE, store=cc_store.root, timeout=240)
        assert f"locked by PID {first.pid}" in one_line_error(second, 2)
        out, err = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, err
    docs = cc_store.scan("hq").select("doc_id", "source_doc_id").collect()
    assert len(docs) == 1 and docs["doc_id"].n_unique() == 1


@pytest.mark.slow
def test_a_long_reader_never_blocks_a_writer(cc_store, lee_texts):
    """A `corpora sql` query that runs for minutes while a writer appends: the writer finishes at once."""
    reader = popen_cli("corpora", "sql", "SELECT count(*) FROM range(100000000000) t(i) WHERE hash(i) = 42",
                       store=cc_store.root)
    try:
        time.sleep(6)  # the reader is past start-up and inside its query
        assert reader.poll() is None, reader.communicate()
        t0 = time.monotonic()
        add_corpus(cc_store, "more", lee_texts[10:20])
        cc_store.put_result("extra", "p0", __import__("polars").DataFrame({"a": [1]}))
        elapsed = time.monotonic() - t0
        assert reader.poll() is None, "the reader should still be running"
        assert cc_store.corpus("more").n_docs == 10
        assert elapsed < 25, elapsed  # the old reader held the catalog: writers failed after a 30 s wait
    finally:
        reader.kill()
        reader.communicate()
