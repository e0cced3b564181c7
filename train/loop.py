"""The training loop: one readable function, `train_run`, over a packed token stream.

    store = Store("store")
    data = train.data.open_mixture(store, "cc_hq")
    train_run(store, RunConfig(run_id="r1", mixture="cc_hq", model="cpu-4m", tokens=5_000_000),
              data.train, data.val_sets, data.tokenizer, data.vocab_size)

AdamW with warmup + cosine (or warmup-stable-decay), gradient accumulation and clipping, bf16 autocast on
GPU and on CPUs with bf16 hardware (AMX / AVX512-BF16; `train.model.cpu_has_bf16`), optional torch.compile,
DDP (gloo on CPU, nccl on GPU) or FSDP2 under torchrun, applied from outside the model by `parallelize`.
Checkpoints hold model, optimizer, step, RNG states and the config; the data order is a pure function of
(seed, sequence position), so a resumed run repeats the uninterrupted loss curve bit for bit on CPU.
A finished run keeps only its final weights (`model.safetensors`) unless `keep_optimizer`.

WSD budget branches (Hagele et al. 2024): a wsd run given `branch_tokens` keeps a stable-phase checkpoint
at the decay start of each smaller budget; a run with `branch_from` starts from its trunk's checkpoint at
its own decay start and trains only the cooldown. With the same explicit `warmup_steps` the branch computes
exactly what a from-scratch wsd run of its budget would (same lr up to the decay start, same data order).
Results go to the store's `runs` and `run_metrics` tables (rank 0 writes).

Under torchrun every worker runs `main`:

    torchrun --standalone --nproc_per_node 2 -m train.loop --store S --mixture M --model cpu-1m --tokens 1M
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import json
import logging
import math
import os
import sys
import time

import numpy as np
import polars as pl
import torch
import torch.distributed as dist
from torch import nn

from corpora.exits import is_interrupt
from corpora.results import declare
from corpora.store import Store, StoreError
from train import phases as phasing
from train.checkpoint import (check_config, checkpoint_path, final_weights_path, load_checkpoint, save_checkpoint,
                              save_final_weights, stable_checkpoint_path)
from train.checkpoint import load_final_weights  # noqa: F401 (re-export)
from train.config import RunConfig
from train.model import Transformer, build_model_config, dtype_name, resolve_dtype
from train.parallelize import all_reduce_sum, dist_info, parallelize
from train.schedule import get_lr, wsd_decay_start
from train.schedule import warmup_steps  # noqa: F401 (re-export)

log = logging.getLogger(__name__)

declare("runs", {
    "run_id": "str", "sweep": "str", "mixture": "str", "model": "str flavor", "tokens": "int", "status": "str"},
    "One row per training run; part <run_id>. train.loop writes every optional column too; a sweep simulated "
    "without training (tests/stats, tests/reports, benchmarks/evals.py) writes only what its analysis reads.",
    optional={
        "n_params": "int", "seed": "int", "n_params_total": "int", "seq_len": "int", "batch_size": "int", "lr_peak": "float", "tokenizer": "str",
        "vocab_size": "int", "world_size": "int", "n_steps": "int", "flops_per_token": "float", "dtype": "str",
        "config": "json TrainConfig", "model_config": "json", "started_at": "time", "finished_at": "time",
        "phases": "json", "phase_tokens": "json", "trunk_run": "str", "branch_step": "int", "step": "int",
        "tokens_seen": "int", "final_train_loss": "float", "final_val_loss": "float", "elapsed_s": "float",
        "tokens_per_s": "float", "error": "str"})
declare("run_metrics", {
    "run_id": "str", "step": "int", "split": "str train|val", "domain": "str", "loss": "float"},
    "One row per logged (step, split, domain) of a run; part <run_id>. train.loop writes the optional columns "
    "too; a simulated sweep writes the losses only.",
    optional={"tokens_seen": "int", "lr": "float", "elapsed_s": "float", "tokens_per_s": "float", "dtype": "str bf16|fp32"})


# --------------------------------------------------------------------------------------------- data
def sequence_indices(start: int, count: int, n_sequences: int, seed: int) -> np.ndarray:
    """Rows of the token stream for global sequence positions start .. start+count-1.

    Each epoch visits every row once in the order of a permutation seeded by (seed, epoch), so the data
    order is a pure function of position: resuming needs only the position, and ranks need no coordination.
    """
    pos = np.arange(start, start + count, dtype=np.int64)
    epochs, offsets = np.divmod(pos, n_sequences)
    out = np.empty(count, dtype=np.int64)
    for epoch in np.unique(epochs):   # at most two epochs per batch unless the stream is tiny
        sel = epochs == epoch
        out[sel] = np.random.default_rng([seed, int(epoch)]).permutation(n_sequences)[offsets[sel]]
    return out


def get_batch(tokens: np.ndarray, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (B, T) from rows of the (n, T + 1) stream."""
    order = np.argsort(rows, kind="stable")   # ascending reads from the memory map, then restore the order
    batch = np.empty((len(rows), tokens.shape[1]), dtype=np.int64)
    batch[order] = tokens[rows[order]]
    t = torch.from_numpy(batch)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]


