"""Sweeps: grid parsing and checks, deterministic run ids, skipping done runs and resuming interrupted ones."""

from __future__ import annotations

import json
import tomllib

import polars as pl
import pytest

from tests.conftest import REPO, add_corpus
from corpora.store import Store
from train.__main__ import main
from train.data import MixtureConfig, build_mixture
from train.sweep import RunSpec, SweepError, execute_run, load_sweep, make_run_id, parse_sweep, run_sweep
from train.tokenizer import train_tokenizer

GRID = """
name = "tiny"
val_tokens = 256

[grid]
mixtures = ["m"]
models = ["cpu-1m"]
tokens = [256, "1k"]
lr = [1e-3, 3e-3]
seed = [0]

[run]
batch_size = 2

[mixtures.m]
parts = { cc = 0.75, hq = 0.25 }
tokens = "4k"
tokenizer = "lee_bpe"
seq_len = 31
"""


def test_example_grid_parses():
    sweep = load_sweep(REPO / "examples" / "sweep_cpu.toml")
    assert sweep.name == "cpu_demo" and len(sweep.runs) == 2 * 2 * 2
    assert {r.mixture for r in sweep.runs} == set(sweep.mixtures) == {"demo_cc", "demo_cc_hq"}
    assert sorted({r.tokens for r in sweep.runs}) == [250_000, 1_000_000]
    assert all(r.sweep == "cpu_demo" and r.options == {"batch_size": 8} for r in sweep.runs)


def test_grid_is_the_cross_product_in_order():
    sweep = parse_sweep(tomllib.loads(GRID))
    assert [(r.tokens, r.lr) for r in sweep.runs] == [(256, 1e-3), (256, 3e-3), (1000, 1e-3), (1000, 3e-3)]
    assert sweep.mixtures["m"] == MixtureConfig("m", {"cc": 0.75, "hq": 0.25}, 4000, tokenizer="lee_bpe", seq_len=31)


@pytest.mark.parametrize("edit, match", [
    (("[grid]", "[grid]\nsizes = [1]"), r"unknown key\(s\) in \[grid\]: sizes"),
    (('name = "tiny"', 'nam = "tiny"'), r"unknown key\(s\) nam"),
    (('tokens = [256, "1k"]', 'tokens = ["lots"]'), "cannot read 'lots' as a count"),
    (('models = ["cpu-1m"]', 'models = []'), "grid.models is an empty list"),
    (("parts = {", "partz = {"), r"unknown key\(s\) in \[mixtures.m\]: partz"),
    (('seq_len = 31', 'seq_len = 31\n]'), "not valid TOML"),
])
def test_bad_grid_files_name_the_file_and_key(tmp_path, edit, match):
    path = tmp_path / "grid.toml"
    path.write_text(GRID.replace(*edit))
    with pytest.raises(SweepError, match=match) as e:
        load_sweep(path)
    assert str(path) in str(e.value)


def test_run_id_is_deterministic_and_covers_the_config(store, lee_texts):
    add_corpus(store, "cc", lee_texts[:50])
    build_mixture(store, MixtureConfig("m", {"cc": 1.0}, 2_000, seq_len=31))
    runs = parse_sweep(tomllib.loads(GRID)).runs
    ids = [make_run_id(store, r) for r in runs]
    assert ids == [make_run_id(store, r) for r in parse_sweep(tomllib.loads(GRID)).runs]
    assert len(set(ids)) == 4 and ids[0].startswith("m.cpu-1m.256.s0.") and ids[2].startswith("m.cpu-1m.1k.s0.")
    # The mixture's content is part of the id: a rebuilt mixture's runs are new runs.
    build_mixture(store, MixtureConfig("m", {"cc": 1.0}, 2_000, seq_len=31, seed=1), overwrite=True)
    assert make_run_id(store, runs[0]) != ids[0]


# ------------------------------------------------------------------------------------ running sweeps
# A few hundred tokens of the smallest preset: 4 optimizer steps of 2 x 31 tokens per run.
RUN_GRID = GRID.replace('tokens = [256, "1k"]', "tokens = [248]").replace('"cpu-1m"', '"debugmodel"').replace(
    "batch_size = 2", "batch_size = 2\nlog_every_steps = 1\neval_every_tokens = 124\nnum_threads = 1")


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory, lee_texts):
    store = Store(tmp_path_factory.mktemp("sweep") / "store", create=True)
    add_corpus(store, "cc", lee_texts[:200])
    add_corpus(store, "hq", lee_texts[200:220], kind="synthetic", synthetic_type="hq")
    add_corpus(store, "val", lee_texts[280:], role="test")
    train_tokenizer(store, "lee_bpe", ["cc", "hq"], vocab_size=512)
    return store


