"""Noise-aware verdicts on constructed results, decision accuracy on a hand-made sweep, and the unigram
baseline of the learning check against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from stats.evidence import (AGREES, DISAGREES, INCONCLUSIVE, MIXED, NO_DATA, decision_table, interval_verdict,
                            paired_verdict, unigram_counts_of, unigram_cross_entropy)


def _noise(n, scale, seed=0):
    return np.random.default_rng(seed).normal(0, scale, n)


def test_clear_win_clear_loss_within_noise():
    win = paired_verdict(0.2 + _noise(12, 0.02))
    assert win["verdict"] == AGREES and win["n_agree"] == 12 and win["lo"] > 0
    loss = paired_verdict(-0.2 + _noise(12, 0.02))
    assert loss["verdict"] == DISAGREES and loss["n_disagree"] == 12 and loss["hi"] < 0
    noise = paired_verdict(_noise(12, 0.05, seed=3))
    assert noise["verdict"] == INCONCLUSIVE and noise["lo"] < 0 < noise["hi"]
    assert paired_verdict([])["verdict"] == NO_DATA
    assert paired_verdict([0.5, 0.4])["verdict"] == INCONCLUSIVE  # two pairs give no noise estimate


def test_mixed_when_groups_have_opposite_significant_signs():
    d = np.concatenate([0.3 + _noise(6, 0.01), -0.3 + _noise(6, 0.01, seed=1)])
    v = paired_verdict(d, groups=["small"] * 6 + ["big"] * 6)
    assert v["verdict"] == MIXED and v["groups_pos"] == ["small"] and v["groups_neg"] == ["big"]
    # without the grouping the same numbers are within noise (mean near 0), not a win
    assert paired_verdict(d)["verdict"] == INCONCLUSIVE


def test_a_verdict_never_contradicts_its_counts():
    # a mean pulled above 0 by two large differences while most pairs go the other way: not "agrees"
    d = [2.0, 2.1, -0.01, -0.02, -0.01, -0.03, -0.02]
    v = paired_verdict(d, n_boot=4000)
    assert v["n_agree"] == 2 and v["n_disagree"] == 5
    assert v["verdict"] in (MIXED, INCONCLUSIVE)
    rng = np.random.default_rng(7)
    for _ in range(200):
        d = rng.normal(rng.normal(0, 0.1), 0.1, rng.integers(3, 10))
        v = paired_verdict(d, n_boot=300)
        if v["verdict"] == AGREES:
            assert v["n_agree"] > v["n_disagree"]
        if v["verdict"] == DISAGREES:
            assert v["n_disagree"] > v["n_agree"]


def test_interval_verdict_against_a_claimed_size():
    assert interval_verdict([(6, 5.5, 7), (8, 6, 9)], low=5)["verdict"] == AGREES
    assert interval_verdict([(1.1, 0.9, 1.2), (1.0, 0.95, 1.18)], low=5)["verdict"] == DISAGREES
    # a verdict needs most points on its side: one of two is not enough, two of three are
    assert interval_verdict([(4.0, 2.0, 9.0), (1.0, 0.9, 1.1)], low=5)["verdict"] == INCONCLUSIVE
    assert interval_verdict([(4.0, 2.0, 9.0), (1.0, 0.9, 1.1), (2, 1.5, 3)], low=5)["verdict"] == DISAGREES
    assert interval_verdict([(4.0, 2.0, 9.0), (3.0, 1.0, 8.0)], low=5)["verdict"] == INCONCLUSIVE
    assert interval_verdict([(6, 5.5, 7), (1.0, 0.9, 1.1)], low=5)["verdict"] == MIXED
    assert interval_verdict([(6, None, None)], low=5)["verdict"] == INCONCLUSIVE  # no interval, no verdict
    v = interval_verdict([(0.3, 0.2, 0.4), (0.9, 0.8, 1.0)], low=0.15, high=0.5)
    assert (v["verdict"], v["n_agree"], v["n_disagree"]) == (MIXED, 1, 1)


def _sweep(losses: dict) -> pl.DataFrame:
    n_params = {"small": 1e5, "big": 1e6}
    return pl.DataFrame([{"mixture": mix, "model": model, "n_params": n_params[model], "tokens": tokens,
                          "seed": seed, "loss": loss} for (mix, model, tokens, seed), loss in losses.items()])


def test_decision_accuracy_on_a_hand_made_sweep():
    losses = {}
    # largest scale (big, 20): A < B < C under both seeds
    for s, (a, b, c) in enumerate([(1.0, 2.0, 3.0), (1.1, 2.1, 2.9)]):
        losses.update({("A", "big", 20, s): a, ("B", "big", 20, s): b, ("C", "big", 20, s): c})
    # (small, 10): seed 0 orders A < C < B, seed 1 A < B < C; seed mean B 2.5, C 2.1: A < C < B
    for s, (a, b, c) in enumerate([(1.0, 3.0, 2.0), (1.0, 2.0, 2.2)]):
        losses.update({("A", "small", 10, s): a, ("B", "small", 10, s): b, ("C", "small", 10, s): c})
    # (small, 20): C < B < A under both seeds: every pair reversed
    for s in (0, 1):
        losses.update({("A", "small", 20, s): 3.0, ("B", "small", 20, s): 2.0, ("C", "small", 20, s): 1.0 + s / 10})
    df = decision_table(_sweep(losses))
    assert set(df["target_model"]) == {"big"} and set(df["target_tokens"]) == {20}
    def row(m, t, s):
        return df.filter((pl.col("model") == m) & (pl.col("tokens") == t) & (pl.col("seed") == s)).row(0, named=True)

    mean10 = row("small", 10, "mean")
    assert (mean10["n_pairs"], mean10["n_agree"]) == (3, 2) and mean10["accuracy"] == pytest.approx(2 / 3)
    assert mean10["n_flip"] == 1  # B vs C is ordered differently by the two seeds
    s0, s1 = row("small", 10, "0"), row("small", 10, "1")
    assert (s0["n_agree"], s0["n_flip"]) == (2, 0)  # seed 0 orders like the seed mean
    assert (s1["n_agree"], s1["n_flip"]) == (3, 1)  # seed 1 orders like the target, unlike the mean
    assert row("small", 20, "mean")["accuracy"] == 0.0
    # the largest scale itself has per-seed rows (seeds agree there) but no trivial 'mean' row
    assert df.filter((pl.col("model") == "big") & (pl.col("seed") == "mean")).height == 0
    assert row("big", 20, "0")["accuracy"] == 1.0 and row("big", 20, "1")["flip_share"] == 0.0


def test_unigram_baseline_against_a_direct_computation():
    rng = np.random.default_rng(0)
    V = 50
    train = rng.integers(0, 30, size=(40, 9))  # ids 30..49 never occur in training
    val = rng.integers(0, V, size=(6, 9))
    counts = unigram_counts_of(train, V, rows_per_chunk=7)
    assert counts.sum() == train.size and counts[30:].sum() == 0
    alpha = 0.5
    direct = 0.0
    targets = val[:, 1:].ravel()
    for t in targets:
        c = int((train == t).sum())
        direct -= math.log((c + alpha) / (train.size + alpha * V))
    direct /= len(targets)
    assert unigram_cross_entropy(counts, val[:, 1:], alpha) == pytest.approx(direct, rel=1e-12)
    # a uniform training distribution gives exactly ln V
    assert unigram_cross_entropy(np.full(V, 7), val[:, 1:], alpha) == pytest.approx(math.log(V))
    with pytest.raises(ValueError, match="alpha"):
        unigram_cross_entropy(counts, val, 0.0)


def test_the_target_is_the_largest_scale_that_holds_every_mixture():
    """A bigger model a partial sweep reached with one mixture only cannot be the target."""
    losses = {(m, "small", t, 0): loss for t in (10, 20) for m, loss in (("A", 1.0), ("B", 2.0))}
    losses[("A", "big", 20, 0)] = 0.5
    df = decision_table(_sweep(losses))
    assert set(df["target_model"]) == {"small"} and set(df["target_tokens"]) == {20}
    assert df.filter(pl.col("seed") == "mean")["accuracy"].to_list() == [1.0]
