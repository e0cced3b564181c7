"""Anneal probes (stats/mixopt/probe.py) on real text: one trunk per seed, a cooldown branch per candidate
on its own mixture, full runs for the ranking check; rows link to their trunk; bad flags exit 2."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.conftest import add_corpus
from corpora.store import Store
from stats.mixopt.probe import REFERENCE, ProbeConfig, main, ranking, run_probe
from train.loop import RunConfig, stable_checkpoint_path, wsd_decay_start

SEQ_LEN = 31
BATCH = 4
STEPS = 16


@pytest.fixture(scope="module")
def probe_store(tmp_path_factory, lee_texts):
    store = Store(tmp_path_factory.mktemp("probe") / "store", create=True)
    add_corpus(store, "cc", lee_texts[:160])
    add_corpus(store, "hq", lee_texts[160:200], kind="synthetic", synthetic_type="hq")
    add_corpus(store, "qa", lee_texts[200:240], kind="synthetic", synthetic_type="qa")
    add_corpus(store, "val", lee_texts[260:], role="test")
    from train.tokenizer import train_tokenizer

    train_tokenizer(store, "lee512", ["cc", "hq", "qa"], vocab_size=512)
    return store


def test_probe_ranks_candidates_links_rows_to_trunks_and_reuses_runs(probe_store):
    options = {"batch_size": BATCH, "eval_tokens": 256, "num_threads": 1, "log_every_steps": 4,
               "eval_every_tokens": STEPS // 2 * BATCH * SEQ_LEN, "checkpoint_every_tokens": 1 << 30}
    cfg = ProbeConfig(trunk="cc", candidates=["hq", "qa"], share=0.3, cooldown=0.25, seeds=[0, 1],
                      tokens=STEPS * BATCH * SEQ_LEN, mixture_tokens="8k", tokenizer="lee512", seq_len=SEQ_LEN,
                      val_tokens=512, val_corpora=["val"], options=options)
    probes, decisions = run_probe(probe_store, cfg, progress=False)
    runs = probe_store.read_result("runs").unique("run_id", keep="last")
    by_id = {r["run_id"]: r for r in runs.iter_rows(named=True)}
    start = wsd_decay_start(RunConfig(schedule="wsd", decay_frac=0.25, warmup_steps=1), STEPS)
    assert set(probes["candidate"]) == {REFERENCE, "hq", "qa"} and set(probes["domain"]) == {"val"}
    for row in probes.iter_rows(named=True):
        trunk = by_id[row["trunk_run"]]
        assert trunk["status"] == "done" and trunk["phases"] is None and trunk["mixture"] == "probe_cc"
        assert trunk["seed"] == row["seed"]
        if row["candidate"] == REFERENCE:
            assert row["run_id"] == row["trunk_run"] and row["delta"] == 0
            continue
        branch = by_id[row["run_id"]]                  # the cooldown branch: lineage in its runs row
        assert (branch["trunk_run"], branch["branch_step"]) == (row["trunk_run"], start)
        phases = json.loads(branch["phases"])
        assert [p["mixture"] for p in phases] == ["probe_cc", f"probe_cc_{row['candidate']}30"]
        assert phases[0]["until"] == 0.75
        sources = json.loads(branch["phase_tokens"])[1]["sources"]   # the cooldown read the candidate
        assert sources[row["candidate"]] > 0 and set(sources) == {row["candidate"], "cc"}
        assert row["delta"] == pytest.approx(row["probe_loss"] - row["reference_loss"])
        assert by_id[row["full_run"]]["phases"] is None and row["full_loss"] is not None
    assert all(by_id[r]["elapsed_s"] < by_id[t]["elapsed_s"]          # a branch pays only its cooldown
               for r, t in zip(probes["run_id"], probes["trunk_run"]) if r != t)
    mean = decisions.filter((pl.col("seed") == "mean") & (pl.col("model") == "probe"))
    assert mean.height == 1 and mean["n_pairs"][0] == 3 and 0 <= mean["accuracy"][0] <= 1
    assert set(decisions["seed"]) == {"mean", "0", "1"}
    r = ranking(probes)
    assert sorted(r["probe"]) == sorted(r["full"]) == sorted([REFERENCE, "hq", "qa"])
    assert probe_store.read_result("probes") is not None and probe_store.read_result("probe_decisions") is not None
    for trunk_run in set(probes["trunk_run"]):   # the anneal point stays for later probes
        assert stable_checkpoint_path(probe_store, trunk_run, start).exists()
    # a second probe trains nothing: every run is found again
    n_runs = runs.height
    again, _ = run_probe(probe_store, cfg, progress=False)
    assert probe_store.read_result("runs").unique("run_id").height == n_runs
    assert again.sort("domain", "seed", "candidate")["probe_loss"].to_list() == \
        probes.sort("domain", "seed", "candidate")["probe_loss"].to_list()


@pytest.mark.parametrize("flags, match", [
    (["--share", "1.0"], "--share 1 is outside (0, 1)"),
    (["--share", "0"], "--share 0 is outside (0, 1)"),
    (["--cooldown", "1.5"], "--cooldown 1.5 is outside (0, 1)"),
    (["--candidates", "nosuch"], "nosuch"),
    (["--candidates", "cc"], "already part of the trunk"),
])
def test_bad_probe_flags_exit_2_with_one_line(probe_store, capsys, flags, match):
    argv = ["--store", str(probe_store.root), "--trunk", "cc", "--candidates", "hq,qa", "-q", *flags]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and match in err, err


def test_demo_study_probes_its_types_on_the_sweeps_trunks():
    import dataclasses

    from reports.study import load_study, probe_config, sweep_document

    study = load_study(None)
    cfg = probe_config(study)
    assert (cfg.trunk, cfg.candidates, cfg.share, cfg.cooldown) == ("mix_base", ["hq", "qa", "txbk"], 0.33, 0.2)
    assert cfg.tokens == 128_000 and cfg.seeds == [0, 1, 2] and cfg.model == "debugmodel"
    assert cfg.options == study.sweep["run"] and cfg.val_corpora == study.tests
    assert sweep_document(study)["anneal_points"] == ["mix_base"]   # the trunks keep their anneal point
    assert "anneal_points" not in sweep_document(dataclasses.replace(study, probe={}))
    with pytest.raises(ValueError, match="unknown key 'shares' in \\[probe\\]"):
        probe_config(dataclasses.replace(study, probe={"shares": 0.3}))
    with pytest.raises(ValueError, match="share = 'x' should be float or int"):
        probe_config(dataclasses.replace(study, probe={"share": "x"}))