# ---------------------------------------------------------------------------------------- optimizer
def build_optimizer(model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not norms), as nanoGPT. Fused kernel where torch has one."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type in ("cpu", "cuda") and not cfg.fsdp
    return torch.optim.AdamW(groups, lr=cfg.lr_peak, betas=(cfg.beta1, cfg.beta2), fused=fused)


# --------------------------------------------------------------------------------------- evaluation
def run_dtype(store: Store, cfg: RunConfig, device: torch.device) -> str:
    """The autocast dtype of a run, 'bf16' or 'fp32'. `dtype='auto'` resolves on this machine for a new run;
    a run resumed (or a branch taken from a trunk) keeps the dtype its first steps were computed in, as its
    `runs` row records it, so resume stays bit-exact when the machine changes."""
    if cfg.dtype == "auto":
        for run_id in filter(None, (cfg.run_id, cfg.branch_from)):
            prior = store.read_result("runs", run_id)
            if prior is not None and "dtype" in prior.columns and prior["dtype"][-1] in ("bf16", "fp32"):
                return prior["dtype"][-1]
    return dtype_name(resolve_dtype(cfg.dtype, device))


def autocast_for(dtype: str, device: torch.device | str):
    """A factory of the autocast context a run computes its losses under ('bf16' / 'fp32', as `runs.dtype`
    and `run_metrics.dtype` record it): re-evaluating a saved model under it reproduces the recorded loss."""
    device_type = torch.device(device).type
    return lambda: torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bf16")


@torch.no_grad()
def evaluate(model: nn.Module, val: np.ndarray, cfg: RunConfig, device: torch.device, autocast) -> float:
    """Mean next-token loss over the first `eval_tokens` tokens (whole rows) of a validation set; the same
    rows every time, split across ranks and summed."""
    rank, world = dist_info()
    seq_len = val.shape[1] - 1
    n_rows = min(len(val), max(1, math.ceil(cfg.eval_tokens / seq_len)))
    rows = np.arange(rank, n_rows, world)
    # FSDP gathers parameters collectively in every forward, so every rank must run the same number of
    # batches: a rank with fewer rows runs row 0 again and does not count it.
    n_batches = math.ceil(math.ceil(n_rows / world) / cfg.batch_size) if cfg.fsdp else 0
    model.eval()
    loss_sum, n = 0.0, 0
    for i in range(0, max(len(rows), n_batches * cfg.batch_size), cfg.batch_size):
        counted = i < len(rows)
        x, y = get_batch(val, rows[i:i + cfg.batch_size] if counted else np.arange(1), device)
        with autocast():
            loss = model(x, y).item()
        if counted:
            loss_sum += loss * y.numel()
            n += y.numel()
    model.train()
    loss_sum, n = all_reduce_sum([loss_sum, float(n)], device)
    return loss_sum / n


# ----------------------------------------------------------------------------------------- results
def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


METRIC_SCHEMA = {"run_id": pl.Utf8, "step": pl.Int64, "tokens_seen": pl.Int64, "split": pl.Utf8,
                 "domain": pl.Utf8, "loss": pl.Float64, "lr": pl.Float64, "elapsed_s": pl.Float64,
                 "tokens_per_s": pl.Float64,
                 "dtype": pl.Utf8,   # 'bf16' / 'fp32': the autocast dtype the loss was computed under
                 "created_at": pl.Datetime("us")}  # kept for rows read back on resume; the store stamps new ones


