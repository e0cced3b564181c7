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
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
import torch.distributed as dist
from torch import nn

from corpora.exits import is_interrupt
from corpora.results import declare
from corpora.store import Store, StoreError, atomic_path
from train import phases as phasing
from train.model import Transformer, build_model_config, dtype_name, resolve_dtype

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


@dataclass
class RunConfig:
    run_id: str = ""                        # "": f"{mixture}.{model}.{tokens}.s{seed}"
    mixture: str = ""
    model: str = "cpu-4m"                   # preset name, see train.model.PRESETS
    tokens: int = 5_000_000                 # training token budget
    seq_len: int | None = None              # None: the mixture's (a different value is an error)
    batch_size: int = 16                    # sequences per micro-batch per rank
    grad_accum: int = 1                     # micro-batches per optimizer step
    lr_peak: float = 3e-3
    lr_min: float | None = None             # None: lr_peak / 10
    warmup_steps: int | None = None         # None: 5% of the steps
    schedule: str = "cosine"                # 'cosine' or 'wsd' (warmup-stable-decay)
    decay_frac: float = 0.2                 # wsd: the final fraction of steps that decays linearly to lr_min
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0                  # max global grad norm; 0 disables clipping
    seed: int = 0                           # initialisation and data order
    eval_every_tokens: int | None = None    # None: ten validations per run (plus the last step)
    eval_tokens: int = 65_536               # tokens per validation set per validation
    checkpoint_every_tokens: int | None = None  # None: at every validation
    log_every_steps: int = 10               # train-loss rows in run_metrics
    stop_after_steps: int | None = None     # checkpoint and stop early (status stays 'running'; resumable)
    compile: bool = False                   # torch.compile the model
    device: str = "auto"                    # 'auto': cuda:LOCAL_RANK when CUDA is present, else cpu
    dtype: str = "auto"                     # autocast dtype: 'auto' (bf16 on GPU and on CPUs with AMX or
                                            # AVX512-BF16, else fp32), 'bf16', 'fp32'
    fsdp: bool = False                      # FSDP2 fully_shard instead of DDP (GPU, world > 1)
    num_threads: int = 0                    # torch CPU threads; 0 leaves torch's default
    progress: bool = True
    sweep: str | None = None
    keep_optimizer: bool = False            # a finished run keeps checkpoint.pt (optimizer state) too
    weights_dtype: str = "fp32"             # dtype of the finished run's model.safetensors: 'fp32' or 'bf16'
    branch_from: str | None = None          # wsd: start from this run's stable-phase checkpoint at our decay start
    branch_tokens: str = ""                 # wsd: smaller budgets ("64k,128k") branching off this run: keep a
                                            # stable-phase checkpoint at each one's decay start (its own
                                            # budget too: the anneal point of cooldowns on other mixtures)
    phases: list = dataclasses.field(default_factory=list)  # [{until, mixture}, ...]: the data changes at
                                            # phase boundaries (train.phases); mixture: the last phase's

    def __post_init__(self):
        if self.schedule not in ("cosine", "wsd"):
            raise ValueError(f"unknown schedule {self.schedule!r}; use 'cosine' or 'wsd'")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"unknown dtype {self.dtype!r}; use 'auto', 'bf16' or 'fp32'")
        if self.weights_dtype not in ("bf16", "fp32"):
            raise ValueError(f"unknown weights_dtype {self.weights_dtype!r}; use 'bf16' or 'fp32'")
        if (self.branch_from or self.branch_tokens) and (self.schedule != "wsd" or self.warmup_steps is None):
            raise ValueError("budget branches (branch_from / branch_tokens) need schedule='wsd' and an explicit "
                             "warmup_steps, the same for the trunk and its branches")
        if min(self.tokens, self.batch_size, self.grad_accum) < 1:
            raise ValueError("tokens, batch_size and grad_accum must be positive")
        self.phases = phasing.parse_phases(self.phases)
        if self.phases:
            if self.mixture and self.mixture != self.phases[-1]["mixture"]:
                raise ValueError(f"mixture {self.mixture!r} is not the last phase's ({self.phases[-1]['mixture']!r});"
                                 " with phases, leave mixture out or name the last phase's mixture")
            self.mixture = self.phases[-1]["mixture"]
        if not self.run_id:
            self.run_id = f"{self.mixture}.{self.model}.{self.tokens}.s{self.seed}"


