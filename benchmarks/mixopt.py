"""Time the mixture fit on a RegMix-sized synthetic swarm (in the spirit of nanoGPT's bench.py).

    python benchmarks/mixopt.py [--runs 1000] [--sources 24] [--folds 5] [--repeats 3] [--n-boot 20] [--json]

The swarm is synthetic and labelled so: flat-Dirichlet mixtures of --sources sources, three metrics from a
planted log-linear law (stats.mixopt.synthetic) with noise 0.01. Timed, median of --repeats:
- per regressor, K-fold CV plus the fit on every run: the log-linear law, LightGBM, and the unigram
  predictor on synthetic per-source unigram counts (Zipf-like, 16k-token vocabulary, two test domains);
- the whole `fit_swarm` (log-linear and LightGBM, the proposal, --n-boot bootstrap refits).
It also prints each regressor's CV Spearman and the proposal's distance to the planted optimum.
Timings on a shared machine are noisy: report the load beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stats.mixopt.fit import FitConfig, _scores, cross_validate, fit_swarm  # noqa: E402
from stats.mixopt.propose import Bounds, optimize  # noqa: E402
from stats.mixopt.regressors import Boosted, LogLinear, UnigramKL  # noqa: E402
from stats.mixopt.synthetic import planted_swarm  # noqa: E402
from benchmarks.scaling_fit import timed  # noqa: E402 (median wall time of repeats)


def synthetic_unigram(k: int, n_vocab: int = 16_384, n_tests: int = 2, seed: int = 0) -> UnigramKL:
    """Per-source smoothed unigram distributions (Zipf over a per-source permutation) and test domains."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, n_vocab + 1)
    q = np.stack([zipf[rng.permutation(n_vocab)] for _ in range(k)])
    q /= q.sum(axis=1, keepdims=True)
    tests = [rng.dirichlet(np.ones(k)) @ q for _ in range(n_tests)]
    return UnigramKL([q] * n_tests, tests)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--sources", type=int, default=24)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-boot", type=int, default=20)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    swarm, law = planted_swarm(args.runs, args.sources, m=3, noise=0.01, seed=0)
    X = swarm.weights
    Y = np.column_stack(list(swarm.metrics.values()))
    y = Y.mean(axis=1)
    unigram = synthetic_unigram(args.sources)
    report = {"swarm": f"synthetic planted law, {args.runs} runs x {args.sources} sources, 3 metrics",
              "folds": args.folds, "repeats": args.repeats, "load_avg_1m": os.getloadavg()[0],
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    for name, make in (("loglinear", LogLinear), ("gbm", lambda: Boosted(0)), ("unigram", lambda: unigram)):
        def cv_and_fit():
            pred, _ = cross_validate(make, X, Y, y, args.folds, 0)
            make().fit(X, Y)
            return pred

        t, pred = timed(cv_and_fit, args.repeats)
        rho, r2 = _scores(y, pred)
        report[f"{name}_cv_s"] = t
        report[f"{name}_cv_spearman"] = rho
        report[f"{name}_cv_r2"] = r2
    cfg = FitConfig(regressors=["loglinear", "gbm"], folds=args.folds, n_boot=args.n_boot)
    t, fit = timed(lambda: fit_swarm(swarm, cfg, name="bench"), args.repeats)
    report["fit_swarm_s"] = t
    report["fit_swarm_n_boot"] = args.n_boot
    k = args.sources
    truth = optimize(law.objective, Bounds(swarm.sources, np.zeros(k), np.ones(k), np.ones(k)), n_candidates=20_000,
                     n_refine=8)
    w = np.array(list(fit.proposal["weights"].values()))
    report["proposal_max_abs_error"] = float(np.abs(w - truth).max())
    report["proposal_regret"] = float(law.objective(w)[0] - law.objective(truth)[0])
    report["best_swarm_run_regret"] = float(law.objective(X).min() - law.objective(truth)[0])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, v in report.items():
            print(f"{key:28s} {v:.4g}" if isinstance(v, float) else f"{key:28s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