def _write_metrics(store: Store, run_id: str, rows: list[dict]) -> None:
    store.put_result("run_metrics", run_id, pl.DataFrame(rows, schema=METRIC_SCHEMA))


def _write_run(store: Store, row: dict) -> None:
    store.put_result("runs", row["run_id"], pl.DataFrame([row], schema_overrides={
        "sweep": pl.Utf8, "final_train_loss": pl.Float64, "error": pl.Utf8, "finished_at": pl.Datetime("us", "UTC"),
        "started_at": pl.Datetime("us", "UTC"), "phases": pl.Utf8, "trunk_run": pl.Utf8, "branch_step": pl.Int64,
        "phase_tokens": pl.Utf8}))


# ------------------------------------------------------------------------------------------ training
def train_run(store: Store, cfg: RunConfig, train_tokens: np.ndarray, val_sets: dict[str, np.ndarray],
              tokenizer_name: str, vocab_size: int, phase_data: dict[str, np.ndarray] | None = None) -> dict:
    """Train (or resume, or return a finished) run; returns its `runs` row as a dict.

    `train_tokens` is the mixture's (n_sequences, seq_len + 1) stream, `val_sets` maps validation corpus
    names to streams of the same width. A run with phases also gets `phase_data`: every phase mixture's
    stream by name (the same tokenizer and width; the validation sets serve every phase). Under torchrun
    every rank calls this with the same arguments.
    """
    rank, world = dist_info()
    streams = {cfg.mixture: train_tokens, **(phase_data or {})}
    missing = [m for m in phasing.phase_mixtures(cfg.phases, cfg.mixture) if m not in streams]
    if missing:
        raise ValueError(f"run {cfg.run_id!r}: no token stream for phase mixture(s) {', '.join(missing)}")
    for name, stream in streams.items():
        if stream.ndim != 2 or stream.shape[1] != train_tokens.shape[1] or stream.shape[1] < 2:
            raise ValueError(f"the token stream of mixture {name!r} has shape {stream.shape}; every phase's must "
                             f"be (n_sequences, seq_len + 1) with the width of {cfg.mixture!r}'s "
                             f"{train_tokens.shape[1]} (build the mixtures with one tokenizer and seq_len)")
    seq_len = train_tokens.shape[1] - 1
    if cfg.seq_len is not None and cfg.seq_len != seq_len:
        raise ValueError(f"run asks for seq_len={cfg.seq_len} but mixture {cfg.mixture!r} has {seq_len}; "
                         "rebuild the mixture with that seq_len or drop the option")
    for name, val in val_sets.items():
        if val.ndim != 2 or val.shape[1] != seq_len + 1:
            raise ValueError(f"validation set {name!r} has shape {val.shape}; expected (n, {seq_len + 1})")
    model_cfg = build_model_config(cfg.model, vocab_size, max_seq_len=seq_len)  # UnknownPreset early

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.device == "auto":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    compute_dtype = run_dtype(store, cfg, device)
    autocast = autocast_for(compute_dtype, device)

    tokens_per_step = cfg.batch_size * cfg.grad_accum * world * seq_len
    n_steps = cfg.tokens // tokens_per_step
    if n_steps < 1:
        raise ValueError(f"token budget {cfg.tokens} is less than one optimizer step ({tokens_per_step} tokens "
                         f"= batch_size {cfg.batch_size} x grad_accum {cfg.grad_accum} x world {world} x "
                         f"seq_len {seq_len}); raise --tokens or lower the batch")
    eval_every = cfg.eval_every_tokens or max(tokens_per_step, n_steps * tokens_per_step // 10)
    ckpt_every = cfg.checkpoint_every_tokens or eval_every
    seqs_per_step = cfg.batch_size * cfg.grad_accum * world
    plan = phasing.spans(cfg.phases, cfg.mixture, n_steps, seqs_per_step)   # a static run: one span

    torch.manual_seed(cfg.seed)   # identical initialisation on every rank
    model = Transformer(model_cfg).to(device)
    # The optimizer comes after parallelize: fully_shard replaces parameters with sharded ones.
    train_model = parallelize(model, cfg, device)
    optimizer = build_optimizer(model, cfg, device)
    path = checkpoint_path(store, cfg.run_id)
    weights_path = final_weights_path(store, cfg.run_id)
    prior = store.read_result("runs", cfg.run_id)
    if weights_path.exists() and not path.exists() and prior is not None and prior["status"][-1] == "done":
        from safetensors import safe_open

        with safe_open(str(weights_path), "pt") as f:   # finished with a lean checkpoint: nothing to train
            check_config(json.loads(f.metadata()["run_config"]), cfg, weights_path)
        return prior.to_dicts()[-1]
    prior = prior if rank == 0 else None
    started_at = prior["started_at"][0] if prior is not None and "started_at" in prior.columns else _now()
    progress = {"step": 0, "sequences_seen": 0, "elapsed_s": 0.0, "train_s": 0.0, "tokens_trained": 0}
    metrics: list[dict] = []
    # wsd trunk: the steps after which a branch's starting state is kept
    from train.data import parse_count

    branch_points = set()
    for budget in filter(None, cfg.branch_tokens.split(",")):
        n_branch = parse_count(budget) // tokens_per_step
        if 1 <= n_branch <= n_steps:
            branch_points.add(wsd_decay_start(cfg, n_branch))
    if path.exists():
        progress = load_checkpoint(path, model, optimizer, cfg)
        old = store.read_result("run_metrics", cfg.run_id)
        if old is not None:   # rows past the checkpoint were logged by the interrupted process: redo them
            metrics = old.filter(pl.col("step") <= progress["step"]).to_dicts()
        log.info("run %s: resuming at step %d of %d", cfg.run_id, progress["step"], n_steps)
    elif cfg.branch_from:
        start = wsd_decay_start(cfg, n_steps)
        source = stable_checkpoint_path(store, cfg.branch_from, start)
        if not source.exists():
            raise StoreError(f"run {cfg.run_id!r} branches from run {cfg.branch_from!r} at step {start}, but "
                             f"{source} does not exist; train that run first with branch_tokens including "
                             f"{cfg.tokens}, or drop branch_from to train this run from scratch")
        progress = load_checkpoint(source, model, optimizer, cfg, branch=(start, tokens_per_step, seqs_per_step))
        # the branch's own cost is its cooldown: the shared stable phase was paid by the trunk
        progress.update(elapsed_s=0.0, train_s=0.0, tokens_trained=0)
        trunk = store.read_result("run_metrics", cfg.branch_from)
        if trunk is not None:   # the shared part of the curve, under this run's id
            metrics = trunk.filter(pl.col("step") <= start).with_columns(run_id=pl.lit(cfg.run_id)).to_dicts()
        log.info("run %s: branching from %s at step %d of %d", cfg.run_id, cfg.branch_from, start, n_steps)

    base = {
        "run_id": cfg.run_id, "sweep": cfg.sweep, "mixture": cfg.mixture, "model": cfg.model,
        "n_params": model.num_params(non_embedding=True), "n_params_total": model.num_params(non_embedding=False),
        "tokens": cfg.tokens, "seq_len": seq_len, "batch_size": cfg.batch_size * cfg.grad_accum * world,
        "lr_peak": cfg.lr_peak, "seed": cfg.seed, "tokenizer": tokenizer_name, "vocab_size": vocab_size,
        "world_size": world, "n_steps": n_steps, "flops_per_token": model.flops_per_token(seq_len),
        "dtype": compute_dtype,
        "config": json.dumps(dataclasses.asdict(cfg), sort_keys=True),
        "model_config": json.dumps(model_cfg.to_dict(), sort_keys=True), "started_at": started_at,
        # lineage: the schedule (a phased run's mixture is its label, e.g. "cc:0.8,cc67_hq33:1") and, for
        # a branch, the trunk and the step it starts from
        "phases": json.dumps(cfg.phases) if cfg.phases else None,
        "trunk_run": cfg.branch_from, "branch_step": wsd_decay_start(cfg, n_steps) if cfg.branch_from else None,
    }
    if cfg.phases:
        base["mixture"] = phasing.format_phases(cfg.phases)
    sources = {m: phasing.load_row_sources(store, m, streams[m]) for m in {s.mixture for s in plan}} \
        if rank == 0 else {}

    def run_row(status: str, error: str | None = None) -> dict:
        train_losses = [m["loss"] for m in metrics if m["split"] == "train"]
        last_val = {}
        for m in metrics:
            if m["split"] == "val":
                last_val[m["domain"]] = m["loss"]
        return {**base, "status": status, "step": progress["step"],
                "tokens_seen": progress["step"] * tokens_per_step,
                "final_train_loss": train_losses[-1] if train_losses else None,
                "final_val_loss": json.dumps(last_val, sort_keys=True),
                "elapsed_s": progress["elapsed_s"],
                "phase_tokens": json.dumps(phasing.phase_tokens(plan, progress["step"], seqs_per_step, seq_len,
                                                                cfg.seed, sources)),
                "tokens_per_s": progress["tokens_trained"] / progress["train_s"] if progress["train_s"] else None,
                "error": error, "finished_at": _now() if status != "running" else None}

    if progress["step"] >= n_steps:   # finished earlier: nothing to train
        row = run_row("done")
        if rank == 0:
            _write_run(store, row)
        return row
    if rank == 0:
        _write_run(store, run_row("running"))

    bar = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps * tokens_per_step, initial=progress["step"] * tokens_per_step, unit="tok",
                   unit_scale=True, desc=cfg.run_id, dynamic_ncols=True)
    try:
        t_session = time.perf_counter() - progress["elapsed_s"]
        step = progress["step"]
        loss_acc = torch.zeros((), device=device)
        t_step = time.perf_counter()
        while step < n_steps:
            lr = get_lr(step, cfg, n_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            span = phasing.span_at(plan, step)
            tokens = streams[span.mixture]
            for micro in range(cfg.grad_accum):
                start = (span.position(progress["sequences_seen"], seqs_per_step)
                         + (micro * world + rank) * cfg.batch_size)
                x, y = get_batch(tokens, sequence_indices(start, cfg.batch_size, len(tokens), cfg.seed), device)
                # DDP all-reduces gradients only on the last micro-batch of a step.
                last = micro == cfg.grad_accum - 1
                sync = train_model.no_sync() if (world > 1 and not last and hasattr(train_model, "no_sync")) \
                    else contextlib.nullcontext()
                with sync:
                    with autocast():
                        loss = train_model(x, y) / cfg.grad_accum
                    loss.backward()
                loss_acc += loss.detach()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress["step"] = step
            progress["sequences_seen"] += seqs_per_step
            tokens_seen = step * tokens_per_step
            now = time.perf_counter()
            step_s = now - t_step
            progress["train_s"] += step_s
            progress["tokens_trained"] += tokens_per_step
            progress["elapsed_s"] = now - t_session

            if step % cfg.log_every_steps == 0 or step == n_steps:
                (train_loss,) = all_reduce_sum([loss_acc.item() / world], device)
                tok_s = tokens_per_step / step_s
                metrics.append({"run_id": cfg.run_id, "step": step, "tokens_seen": tokens_seen, "split": "train",
                                "domain": None, "loss": train_loss, "lr": lr, "elapsed_s": progress["elapsed_s"],
                                "tokens_per_s": tok_s, "dtype": compute_dtype})
                if bar is not None:
                    bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tok_s:.0f}", refresh=False)
            loss_acc.zero_()
            if bar is not None:
                bar.update(tokens_per_step)

            prev = tokens_seen - tokens_per_step
            stopping = cfg.stop_after_steps is not None and step >= cfg.stop_after_steps
            if tokens_seen // eval_every > prev // eval_every or step == n_steps:
                for name, val in val_sets.items():
                    metrics.append({"run_id": cfg.run_id, "step": step, "tokens_seen": tokens_seen, "split": "val",
                                    "domain": name, "loss": evaluate(model, val, cfg, device, autocast), "lr": lr,
                                    "elapsed_s": time.perf_counter() - t_session, "tokens_per_s": None,
                                    "dtype": compute_dtype})
            if step in branch_points and not stable_checkpoint_path(store, cfg.run_id, step).exists():
                save_checkpoint(stable_checkpoint_path(store, cfg.run_id, step), model, optimizer, cfg, progress)
            if step == n_steps:   # lean: final weights; the optimizer state only with keep_optimizer
                progress["elapsed_s"] = time.perf_counter() - t_session
                save_final_weights(weights_path, model, cfg)
                if cfg.keep_optimizer:
                    save_checkpoint(path, model, optimizer, cfg, progress)
                if rank == 0:
                    _write_metrics(store, cfg.run_id, metrics)
                    _write_run(store, run_row("done"))
                    if not cfg.keep_optimizer:   # after the 'done' row: a crash before this resumes as done
                        path.unlink(missing_ok=True)
            elif tokens_seen // ckpt_every > prev // ckpt_every or stopping:
                progress["elapsed_s"] = time.perf_counter() - t_session
                save_checkpoint(path, model, optimizer, cfg, progress)
                if rank == 0:
                    _write_metrics(store, cfg.run_id, metrics)
                    _write_run(store, run_row("running"))
            if stopping and step < n_steps:
                log.info("run %s: stopped after step %d of %d (resumable)", cfg.run_id, step, n_steps)
                break
            t_step = time.perf_counter()
    except BaseException as e:
        if rank == 0:
            _write_metrics(store, cfg.run_id, metrics)
            _write_run(store, run_row("interrupted", None) if is_interrupt(e)
                       else run_row("failed", f"{type(e).__name__}: {e}"))
        raise
    finally:
        if bar is not None:
            bar.close()
    return run_row("done" if progress["step"] >= n_steps else "running")


