"""Scaling-law fits over training runs: L(D), L(N, D), irreducible loss, speed-ups and optimal synthetic ratios.

Method (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", appendix D.2, and the
replication by Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt"): fit

    log L_hat = LSE(a - alpha log N, b - beta log D, e),   A = exp(a), B = exp(b), E = exp(e)

i.e. L_hat = E + A / N^alpha + B / D^beta, by minimising the Huber loss (delta = 1e-3) of the residuals
log L_hat - log L with L-BFGS-B, started from a grid of initialisations; the best optimum is kept. The
data-only law L(D) = E + B / D^beta drops the N term. Confidence intervals come from a bootstrap over
runs (percentile intervals of refits on resampled runs). Runs of one configuration that differ only in
seed are one point, their seed mean; the bootstrap then resamples configurations and, within each, its
seeds, so the intervals (and the speed-ups read off the replicates) carry the seed-to-seed spread.

Derived numbers, all read off the fitted curves:

- speed-up of a mixture over the natural-only baseline at the same model size: the baseline reaches
  L_base(D) at budget D; the mixture reaches that loss at D_mix = (B_mix / (L_base(D) - E_mix))^(1/beta_mix)
  tokens; speed-up = D / D_mix (> 1: the mixture needs fewer tokens). If L_base(D) <= E_mix the mixture
  never gets there (speed-up 0, `reachable` false).
- optimal synthetic ratio per (synthetic type, model, budget): a polynomial (quadratic by default) in the
  synthetic share fitted to log-loss, its minimiser on the measured share range, bootstrap interval.

Inputs are the `runs`, `run_metrics` and `mixtures` result tables written by `train`; outputs are the
`fits`, `speedups` and `optimal_ratios` result tables (one part per sweep and validation domain).

    python -m stats.scaling --runs SWEEP [--test wiki] [--json] [--store PATH]
    python -m stats.scaling --csv FILE --d-col D --loss-col loss [--n-col N] [--group-col mixture] --json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import logging
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from scipy.optimize import minimize
from scipy.special import huber
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

# Parameter names in the order of the optimiser's vector, per fit kind. The vector holds the LSE
# parameterisation (a, alpha, b, beta, e); `params` report the natural ones (A, alpha, B, beta, E).
PARAMS = {"data": ("B", "beta", "E"), "joint": ("A", "alpha", "B", "beta", "E")}
AVG_DOMAIN = "avg"


class FitError(ValueError):
    """A fit that cannot be made (too few points, bad values) or did not converge; the message says why."""


@dataclasses.dataclass
class ScalingConfig:
    """One config for the whole step; CLI flags map 1:1 to these fields."""

    huber_delta: float = 1e-3  # Hoffmann et al.'s delta, on log-loss residuals
    n_boot: int = 200  # bootstrap replicates (0: point estimates only, no intervals)
    ci: float = 0.95  # confidence level of the percentile intervals
    seed: int = 0
    n_starts: int = 32  # L-BFGS-B starts: the best grid points by objective (0: every grid point)
    n_starts_boot: int = 2  # per bootstrap replicate: best grid points, besides the full-data optimum
    max_iter: int = 2000  # L-BFGS-B iterations per start
    max_exponent: float = 4.0  # upper bound on alpha, beta (lower bound 0: loss falls with scale)
    n_params_col: str = "n_params"  # runs column used as N: non-embedding `n_params` or `n_params_total`
    test: str | None = None  # validation domain to fit (None: every domain and their average)
    baseline: str | None = None  # natural-only mixture to compare against (None: the only one there is)
    ratio_degree: int = 2  # degree of the polynomial in synthetic share fitted to log-loss
    budgets: tuple[float, ...] = ()  # extra budgets D for speed-ups (default: the baseline's measured ones)


# --------------------------------------------------------------------------------------------- fits
@dataclasses.dataclass
class FitResult:
    """A fitted law: point estimates, bootstrap replicates and intervals, and what it was fitted on."""

    kind: str  # 'data': L(D) = E + B/D^beta ; 'joint': L(N, D) = E + A/N^alpha + B/D^beta
    params: dict[str, float]
    theta: np.ndarray  # optimiser vector (a, alpha, b, beta, e) or (b, beta, e)
    objective: float  # mean Huber loss / delta at the optimum
    rmse_log: float  # root mean square of log-loss residuals
    n_points: int
    n_starts: int
    n_converged: int
    d_range: tuple[float, float]
    n_range: tuple[float, float] | None = None
    boot: np.ndarray | None = None  # (n_boot_ok, n_params) natural parameters of the replicates
    n_boot: int = 0
    intervals: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    def predict(self, D, N=None) -> np.ndarray:
        return _predict(self.kind, self.params, D, N)

    def to_row(self) -> dict:
        """Flat columns: E, E_lo, E_hi, B, B_lo, ... (A/alpha null for data fits)."""
        row: dict = {"fit": self.kind}
        for name in PARAMS["joint"]:
            value = self.params.get(name)
            lo, hi = self.intervals.get(name, (None, None))
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = value, lo, hi
        row.update(
            n_points=self.n_points, objective=self.objective, rmse_log=self.rmse_log,
            n_starts=self.n_starts, n_converged=self.n_converged,
            d_min=self.d_range[0], d_max=self.d_range[1],
            n_min=self.n_range[0] if self.n_range else None, n_max=self.n_range[1] if self.n_range else None,
            n_boot=self.n_boot, n_boot_ok=0 if self.boot is None else len(self.boot),
        )
        return row


def _predict(kind: str, params: dict, D, N=None) -> np.ndarray:
    D = np.asarray(D, dtype=float)
    loss = params["E"] + params["B"] / D ** params["beta"]
    if kind == "joint":
        loss = loss + params["A"] / np.asarray(N, dtype=float) ** params["alpha"]
    return loss


def _lse(x: np.ndarray, axis: int) -> np.ndarray:
    """log-sum-exp in plain numpy: scipy.special.logsumexp costs ~15x more per call on small arrays, and the
    optimiser calls this thousands of times per fit."""
    top = x.max(axis=axis, keepdims=True)
    return np.log(np.exp(x - top).sum(axis=axis)) + np.squeeze(top, axis=axis)


def _design(kind: str, D: np.ndarray, N: np.ndarray | None) -> np.ndarray:
    """(n, m) log-scales, one column per power-law term: [log N, log D] or [log D]."""
    cols = [np.log(N)] if kind == "joint" else []
    return np.stack(cols + [np.log(D)], axis=1)


def _terms(theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
    """(n, m + 1) LSE terms: [c_k - exponent_k * log x_k for each scale k, e]."""
    m = logx.shape[1]
    terms = np.empty((len(logx), m + 1))
    terms[:, :m] = theta[0:2 * m:2] - theta[1:2 * m:2] * logx
    terms[:, m] = theta[-1]
    return terms


def _objective(theta: np.ndarray, logx: np.ndarray, logL: np.ndarray, delta: float):
    """Mean Huber(delta) of log-loss residuals divided by delta, and its gradient.

    Dividing by delta keeps the objective O(1) so that L-BFGS-B's relative stopping tests work; with the
    raw Huber values (~1e-7) it stops at the first step."""
    m = logx.shape[1]
    terms = _terms(theta, logx)
    top = terms.max(axis=1)
    ex = np.exp(terms - top[:, None])
    total = ex.sum(axis=1)
    r = np.log(total) + top - logL  # log L_hat - log L
    n = len(r)
    f = huber(delta, r).sum() / (n * delta)
    w = ex / total[:, None]  # softmax weights = d LSE / d term
    psi = np.clip(r, -delta, delta) / (n * delta)  # d huber / d r, scaled as f
    pw = psi[:, None] * w  # (n, m + 1)
    grad = np.empty_like(theta)
    grad[0:2 * m:2] = pw[:, :m].sum(axis=0)
    grad[1:2 * m:2] = -(pw[:, :m] * logx).sum(axis=0)
    grad[-1] = pw[:, m].sum()
    return f, grad


def _grid(kind: str) -> np.ndarray:
    """Hoffmann et al.'s initialisation grid: exponents 0..2 step 0.5, e -1..1.5 step 0.5, a/b 0..25 step 5."""
    coef = np.arange(0.0, 30.0, 5.0)
    expo = np.arange(0.0, 2.5, 0.5)
    e = np.arange(-1.0, 2.0, 0.5)
    axes = [coef, expo, coef, expo, e] if kind == "joint" else [coef, expo, e]
    return np.array(list(itertools.product(*axes)))


