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

Package layout: `laws` (config, the fits and their bootstrap), `derived` (tokens to reach a loss, speed-ups,
optimal ratios), `sweep` (points from the store, fits per domain, result tables), `cli`
(`python -m stats.scaling`).
"""

from stats.scaling.cli import (FIT_COLUMNS, RATIO_COLUMNS, SPEEDUP_COLUMNS, build_parser, config_from_args,
                               format_table, main, read_points_csv)
from stats.scaling.derived import RatioResult, compute_speedup, fit_optimal_ratio, tokens_to_reach
from stats.scaling.laws import (AVG_DOMAIN, PARAMS, FitError, FitResult, ScalingConfig, _fit_one, bootstrap_fit,
                                fit_data_scaling, fit_joint)
from stats.scaling.sweep import SweepFits, fit_points, fit_sweep, read_mixture_composition, read_sweep_points
