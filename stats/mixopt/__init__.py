"""Mixture choice: from a swarm of proxy runs to a proposed mixture, with its reliability measured.

    swarm.py      design (Dirichlet around a prior, repetition caps, corners) and run it as a sweep
    io.py         a swarm from a sweep or from olmix/RegMix CSVs (checked up front), and back to CSV
    regressors.py the log-linear mixing law, boosted trees, the zero-training unigram predictor
    fit.py        K-fold CV per regressor and the proposal with bootstrap intervals
    propose.py    the constrained search over the simplex
    validate.py   the proposal against baselines at a larger scale: rank, regret, verdict, decision accuracy

See docs/mixopt.md.
"""

from stats.mixopt.fit import FitConfig, MixFit, fit_swarm  # noqa: F401
from stats.mixopt.io import MixoptError, Swarm, read_csv_swarm, read_store_swarm, write_csv_swarm  # noqa: F401
from stats.mixopt.propose import Bounds, optimize  # noqa: F401
from stats.mixopt.swarm import SwarmConfig, plan_swarm, run_swarm  # noqa: F401
from stats.mixopt.validate import ValidateConfig, validate_fit  # noqa: F401
