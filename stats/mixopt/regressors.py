"""Regressors from mixture weights to a loss: the mixing law, boosted trees, and a zero-training unigram
predictor. Each has `fit(X, Y)` and `predict(X)`: X (n, k) weights on the simplex, Y (n, m) the metric
columns the objective averages (m = 1 for one domain); predictions are of the objective (their mean).

- `LogLinear` (Ye et al. 2024, "Data Mixing Laws", eq. 1): per metric L_i(r) = c_i + exp(b_i + t_i . r),
  fitted by least squares (Levenberg-Marquardt, with c_i kept below the smallest loss); an
  average objective is the average of its per-domain laws, as Ye et al. predict a mix of validation
  domains, which is what gives the average an interior optimum.
- `Boosted` (RegMix, Liu et al. 2024): LightGBM on the objective; scikit-learn's HistGradientBoosting
  when lightgbm is not installed. Leaves need few samples, since a proxy swarm has tens of runs, not 512.
- `UnigramKL`: no proxy is trained to make its feature. The feature is KL(test || mixture unigram): the
  mixture's unigram distribution is sum_j w_j q_j with q_j the smoothed unigram of source j from the
  store's `unigram_counts` table (counted once, never re-tokenised); an average objective averages the KL
  over its test domains. Only a line a + b * KL is fitted, so its CV Spearman measures how well the
  unigram statistics alone rank mixtures.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import least_squares

from stats.mixopt.io import MixoptError

log = logging.getLogger(__name__)


class LogLinear:
    name = "loglinear"
    backend = "scipy.optimize.least_squares"

    def __init__(self, init: list[np.ndarray] | None = None):
        self.init = init  # per-metric starting parameters (a bootstrap refit starts from the full fit)

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "LogLinear":
        Y = Y.reshape(len(Y), -1)
        starts = self.init or [None] * Y.shape[1]
        self.params = [self._fit_one(X, Y[:, i], starts[i]) for i in range(Y.shape[1])]
        return self

    def warm(self) -> "LogLinear":
        """An unfitted copy that starts from this fit's parameters: one local solve instead of three."""
        return LogLinear(self.params)

    @staticmethod
    def _law(p: np.ndarray, X: np.ndarray) -> np.ndarray:
        return p[0] + np.exp(p[1] + X @ p[2:])

    @staticmethod
    def _fit_one(X: np.ndarray, y: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
        """(c, b, t) by Levenberg-Marquardt on c = min(y) - exp(s): c stays below every loss without bounds,
        so MINPACK's unconstrained solver applies (several times faster than a bounded trust region)."""
        k = X.shape[1]
        y_min = float(y.min())
        spread = max(float(np.ptp(y)), 1e-6)

        def unpack(q):
            return np.r_[y_min - np.exp(q[0]), q[1:]]

        def resid(q):
            return LogLinear._law(unpack(q), X) - y

        def jac(q):
            e = np.exp(q[1] + X @ q[2:])
            return np.column_stack([np.full_like(e, -np.exp(q[0])), e, e[:, None] * X])

        starts = []
        if init is not None and init[0] < y_min:
            starts.append(np.r_[np.log(y_min - init[0]), init[1:]])
        else:
            for gap in (0.1, 1.0, 10.0):  # where c starts below the best run: near, one spread, far
                c0 = y_min - gap * spread
                starts.append(np.r_[np.log(gap * spread), np.log(float(y.mean()) - c0), np.zeros(k)])
        best = None
        for q0 in starts:
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    r = least_squares(resid, q0, jac=jac, method="lm", max_nfev=100 * (k + 2))
            except (ValueError, FloatingPointError):
                continue
            if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
                best = r
        if best is None:
            raise MixoptError("the log-linear law could not be fitted (every start failed)")
        return unpack(best.x)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.mean([self._law(p, X) for p in self.params], axis=0)


class Boosted:
    name = "gbm"

    def __init__(self, seed: int = 0):
        self.seed = seed
        try:
            import lightgbm  # noqa: F401

            self.backend = "lightgbm"
        except ImportError:
            self.backend = "sklearn.HistGradientBoostingRegressor"

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "Boosted":
        y = Y.reshape(len(Y), -1).mean(axis=1)
        leaf = max(2, min(20, len(y) // 10))
        if self.backend == "lightgbm":
            from lightgbm import LGBMRegressor

            self.model = LGBMRegressor(n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=leaf,
                                       min_data_in_bin=1, subsample=1.0, random_state=self.seed, n_jobs=1,
                                       verbose=-1)
        else:
            from sklearn.ensemble import HistGradientBoostingRegressor

            self.model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                       min_samples_leaf=leaf, random_state=self.seed)
        self.model.fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(X), dtype=float)


class UnigramKL:
    name = "unigram"
    backend = "unigram_counts"

    def __init__(self, source_q: list[np.ndarray], test_p: list[np.ndarray]):
        """`source_q[d]`: (k, S_d) smoothed unigram probabilities of each source on test domain d's support;
        `test_p[d]`: (S_d,) the test distribution there."""
        self.source_q, self.test_p = source_q, test_p

    def features(self, X: np.ndarray, rows_per_block: int = 256) -> np.ndarray:
        """Mean over test domains of KL(test || sum_j w_j q_j), nats; in blocks of rows to bound memory."""
        out = np.zeros(len(X))
        for q, p in zip(self.source_q, self.test_p):
            h = float((p * np.log(p)).sum())
            for i in range(0, len(X), rows_per_block):
                out[i:i + rows_per_block] += h - np.log(X[i:i + rows_per_block] @ q) @ p
        return out / len(self.test_p)

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "UnigramKL":
        y = Y.reshape(len(Y), -1).mean(axis=1)
        f = self.features(X)
        self.coef = np.polyfit(f, y, 1) if np.ptp(f) > 0 else np.array([0.0, float(y.mean())])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.polyval(self.coef, self.features(X))


def unigram_predictor(store, sources: list[str], tests: list[str], tokenizer: str | None = None,
                      alpha: float | None = None) -> tuple[UnigramKL | None, str]:
    """A `UnigramKL` from the store's stored counts, or None and why not (what to run to get them)."""
    import polars as pl

    from stats.unigram import COUNTS_TABLE, DEFAULT_ALPHA

    alpha = DEFAULT_ALPHA if alpha is None else alpha
    counts = store.read_result(COUNTS_TABLE) if store is not None else None
    need = list(dict.fromkeys([*sources, *tests]))
    hint = (f"count them with python -m stats.unigram --train {','.join(sources)} --test {','.join(tests)}"
            + (f" --tokenizer {tokenizer}" if tokenizer else ""))
    if counts is None:
        return None, f"no unigram counts in the store; {hint}"
    have = counts.group_by("tokenizer").agg(pl.col("corpus").unique())
    full = [t for t, cs in have.iter_rows() if set(need) <= set(cs)]
    if tokenizer is None:
        tokenizer = "cl100k_base" if "cl100k_base" in full else (sorted(full)[0] if full else None)
    if tokenizer not in full:
        return None, f"no unigram counts of every one of {', '.join(need)} under one tokenizer; {hint}"
    counts = counts.filter(pl.col("tokenizer") == tokenizer)
    n_vocab = int(counts["token_id"].max()) + 1  # ids beyond every corpus's last one have no mass either way

    def dense(corpus: str) -> np.ndarray:
        part = counts.filter(pl.col("corpus") == corpus)
        last = part["created_at"].max() if "created_at" in part.columns else None
        if last is not None:
            part = part.filter(pl.col("created_at") == last)
        c = np.zeros(n_vocab)
        c[part["token_id"].to_numpy()] = part["count"].to_numpy()
        return c

    src = np.stack([dense(s) for s in sources])  # (k, V)
    q = (src + alpha) / (src.sum(axis=1, keepdims=True) + alpha * n_vocab)
    source_q, test_p = [], []
    for t in tests:
        c = dense(t)
        support = np.flatnonzero(c)
        test_p.append(c[support] / c.sum())
        source_q.append(q[:, support])
    return UnigramKL(source_q, test_p), f"KL(test || mixture unigram), tokenizer {tokenizer}, alpha {alpha:g}"
