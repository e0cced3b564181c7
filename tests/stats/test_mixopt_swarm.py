"""stats.mixopt end to end on a tiny real store: a swarm of debugmodel runs through the sweep machinery, the
fit (store and CSV paths alike), the proposal under a repetition cap, its validation, and the report section."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import polars as pl
import pytest

from corpora.results import missing_columns
from corpora.store import Store
from stats.evidence import AGREES, DISAGREES, INCONCLUSIVE, MIXED, NO_DATA
from stats.mixopt import FitConfig, fit_swarm, read_csv_swarm, read_store_swarm, write_csv_swarm
from stats.mixopt.__main__ import main
from stats.unigram import UnigramConfig, build_unigram_counts
from tests.conftest import add_corpus
from train.tokenizer import train_tokenizer

pytestmark = pytest.mark.slow

TINY = ["--tokenizer", "lee_bpe", "--seq-len", "31", "--batch-size", "2", "--val-tokens", "128"]


@pytest.fixture(scope="module")
def swarm_store(tmp_path_factory, lee_texts):
    store = Store(tmp_path_factory.mktemp("mixopt") / "store", create=True)
    add_corpus(store, "cc", lee_texts[:100])
    add_corpus(store, "hq", lee_texts[100:200], kind="synthetic", synthetic_type="hq")
    add_corpus(store, "qa", lee_texts[200:240], kind="synthetic", synthetic_type="qa")
    add_corpus(store, "wiki", lee_texts[240:], role="test")
    train_tokenizer(store, "lee_bpe", ["cc", "hq"], vocab_size=512)
    for corpus in ("cc", "hq", "qa", "wiki"):  # what stats.unigram stores; the unigram predictor reads it
        build_unigram_counts(store, corpus, UnigramConfig(tokenizer="lee_bpe", progress=False))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["swarm", "sw", "--store", str(store.root), "--sources", "cc,hq,qa", "--n", "4", "--tokens", "1k",
                     "--max-epochs", "50", "-q", "--json", *TINY]) == 0
    store.swarm_result = json.loads(out.getvalue())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["fit", "--store", str(store.root), "--sweep", "sw", "--objective", "wiki", "--folds", "2",
                     "--n-boot", "10", "--max-epochs", "0.05", "--validate", "--validate-tokens", "1500",
                     "--validate-seeds", "0", "-q", "--json"]) == 0
    store.fit_result = json.loads(out.getvalue())
    return store


def test_swarm_runs_through_the_sweep_and_keeps_its_corners(swarm_store):
    r = swarm_store.swarm_result
    assert r["runs"] == 4 and r["done"] == 4 and r["failed"] == 0
    kinds = [row["kind"] for row in r["design"]]
    assert "natural" in kinds and "uniform" in kinds
    natural = next(row for row in r["design"] if row["kind"] == "natural")
    assert (natural["cc"], natural["hq"], natural["qa"]) == (1.0, 0.0, 0.0)
    runs = swarm_store.read_result("runs").filter(pl.col("sweep") == "sw")
    assert runs.height == 4 and set(runs["status"]) == {"done"}
    # a rerun trains nothing: every run is found done
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["swarm", "sw", "--store", str(swarm_store.root), "--sources", "cc,hq,qa", "--n", "4",
                     "--tokens", "1k", "--max-epochs", "50", "-q", *TINY]) == 0
    assert swarm_store.read_result("runs").filter(pl.col("sweep") == "sw").height == 4


def test_fit_proposal_and_validation_from_the_command_line(swarm_store):
    r = swarm_store.fit_result
    assert set(r["regressors"]) == {"loglinear", "gbm", "unigram"} and r["n_runs"] == 4
    assert r["regressors"]["unigram"]["status"] == "ok"  # from the stored counts, no tokenizing
    for reg in r["regressors"].values():
        assert reg["cv_spearman"] is None or -1 <= reg["cv_spearman"] <= 1
    w = r["proposal"]["weights"]
    assert abs(sum(w.values()) - 1) < 1e-9 and min(w.values()) >= 0
    prop = swarm_store.read_result("mixopt_proposals")
    caps = dict(prop.select("source", "cap").iter_rows())
    assert min(caps.values()) < 1  # --max-epochs 0.05 binds at the 1500-token target
    assert all(w[s] <= caps[s] + 1e-12 for s in w)
    v = r["validation"]
    assert 1 <= v["rank"] <= v["of"] <= 4 and v["regret"] >= 0
    assert v["verdict"] in (AGREES, DISAGREES, MIXED, INCONCLUSIVE, NO_DATA, None)
    val = swarm_store.read_result("mixopt_validations")
    assert set(val["role"]) == {"proposal", "best_swarm", "natural", "uniform"}
    trained = swarm_store.read_result("runs").filter(pl.col("sweep") == v["sweep"])
    assert trained.height == val.filter(pl.col("same_as").is_null()).height  # twins train once
    assert set(trained["tokens"]) == {1500}
    for table in ("mixopt_swarms", "mixopt_fits", "mixopt_predictions", "mixopt_proposals", "mixopt_validations"):
        assert missing_columns(table, swarm_store.read_result(table).columns) == []


def test_validate_refits_the_stored_fit_and_trains_nothing_new(swarm_store):
    before = swarm_store.read_result("runs").height
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["validate", "--store", str(swarm_store.root), "--fit", "sw.wiki", "--validate-tokens", "1500",
                     "--validate-seeds", "0", "-q", "--json"]) == 0
    again, first = json.loads(out.getvalue()), swarm_store.fit_result["validation"]
    assert (again["rank"], again["regret"], again["means"]) == (first["rank"], first["regret"], first["means"])
    assert swarm_store.read_result("runs").height == before  # the same proposal: its runs are found done


def test_store_and_csv_paths_give_the_same_fit(swarm_store, tmp_path):
    store_swarm = read_store_swarm(swarm_store, "sw")
    csv_swarm = read_csv_swarm(*write_csv_swarm(store_swarm, tmp_path))
    cfg = FitConfig(objective="wiki", folds=2, n_boot=5)
    a = fit_swarm(store_swarm, cfg, swarm_store, "a", write=False)
    b = fit_swarm(csv_swarm, cfg, swarm_store, "a", write=False)
    assert a.fits.drop("origin").equals(b.fits.drop("origin"))
    assert a.proposal == b.proposal
    np.testing.assert_array_equal(a.predictions["predicted"].to_numpy(), b.predictions["predicted"].to_numpy())


def test_report_section_shows_the_fit_and_the_verdict(swarm_store, tmp_path):
    from reports.build import build_report
    from reports.section_mixopt import section_mixopt

    s = section_mixopt(swarm_store)
    assert s.empty is None and s.error is None
    assert len(s.figures) == 2 and "CV Spearman" in s.intro and "Validation at debugmodel" in s.intro
    assert any("regressor" in t.columns and "cv_spearman" in t.columns for t in s.tables)
    empty = section_mixopt(Store(tmp_path / "empty", create=True))
    assert empty.empty and "python -m stats.mixopt swarm" in empty.empty
    html = build_report(swarm_store, tmp_path / "report.html").read_text()
    assert 'id="mixopt"' in html and "Mixture choice" in html