def test_sweep_trains_each_run_once_then_skips_done_runs(sweep_store, tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(RUN_GRID)
    argv = ["sweep", str(grid), "--store", str(sweep_store.root), "--json", "-q"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert [r["action"] for r in first] == ["started", "started"] and all(r["status"] == "done" for r in first)
    runs = sweep_store.read_result("runs").filter(sweep="tiny")
    assert sorted(runs["run_id"]) == sorted(r["run_id"] for r in first)
    assert runs["lr_peak"].sort().to_list() == [1e-3, 3e-3] and (runs["tokens_seen"] == 248).all()
    val = sweep_store.read_result("run_metrics").filter(split="val")
    assert set(val["domain"]) == {"val"} and val["loss"].is_finite().all()
    assert sweep_store.read_result("mixtures", "m")["n_tokens"].to_list() == [3_000, 1_000]  # 4000 // 32 * 32

    files = sorted(p for p in (sweep_store.root / "results" / "runs").glob("*.parquet"))
    files += sorted((sweep_store.root / "artifacts" / "runs").rglob("*.safetensors"))
    mtimes = [p.stat().st_mtime_ns for p in files]
    assert main(argv) == 0  # the same sweep again: nothing to do
    again = json.loads(capsys.readouterr().out)
    assert [r["action"] for r in again] == ["skipped", "skipped"]
    assert [r["run_id"] for r in again] == [r["run_id"] for r in first]
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    assert main([*argv[:-2], "--dry-run", "--json"]) == 0
    assert [r["action"] for r in json.loads(capsys.readouterr().out)] == ["skip", "skip"]


def test_interrupted_run_resumes_where_it_stopped(sweep_store, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(RUN_GRID.replace('name = "tiny"', 'name = "resume"').replace("lr = [1e-3, 3e-3]", "lr = [2e-3]"))
    sweep = load_sweep(grid)
    build_mixture(sweep_store, sweep.mixtures["m"])  # a no-op when an earlier test built it
    (spec,) = sweep.runs
    stopped = RunSpec(**{**spec.__dict__, "options": {**spec.options, "stop_after_steps": 2}})
    first = execute_run(sweep_store, stopped, progress=False)  # stands for a run killed after step 2
    assert first["status"] == "running" and first["tokens_seen"] == 124 and first["action"] == "started"
    before = sweep_store.read_result("run_metrics", first["run_id"]).filter(split="train")
    assert before["step"].to_list() == [1, 2]

    assert [r["action"] for r in run_sweep(sweep_store, sweep, dry_run=True)] == ["resume"]
    (result,) = run_sweep(sweep_store, sweep, progress=False)
    assert result["run_id"] == first["run_id"] and result["action"] == "resumed"
    assert result["status"] == "done" and result["tokens_seen"] == 248
    after = sweep_store.read_result("run_metrics", first["run_id"]).filter(split="train").sort("step")
    assert after["step"].to_list() == [1, 2, 3, 4]
    # Steps 1-2 are the interrupted process's rows, kept as they were (a restart would have retimed them).
    assert after.filter(pl.col("step") <= 2).equals(before)
    assert sweep_store.read_result("runs", first["run_id"])["sweep"].to_list() == ["resume"]



def test_sweep_checks_every_mixture_and_run_before_building_anything(sweep_store, tmp_path):
    grid = tmp_path / "grid.toml"
    bad_second = RUN_GRID.replace('mixtures = ["m"]', 'mixtures = ["m_ok", "m_bad"]').replace("[mixtures.m]", (
        '[mixtures.m_ok]\nparts = { cc = 1.0 }\ntokens = "2k"\ntokenizer = "lee_bpe"\nseq_len = 31\n\n'
        "[mixtures.m_bad]"))
    grid.write_text(bad_second.replace("hq = 0.25", "web = 0.25"))
    with pytest.raises(SweepError, match=f"{grid}: unknown corpus 'web'"):
        run_sweep(sweep_store, load_sweep(grid))
    grid.write_text(bad_second.replace('models = ["debugmodel"]', 'models = ["debugmodel", "gpt-9"]'))
    with pytest.raises(SweepError, match="unknown model preset 'gpt-9'"):
        run_sweep(sweep_store, load_sweep(grid))
    grid.write_text(bad_second.replace("num_threads = 1", "num_threads = 1\nwarmup = 3"))
    with pytest.raises(SweepError, match="unknown trainer option.* warmup;"):
        run_sweep(sweep_store, load_sweep(grid))
    assert not (sweep_store.root / "artifacts" / "mixtures" / "m_ok").exists()  # m_ok was not built


def test_wsd_branches_share_one_trunk_resume_and_keep_run_rows(sweep_store, tmp_path):
    """schedule = "wsd-branches": the largest budget trains first (here interrupted, then resumed), the
    smaller ones only their cooldowns; each budget is its own runs row with the columns of any run, under
    the id of the equivalent from-scratch wsd run; stable checkpoints go once every branch is done."""
    grid = tmp_path / "grid.toml"
    text = (RUN_GRID.replace('name = "tiny"', 'name = "wsd"').replace("lr = [1e-3, 3e-3]", "lr = [3e-3]")
            .replace("tokens = [248]", "tokens = [248, 496, 992]")   # 4, 8, 16 steps of 62 tokens
            .replace("batch_size = 2", 'batch_size = 2\nschedule = "wsd-branches"\ndecay_frac = 0.25'))
    grid.write_text(text.replace("num_threads = 1", "num_threads = 1\nstop_after_steps = 5"))
    first = run_sweep(sweep_store, load_sweep(grid), progress=False)
    # The trunk stopped after step 5, past the 4-step budget's decay start (3), before the 8-step one's (6).
    assert [(r["action"], r["status"]) for r in first] == [("started", "running"), ("branched", "done"),
                                                           ("failed", "failed")]
    assert "is not finished" in first[2]["error"]                  # a branch waits for its trunk
    grid.write_text(text)
    sweep = load_sweep(grid)
    assert sweep.branches and all(r.options["schedule"] == "wsd" for r in sweep.runs)
    results = run_sweep(sweep_store, sweep, progress=False)
    assert [r["action"] for r in results] == ["resumed", "skipped", "branched"]
    assert [r["tokens_seen"] for r in results] == [992, 248, 496] and {r["status"] for r in results} == {"done"}
    rows = sweep_store.read_result("runs").filter(sweep="wsd").sort("tokens")
    assert rows["n_steps"].to_list() == [4, 8, 16] and (rows["tokens"] == rows["tokens_seen"]).all()
    plain = sweep_store.read_result("runs").filter(sweep="tiny")
    assert rows.columns == plain.columns                            # the same columns as any run
    trunk_id = results[0]["run_id"]
    configs = [json.loads(c) for c in rows["config"]]
    assert [c["branch_from"] for c in configs] == [trunk_id, trunk_id, None]
    assert {c["warmup_steps"] for c in configs} == {1}             # 5% of the trunk's 16 steps
    # Each branch row's curve: the trunk's stable phase, then its own cooldown to its budget.
    trunk_loss = sweep_store.read_result("run_metrics", trunk_id).filter(split="train").sort("step")["loss"]
    for run_id, start in zip(rows["run_id"][:2], (3, 6)):   # the loss logged at step k+1 is the first to
        loss = sweep_store.read_result("run_metrics", run_id).filter(split="train").sort("step")["loss"]
        assert loss[:start + 1].to_list() == trunk_loss[:start + 1].to_list()   # see step k's lr
    assert loss[start + 1] != trunk_loss[start + 1]
    trunk_dir = sweep_store.artifact_dir("runs", trunk_id)
    assert not list(trunk_dir.glob("stable-*.pt")) and (trunk_dir / "model.safetensors").exists()
    assert not list(trunk_dir.glob("checkpoint.pt"))                # lean: no optimizer state left
    # A budget added later: the trunk is done and its stable checkpoints are gone, so it trains from scratch
    # (the same run); the others are skipped.
    grid.write_text(text.replace("tokens = [248, 496, 992]", "tokens = [248, 372, 496, 992]"))
    again = run_sweep(sweep_store, load_sweep(grid), progress=False)
    assert [(r["tokens_seen"], r["action"]) for r in again] == [(992, "skipped"), (248, "skipped"),
                                                                (372, "started"), (496, "skipped")]
