"""Numbers read off fitted laws: tokens to reach a loss, the speed-up of a mixture over the natural-only
baseline, and the optimal synthetic ratio (a polynomial in the share fitted to log-loss)."""

from __future__ import annotations

import dataclasses

import numpy as np

from stats.scaling.laws import FitError, FitResult, PARAMS, ScalingConfig, _resamples


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
