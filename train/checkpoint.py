"""Checkpoints and final weights of a run, and the check that a resume (or a budget branch) computes the same run.

A checkpoint holds model, optimizer, progress, RNG states and the config; a finished run keeps only its final
weights (`model.safetensors`, the model config in its metadata) unless `keep_optimizer`. A wsd trunk keeps
stable-phase checkpoints (`stable_checkpoint_path`) that its budget branches start from.
"""

from __future__ import annotations

import dataclasses
import json

import torch
from torch import nn

from corpora.store import Store, StoreError, atomic_path
from train import phases as phasing
from train.config import _BRANCH_CHANGES, _RESUMABLE_CHANGES, RunConfig
from train.model import Transformer
from train.parallelize import dist_info


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

