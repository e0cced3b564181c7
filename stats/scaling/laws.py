"""The laws and their fits: L(D) = E + B / D^beta and L(N, D) = E + A / N^alpha + B / D^beta by Huber loss
on log-loss with L-BFGS-B from a grid of starts (Hoffmann et al. 2022), and bootstrap intervals."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber
from threadpoolctl import threadpool_limits


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
