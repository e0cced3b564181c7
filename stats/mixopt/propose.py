"""The best predicted mixture under constraints, with a bootstrap interval per weight.

The feasible set is {w : lower <= w <= upper, sum w = 1}, where each source's upper bound is the smaller of
its `--upper` and its repetition cap (at most `max_epochs` passes over its tokens at the target budget).
The search is RegMix's and olmix's: score many random mixtures drawn over the feasible set (flat and
sparse Dirichlet draws and the corners, each projected onto the set), then refine the best few
with SLSQP (bounds plus the sum constraint), which helps smooth regressors and leaves trees where they are.
The score is the predicted objective plus `kl_weight * KL(w || prior)`, olmix's pull towards the prior.
The bootstrap resamples runs with replacement, refits the regressor and proposes again; the percentile
interval of each weight over the replicates is its interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from stats.mixopt.io import MixoptError

_BISECT_STEPS = 60  # halvings of the threshold interval: far below float resolution of the weights
# A binding repetition cap is lowered by this much share, so a mixture written with 4 decimals (mixture_spec)
# never repeats a source beyond max_epochs, which train mix would refuse.
CAP_MARGIN = 1e-3


def effective_caps(caps: np.ndarray) -> np.ndarray:
    """Caps below 1 less CAP_MARGIN (not below 0); a cap of 1 binds nothing and stays."""
    caps = np.asarray(caps, dtype=float)
    return np.where(caps < 1, np.maximum(caps - CAP_MARGIN, 0.0), 1.0)


@dataclasses.dataclass
class Bounds:
    sources: list[str]
    lower: np.ndarray  # (k,)
    upper: np.ndarray  # (k,) min(--upper, repetition cap)
    caps: np.ndarray  # (k,) repetition caps alone (1 where none)

    def check(self) -> None:
        """Infeasible constraints are an error naming the bounds, before any fitting."""
        for s, lo, hi in zip(self.sources, self.lower, self.upper):
            if lo > hi + 1e-12:
                raise MixoptError(f"infeasible constraints: {s} needs at least {lo:g} but may have at most {hi:g} "
                                  "(--lower, --upper, repetition cap); loosen one")
        if self.lower.sum() > 1 + 1e-12:
            raise MixoptError(f"infeasible constraints: the lower bounds (--lower) sum to {self.lower.sum():g} > 1")
        if self.upper.sum() < 1 - 1e-12:
            parts = ", ".join(f"{s}<={u:.3g}" for s, u in zip(self.sources, self.upper))
            raise MixoptError(f"infeasible constraints: the upper bounds ({parts}: --upper and the repetition caps "
                              f"at the target budget) sum to {self.upper.sum():.4g} < 1; raise --max-epochs or "
                              "--upper, or lower --target-tokens")


def project(V: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of V onto {lower <= w <= upper, sum w = 1}: w = clip(v - tau),
    with tau found by bisection (the clipped sum falls as tau grows); rows already inside stay as they are."""
    V = np.array(V, dtype=float, ndmin=2)
    out = np.where((np.abs(V.sum(axis=1) - 1) < 1e-12)[:, None] & (V >= lower).all(axis=1, keepdims=True)
                   & (V <= upper).all(axis=1, keepdims=True), V, np.nan)
    todo = np.isnan(out[:, 0])
    if todo.any():
        R = V[todo]
        lo_tau = (R - upper).min(axis=1) - 1.0
        hi_tau = (R - lower).max(axis=1) + 1.0
        for _ in range(_BISECT_STEPS):
            tau = (lo_tau + hi_tau) / 2
            s = np.clip(R - tau[:, None], lower, upper).sum(axis=1)
            lo_tau = np.where(s > 1, tau, lo_tau)
            hi_tau = np.where(s > 1, hi_tau, tau)
        W = np.clip(R - ((lo_tau + hi_tau) / 2)[:, None], lower, upper)
        out[todo] = W / W.sum(axis=1, keepdims=True)
    return out


def kl_to_prior(W: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """KL(w || prior) per row, nats (0 log 0 = 0)."""
    W = np.atleast_2d(W)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(W > 0, W * np.log(W / prior), 0.0)
    return terms.sum(axis=1)


def candidates(bounds: Bounds, n: int, rng: np.random.Generator) -> np.ndarray:
    """The corners, the centre, flat and sparse Dirichlet draws, projected onto the feasible set. The prior
    plays no part here (only in the KL term), so a swarm read from CSVs searches exactly like the same
    swarm read from the store."""
    k = len(bounds.sources)
    draws = [np.eye(k), np.full((1, k), 1 / k), rng.dirichlet(np.ones(k), n - n // 3), rng.dirichlet(np.full(k, 0.3), n // 3)]
    return project(np.vstack(draws), bounds.lower, bounds.upper)


def optimize(predict: Callable[[np.ndarray], np.ndarray], bounds: Bounds, prior: np.ndarray | None = None,
             kl_weight: float = 0.0, seed: int = 0, n_candidates: int = 4096, n_refine: int = 4,
             start: np.ndarray | None = None) -> np.ndarray:
    """The feasible mixture with the lowest predicted objective (+ kl_weight * KL(w || prior)); `start`, a
    mixture to consider besides the random ones (a bootstrap refit starts from the full fit's optimum)."""
    rng = np.random.default_rng(seed)
    W = candidates(bounds, n_candidates, rng)
    if start is not None:
        W = np.vstack([project(start, bounds.lower, bounds.upper), W])

    def score(W):
        s = predict(W)
        return s + kl_weight * kl_to_prior(W, prior) if kl_weight and prior is not None else s

    scores = score(W)
    best_w, best_s = W[np.argmin(scores)], float(scores.min())
    cons = ({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)},)
    for i in np.argsort(scores)[:n_refine]:
        r = minimize(lambda w: float(score(w[None])[0]), W[i], method="SLSQP", constraints=cons,
                     bounds=list(zip(bounds.lower, bounds.upper)), options={"maxiter": 100, "ftol": 1e-10})
        w = project(r.x, bounds.lower, bounds.upper)[0]
        s = float(score(w[None])[0])
        if s < best_s:
            best_w, best_s = w, s
    return best_w


def bootstrap(make: Callable[[], object], X: np.ndarray, Y: np.ndarray, bounds: Bounds, prior: np.ndarray | None,
              kl_weight: float, n_boot: int, seed: int, start: np.ndarray | None = None,
              n_candidates: int = 256) -> np.ndarray:
    """(n_boot, k) proposals from refits on runs resampled with replacement (`make` builds an unfitted
    regressor, warm-started where it can)."""
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n_boot, X.shape[1]))
    for b in range(n_boot):
        idx = rng.integers(0, len(X), len(X))
        model = make().fit(X[idx], Y[idx])
        out[b] = optimize(model.predict, bounds, prior, kl_weight, seed=seed + 2 + b, n_candidates=n_candidates,
                          n_refine=2, start=start)
    return out


def mixture_spec(sources: list[str], w: np.ndarray, digits: int = 4) -> str:
    """'cc=0.4123,hq=0.5877': the proposal as `python -m train mix --parts` takes it (shares > 0 that sum
    to 1 at `digits` decimals; a source below half the last digit is dropped)."""
    step = 10.0 ** -digits
    r = np.round(np.asarray(w) / step).astype(np.int64)
    r[np.argmax(r)] += int(round(1 / step)) - int(r.sum())
    return ",".join(f"{s}={v * step:.{digits}f}" for s, v in zip(sources, r) if v > 0)
