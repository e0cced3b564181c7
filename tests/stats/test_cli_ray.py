"""The stats CLIs run on Ray as a user runs them (`python -m stats.X --engine ray`): their per-shard steps
must live in importable modules, not in `__main__`, or a Ray worker cannot unpickle them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, add_corpus, require

pytestmark = pytest.mark.slow  # each command starts its own local Ray (~10 s)


@pytest.fixture
def ray_store(store, lee_texts):
    require("ray")
    add_corpus(store, "cc", lee_texts[:12] + lee_texts[:3])  # three exact copies: a dedup result to check
    return store


def run_module(store, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", *args, "--store", str(store.root), "--engine", "ray", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_dedup_cli_on_ray(ray_store):
    out = run_module(ray_store, "stats.dedup", "--corpus", "cc", "--workers", "1")
    assert out["summary"]["n_docs"] == 15 and out["summary"]["n_clusters"] == 3


def test_unigram_cli_on_ray(ray_store):
    out = run_module(ray_store, "stats.unigram", "--train", "cc", "--test", "cc", "--workers", "1", "--overwrite",
                     "--no-progress")
    [row] = out["comparisons"]
    assert row["n_tokens_test"] == row["n_tokens_train"] > 1000 and row["type_coverage"] == 1.0