# Fields that change how a run executes but not what it computes: a resume may change them.
# keep_optimizer / weights_dtype change only what a finished run leaves on disk; branch_from / branch_tokens
# change how the first steps are obtained or what is kept, not the result (see the module docstring).
_RESUMABLE_CHANGES = {"stop_after_steps", "compile", "device", "num_threads", "progress", "log_every_steps",
                      "checkpoint_every_tokens", "sweep", "keep_optimizer", "weights_dtype", "branch_from",
                      "branch_tokens"}
# Fields in which a branch differs from its trunk (all others must match for the branch to be exact); its
# mixture and phases may differ too when the data of the steps before the branch point is the same
# (`check_config` compares what the two schedules read up to there).
_BRANCH_CHANGES = _RESUMABLE_CHANGES | {"run_id", "tokens", "mixture", "phases"}


def get_lr(step: int, cfg: RunConfig, n_steps: int) -> float:
    """Learning rate at optimizer step `step` (0-based) of `n_steps`: linear warmup, then cosine to lr_min,
    or (wsd) constant then a linear decay over the last `decay_frac` of the steps (Hu et al. 2024, MiniCPM)."""
    lr_min = cfg.lr_peak / 10 if cfg.lr_min is None else cfg.lr_min
    warmup = warmup_steps(cfg, n_steps)
    if step < warmup:
        return cfg.lr_peak * (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, n_steps - warmup))
        return lr_min + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr_peak - lr_min)
    decay_start = wsd_decay_start(cfg, n_steps)
    if step < decay_start:
        return cfg.lr_peak
    progress = min(1.0, (step - decay_start + 1) / max(1, n_steps - decay_start))
    return cfg.lr_peak + progress * (lr_min - cfg.lr_peak)


def warmup_steps(cfg: RunConfig, n_steps: int) -> int:
    return max(1, round(0.05 * n_steps)) if cfg.warmup_steps is None else cfg.warmup_steps


def wsd_decay_start(cfg: RunConfig, n_steps: int) -> int:
    """First step of the wsd decay phase; a budget branch starts from its trunk's state at this step."""
    return max(warmup_steps(cfg, n_steps), n_steps - round(cfg.decay_frac * n_steps))


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


# -------------------------------------------------------------------------------------- parallelism
def dist_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def parallelize(model: nn.Module, cfg: RunConfig, device: torch.device) -> nn.Module:
    """Compile, then DDP or FSDP2 when the process group has more than one rank (torchtitan's order:
    compile first, data parallelism last). Returns the module to call for training.

    Under FSDP2 each block is compiled on its own (torchtitan: the sharding hooks run between blocks);
    otherwise the whole model is one graph, so the embedding, final norm and fused loss are compiled too:
    on CPU that measured 1.30x eager against 1.03x for per-block compilation (debugmodel, 1 thread;
    benchmarks/train.py). `nn.Module.compile` keeps parameter names, so checkpoints do not change."""
    _, world = dist_info()
    if cfg.compile:
        if cfg.fsdp and world > 1:
            for block in model.layers:
                block.compile()
        else:
            model.compile()
    if world == 1:
        return model
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def build_optimizer(model: nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not norms), as nanoGPT. Fused kernel where torch has one."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type in ("cpu", "cuda") and not cfg.fsdp
    return torch.optim.AdamW(groups, lr=cfg.lr_peak, betas=(cfg.beta1, cfg.beta2), fused=fused)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    _, world = dist_info()
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


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
    loss_sum, n = _all_reduce_sum([loss_sum, float(n)], device)
    return loss_sum / n


# --------------------------------------------------------------------------------------- checkpoints
def checkpoint_path(store: Store, run_id: str):
    return store.artifact_dir("runs", run_id) / "checkpoint.pt"


def stable_checkpoint_path(store: Store, run_id: str, step: int):
    """A wsd trunk's full checkpoint after `step` steps, the start of the branch whose decay begins there."""
    return store.artifact_dir("runs", run_id) / f"stable-{step:07d}.pt"


def final_weights_path(store: Store, run_id: str):
    return store.artifact_dir("runs", run_id) / "model.safetensors"


