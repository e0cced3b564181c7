"""Data parallelism, applied from outside the model (torchtitan's `parallelize`): compile, then DDP or FSDP2
when the process group has more than one rank. Outside torchrun everything here is a no-op on one rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from train.config import RunConfig


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


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum each value over the ranks (float64); the values unchanged on one rank."""
    _, world = dist_info()
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