def _grid_objective(grid: np.ndarray, logx: np.ndarray, logL: np.ndarray, delta: float) -> np.ndarray:
    """Objective at every grid point at once: (g,)."""
    m = logx.shape[1]
    coef, expo = grid[:, 0:2 * m:2], grid[:, 1:2 * m:2]  # (g, m)
    terms = coef[:, None, :] - expo[:, None, :] * logx[None, :, :]  # (g, n, m)
    e = np.broadcast_to(grid[:, None, -1:], (len(grid), len(logx), 1))
    lse = _lse(np.concatenate([terms, e], axis=2), axis=2)  # (g, n)
    return huber(delta, lse - logL[None, :]).mean(axis=1) / delta


def _check_points(kind: str, D, L, N=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    D = np.asarray(D, dtype=float).ravel()
    L = np.asarray(L, dtype=float).ravel()
    N = None if N is None else np.asarray(N, dtype=float).ravel()
    if len(D) != len(L) or (N is not None and len(N) != len(L)):
        raise FitError(f"D, L{' and N' if N is not None else ''} have different lengths")
    for name, x in (("D", D), ("L", L)) + ((("N", N),) if N is not None else ()):
        bad = np.flatnonzero(~np.isfinite(x) | (x <= 0))
        if len(bad):
            raise FitError(f"{name} must be finite and > 0; point {bad[0]} has {name}={x[bad[0]]}")
    n_params = len(PARAMS[kind])
    cols = (N, D) if kind == "joint" else (D,)
    n_distinct = len({tuple(v) for v in np.stack(cols, axis=1).tolist()})
    if n_distinct < n_params:
        raise FitError(
            f"under-determined {kind} fit: {n_distinct} distinct point(s) for {n_params} parameters "
            f"({', '.join(PARAMS[kind])}); give at least {n_params} distinct "
            f"{'(N, D)' if kind == 'joint' else 'D'} values"
        )
    # With two model sizes only E + A/N1^alpha and the gap to N2 are pinned: E, A, alpha need three (same for D).
    if kind == "joint" and (len(np.unique(N)) < 3 or len(np.unique(D)) < 3):
        raise FitError(
            f"under-determined joint fit: {len(np.unique(N))} model size(s) and {len(np.unique(D))} budget(s); "
            "a joint L(N, D) fit needs at least 3 of each (fit L(D) per model size instead)"
        )
    return D, L, N


def _natural(kind: str, theta: np.ndarray) -> dict[str, float]:
    if kind == "joint":
        a, alpha, b, beta, e = theta
        return {"A": math.exp(a), "alpha": float(alpha), "B": math.exp(b), "beta": float(beta), "E": math.exp(e)}
    b, beta, e = theta
    return {"B": math.exp(b), "beta": float(beta), "E": math.exp(e)}


def _minimize(kind: str, logx, logL, cfg: ScalingConfig, starts: np.ndarray):
    """L-BFGS-B from each start; returns (best result or None, n_converged)."""
    m = logx.shape[1]
    bounds = [(None, None), (0.0, cfg.max_exponent)] * m + [(None, None)]
    best, n_ok = None, 0
    for x0 in starts:
        res = minimize(_objective, x0, args=(logx, logL, cfg.huber_delta), jac=True, method="L-BFGS-B",
                       bounds=bounds, options={"maxiter": cfg.max_iter, "ftol": 1e-13, "gtol": 1e-9})
        # L-BFGS-B sometimes ends with an "abnormal" line search right at a kink of the Huber loss; the
        # point is still a minimum when the projected gradient is small, so it counts as converged.
        ok = res.success or (res.status == 2 and np.max(np.abs(_projected_grad(res, bounds))) < 1e-5)
        if not ok or not np.isfinite(res.fun):
            continue
        n_ok += 1
        if best is None or res.fun < best.fun:
            best = res
    return best, n_ok


def _projected_grad(res, bounds) -> np.ndarray:
    g = np.array(res.jac, dtype=float)
    for i, (lo, hi) in enumerate(bounds):
        if lo is not None and res.x[i] <= lo and g[i] > 0:
            g[i] = 0.0
        if hi is not None and res.x[i] >= hi and g[i] < 0:
            g[i] = 0.0
    return g


def _fit(kind: str, D, L, N, cfg: ScalingConfig, extra_starts: np.ndarray | None = None,
         n_starts: int | None = None) -> FitResult:
    # One BLAS thread: scipy's L-BFGS-B makes thousands of tiny BLAS calls, and a threaded OpenBLAS spends
    # ~50x longer handing them to threads than computing them (measured in benchmarks/scaling_fit.py).
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_one(kind, D, L, N, cfg, extra_starts, n_starts)


def _fit_one(kind: str, D, L, N, cfg: ScalingConfig, extra_starts: np.ndarray | None,
             n_starts: int | None) -> FitResult:
    D, L, N = _check_points(kind, D, L, N)
    logx, logL = _design(kind, D, N), np.log(L)
    grid = _grid(kind)
    n_starts = cfg.n_starts if n_starts is None else n_starts
    if n_starts and n_starts < len(grid):
        # Rank the grid by its objective and start from the best ones: the same optimum as starting from
        # every point in our tests, at a fraction of the cost (set n_starts=0 to start from all of them).
        order = np.argsort(_grid_objective(grid, logx, logL, cfg.huber_delta), kind="stable")
        grid = grid[order[:n_starts]]
    starts = grid if extra_starts is None else np.concatenate([extra_starts, grid])
    best, n_ok = _minimize(kind, logx, logL, cfg, starts)
    if best is None:
        raise FitError(
            f"{kind} fit did not converge from any of {len(starts)} starts (L-BFGS-B, max_iter={cfg.max_iter}); "
            "raise max_iter or check the points (does loss fall with D?)"
        )
    r = _objective_residuals(best.x, logx, logL)
    return FitResult(
        kind=kind, params=_natural(kind, best.x), theta=best.x, objective=float(best.fun),
        rmse_log=float(np.sqrt(np.mean(r ** 2))), n_points=len(L), n_starts=len(starts), n_converged=n_ok,
        d_range=(float(D.min()), float(D.max())),
        n_range=None if N is None else (float(N.min()), float(N.max())),
    )


def _objective_residuals(theta, logx, logL) -> np.ndarray:
    return _lse(_terms(theta, logx), axis=1) - logL


def fit_data_scaling(D, L, cfg: ScalingConfig | None = None) -> FitResult:
    """Fit L(D) = E + B / D^beta (point estimate; `bootstrap_fit` adds intervals)."""
    return _fit("data", D, L, None, cfg or ScalingConfig())


def fit_joint(N, D, L, cfg: ScalingConfig | None = None) -> FitResult:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta (point estimate; `bootstrap_fit` adds intervals)."""
    return _fit("joint", D, L, N, cfg or ScalingConfig())


def bootstrap_fit(D, L, cfg: ScalingConfig | None = None, N=None, groups=None, seeds: bool = False) -> FitResult:
    """Fit (joint when N is given, else data scaling) and bootstrap over runs for percentile intervals.

    `groups` (one label per point, e.g. run_id) resamples whole runs when a run gives several points.
    `seeds=True`: points at the same (N, D) are runs of one configuration differing only in seed; the fit
    is made to the seed means, and each replicate resamples configurations and, within each, its seeds
    (a two-level bootstrap), so the seed spread is carried into the intervals.
    Replicates that are under-determined or do not converge are dropped (`n_boot_ok` counts the rest)."""
    cfg = cfg or ScalingConfig()
    with threadpool_limits(limits=1, user_api="blas"):  # see _fit
        if seeds:
            return _bootstrap_seeds(D, L, N, cfg)
        return _bootstrap(D, L, N, groups, cfg)


def _bootstrap_seeds(D, L, N, cfg: ScalingConfig) -> FitResult:
    kind = "data" if N is None else "joint"
    D, L = np.asarray(D, float).ravel(), np.asarray(L, float).ravel()
    N = None if N is None else np.asarray(N, float).ravel()
    keys = np.stack([D] if N is None else [N, D], axis=1)
    uniq, label = np.unique(keys, axis=0, return_inverse=True)
    label = label.ravel()
    members = [np.flatnonzero(label == g) for g in range(len(uniq))]
    means = np.array([L[m].mean() for m in members])
    cD = uniq[:, -1]
    cN = None if N is None else uniq[:, 0]
    fit = _fit_one(kind, cD, means, cN, cfg, None, None)
    fit.n_points = len(L)
    rng = np.random.default_rng(cfg.seed)

    def replicates():  # configurations with replacement, then seeds within each
        for _ in range(cfg.n_boot):
            pick = rng.integers(0, len(members), len(members))
            Lr = np.array([L[rng.choice(members[g], len(members[g]))].mean() for g in pick])
            yield cD[pick], Lr, None if cN is None else cN[pick]

    return _fit_replicates(fit, kind, replicates(), cfg)


def _fit_replicates(fit: FitResult, kind: str, replicates, cfg: ScalingConfig) -> FitResult:
    """Refit each bootstrap replicate (D, L, N) from the point estimate and set `fit`'s intervals."""
    reps = []
    for D, L, N in replicates:
        try:
            rep = _fit_one(kind, D, L, N, cfg, extra_starts=fit.theta[None, :], n_starts=cfg.n_starts_boot)
        except FitError:
            continue
        reps.append([rep.params[p] for p in PARAMS[kind]])
    _set_intervals(fit, reps, kind, cfg)
    return fit


def _set_intervals(fit: FitResult, reps: list, kind: str, cfg: ScalingConfig) -> None:
    fit.n_boot = cfg.n_boot
    if reps:
        fit.boot = np.array(reps)
        q = [(1 - cfg.ci) / 2 * 100, (1 + cfg.ci) / 2 * 100]
        for j, name in enumerate(PARAMS[kind]):
            lo, hi = np.percentile(fit.boot[:, j], q)
            fit.intervals[name] = (float(lo), float(hi))
    if cfg.n_boot and len(reps) < 0.5 * cfg.n_boot:
        log.warning("only %d of %d bootstrap replicates could be fitted; intervals are unreliable",
                    len(reps), cfg.n_boot)


def _resamples(n: int, groups, cfg: ScalingConfig):
    """`cfg.n_boot` seeded bootstrap resamples of n points as index arrays, drawing whole groups (the
    points of one run, or of one curve) with replacement; each point is its own group when groups is None."""
    labels = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    members = [np.flatnonzero(labels == g) for g in range(labels.max() + 1)]
    rng = np.random.default_rng(cfg.seed)
    for _ in range(cfg.n_boot):
        yield np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def _bootstrap(D, L, N, groups, cfg: ScalingConfig) -> FitResult:
    kind = "data" if N is None else "joint"
    fit = _fit_one(kind, D, L, N, cfg, None, None)
    D, L = np.asarray(D, float).ravel(), np.asarray(L, float).ravel()
    N = None if N is None else np.asarray(N, float).ravel()
    replicates = ((D[idx], L[idx], None if N is None else N[idx]) for idx in _resamples(len(L), groups, cfg))
    return _fit_replicates(fit, kind, replicates, cfg)


# ----------------------------------------------------------------------------------- derived numbers
def tokens_to_reach(fit: FitResult, target_loss, params: dict | None = None) -> np.ndarray:
    """Invert L(D) = E + B / D^beta: tokens at which the data-scaling fit reaches `target_loss` (inf if never)."""
    p = params or fit.params
    target = np.asarray(target_loss, dtype=float)
    gap = target - p["E"]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = np.where(gap > 0, (p["B"] / np.where(gap > 0, gap, 1.0)) ** (1.0 / max(p["beta"], 1e-12)), np.inf)
    return d


def compute_speedup(fit_mix: FitResult, fit_base: FitResult, D: float, ci: float = 0.95) -> dict:
    """Speed-up of a mixture over the baseline at budget D, both fitted as L(D) at one model size.

    The baseline reaches L_base(D) at D tokens; the mixture needs D_mix tokens for that loss; the speed-up is
    D / D_mix. Extrapolated when D is outside the baseline's measured budgets or D_mix outside the mixture's;
    unreachable (speed-up 0) when L_base(D) is at or below the mixture's irreducible loss E."""
    if fit_mix.kind != "data" or fit_base.kind != "data":
        raise FitError("speed-ups need data-scaling fits L(D) of the mixture and the baseline")
    target = float(fit_base.predict(D))
    d_mix = float(tokens_to_reach(fit_mix, target))
    reachable = bool(np.isfinite(d_mix))
    speedup = D / d_mix if reachable else 0.0
    notes = []
    if not fit_base.d_range[0] <= D <= fit_base.d_range[1]:
        notes.append(f"budget {D:.3g} outside the baseline's measured {fit_base.d_range[0]:.3g}..{fit_base.d_range[1]:.3g}")
    if not reachable:
        notes.append(f"target loss {target:.4g} is at or below the mixture's irreducible loss "
                     f"E={fit_mix.params['E']:.4g}: unreachable")
    elif not fit_mix.d_range[0] <= d_mix <= fit_mix.d_range[1]:
        notes.append(f"tokens needed {d_mix:.3g} outside the mixture's measured "
                     f"{fit_mix.d_range[0]:.3g}..{fit_mix.d_range[1]:.3g}")
    lo = hi = None
    if fit_mix.boot is not None and fit_base.boot is not None:
        # Pair the replicates of the two independent bootstraps; an unreachable replicate counts as 0.
        k = min(len(fit_mix.boot), len(fit_base.boot))
        pm = dict(zip(PARAMS["data"], fit_mix.boot[:k].T))
        pb = dict(zip(PARAMS["data"], fit_base.boot[:k].T))
        targets = pb["E"] + pb["B"] / D ** pb["beta"]
        gap = targets - pm["E"]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d_rep = np.where(gap > 0, (pm["B"] / np.where(gap > 0, gap, 1.0)) ** (1.0 / np.maximum(pm["beta"], 1e-12)),
                             np.inf)
        s_rep = np.where(np.isfinite(d_rep), D / d_rep, 0.0)
        lo, hi = (float(v) for v in np.percentile(s_rep, [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]))
    return {
        "tokens": float(D), "target_loss": target, "tokens_needed": d_mix, "speedup": speedup,
        "speedup_lo": lo, "speedup_hi": hi, "reachable": reachable, "extrapolated": bool(notes),
        "note": "; ".join(notes),
    }


@dataclasses.dataclass
class RatioResult:
    """Minimiser of a polynomial in synthetic share fitted to log-loss, with its bootstrap interval."""

    ratio_opt: float
    ratio_lo: float | None
    ratio_hi: float | None
    loss_opt: float
    at_boundary: bool  # the minimum sits at the edge of the measured share range
    coef: list[float]  # of log L in share, highest degree first (numpy.polyfit order)
    n_points: int
    n_ratios: int
    ratio_range: tuple[float, float]
    best_measured_ratio: float  # share of the lowest measured loss (mean over repeats)
    n_boot_ok: int


def _poly_argmin(r, logL, degree: int, lo: float, hi: float) -> tuple[float, float, np.ndarray]:
    coef = np.polyfit(r, logL, degree)
    grid = np.linspace(lo, hi, 2001)
    values = np.polyval(coef, grid)
    i = int(np.argmin(values))
    return float(grid[i]), float(np.exp(values[i])), coef


def fit_optimal_ratio(ratios, losses, cfg: ScalingConfig | None = None, groups=None) -> RatioResult:
    """Fit log L = poly(share) and return its minimiser on the measured share range, with a bootstrap interval."""
    cfg = cfg or ScalingConfig()
    r = np.asarray(ratios, dtype=float).ravel()
    L = np.asarray(losses, dtype=float).ravel()
    if len(r) != len(L):
        raise FitError("ratios and losses have different lengths")
    bad = np.flatnonzero(~np.isfinite(r) | ~np.isfinite(L) | (L <= 0) | (r < 0) | (r > 1))
    if len(bad):
        raise FitError(f"ratios must be in [0, 1] and losses > 0; point {bad[0]} has share={r[bad[0]]}, loss={L[bad[0]]}")
    n_ratios = len(np.unique(r))
    if n_ratios < cfg.ratio_degree + 1:
        raise FitError(f"under-determined ratio fit: {n_ratios} distinct share(s) for a degree-{cfg.ratio_degree} "
                       f"polynomial; measure at least {cfg.ratio_degree + 1} shares")
    lo_r, hi_r = float(r.min()), float(r.max())
    logL = np.log(L)
    r_opt, loss_opt, coef = _poly_argmin(r, logL, cfg.ratio_degree, lo_r, hi_r)
    shares = np.unique(r)
    best_measured = float(shares[np.argmin([logL[r == s].mean() for s in shares])])
    reps = []
    for idx in _resamples(len(L), groups, cfg):
        if len(np.unique(r[idx])) < cfg.ratio_degree + 1:
            continue
        reps.append(_poly_argmin(r[idx], logL[idx], cfg.ratio_degree, lo_r, hi_r)[0])
    q = [(1 - cfg.ci) / 2 * 100, (1 + cfg.ci) / 2 * 100]
    lo, hi = (float(v) for v in np.percentile(reps, q)) if reps else (None, None)
    return RatioResult(
        ratio_opt=r_opt, ratio_lo=lo, ratio_hi=hi, loss_opt=loss_opt,
        at_boundary=bool(np.isclose(r_opt, lo_r) or np.isclose(r_opt, hi_r)), coef=[float(c) for c in coef],
        n_points=len(L), n_ratios=n_ratios, ratio_range=(lo_r, hi_r), best_measured_ratio=best_measured,
        n_boot_ok=len(reps),
    )


# --------------------------------------------------------------------------------- reading the store
def _part_name(*keys: str) -> str:
    return "__".join(re.sub(r"[^A-Za-z0-9_.=-]", "-", k) for k in keys)


def read_mixture_composition(store) -> pl.DataFrame:
    """Per mixture: synthetic_share (share of 'synthetic' parts over all parts) and synthetic_type ('+'-joined)."""
    mix = store.read_result("mixtures")
    if mix is None:
        return pl.DataFrame(schema={"mixture": pl.Utf8, "synthetic_share": pl.Float64, "synthetic_type": pl.Utf8})
    mix = mix.with_columns(pl.col("share").cast(pl.Float64))
    return (
        mix.group_by("mixture")
        .agg(
            (pl.col("share").filter(pl.col("kind") == "synthetic").sum() / pl.col("share").sum())
            .alias("synthetic_share"),
            pl.col("synthetic_type").filter(pl.col("kind") == "synthetic").drop_nulls().unique().sort()
            .str.join("+").alias("synthetic_type"),
        )
        .with_columns(pl.when(pl.col("synthetic_type") == "").then(None).otherwise(pl.col("synthetic_type"))
                      .alias("synthetic_type"))
        .sort("mixture")
    )


def read_sweep_points(store, sweep: str, cfg: ScalingConfig) -> pl.DataFrame:
    """One row per (finished run, validation domain) of a sweep: final val loss, N, D and the mixture's makeup.

    The final loss is the val row with the highest step per domain; domain 'avg' is the mean over the
    domains, for runs that have every domain of the sweep."""
    from corpora.store import StoreError

    if not store.result_parts("runs") or not store.result_parts("run_metrics"):
        raise StoreError(f"the store {store.root} has no `runs`/`run_metrics` tables yet; "
                         "train a sweep first (python -m train ...)")
    runs = store.read_result("runs")
    sweeps = sorted({s for s in runs["sweep"].to_list() if s is not None}) if "sweep" in runs.columns else []
    runs = runs.filter(pl.col("sweep") == sweep)
    if runs.is_empty():
        raise StoreError(f"no runs of sweep {sweep!r} in {store.root}; sweeps there: {', '.join(sweeps) or '(none)'}")
    n_col = cfg.n_params_col
    if n_col not in runs.columns:
        raise StoreError(f"`runs` has no column {n_col!r} (n_params_col); it has: {', '.join(runs.columns)}")
    not_done = runs.filter(pl.col("status") != "done")
    if len(not_done):
        log.warning("sweep %s: skipping %d run(s) that are not done: %s", sweep, len(not_done),
                    ", ".join(f"{r} ({s})" for r, s in not_done.select("run_id", "status").iter_rows()))
    runs = runs.filter(pl.col("status") == "done")
    ids = runs["run_id"].to_list()
    if not ids:
        raise StoreError(f"sweep {sweep!r} has no finished runs (status 'done') yet")
    marks = ", ".join("?" for _ in ids)
    # Last 'val' row per (run, domain): the loss at the end of training.
    final = pl.from_arrow(store.sql(
        f"""SELECT run_id, domain, loss, step FROM run_metrics
            WHERE split = 'val' AND domain IS NOT NULL AND run_id IN ({marks})
            QUALIFY row_number() OVER (PARTITION BY run_id, domain ORDER BY step DESC) = 1""", ids))
    if final.is_empty():
        raise StoreError(f"sweep {sweep!r}: its finished runs have no 'val' rows in run_metrics")
    domains = sorted(final["domain"].unique().to_list())
    complete = final.group_by("run_id").agg(pl.len().alias("n")).filter(pl.col("n") == len(domains))["run_id"]
    avg = (final.filter(pl.col("run_id").is_in(complete.implode())).group_by("run_id")
           .agg(pl.col("loss").mean(), pl.col("step").max()).with_columns(pl.lit(AVG_DOMAIN).alias("domain")))
    final = pl.concat([final, avg.select(final.columns)]) if len(domains) > 1 else final
    if cfg.test is not None:
        if cfg.test not in domains and cfg.test != AVG_DOMAIN:
            raise StoreError(f"sweep {sweep!r} has no validation domain {cfg.test!r}; it has: {', '.join(domains)}")
        final = final.filter(pl.col("domain") == cfg.test)
    comp = read_mixture_composition(store)
    pts = (
        final.join(runs.select("run_id", "mixture", "model", pl.col(n_col).cast(pl.Float64).alias("N"),
                               pl.col("tokens").cast(pl.Float64).alias("D"),
                               (pl.col("seed") if "seed" in runs.columns else pl.lit(0)).cast(pl.Int64).alias("seed")),
                   on="run_id")
        .join(comp, on="mixture", how="left")
        .with_columns(pl.col("loss").cast(pl.Float64))
        .sort("domain", "mixture", "model", "D", "run_id")
    )
    missing = sorted(set(pts.filter(pl.col("synthetic_share").is_null())["mixture"].to_list()))
    if missing:
        log.warning("mixtures without a `mixtures` row (left out of speed-ups and ratios): %s", ", ".join(missing))
    return pts


# ------------------------------------------------------------------------------------------ driver
@dataclasses.dataclass
class SweepFits:
    fits: pl.DataFrame
    speedups: pl.DataFrame
    optimal_ratios: pl.DataFrame


def _fit_row(keys: dict, fn) -> tuple[dict, FitResult | None]:
    """Run one fit; a FitError becomes a row with status 'error' and the reason, so one bad group never stops the sweep."""
    try:
        fit = fn()
    except FitError as e:
        log.warning("%s: %s", keys.get("group"), e)
        return {**keys, "status": "error", "error": str(e)}, None
    return {**keys, **fit.to_row(), "status": "ok", "error": None}, fit


def fit_points(pts: pl.DataFrame, cfg: ScalingConfig, n_col: str | None, d_col: str, loss_col: str,
               group_cols: list[str]) -> tuple[pl.DataFrame, dict]:
    """Bootstrap fits per group of a points table: joint L(N, D) when n_col is given, else L(D).

    Returns the fits table and {group key tuple: FitResult} for the fits that succeeded."""
    rows, fits = [], {}
    groups = pts.partition_by(group_cols, as_dict=True, maintain_order=True) if group_cols else {(): pts}
    for key, g in tqdm(groups.items(), desc="fits", unit="fit", disable=None):
        key = tuple(key)
        label = ",".join(f"{c}={v}" for c, v in zip(group_cols, key)) or "all"
        run_ids = g["run_id"].to_numpy() if "run_id" in g.columns else None
        n_seeds = g["seed"].n_unique() if "seed" in g.columns else 1
        row, fit = _fit_row(
            {"group": label, **dict(zip(group_cols, key)), "n_seeds": n_seeds},
            lambda: bootstrap_fit(g[d_col].to_numpy(), g[loss_col].to_numpy(), cfg,
                                  N=None if n_col is None else g[n_col].to_numpy(), groups=run_ids,
                                  seeds=n_seeds > 1),
        )
        rows.append(row)
        if fit is not None:
            fits[key] = fit
    return pl.DataFrame(rows, infer_schema_length=None), fits


def fit_sweep(store, sweep: str, cfg: ScalingConfig | None = None, write: bool = True) -> SweepFits:
    """Fit every law of a sweep, derive speed-ups and optimal ratios, and write them to the store.

    Per validation domain (and 'avg'): L(D) per (mixture, model), L(N, D) per mixture, speed-ups of each
    mixture over the natural-only baseline at each model size and baseline budget, optimal synthetic share
    per (synthetic type, model, budget). Tables `fits`, `speedups`, `optimal_ratios`, part `<sweep>__<domain>`."""
    cfg = cfg or ScalingConfig()
    pts = read_sweep_points(store, sweep, cfg)
    cfg_json = json.dumps(dataclasses.asdict(cfg), default=list)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    out = {"fits": [], "speedups": [], "optimal_ratios": []}
    for (domain,), dpts in pts.partition_by("domain", as_dict=True, maintain_order=True).items():
        fits, speedups, ratios = _fit_domain(dpts, cfg)
        common = {"sweep": sweep, "domain": domain, "config": cfg_json, "fitted_at": now}
        tables = {"fits": fits, "speedups": speedups, "optimal_ratios": ratios}
        for name, df in tables.items():
            df = df.with_columns(**{k: pl.lit(v) for k, v in common.items()})
            df = df.select(["sweep", "domain"] + [c for c in df.columns if c not in ("sweep", "domain")])
            out[name].append(df)
            if write:
                store.put_result(name, _part_name(sweep, domain), df)
    return SweepFits(*(pl.concat(out[k], how="diagonal_relaxed") if out[k] else pl.DataFrame()
                       for k in ("fits", "speedups", "optimal_ratios")))


def _mixture_meta(dpts: pl.DataFrame) -> dict[str, dict]:
    return {r["mixture"]: r for r in dpts.unique("mixture").select("mixture", "synthetic_share", "synthetic_type")
            .iter_rows(named=True)}


def _pick_baseline(meta: dict[str, dict], cfg: ScalingConfig) -> str | None:
    if cfg.baseline is not None:
        if cfg.baseline not in meta:
            raise FitError(f"baseline mixture {cfg.baseline!r} has no runs here; mixtures: {', '.join(sorted(meta))}")
        return cfg.baseline
    natural = sorted(m for m, r in meta.items() if r["synthetic_share"] == 0)
    if len(natural) > 1:
        raise FitError(f"several natural-only mixtures ({', '.join(natural)}): name the baseline (--baseline)")
    return natural[0] if natural else None


def _fit_domain(dpts: pl.DataFrame, cfg: ScalingConfig) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    meta = _mixture_meta(dpts)
    n_of_model = dict(dpts.group_by("model").agg(pl.col("N").median()).iter_rows())
    # L(D) per (mixture, model), then L(N, D) per mixture.
    data_fits, dfit = fit_points(dpts, cfg, None, "D", "loss", ["mixture", "model"])
    joint_fits, _ = fit_points(dpts, cfg, "N", "D", "loss", ["mixture"])
    data_fits = data_fits.with_columns(
        pl.col("model").replace_strict(n_of_model, return_dtype=pl.Float64).alias("n_params"))
    fits = pl.concat([data_fits, joint_fits], how="diagonal_relaxed")
    fits = fits.with_columns(
        pl.col("mixture").replace_strict({m: r["synthetic_share"] for m, r in meta.items()},
                                         return_dtype=pl.Float64).alias("synthetic_share"),
        pl.col("mixture").replace_strict({m: r["synthetic_type"] for m, r in meta.items()},
                                         return_dtype=pl.Utf8).alias("synthetic_type"),
    )
    if "fit" in fits.columns:
        fits = fits.with_columns(pl.col("fit").fill_null(
            pl.when(pl.col("model").is_null()).then(pl.lit("joint")).otherwise(pl.lit("data"))))
    else:
        fits = fits.with_columns(pl.when(pl.col("model").is_null()).then(pl.lit("joint"))
                                 .otherwise(pl.lit("data")).alias("fit"))

    # Speed-ups of every mixture over the baseline at the same model size.
    rows = []
    baseline = _pick_baseline(meta, cfg)
    if baseline is None:
        log.warning("no natural-only mixture (synthetic share 0) among %s: no speed-ups", ", ".join(sorted(meta)))
    for (mixture, model), fit in dfit.items():
        base = dfit.get((baseline, model))
        if baseline is None or mixture == baseline or meta[mixture]["synthetic_share"] is None:
            continue
        keys = {"model": model, "n_params": n_of_model[model], "mixture": mixture, "baseline": baseline,
                "synthetic_type": meta[mixture]["synthetic_type"], "synthetic_share": meta[mixture]["synthetic_share"]}
        if base is None:
            rows.append({**keys, "status": "error", "error": f"no baseline fit for model {model}"})
            continue
        measured = dpts.filter((pl.col("mixture") == baseline) & (pl.col("model") == model))["D"].unique().sort()
        for D in sorted(set(measured.to_list()) | set(cfg.budgets)):
            rows.append({**keys, **compute_speedup(fit, base, float(D), cfg.ci), "status": "ok", "error": None})
    speedups = pl.DataFrame(rows, infer_schema_length=None)

    # Optimal synthetic share per (synthetic type, model, budget); the baseline is share 0 of every type.
    rows = []
    types = sorted({r["synthetic_type"] for r in meta.values() if r["synthetic_type"] and "+" not in r["synthetic_type"]})
    for stype in types:
        members = [m for m, r in meta.items() if r["synthetic_type"] == stype or m == baseline]
        sub = dpts.filter(pl.col("mixture").is_in(members))
        for (model, D), g in sub.partition_by(["model", "D"], as_dict=True, maintain_order=True).items():
            keys = {"synthetic_type": stype, "model": model, "n_params": n_of_model[model], "tokens": D}
            try:
                res = fit_optimal_ratio(g["synthetic_share"], g["loss"], cfg, groups=g["run_id"])
            except FitError as e:
                rows.append({**keys, "status": "error", "error": str(e)})
                continue
            row = dataclasses.asdict(res)
            row["ratio_min"], row["ratio_max"] = row.pop("ratio_range")
            row["coef"] = json.dumps(row["coef"])
            rows.append({**keys, **row, "status": "ok", "error": None})
    ratios = pl.DataFrame(rows, infer_schema_length=None)
    if "ratio_opt" in ratios.columns:
        ratios = _with_ratio_trend(ratios)
    return fits, speedups, ratios


def _with_ratio_trend(ratios: pl.DataFrame) -> pl.DataFrame:
    """How the optimum moves with scale: slope of ratio_opt against log10(n_params), per (type, budget)."""
    trend = {}
    ok = ratios.filter(pl.col("status") == "ok")
    for (stype, D), g in ok.partition_by(["synthetic_type", "tokens"], as_dict=True).items():
        if g["n_params"].n_unique() >= 2:
            slope = np.polyfit(np.log10(g["n_params"].to_numpy()), g["ratio_opt"].to_numpy(), 1)[0]
            trend[(stype, D)] = float(slope)
    return ratios.with_columns(pl.Series(
        "ratio_trend_per_decade",
        [trend.get((s, d)) for s, d in ratios.select("synthetic_type", "tokens").iter_rows()],
        dtype=pl.Float64))


# --------------------------------------------------------------------------------------------- CLI
def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


def _fmt_param(row: dict, name: str) -> str:
    if row.get(name) is None:
        return "-"
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    return _fmt(row[name]) + (f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else "")


def format_table(df: pl.DataFrame, columns: list[str]) -> str:
    """A plain text table; `X` columns with X_lo/X_hi print as 'X [lo, hi]'."""
    rows = df.to_dicts()
    cols = [c for c in columns if c in df.columns]
    cells = [[_fmt_param(r, c) if f"{c}_lo" in df.columns else _fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


FIT_COLUMNS = ["domain", "fit", "group", "n_points", "E", "B", "beta", "A", "alpha", "rmse_log", "status", "error"]
SPEEDUP_COLUMNS = ["domain", "model", "mixture", "tokens", "target_loss", "tokens_needed", "speedup",
                   "extrapolated", "note"]
RATIO_COLUMNS = ["domain", "synthetic_type", "model", "tokens", "ratio_opt", "ratio_lo", "ratio_hi",
                 "at_boundary", "best_measured_ratio", "ratio_trend_per_decade", "status", "error"]


def _jsonable(df: pl.DataFrame) -> list[dict]:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None  # JSON has no inf/nan: unreachable speed-ups read as null with reachable=false
        if isinstance(v, (dt.datetime, dt.date)):
            return v.isoformat()
        return v
    return [{k: clean(v) for k, v in row.items() if k != "config"} for row in df.to_dicts()]


def read_points_csv(path: Path, d_col: str, loss_col: str, n_col: str | None, group_cols: list[str]) -> pl.DataFrame:
    """Points from a CSV file; a missing column or a bad value is a one-line error naming the file and line."""
    try:
        df = pl.read_csv(path, infer_schema_length=None)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise ValueError(f"{path}: cannot read as CSV: {str(e).splitlines()[0]}") from None
    wanted = [c for c in [d_col, loss_col, n_col, *group_cols] if c]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(missing)}; columns: {', '.join(df.columns)} "
                         "(pick them with --d-col/--loss-col/--n-col/--group-col)")
    for c in [d_col, loss_col] + ([n_col] if n_col else []):
        values = df[c].cast(pl.Float64, strict=False)
        bad = np.flatnonzero((values.is_null() | ~values.fill_null(0).is_finite() | (values.fill_null(0) <= 0))
                             .to_numpy())
        if len(bad):
            raise ValueError(f"{path}:{bad[0] + 2}: column {c!r} must be a positive number, "
                             f"got {df[c][int(bad[0])]!r}; fix or drop that row")
        df = df.with_columns(values.alias(c))
    # each row is one run unless the file says otherwise: the bootstrap resamples runs
    return df if "run_id" in df.columns else df.with_row_index("run_id")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stats.scaling",
        description="Fit scaling laws (Huber on log-loss, L-BFGS-B, bootstrap intervals) to a sweep's runs or to "
                    "a CSV of points. Example: python -m stats.scaling --runs cpu_sweep --test wiki --json",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", metavar="SWEEP", help="fit the finished runs of this sweep in the store")
    src.add_argument("--csv", metavar="FILE", type=Path, help="fit points from a CSV file (prints only)")
    p.add_argument("--store", help="store directory (default: $SYNTHMIX_STORE, else ./store)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--no-write", action="store_true", help="with --runs: do not write the result tables")
    g = p.add_argument_group("CSV columns")
    g.add_argument("--d-col", default="D", help="tokens / data budget column (default D)")
    g.add_argument("--loss-col", default="loss", help="loss column (default loss)")
    g.add_argument("--n-col", default=None, help="model size column; given: joint L(N, D) fit, else L(D)")
    g.add_argument("--group-col", action="append", default=[], help="fit each group separately (repeatable)")
    c = p.add_argument_group("fit (ScalingConfig)")
    d = ScalingConfig()
    c.add_argument("--test", default=d.test, help="validation domain to fit, or 'avg' (default: all and avg)")
    c.add_argument("--baseline", default=d.baseline, help="natural-only baseline mixture (default: the only one)")
    c.add_argument("--n-boot", type=int, default=d.n_boot, help=f"bootstrap replicates (default {d.n_boot})")
    c.add_argument("--ci", type=float, default=d.ci, help=f"interval level (default {d.ci})")
    c.add_argument("--seed", type=int, default=d.seed)
    c.add_argument("--huber-delta", type=float, default=d.huber_delta, help=f"(default {d.huber_delta})")
    c.add_argument("--n-starts", type=int, default=d.n_starts,
                   help=f"L-BFGS-B starts from the best grid points, 0 = all (default {d.n_starts})")
    c.add_argument("--n-starts-boot", type=int, default=d.n_starts_boot)
    c.add_argument("--max-iter", type=int, default=d.max_iter)
    c.add_argument("--max-exponent", type=float, default=d.max_exponent)
    c.add_argument("--n-params-col", default=d.n_params_col, choices=["n_params", "n_params_total"])
    c.add_argument("--ratio-degree", type=int, default=d.ratio_degree)
    c.add_argument("--budgets", type=float, nargs="*", default=list(d.budgets),
                   help="extra budgets D (tokens) for speed-ups")
    return p


def config_from_args(args: argparse.Namespace) -> ScalingConfig:
    fields = {f.name for f in dataclasses.fields(ScalingConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["budgets"] = tuple(values["budgets"])
    return ScalingConfig(**values)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    if cfg.n_boot < 0 or not 0 < cfg.ci < 1 or cfg.huber_delta <= 0 or cfg.ratio_degree < 1:
        parser.error("need --n-boot >= 0, 0 < --ci < 1, --huber-delta > 0, --ratio-degree >= 1")
    t0 = time.perf_counter()
    if args.csv is not None:
        try:
            pts = read_points_csv(args.csv, args.d_col, args.loss_col, args.n_col, args.group_col)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        fits, _ = fit_points(pts, cfg, args.n_col, args.d_col, args.loss_col, args.group_col)
        if args.json:
            print(json.dumps({"fits": _jsonable(fits)}, indent=2))
        else:
            print(format_table(fits, ["group", "n_points", "E", "B", "beta", "A", "alpha", "rmse_log", "status",
                                      "error"]))
        return 0 if (fits["status"] == "ok").any() else 1

    from corpora.store import Store, StoreError, resolve_store_path

    try:
        store = Store(resolve_store_path(args.store))
        with store.writer("python -m stats.scaling") if not args.no_write else contextlib.nullcontext():
            res = fit_sweep(store, args.runs, cfg, write=not args.no_write)
    except (StoreError, FitError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: _jsonable(getattr(res, k)) for k in ("fits", "speedups", "optimal_ratios")}, indent=2))
        return 0
    for title, df, cols in (("fits", res.fits, FIT_COLUMNS), ("speedups", res.speedups, SPEEDUP_COLUMNS),
                            ("optimal_ratios", res.optimal_ratios, RATIO_COLUMNS)):
        print(f"== {title} ({len(df)} rows)")
        if len(df):
            print(format_table(df, cols))
    where = "not written (--no-write)" if args.no_write else f"written to {store.root} (tables fits, speedups, optimal_ratios)"
    print(f"sweep {args.runs}: {where} in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    from corpora.exits import run_command

    sys.exit(run_command("", main))