def _model_state(model: nn.Module, cfg: RunConfig) -> dict:
    if cfg.fsdp and dist_info()[1] > 1:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(path, model, optimizer, cfg: RunConfig, state: dict) -> None:
    """Rank 0 writes {model, optimizer, progress, RNG states, config} atomically (all ranks must call)."""
    model_state = _model_state(model, cfg)
    if cfg.fsdp and dist_info()[1] > 1:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        opt_state = get_optimizer_state_dict(model, optimizer,
                                             options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        opt_state = optimizer.state_dict()
    if dist_info()[0] != 0:
        return
    ckpt = {"model": model_state, "optimizer": opt_state, "config": dataclasses.asdict(cfg),
            "model_config": model.cfg.to_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [], **state}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def save_final_weights(path, model, cfg: RunConfig) -> None:
    """The finished model as safetensors (fp32, or bf16 with weights_dtype='bf16'), rank 0 writes; the model
    config rides along in the metadata so `load_final_weights` can rebuild it."""
    from safetensors.torch import save_file

    state = _model_state(model, cfg)
    if dist_info()[0] != 0:
        return
    dtype = torch.bfloat16 if cfg.weights_dtype == "bf16" else torch.float32
    seen: set[int] = set()
    tensors = {}
    for k, v in state.items():   # tied embeddings share storage, which safetensors refuses: copy the second
        v = v.to(dtype).contiguous()
        tensors[k] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
    meta = {"model_config": json.dumps(model.cfg.to_dict()), "run_config": json.dumps(dataclasses.asdict(cfg))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_final_weights(store: Store, run_id: str) -> Transformer:
    """A finished run's model (eval mode, fp32) from its model.safetensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from train.model import ModelConfig

    path = final_weights_path(store, run_id)
    if not path.exists():
        raise StoreError(f"run {run_id!r} has no final weights at {path}; is it finished?")
    with safe_open(str(path), "pt") as f:
        model_cfg = ModelConfig(**json.loads(f.metadata()["model_config"]))
    model = Transformer(model_cfg)
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval()


def check_config(saved: dict, cfg: RunConfig, path, branch: bool = False,
                 upto: tuple[int, int, int] | None = None) -> None:
    """Refuse to resume (or branch from) a checkpoint made with a config that computes something else.
    A branch gives `upto` = (branch step, tokens per step, sequences per step): its schedule must read the
    trunk's data in the steps before the branch point (same mixtures, same stream positions)."""
    free = _BRANCH_CHANGES if branch else _RESUMABLE_CHANGES
    saved = {"phases": [], **saved}   # checkpoints from before phase schedules: static runs
    changed = []
    if branch and upto is not None:
        step, tokens_per_step, seqs_per_step = upto
        theirs, ours = (phasing.prefix(phasing.spans(c.get("phases") or [], c.get("mixture"),
                                                     c["tokens"] // tokens_per_step, seqs_per_step), step)
                        for c in (saved, dataclasses.asdict(cfg)))
        if theirs != ours:
            changed.append("data before the branch point")
    saved = {k: v for k, v in saved.items() if k not in free}
    now = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in free}
    changed += sorted(k for k in now if saved.get(k) != now[k])
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" if k in now else k for k in changed)
        if branch:
            raise StoreError(f"run {cfg.run_id!r} cannot branch from {path}: the trunk ran with another config "
                             f"({diff}); give the branch the trunk's options")
        raise StoreError(f"run {cfg.run_id!r} has a checkpoint at {path} made with another config ({diff}); "
                         "use a new run_id, or delete that directory to start over")


def load_checkpoint(path, model, optimizer, cfg: RunConfig, branch: tuple[int, int, int] | None = None) -> dict:
    """Restore model, optimizer and RNG states; returns the checkpoint's progress fields. `branch` (branch
    step, tokens per step, sequences per step): the checkpoint is a wsd trunk's stable-phase state, whose
    config may differ only in budget, run id and the data after the branch point."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    check_config(ckpt["config"], cfg, path, branch is not None, branch)
    if cfg.fsdp and dist_info()[1] > 1:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=ckpt["model"], optim_state_dict=ckpt["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng_cpu"])
    if torch.cuda.is_available() and ckpt["rng_cuda"]:
        torch.cuda.set_rng_state_all(ckpt["rng_cuda"])
    return {k: ckpt[k] for k in ("step", "sequences_seen", "elapsed_s", "train_s", "tokens_trained")}


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
                (train_loss,) = _all_reduce_sum([loss_acc.item() / world], device)
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
