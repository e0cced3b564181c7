"""Phase schedules (train.phases): exact resume across a boundary, exact per-phase token accounting, a
cooldown branch on its own mixture equal to the from-scratch schedule, and bad schedules refused up front.
Real text (gensim's Lee corpus), a 512-token BPE, the `debugmodel` preset: every run takes a second or two."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import add_corpus
from corpora.store import Store, StoreError
from train.__main__ import main
from train.data import MixtureConfig, allocate_tokens, build_mixture, open_mixture
from train.loop import RunConfig, final_weights_path, stable_checkpoint_path, train_run
from train.phases import PhaseError, parse_phases, row_sources, spans

SEQ_LEN = 63
BATCH = 4
STEP = BATCH * SEQ_LEN          # tokens per optimizer step
N_STEPS = 20                    # phase 1: steps 0-15 on "web", phase 2: steps 16-19 on "anneal"
ANNEAL_ROWS = 4 * BATCH         # the anneal mixture holds exactly the 16 rows its phase reads


@pytest.fixture(scope="module")
def phase_store(tmp_path_factory, lee_texts):
    store = Store(tmp_path_factory.mktemp("phases") / "store", create=True)
    add_corpus(store, "cc", lee_texts[:200])
    add_corpus(store, "hq", lee_texts[200:260], kind="synthetic", synthetic_type="hq")
    add_corpus(store, "val", lee_texts[260:], role="test")
    from train.tokenizer import train_tokenizer

    train_tokenizer(store, "lee512", ["cc", "hq"], vocab_size=512)
    common = dict(tokenizer="lee512", seq_len=SEQ_LEN)
    build_mixture(store, MixtureConfig("web", {"cc": 1.0}, 20_000, **common), progress=False)
    build_mixture(store, MixtureConfig("anneal", {"cc": 0.6, "hq": 0.4}, ANNEAL_ROWS * (SEQ_LEN + 1), **common),
                  progress=False)
    build_mixture(store, MixtureConfig("long", {"cc": 1.0}, 4096, tokenizer="lee512", seq_len=31), progress=False)
    return store


@pytest.fixture(scope="module")
def streams(phase_store):
    web = open_mixture(phase_store, "web", ["val"], val_tokens=1024, progress=False)
    anneal = open_mixture(phase_store, "anneal", ["val"], val_tokens=1024, progress=False)
    return web, anneal


def cfg(**kw) -> RunConfig:
    base = dict(model="debugmodel", tokens=N_STEPS * STEP, batch_size=BATCH, lr_peak=1e-2, warmup_steps=2,
                schedule="wsd", decay_frac=0.2, log_every_steps=1, eval_every_tokens=10 * STEP, eval_tokens=512,
                checkpoint_every_tokens=1 << 30,   # checkpoints (store writes) only where a test stops a run
                progress=False, num_threads=1, phases=[{"until": 0.8, "mixture": "web"},
                                                       {"until": 1.0, "mixture": "anneal"}])
    return RunConfig(**{**base, **kw})


def run(store, streams, c):
    web, anneal = streams
    return train_run(store, c, anneal.train if c.phases else web.train, web.val_sets, web.tokenizer,
                     web.vocab_size, {"web": web.train, "anneal": anneal.train})


def losses(store, run_id, split="train"):
    return store.read_result("run_metrics", run_id).filter(pl.col("split") == split).sort("step")["loss"].to_list()


def same_weights(store, a, b, other=None):
    wa, wb = load_file(str(final_weights_path(store, a))), load_file(str(final_weights_path(other or store, b)))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_parse_and_spans():
    assert parse_phases("web:0.8,anneal:1") == [{"until": 0.8, "mixture": "web"}, {"until": 1.0, "mixture": "anneal"}]
    plan = spans(parse_phases("a:0.5,b:0.75,a:1"), "", 20, 4)
    assert [(s.mixture, s.start_step, s.end_step, s.first_position) for s in plan] == \
        [("a", 0, 10, 0), ("b", 10, 15, 0), ("a", 15, 20, 40)]       # 'a' continues where it left off
    with pytest.raises(PhaseError, match="gets no optimizer step"):
        spans(parse_phases("a:0.99,b:1"), "", 20, 4)


def test_row_sources_counts_every_token():
    rng = np.random.default_rng(0)
    seg = np.stack([rng.integers(0, 3, 200), rng.integers(1, 90, 200)], axis=1)
    width = 17
    n_rows = int(seg[:, 1].sum()) // width
    per_token = np.repeat(seg[:, 0], seg[:, 1])[: n_rows * width].reshape(n_rows, width)
    expected = np.stack([(per_token == p).sum(axis=1) for p in range(3)], axis=1)
    assert np.array_equal(row_sources(seg, n_rows, width, 3), expected)


def test_two_phase_run_resumes_exactly_and_counts_tokens_per_phase(phase_store, streams, tmp_path):
    full = run(phase_store, streams, cfg(run_id="two"))
    assert full["status"] == "done" and full["mixture"] == "web:0.8,anneal:1"
    other = Store(tmp_path / "other", create=True)
    for stop in (7, 17):     # stopped mid phase 1, resumed across the boundary, stopped in phase 2, resumed
        row = run(other, streams, cfg(run_id="two", stop_after_steps=stop))
        assert row["status"] == "running" and row["step"] == stop
    run(other, streams, cfg(run_id="two"))
    assert losses(other, "two") == losses(phase_store, "two")                     # bit for bit
    assert losses(other, "two", "val") == losses(phase_store, "two", "val")
    assert same_weights(phase_store, "two", "two", other)

    phases = json.loads(phase_store.read_result("runs", "two")["phase_tokens"][-1])
    assert [(p["mixture"], p["steps"], p["tokens"]) for p in phases] == \
        [("web", 16, 16 * STEP), ("anneal", 4, 4 * STEP)]
    # phase 2 reads the anneal stream exactly once: its sources are the configured shares of the stream
    assert phases[1]["sources"] == dict(zip(["cc", "hq"], allocate_tokens([0.6, 0.4], ANNEAL_ROWS * (SEQ_LEN + 1))))
    assert phases[0]["sources"] == {"cc": 16 * BATCH * (SEQ_LEN + 1)}
    # one validation set for both phases: the same domain and rows before and after the switch
    val = phase_store.read_result("run_metrics", "two").filter(pl.col("split") == "val")
    assert val["domain"].unique().to_list() == ["val"] and val["step"].to_list() == [10, 20]


def test_cooldown_branch_on_its_own_mixture_is_the_from_scratch_schedule(phase_store, streams):
    trunk = cfg(run_id="trunk", phases=[], mixture="web", branch_tokens=str(N_STEPS * STEP))
    run(phase_store, streams, trunk)
    assert stable_checkpoint_path(phase_store, "trunk", 16).exists()    # its own decay start: the anneal point
    branch = run(phase_store, streams, cfg(run_id="branch", branch_from="trunk"))
    scratch = run(phase_store, streams, cfg(run_id="scratch"))
    assert losses(phase_store, "branch") == losses(phase_store, "scratch")          # bit for bit
    assert losses(phase_store, "branch")[:16] == losses(phase_store, "trunk")[:16]
    assert losses(phase_store, "branch")[16:] != losses(phase_store, "trunk")[16:]  # the cooldown data differs
    assert same_weights(phase_store, "branch", "scratch")
    assert branch["final_val_loss"] == scratch["final_val_loss"]
    rows = phase_store.read_result("runs").filter(pl.col("run_id") == "branch").to_dicts()[-1]
    assert (rows["trunk_run"], rows["branch_step"]) == ("trunk", 16)
    assert [p["mixture"] for p in json.loads(rows["phases"])] == ["web", "anneal"]
    assert rows["phase_tokens"] == phase_store.read_result("runs", "scratch")["phase_tokens"][-1]
    # a branch whose data before the branch point is not the trunk's is refused
    with pytest.raises(StoreError, match="data before the branch point"):
        run(phase_store, streams, cfg(run_id="bad", branch_from="trunk",
                                      phases=[{"until": 0.8, "mixture": "anneal"}, {"until": 1.0, "mixture": "web"}]))


@pytest.mark.parametrize("phases, match", [
    ("web:0.8,anneal:0.8", "must increase"),
    ("web:0.5,anneal:0.9", "must end at 1"),
    ("web:0.8,nosuch:1", "unknown mixture 'nosuch'"),
    ("web:0.8,long:1", "different tokenizers or sequence lengths"),
    ("web=0.8", "malformed phase"),
    ("web:0.99,anneal:1", "gets no optimizer step"),
])
def test_bad_schedules_exit_2_with_one_line(phase_store, capsys, phases, match):
    code = main(["run", "--store", str(phase_store.root), "--model", "debugmodel", "--tokens", "5k",
                 "--phases", phases, "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and match in err, err
    assert phase_store.read_result("runs") is None or "nosuch" not in str(phase_store.read_result("runs"))


def test_phases_in_a_run_config_keep_the_mixture_the_last_phases():
    c = RunConfig(phases=[{"until": 0.8, "mixture": "web"}, {"until": 1, "mixture": "anneal"}])
    assert c.mixture == "anneal" and dataclasses.asdict(c)["phases"][1]["until"] == 1.0
    with pytest.raises(ValueError, match="not the last phase"):
        RunConfig(mixture="web", phases="web:0.8,anneal:1")


def test_sweep_grid_varies_the_schedule_and_anneals_off_one_trunk(phase_store):
    from reports.section_schedules import section_schedules
    from stats.findings import static_vs_annealed, write_findings
    from train.sweep import SweepError, parse_sweep, run_sweep

    doc = {"name": "sched", "schedule": "wsd-branches", "anneal_from": "web", "val_corpora": ["val"],
           "val_tokens": 1024, "grid": {"mixtures": ["web", "anneal"], "models": ["debugmodel"],
                                        "tokens": [N_STEPS * STEP], "anneal": [0.0, 0.2]},
           "run": {"batch_size": BATCH, "eval_tokens": 512, "num_threads": 1, "eval_every_tokens": 10 * STEP,
                   "checkpoint_every_tokens": 1 << 30}}
    sweep = parse_sweep(doc)
    assert [(r.mixture, bool(r.options.get("phases"))) for r in sweep.runs] == \
        [("web", False), ("anneal", False), ("anneal", True)]          # no cooldown of web on web
    results = run_sweep(phase_store, sweep, progress=False)
    assert [r["action"] for r in results] == ["started", "branched", "started"]   # trunk, its cooldown, static
    trunk, branch = results[0], results[1]
    assert branch["trunk_run"] == trunk["run_id"] and branch["branch_step"] == 16
    assert branch["mixture"] == "web:0.8,anneal:1" and branch["tokens_seen"] == trunk["tokens_seen"]
    sva = static_vs_annealed(phase_store)
    assert sva.height == 1 and sva["n_pairs"][0] == 1 and sva["verdict"][0] == "inconclusive (within noise)"
    assert len(section_schedules(phase_store).tables) == 1  # the verdicts are stats.findings' table: not yet written
    write_findings(phase_store, n_boot=200)
    assert phase_store.read_result("schedule_verdicts").drop("created_at").equals(static_vs_annealed(phase_store, n_boot=200))
    section = section_schedules(phase_store)
    assert section.empty is None and len(section.tables) == 2
    for grid, match in (({"anneal": [1.0]}, "cooldown fractions in"), ({"anneal": ["x"]}, "cooldown fractions")):
        with pytest.raises(SweepError, match=match):
            parse_sweep({**doc, "grid": {**doc["grid"], **grid}})
    with pytest.raises(SweepError, match="needs anneal_from"):
        parse_sweep({k: v for k, v in doc.items() if k != "anneal_from"})
