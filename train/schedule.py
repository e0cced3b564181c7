"""The learning-rate schedule of a run: a pure function of (step, config, number of steps), torch-free.

Warmup, then cosine to lr_min, or warmup-stable-decay (wsd), whose decay start is where a budget branch
starts from its trunk (`train.loop`).
"""

from __future__ import annotations

import math

from train.config import RunConfig


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
