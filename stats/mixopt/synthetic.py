"""A planted mixing law: swarms with known targets, for the tests and the benchmark.

Each metric follows Ye et al.'s law L_i(r) = c_i + exp(b_i + t_i . r) plus Gaussian noise; with several
metrics pulling towards different sources, their average has an interior optimum.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stats.mixopt.io import Swarm


@dataclasses.dataclass
class PlantedLaw:
    c: np.ndarray  # (m,)
    b: np.ndarray  # (m,)
    t: np.ndarray  # (m, k)

    def metrics(self, W: np.ndarray) -> np.ndarray:
        """(n, m) noiseless losses."""
        return self.c + np.exp(self.b + W @ self.t.T)

    def objective(self, W: np.ndarray) -> np.ndarray:
        return self.metrics(np.atleast_2d(W)).mean(axis=1)


def planted_law(k: int, m: int = 2, seed: int = 0) -> PlantedLaw:
    """m metrics over k sources; metric i is best with source i % k (its exponent is lowest there)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.2, 1.0, size=(m, k))
    for i in range(m):
        t[i, i % k] = -1.5
    return PlantedLaw(c=rng.uniform(2.0, 3.0, m), b=rng.uniform(-0.5, 0.0, m), t=t)


def planted_swarm(n: int, k: int, m: int = 2, noise: float = 0.005, seed: int = 0) -> tuple[Swarm, PlantedLaw]:
    """n runs with flat-Dirichlet mixtures of k sources and m noisy metrics from a planted law."""
    law = planted_law(k, m, seed)
    rng = np.random.default_rng(seed + 1)
    W = rng.dirichlet(np.ones(k), n)
    Y = law.metrics(W) + rng.normal(0, noise, size=(n, m))
    swarm = Swarm(runs=[f"run{i:04d}" for i in range(n)], sources=[f"s{j}" for j in range(k)], weights=W,
                  metrics={f"d{i}": Y[:, i] for i in range(m)}, origin="planted law")
    return swarm, law
