"""Fixtures for the reliability suite: real stores, real CLIs in subprocesses, inputs the tests write."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from corpora.results import declare
from corpora.store import Store
from tests.conftest import REPO, add_corpus


def run_cli(module: str, *args: str, store: Path | None = None, timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m module [--store STORE] args...` with this worktree's code; never raises on failure."""
    argv = [sys.executable, "-m", module, *args, *(["--store", str(store)] if store is not None else [])]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def popen_cli(module: str, *args: str, store: Path | None = None, **kw) -> subprocess.Popen:
    argv = [sys.executable, "-m", module, *args, *(["--store", str(store)] if store is not None else [])]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, **kw)


# the result tables these tests write (any analysis declares its tables; these stand for one)
declare("scores", {"x": "float"}, "A result table the reliability tests write.", optional={"n": "int"})
declare("extra", {"a": "int"}, "A result table written beside a long reader.")
declare("anything", {"a": "int"}, "A result table whose write cleans up after a dead writer.")

_TQDM = re.compile(r"\[\d+:\d\d(:\d\d)?[<,\]]")  # a tqdm bar's elapsed time: "[00:01<00:02" or "[00:01, "


def one_line_error(proc_or_text, code: int | None = 2) -> str:
    """Assert stderr is exactly one line (no traceback) and the exit status; return the line."""
    if isinstance(proc_or_text, subprocess.CompletedProcess):
        if code is not None:
            assert proc_or_text.returncode == code, (proc_or_text.returncode, proc_or_text.stderr)
        err = proc_or_text.stderr
    else:
        err = proc_or_text
    lines = [ln for ln in err.splitlines() if ln.strip() and not _TQDM.search(ln)]  # progress bars aside
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root with the BLAKE2b of its bytes (what 'nothing was written' compares)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".writer.lock":
            out[str(p.relative_to(root))] = hashlib.blake2b(p.read_bytes(), digest_size=8).hexdigest()
    return out


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, lee_texts) -> Store:
    """A store with two small corpora (real news text) and one result table; tests must not change it."""
    import polars as pl

    store = Store(tmp_path_factory.mktemp("small") / "store", create=True)
    add_corpus(store, "cc", lee_texts[:40], shard_size=20)
    add_corpus(store, "wiki", lee_texts[40:50], role="test")
    store.put_result("scores", "p0", pl.DataFrame({"x": [1.5, float("nan"), float("inf")], "n": [1, 2, 3]}))
    return store