# --------------------------------------------------------------------------------- torchrun workers
def build_parser() -> argparse.ArgumentParser:
    """Flags map 1:1 to RunConfig fields (--lr-peak, --batch-size, ...), plus where the data is."""
    from train.data import parse_count   # "5M", "200k"

    p = argparse.ArgumentParser(prog="python -m train.loop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default=None, help="store path (default: $SYNTHMIX_STORE, else ./store)")
    p.add_argument("--val-tokens", type=parse_count, default=200_000, help="tokens per validation set to build")
    p.add_argument("--val-corpora", default=None, help="comma-separated validation corpora (default: test-role)")
    p.add_argument("--json", action="store_true", help="print the run's summary as JSON (rank 0)")
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        if f.name == "branch_tokens":   # a list of counts, kept as text
            p.add_argument(flag, default=f.default, help=f"RunConfig.{f.name} (comma-separated budgets)")
            continue
        if f.name == "phases":   # mixture:until pairs, parsed by RunConfig
            p.add_argument(flag, default="", help="RunConfig.phases, e.g. cc:0.8,cc67_hq33:1 (default: none)")
            continue
        help_text = f"RunConfig.{f.name} (default: {f.default})"
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        elif "int" in kind:
            p.add_argument(flag, type=parse_count if "tokens" in f.name else int, default=f.default, help=help_text)
        elif "float" in kind:
            p.add_argument(flag, type=float, default=f.default, help=help_text)
        else:
            p.add_argument(flag, default=f.default, help=help_text)
    p.set_defaults(progress=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from corpora.store import resolve_store_path
    from train.data import open_mixture

    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend)
    rank, _ = dist_info()
    try:
        cfg = RunConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)})
        store = Store(resolve_store_path(args.store))
        val_names = args.val_corpora.split(",") if args.val_corpora else None
        # Rank 0 builds any missing validation set first; the others then only memory-map it.
        if rank != 0:
            dist.barrier()
        # rank 0 is the one writer (validation sets, the run's rows): it holds the store's writer lock
        with store.writer(f"python -m train.loop {cfg.run_id}") if rank == 0 else contextlib.nullcontext():
            data = open_mixture(store, cfg.mixture, val_names, args.val_tokens, progress=rank == 0)
            phase_data = {m: open_mixture(store, m, val_names, args.val_tokens, progress=False).train
                          for m in phasing.phase_mixtures(cfg.phases, cfg.mixture) if m != cfg.mixture}
            if rank == 0 and dist_info()[1] > 1:
                dist.barrier()
            row = train_run(store, cfg, data.train, data.val_sets, data.tokenizer, data.vocab_size, phase_data)
        if dist.is_initialized():
            # Free the sharded model (FSDP2 keeps it in reference cycles) while the group is alive, and let
            # every rank finish before any tears the group down: a rank that left early once aborted in
            # gloo ("terminate called without an active exception") while rank 0 still wrote the store.
            gc.collect()
            dist.barrier()
    except (StoreError, ValueError) as e:
        print(f"python -m train.loop: error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(row, default=str, indent=1) if args.json else
              f"run {row['run_id']}: {row['status']}, {row['tokens_seen']} tokens, "
              f"final train loss {row['final_train_loss']:.4f}, {row['tokens_per_s']:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    from corpora.exits import run_command

    sys.exit(run_command("python -m train.loop", main))
