"""The training loop on real text: gensim's Lee news corpus, a byte-level BPE of 512 tokens trained on it,
packed into a mixture by train.data. The model is the `debugmodel` preset so every run takes seconds."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, add_corpus
from corpora.store import Store, StoreError
from train.data import MixtureConfig, build_mixture, open_mixture
from train.loop import (RunConfig, autocast_for, checkpoint_path, evaluate, final_weights_path, get_lr, load_final_weights,
                        sequence_indices, stable_checkpoint_path, train_run, wsd_decay_start)
from train.model import UnknownPreset
from train.tokenizer import train_tokenizer

SEQ_LEN = 63   # rows of 64 tokens
VOCAB = 512


@pytest.fixture(scope="module")
def lee_store(tmp_path_factory, lee_texts):
    store = Store(tmp_path_factory.mktemp("loop") / "store", create=True)
    add_corpus(store, "cc", lee_texts[:260])
    add_corpus(store, "val", lee_texts[260:], role="test")
    train_tokenizer(store, "lee512", ["cc"], vocab_size=VOCAB)
    build_mixture(store, MixtureConfig(name="lee", parts={"cc": 1.0}, tokens=40_000, tokenizer="lee512",
                                       seq_len=SEQ_LEN), progress=False)
    return store


@pytest.fixture(scope="module")
def lee_data(lee_store):
    return open_mixture(lee_store, "lee", ["val"], val_tokens=4096, progress=False)


def tiny_cfg(**kw) -> RunConfig:
    base = dict(run_id="tiny", mixture="lee", model="debugmodel", tokens=40 * 8 * SEQ_LEN, batch_size=8,
                lr_peak=1e-2, warmup_steps=4, log_every_steps=1, eval_every_tokens=10 * 8 * SEQ_LEN,
                eval_tokens=1024, progress=False, num_threads=1)
    return RunConfig(**{**base, **kw})


def run(store, data, cfg):
    return train_run(store, cfg, data.train, data.val_sets, data.tokenizer, data.vocab_size)


def final_state(store, run_id) -> dict:
    return load_file(str(final_weights_path(store, run_id)))


def train_losses(store, run_id) -> list[float]:
    m = store.read_result("run_metrics", run_id)
    return m.filter(pl.col("split") == "train").sort("step")["loss"].to_list()


def test_lr_schedules():
    cfg = RunConfig(mixture="m", lr_peak=1.0, lr_min=0.1, warmup_steps=10)
    lrs = [get_lr(s, cfg, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)      # linear warmup to the peak
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))                      # then never rises
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)                             # cosine ends at lr_min
    assert lrs[(10 + 100) // 2] == pytest.approx(0.55, abs=0.02)              # half way: the mid value
    wsd = dataclasses.replace(cfg, schedule="wsd", decay_frac=0.2)
    lrs = [get_lr(s, wsd, 100) for s in range(100)]
    assert lrs[10:80] == [1.0] * 70                                            # stable phase
    assert lrs[-1] == pytest.approx(0.1) and lrs[80] < 1.0
    with pytest.raises(ValueError, match="schedule"):
        RunConfig(mixture="m", schedule="linear")


def test_sequence_order_is_a_pure_function_of_position():
    n = 37
    epoch0 = sequence_indices(0, n, n, seed=3)
    assert sorted(epoch0) == list(range(n))                                    # every row once per epoch
    assert not np.array_equal(epoch0, sequence_indices(n, n, n, seed=3))       # a new order each epoch
    whole = sequence_indices(0, 3 * n, n, seed=3)
    pieces = np.concatenate([sequence_indices(s, 7, n, seed=3) for s in range(0, 3 * n, 7)])[: 3 * n]
    assert np.array_equal(whole, pieces)                                       # chunking does not matter
    assert not np.array_equal(epoch0, sequence_indices(0, n, n, seed=4))


def test_tiny_run_loss_falls(lee_store, lee_data, cpu_dtype):
    steps, run_id = 80, f"falls-{cpu_dtype}"
    row = run(lee_store, lee_data, tiny_cfg(run_id=run_id, tokens=steps * 8 * SEQ_LEN,
                                            eval_every_tokens=20 * 8 * SEQ_LEN))
    assert row["status"] == "done" and row["tokens_seen"] == steps * 8 * SEQ_LEN
    losses = train_losses(lee_store, run_id)
    assert len(losses) == steps
    assert losses[0] > 0.95 * math.log(lee_data.vocab_size)            # starts near uniform over the vocabulary
    # Stated bound: the entropy of the stream's unigram distribution, the best loss without context
    # (5.29 nats here, against ln 512 = 6.24 at the start). Going below it means the model uses context.
    counts = np.bincount(np.asarray(lee_data.train).ravel(), minlength=lee_data.vocab_size)
    p = counts[counts > 0] / counts.sum()
    unigram_entropy = float(-(p * np.log(p)).sum())
    assert np.mean(losses[-5:]) < unigram_entropy, (losses[-5:], unigram_entropy)
    m = lee_store.read_result("run_metrics", run_id).filter(pl.col("split") == "val")
    assert m["domain"].unique().to_list() == ["val"] and len(m) == 4   # every 20 steps
    assert m["loss"][-1] < m["loss"][0] and m["loss"][-1] < math.log(lee_data.vocab_size) - 0.9  # held-out text
    runs = lee_store.read_result("runs", run_id).to_dicts()
    assert runs[0]["status"] == "done" and runs[0]["model"] == "debugmodel" and runs[0]["tokenizer"] == "lee512"
    assert runs[0]["tokens_per_s"] > 0 and runs[0]["n_params"] > 50_000
    # 'auto' resolved under SYNTHMIX_CPU_BF16, recorded with the run and with every metric row
    assert runs[0]["dtype"] == cpu_dtype and m["dtype"].unique().to_list() == [cpu_dtype]
    # Lean: the final weights (with the model config) stay, the optimizer state goes.
    run_dir = lee_store.artifact_dir("runs", run_id)
    assert not (run_dir / "checkpoint.pt").exists() and (run_dir / "model.safetensors").exists()
    model = load_final_weights(lee_store, run_id)
    assert model.cfg.vocab_size == lee_data.vocab_size and model.num_params(non_embedding=True) == runs[0]["n_params"]
    cfg = tiny_cfg(run_id=run_id, eval_tokens=1024)
    # the weights of the last validation, under the dtype the run recorded: the same loss
    val, cpu = lee_data.val_sets["val"], torch.device("cpu")
    again = evaluate(model, val, cfg, cpu, autocast_for(runs[0]["dtype"], cpu))
    assert again == pytest.approx(m["loss"][-1], rel=1e-6)
    other = "fp32" if cpu_dtype == "bf16" else "bf16"     # and the other dtype computes another number
    assert evaluate(model, val, cfg, cpu, autocast_for(other, cpu)) != again


def test_resume_reproduces_the_uninterrupted_curve(lee_store, lee_data, tmp_path):
    cfg = tiny_cfg(run_id="resume", tokens=16 * 8 * SEQ_LEN, eval_every_tokens=4 * 8 * SEQ_LEN)
    run(lee_store, lee_data, cfg)
    full = train_losses(lee_store, "resume")

    other = Store(tmp_path / "other", create=True)   # same run_id, fresh store: nothing to resume from
    stopped = run(other, lee_data, dataclasses.replace(cfg, stop_after_steps=7))
    assert stopped["status"] == "running" and stopped["step"] == 7
    assert other.read_result("runs", "resume")["status"][0] == "running"
    resumed = run(other, lee_data, cfg)
    assert resumed["status"] == "done"
    assert train_losses(other, "resume") == full                      # bit for bit, all 16 steps
    a, b = final_state(lee_store, "resume"), final_state(other, "resume")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    val = lambda s: s.read_result("run_metrics", "resume").filter(pl.col("split") == "val")["loss"].to_list()
    assert val(other) == val(lee_store)

    # A finished run returns its row without training; a changed config refuses to resume.
    assert run(other, lee_data, cfg)["status"] == "done"
    with pytest.raises(StoreError, match="lr_peak"):
        run(other, lee_data, dataclasses.replace(cfg, lr_peak=5e-3))


def test_keep_optimizer_and_bf16_weights(lee_store, lee_data):
    cfg = tiny_cfg(run_id="keep", tokens=4 * 8 * SEQ_LEN, keep_optimizer=True, weights_dtype="bf16")
    run(lee_store, lee_data, cfg)
    ckpt = torch.load(checkpoint_path(lee_store, "keep"), weights_only=True)
    assert ckpt["step"] == 4 and ckpt["optimizer"]["state"]              # Adam moments kept on request
    weights = final_state(lee_store, "keep")
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}
    assert torch.equal(weights["output.weight"], ckpt["model"]["output.weight"].bfloat16())


def test_bf16_autocast_follows_fp32_and_resumes_exactly(lee_store, lee_data, tmp_path):
    """bf16 autocast (the default on CPUs with AMX / AVX512-BF16; forced here, emulated on other CPUs) trains
    the same model as fp32 within a stated tolerance, and a stopped bf16 run resumes bit for bit."""
    cfg = tiny_cfg(tokens=20 * 8 * SEQ_LEN, eval_every_tokens=10 * 8 * SEQ_LEN)
    run(lee_store, lee_data, dataclasses.replace(cfg, run_id="fp32", dtype="fp32"))
    run(lee_store, lee_data, dataclasses.replace(cfg, run_id="bf16", dtype="bf16"))
    fp32, bf16 = np.array(train_losses(lee_store, "fp32")), np.array(train_losses(lee_store, "bf16"))
    assert np.abs(bf16 - fp32).max() < 0.05, np.abs(bf16 - fp32)       # stated tolerance: 0.05 nats per step
    assert bf16[-1] < bf16[0] - 0.5
    other = Store(tmp_path / "other", create=True)
    run(other, lee_data, dataclasses.replace(cfg, run_id="bf16", dtype="bf16", stop_after_steps=7))
    run(other, lee_data, dataclasses.replace(cfg, run_id="bf16", dtype="bf16"))
    assert train_losses(other, "bf16") == train_losses(lee_store, "bf16")


def test_auto_dtype_resumes_in_the_dtype_the_run_started_in(lee_store, lee_data, tmp_path, monkeypatch):
    """A run started where 'auto' means bf16 and resumed where it means fp32 (another CPU) continues in
    bf16, bit for bit: the dtype is recorded with the run."""
    cfg = tiny_cfg(run_id="moved", tokens=12 * 8 * SEQ_LEN, eval_every_tokens=6 * 8 * SEQ_LEN)
    whole = Store(tmp_path / "whole", create=True)
    run(whole, lee_data, dataclasses.replace(cfg, dtype="bf16"))
    moved = Store(tmp_path / "moved", create=True)
    monkeypatch.setenv("SYNTHMIX_CPU_BF16", "1")
    run(moved, lee_data, dataclasses.replace(cfg, stop_after_steps=5))
    monkeypatch.setenv("SYNTHMIX_CPU_BF16", "0")
    row = run(moved, lee_data, cfg)
    assert row["status"] == "done" and row["dtype"] == "bf16"
    assert train_losses(moved, "moved") == train_losses(whole, "moved")


def test_wsd_branch_is_the_from_scratch_wsd_run(lee_store, lee_data, tmp_path):
    """A budget branch (cooldown from the trunk's stable-phase checkpoint) computes exactly what a wsd run
    of its budget trained from scratch computes, resumes when interrupted, and pays only its cooldown."""
    step_tokens = 8 * SEQ_LEN
    wsd = tiny_cfg(schedule="wsd", decay_frac=0.25, warmup_steps=2, eval_every_tokens=4 * step_tokens)
    trunk = dataclasses.replace(wsd, run_id="trunk", tokens=24 * step_tokens, branch_tokens=f"{12 * step_tokens}")
    branch = dataclasses.replace(wsd, run_id="branch", tokens=12 * step_tokens, branch_from="trunk")
    start = wsd_decay_start(branch, 12)
    assert start == 9
    with pytest.raises(StoreError, match="train that run first"):
        run(lee_store, lee_data, branch)                                # no trunk yet
    run(lee_store, lee_data, trunk)
    assert stable_checkpoint_path(lee_store, "trunk", start).exists()
    row = run(lee_store, lee_data, dataclasses.replace(branch, stop_after_steps=start + 1))
    assert row["status"] == "running" and row["step"] == start + 1     # interrupted in its cooldown ...
    row = run(lee_store, lee_data, branch)                              # ... and resumed
    scratch = run(lee_store, lee_data, dataclasses.replace(wsd, run_id="scratch", tokens=12 * step_tokens))
    assert row["status"] == "done" and row["n_steps"] == scratch["n_steps"] == 12
    assert row["tokens"] == row["tokens_seen"] == 12 * step_tokens
    assert train_losses(lee_store, "branch") == train_losses(lee_store, "scratch")   # bit for bit
    assert train_losses(lee_store, "branch")[:start] == train_losses(lee_store, "trunk")[:start]
    a, b = final_state(lee_store, "branch"), final_state(lee_store, "scratch")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert row["final_val_loss"] == scratch["final_val_loss"]
    assert row["elapsed_s"] < 0.6 * scratch["elapsed_s"]               # 3 cooldown steps of 12
    with pytest.raises(StoreError, match="lr_peak"):                   # a branch must match its trunk
        run(lee_store, lee_data, dataclasses.replace(branch, run_id="bad_branch", lr_peak=5e-3))


def test_compiled_run_follows_the_eager_curve(lee_store, lee_data):
    """torch.compile (the whole model, fused loss included) trains the same model: same curve up to float
    reassociation, same checkpoint keys, so a compiled run resumes an eager one and vice versa."""
    cfg = tiny_cfg(tokens=6 * 8 * SEQ_LEN, eval_every_tokens=3 * 8 * SEQ_LEN)
    run(lee_store, lee_data, dataclasses.replace(cfg, run_id="eager"))
    run(lee_store, lee_data, dataclasses.replace(cfg, run_id="compiled", compile=True))
    eager, compiled = train_losses(lee_store, "eager"), train_losses(lee_store, "compiled")
    assert len(compiled) == 6 and np.allclose(compiled, eager, atol=2e-3), (compiled, eager)
    val = lambda r: lee_store.read_result("run_metrics", r).filter(pl.col("split") == "val")["loss"].to_list()
    assert np.allclose(val("compiled"), val("eager"), atol=2e-3)
    assert final_state(lee_store, "compiled").keys() == final_state(lee_store, "eager").keys()


def test_seed_determines_the_run(lee_store, lee_data):
    cfg = tiny_cfg(tokens=4 * 8 * SEQ_LEN, eval_every_tokens=10**9)
    run(lee_store, lee_data, dataclasses.replace(cfg, run_id="seed_a"))
    run(lee_store, lee_data, dataclasses.replace(cfg, run_id="seed_b"))
    run(lee_store, lee_data, dataclasses.replace(cfg, run_id="seed_c", seed=1))
    assert train_losses(lee_store, "seed_a") == train_losses(lee_store, "seed_b")
    assert train_losses(lee_store, "seed_a") != train_losses(lee_store, "seed_c")


def test_bad_input_fails_before_training(lee_store, lee_data):
    with pytest.raises(UnknownPreset, match="cpu-1m"):
        run(lee_store, lee_data, tiny_cfg(run_id="bad1", model="nope"))
    with pytest.raises(ValueError, match="seq_len"):
        run(lee_store, lee_data, tiny_cfg(run_id="bad2", seq_len=128))
    with pytest.raises(ValueError, match="less than one optimizer step"):
        run(lee_store, lee_data, tiny_cfg(run_id="bad3", tokens=100))
    assert lee_store.read_result("runs", "bad1") is None


def torchrun(store, run_id: str, steps: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.loop", "--store", str(store.root), "--mixture", "lee", "--model", "debugmodel",
           "--run-id", run_id, "--tokens", str(steps * 8 * SEQ_LEN), "--batch-size", "4", "--lr-peak", "1e-2",
           "--warmup-steps", "4", "--log-every-steps", "1", "--eval-every-tokens", str(3 * 8 * SEQ_LEN),
           "--eval-tokens", "1024", "--no-progress", "--num-threads", "1", "--val-corpora", "val",
           "--val-tokens", "4096", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def single_process_reference(store, data, steps: int) -> str:
    """The same run in one process with 8 sequences per step (done once; a finished run returns at once)."""
    run(store, data, tiny_cfg(run_id="single", tokens=steps * 8 * SEQ_LEN, eval_every_tokens=3 * 8 * SEQ_LEN))
    return "single"


def val_losses(store, run_id):
    return store.read_result("run_metrics", run_id).filter(pl.col("split") == "val")["loss"].to_numpy()


def test_torchrun_two_process_gloo_matches_one_process(lee_store, lee_data):
    """DDP over 2 CPU processes (gloo), 4 sequences each, sees the same sequences as 1 process with 8."""
    steps = 6
    one = single_process_reference(lee_store, lee_data, steps)
    torchrun(lee_store, "ddp", steps)
    row = lee_store.read_result("runs", "ddp").to_dicts()[0]
    assert row["status"] == "done" and row["world_size"] == 2 and row["batch_size"] == 8
    ddp = train_losses(lee_store, "ddp")
    assert len(ddp) == steps
    # Same data and math; only the order of floating-point sums differs.
    np.testing.assert_allclose(ddp, train_losses(lee_store, one), rtol=2e-4)
    np.testing.assert_allclose(val_losses(lee_store, "ddp"), val_losses(lee_store, one), rtol=2e-4)


@pytest.mark.slow  # two torchrun launches
def test_torchrun_fsdp2_interrupted_and_resumed_matches_one_process(lee_store, lee_data):
    """FSDP2 (fully_shard, gloo on CPU), stopped after 2 steps and resumed from its full-state checkpoint."""
    steps = 6
    one = single_process_reference(lee_store, lee_data, steps)
    torchrun(lee_store, "fsdp", steps, "--fsdp", "--stop-after-steps", "2")
    assert lee_store.read_result("runs", "fsdp")["status"][0] == "running"
    proc = torchrun(lee_store, "fsdp", steps, "--fsdp")
    assert "resuming at step 2" in proc.stderr
    assert lee_store.read_result("runs", "fsdp")["status"][0] == "done"
    np.testing.assert_allclose(train_losses(lee_store, "fsdp"), train_losses(lee_store, one), rtol=2e-4)
    np.testing.assert_allclose(val_losses(lee_store, "fsdp"), val_losses(lee_store, one), rtol=2e-4)
