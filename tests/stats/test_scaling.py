"""Scaling-law fits: known laws are recovered, speed-ups and ratio optima match hand computations,
under-determined fits are refused, and the driver reads/writes a real store."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

import train.data  # noqa: F401 (declares mixtures, written below as a sweep would)
import train.loop  # noqa: F401 (declares runs, run_metrics)
from corpora.store import Store
from stats.scaling import (
    FitError, FitResult, ScalingConfig, bootstrap_fit, compute_speedup, fit_data_scaling, fit_joint,
    fit_optimal_ratio, fit_sweep, main, tokens_to_reach,
)

FAST = dict(n_starts=8, n_starts_boot=1)


def data_law(D, E=2.0, B=400.0, beta=0.3):
    return E + B / np.asarray(D, float) ** beta


def assert_covers(fit: FitResult, truth: dict):
    for name, value in truth.items():
        lo, hi = fit.intervals[name]
        assert lo <= value <= hi, f"{name}: true {value} outside bootstrap interval [{lo}, {hi}]"


# ------------------------------------------------------------------------------ recovering known laws
def test_data_fit_exact_points_recovers_parameters():
    D = np.geomspace(1e6, 1e9, 8)
    fit = fit_data_scaling(D, data_law(D), ScalingConfig(**FAST))
    assert fit.params["E"] == pytest.approx(2.0, rel=1e-3)
    assert fit.params["B"] == pytest.approx(400.0, rel=1e-2)
    assert fit.params["beta"] == pytest.approx(0.3, rel=1e-3)
    assert fit.rmse_log < 1e-5
    assert fit.predict(2e7) == pytest.approx(data_law(2e7), rel=1e-6)


def test_data_fit_noisy_points_true_values_in_bootstrap_interval():
    rng = np.random.default_rng(0)
    D = np.repeat(np.geomspace(1e6, 1e9, 8), 2)
    L = data_law(D) * np.exp(rng.normal(0, 0.005, len(D)))  # 0.5% multiplicative noise
    fit = bootstrap_fit(D, L, ScalingConfig(n_boot=60, seed=1, **FAST))
    assert len(fit.boot) >= 55
    assert_covers(fit, {"E": 2.0, "B": 400.0, "beta": 0.3})
    # and the intervals are informative, not everything-goes
    assert fit.intervals["E"][1] - fit.intervals["E"][0] < 0.3
    assert fit.intervals["beta"][1] - fit.intervals["beta"][0] < 0.05


def test_joint_fit_noisy_points_true_values_in_bootstrap_interval():
    rng = np.random.default_rng(3)
    truth = {"A": 600.0, "alpha": 0.35, "B": 400.0, "beta": 0.3, "E": 2.0}
    N = np.repeat(np.geomspace(1e6, 1e8, 4), 5)
    D = np.tile(np.geomspace(1e7, 1e9, 5), 4)
    L = (truth["E"] + truth["A"] / N ** truth["alpha"] + truth["B"] / D ** truth["beta"]) * np.exp(
        rng.normal(0, 0.004, len(N)))
    point = fit_joint(N, D, L, ScalingConfig(**FAST))
    fit = bootstrap_fit(D, L, ScalingConfig(n_boot=40, seed=0, **FAST), N=N)
    assert fit.params == pytest.approx(point.params)
    assert_covers(fit, truth)
    assert fit.params["alpha"] == pytest.approx(0.35, abs=0.03)
    row = fit.to_row()
    assert {"E", "E_lo", "E_hi", "A", "alpha_lo", "beta_hi"} <= set(row) and row["fit"] == "joint"


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(5)
    D = np.geomspace(1e6, 1e9, 7)
    L = data_law(D) * np.exp(rng.normal(0, 0.01, len(D)))
    cfg = ScalingConfig(n_boot=15, seed=7, **FAST)
    a, b = bootstrap_fit(D, L, cfg), bootstrap_fit(D, L, cfg)
    np.testing.assert_array_equal(a.boot, b.boot)


# ------------------------------------------------------------------------------ refusing bad fits
def test_refuses_under_determined_and_bad_points():
    with pytest.raises(FitError, match="under-determined data fit: 2 distinct"):
        fit_data_scaling([1e6, 1e7, 1e7, 1e6], [3.0, 2.9, 2.91, 3.01])
    with pytest.raises(FitError, match="under-determined joint fit: 4 distinct point"):
        fit_joint([1e6, 1e6, 1e7, 1e7], [1e8, 1e9, 1e8, 1e9], [3.0, 2.8, 2.9, 2.7])
    with pytest.raises(FitError, match="1 model size"):
        fit_joint([1e6] * 6, np.geomspace(1e7, 1e9, 6), np.linspace(3, 2.5, 6))
    with pytest.raises(FitError, match="under-determined"):
        bootstrap_fit([1e6, 1e7], [3.0, 2.9], ScalingConfig(n_boot=5))
    with pytest.raises(FitError, match="L must be finite and > 0; point 1"):
        fit_data_scaling([1e6, 1e7, 1e8, 1e9], [3.0, -1.0, 2.5, 2.4])


def test_refuses_non_converged_fit():
    D = np.geomspace(1e6, 1e9, 8)
    with pytest.raises(FitError, match="did not converge"):
        fit_data_scaling(D, data_law(D), ScalingConfig(max_iter=1, n_starts=4))


# ------------------------------------------------------------------------------ speed-ups
def _law(E, B, beta, d_range=(1e3, 1e6)) -> FitResult:
    return FitResult(kind="data", params={"E": E, "B": B, "beta": beta}, theta=np.zeros(3), objective=0.0,
                     rmse_log=0.0, n_points=5, n_starts=1, n_converged=1, d_range=d_range)


def test_speedup_hand_checkable():
    base = _law(E=2.0, B=10.0, beta=0.5)  # L(1e4) = 2 + 10/100 = 2.1
    mix = _law(E=2.0, B=5.0, beta=0.5, d_range=(1e3, 1e5))  # 2 + 5/sqrt(D) = 2.1 at D = 2500
    s = compute_speedup(mix, base, 1e4)
    assert s["target_loss"] == pytest.approx(2.1)
    assert s["tokens_needed"] == pytest.approx(2500.0)
    assert s["speedup"] == pytest.approx(4.0)
    assert s["reachable"] and not s["extrapolated"]
    # same law: speed-up 1 at every budget
    assert compute_speedup(base, base, 1e5)["speedup"] == pytest.approx(1.0)
    # the mixture needs 2500 tokens, below its measured 1e4..1e5: an extrapolation
    s = compute_speedup(_law(2.0, 5.0, 0.5, d_range=(1e4, 1e5)), base, 1e4)
    assert s["extrapolated"] and "outside the mixture's measured" in s["note"]
    # a budget outside the baseline's measured range is marked too
    assert compute_speedup(mix, base, 1e8)["extrapolated"]


def test_speedup_unreachable_when_target_below_irreducible_loss():
    base = _law(E=2.0, B=10.0, beta=0.5)
    mix = _law(E=2.2, B=1.0, beta=0.5)  # never goes below 2.2 > 2.1
    s = compute_speedup(mix, base, 1e4)
    assert s["speedup"] == 0.0 and not s["reachable"] and math.isinf(s["tokens_needed"])
    assert "unreachable" in s["note"]
    assert math.isinf(tokens_to_reach(mix, 2.1))


def test_speedup_from_fitted_curves_with_interval():
    rng = np.random.default_rng(2)
    D = np.repeat(np.geomspace(1e3, 1e6, 7), 2)
    cfg = ScalingConfig(n_boot=40, seed=0, **FAST)
    base = bootstrap_fit(D, (2.0 + 10.0 / D ** 0.5) * np.exp(rng.normal(0, 0.002, len(D))), cfg)
    mix = bootstrap_fit(D, (2.0 + 5.0 / D ** 0.5) * np.exp(rng.normal(0, 0.002, len(D))), cfg)
    s = compute_speedup(mix, base, 1e4, cfg.ci)
    assert s["speedup"] == pytest.approx(4.0, rel=0.25)
    assert s["speedup_lo"] <= 4.0 <= s["speedup_hi"]


# ------------------------------------------------------------------------------ optimal ratio
def test_ratio_minimum_of_known_parabola():
    shares = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
    log_loss = np.log(3.0) + 0.4 * (shares - 0.3) ** 2  # exact parabola in log-loss, minimum at 0.3
    res = fit_optimal_ratio(shares, np.exp(log_loss), ScalingConfig(n_boot=0))
    assert res.ratio_opt == pytest.approx(0.3, abs=1e-3)
    assert res.loss_opt == pytest.approx(3.0, rel=1e-6)
    assert not res.at_boundary and res.best_measured_ratio == 0.3


def test_ratio_bootstrap_interval_covers_true_minimum():
    # coverage over 40 noise draws, not one lucky draw: nominal 95%, the percentile bootstrap on 21 points
    # gives about 90% (measured over 100 draws), so ask for at least 80%
    r = np.repeat([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0], 3)
    covered, widths = 0, []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        noisy = np.exp(np.log(3.0) + 0.4 * (r - 0.3) ** 2 + rng.normal(0, 0.003, len(r)))
        res = fit_optimal_ratio(r, noisy, ScalingConfig(n_boot=200, seed=0))
        assert res.n_boot_ok == 200
        covered += res.ratio_lo <= 0.3 <= res.ratio_hi
        widths.append(res.ratio_hi - res.ratio_lo)
    assert covered >= 32
    assert np.median(widths) < 0.05


def test_ratio_monotone_curve_is_flagged_at_boundary_and_refuses_two_shares():
    shares = np.array([0.0, 0.25, 0.5, 0.75])
    res = fit_optimal_ratio(shares, 3.0 - shares * 0.5, ScalingConfig(n_boot=20))
    assert res.at_boundary and res.ratio_opt == pytest.approx(0.75)
    with pytest.raises(FitError, match="2 distinct share"):
        fit_optimal_ratio([0.0, 0.3, 0.3, 0.0], [3.0, 2.9, 2.91, 3.01])


# ------------------------------------------------------------------------------ the driver on a store
SHARES = {"cc": 0.0, "hq20": 0.2, "hq40": 0.4, "hq70": 0.7}
MODELS = {"tiny": (1.0e5, 0.3), "mid": (1.0e6, 0.25), "small": (1.0e7, 0.2)}  # n_params, true optimal share
BUDGETS = [1e6, 4e6, 1.6e7, 6.4e7]
DOMAINS = {"wiki": 1.0, "cc_val": 1.1}  # loss multiplier per validation domain
CURVATURE = 0.5


def true_loss(mixture: str, model: str, D: float, domain: str) -> float:
    """L_cc(N, D) times exp(c((r - r*)^2 - r*^2)): per (model, D) log-loss is a parabola in the share r with
    minimum r*, and per (mixture, model) the loss is k E + k B / D^beta, a data-scaling law with known E, B."""
    n, r_star = MODELS[model]
    r = SHARES[mixture]
    base = 2.0 + 300.0 / n ** 0.35 + 400.0 / D ** 0.3
    return base * math.exp(CURVATURE * ((r - r_star) ** 2 - r_star ** 2)) * DOMAINS[domain]


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("scaling") / "store", create=True)
    rng = np.random.default_rng(0)
    mixtures, runs, metrics = [], [], []
    for mixture, share in SHARES.items():
        parts = [("cc", "natural", None, 1.0 - share)] + ([("hq", "synthetic", "hq", share)] if share else [])
        for corpus, kind, stype, part_share in parts:
            mixtures.append({"mixture": mixture, "corpus": corpus, "kind": kind, "synthetic_type": stype,
                             "share": part_share, "n_tokens": int(part_share * 1e8), "tokenizer": "cl100k_base",
                             "seq_len": 128, "seed": 0, "total_tokens": int(1e8)})
        for model, (n, _) in MODELS.items():
            for D in BUDGETS:
                run_id = f"{mixture}-{model}-{int(D)}"
                runs.append({"run_id": run_id, "sweep": "s1", "mixture": mixture, "model": model, "n_params": int(n),
                             "n_params_total": int(n * 1.5), "tokens": int(D), "status": "done",
                             "tokens_seen": int(D)})
                for domain in DOMAINS:
                    final = true_loss(mixture, model, D, domain) * math.exp(rng.normal(0, 0.001))
                    # an earlier, higher val loss and a train row: only the last val row may count
                    metrics += [
                        {"run_id": run_id, "step": 10, "split": "val", "domain": domain, "loss": final + 1.0},
                        {"run_id": run_id, "step": 20, "split": "val", "domain": domain, "loss": final},
                    ]
                metrics.append({"run_id": run_id, "step": 20, "split": "train", "domain": None, "loss": 0.1})
    # a failed run with an absurd loss, and a run of another sweep: both must be ignored
    runs += [{"run_id": "bad", "sweep": "s1", "mixture": "cc", "model": "tiny", "n_params": int(1e5),
              "n_params_total": int(1.5e5), "tokens": int(1e6), "status": "failed", "tokens_seen": 10},
             {"run_id": "other", "sweep": "s0", "mixture": "cc", "model": "tiny", "n_params": int(1e5),
              "n_params_total": int(1.5e5), "tokens": int(1e6), "status": "done", "tokens_seen": int(1e6)}]
    metrics += [{"run_id": rid, "step": 30, "split": "val", "domain": "wiki", "loss": 0.01} for rid in ("bad", "other")]
    for mixture in SHARES:
        store.put_result("mixtures", mixture, pl.DataFrame([m for m in mixtures if m["mixture"] == mixture]))
    half = len(runs) // 2  # several parts, as train writes them (one per run there)
    store.put_result("runs", "a", pl.DataFrame(runs[:half]))
    store.put_result("runs", "b", pl.DataFrame(runs[half:]))
    store.put_result("run_metrics", "a", pl.DataFrame(metrics))
    return store


@pytest.fixture(scope="module")
def sweep_fits(sweep_store):
    return fit_sweep(sweep_store, "s1", ScalingConfig(n_boot=4, seed=0, **FAST))


def test_fit_sweep_writes_tables_per_domain(sweep_store, sweep_fits):
    assert sweep_store.result_parts("fits") == ["s1__avg", "s1__cc_val", "s1__wiki"]
    assert sweep_store.result_parts("speedups") == ["s1__avg", "s1__cc_val", "s1__wiki"]
    fits = sweep_store.read_result("fits")
    assert (fits["status"] == "ok").all(), fits.filter(pl.col("status") != "ok")["error"].to_list()
    # 4 mixtures x 3 models data fits + 4 joint fits, per domain (wiki, cc_val, avg)
    assert len(fits) == 3 * (12 + 4)
    assert set(fits["fit"]) == {"data", "joint"}
    # E of the cc/tiny L(D) fit on wiki: 2 + 300 / 1e6^0.35 (the N term is constant within one model)
    row = fits.filter((pl.col("domain") == "wiki") & (pl.col("mixture") == "cc") & (pl.col("model") == "tiny")).row(
        0, named=True)
    assert row["E"] == pytest.approx(2.0 + 300.0 / 1e5 ** 0.35, rel=0.03)
    assert row["beta"] == pytest.approx(0.3, abs=0.03)
    assert row["n_points"] == 4  # the failed run and the other sweep's run are left out
    assert row["synthetic_share"] == 0.0
    joint = fits.filter((pl.col("domain") == "cc_val") & (pl.col("fit") == "joint") & (pl.col("mixture") == "cc"))
    assert joint["alpha"][0] == pytest.approx(0.35, abs=0.05)
    assert joint["E"][0] == pytest.approx(2.2, rel=0.1)
    # the store's SQL sees the table
    n = sweep_store.sql("SELECT count(*) AS n FROM fits WHERE domain = 'avg'").column("n")[0].as_py()
    assert n == 16


def test_fit_sweep_speedups_match_true_laws(sweep_fits):
    sp = sweep_fits.speedups.filter((pl.col("domain") == "wiki") & (pl.col("mixture") == "hq40")
                                    & (pl.col("model") == "tiny") & (pl.col("tokens") == 1.6e7)).row(0, named=True)
    # true: mixture law is k * (E + B / D^beta) with k = exp(c((r - r*)^2 - r*^2)); invert at the cc loss
    n, r_star = MODELS["tiny"]
    k = math.exp(CURVATURE * ((0.4 - r_star) ** 2 - r_star ** 2))
    E = 2.0 + 300.0 / n ** 0.35
    target = E + 400.0 / 1.6e7 ** 0.3
    d_needed = (k * 400.0 / (target - k * E)) ** (1 / 0.3)
    assert sp["baseline"] == "cc" and sp["status"] == "ok"
    assert sp["target_loss"] == pytest.approx(target, rel=0.01)
    assert sp["speedup"] == pytest.approx(1.6e7 / d_needed, rel=0.15)
    assert sp["speedup"] > 1.5  # the synthetic mix gets there sooner
    assert set(sweep_fits.speedups["mixture"]) == {"hq20", "hq40", "hq70"}


def test_fit_sweep_optimal_ratio_and_trend(sweep_fits):
    opt = sweep_fits.optimal_ratios.filter(pl.col("domain") == "wiki")
    assert len(opt) == len(MODELS) * len(BUDGETS) and set(opt["synthetic_type"]) == {"hq"}
    for model, (_, r_star) in MODELS.items():
        got = opt.filter(pl.col("model") == model)["ratio_opt"].to_numpy()
        np.testing.assert_allclose(got, r_star, atol=0.03)
    # r* falls by 0.05 per decade of N
    assert opt["ratio_trend_per_decade"][0] == pytest.approx(-0.05, abs=0.02)


def test_fit_sweep_rerun_replaces_parts(sweep_store):
    before = len(sweep_store.read_result("fits"))
    fit_sweep(sweep_store, "s1", ScalingConfig(n_boot=0, test="wiki", **FAST))
    assert sweep_store.result_parts("fits") == ["s1__avg", "s1__cc_val", "s1__wiki"]
    assert len(sweep_store.read_result("fits")) == before


# ------------------------------------------------------------------------------ CLI
def test_cli_csv_json(tmp_path, capsys):
    rng = np.random.default_rng(1)
    D = np.repeat(np.geomspace(1e6, 1e9, 6), 2)
    rows = [{"set": s, "tokens": d, "val_loss": data_law(d, E=e) * math.exp(rng.normal(0, 0.003))}
            for s, e in (("cc", 2.0), ("hq", 1.8)) for d in D]
    path = tmp_path / "points.csv"
    pl.DataFrame(rows).write_csv(path)
    code = main(["--csv", str(path), "--d-col", "tokens", "--loss-col", "val_loss", "--group-col", "set",
                 "--n-boot", "20", "--n-starts", "8", "--json"])
    assert code == 0
    fits = {f["set"]: f for f in json.loads(capsys.readouterr().out)["fits"]}
    assert set(fits) == {"cc", "hq"}
    for name, e in (("cc", 2.0), ("hq", 1.8)):
        f = fits[name]
        assert f["status"] == "ok" and f["n_points"] == 12
        assert f["E_lo"] <= f["E"] <= f["E_hi"] and f["E"] == pytest.approx(e, rel=0.05)
        assert f["beta"] == pytest.approx(0.3, abs=0.05) and f["A"] is None


def test_cli_csv_bad_input_exit_2(tmp_path, capsys):
    path = tmp_path / "p.csv"
    path.write_text("D,loss\n1000000,3.1\n2000000,oops\n")
    assert main(["--csv", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:3" in err and "'loss'" in err
    assert main(["--csv", str(path), "--d-col", "tokens"]) == 2
    assert "no column(s) tokens" in capsys.readouterr().err


def test_cli_runs_unknown_sweep_and_table(sweep_store, capsys):
    assert main(["--runs", "nope", "--store", str(sweep_store.root)]) == 2
    assert "sweeps there: s0, s1" in capsys.readouterr().err
    code = main(["--runs", "s1", "--store", str(sweep_store.root), "--test", "wiki", "--n-boot", "0",
                 "--n-starts", "4", "--no-write"])
    assert code == 0
    out = capsys.readouterr().out
    assert "== fits (16 rows)" in out and "== speedups" in out and "hq40" in out


def test_seeds_fit_the_seed_mean_and_widen_the_intervals():
    """Runs differing only in seed: the fit goes through their mean, and seed noise widens the interval."""
    from stats.scaling import ScalingConfig, bootstrap_fit

    D = np.array([1e4, 2e4, 4e4, 8e4, 1.6e5, 3.2e5])
    true = 2.0 + 40.0 / D ** 0.45
    cfg = ScalingConfig(n_boot=60, seed=0)
    rng = np.random.default_rng(0)
    quiet = np.concatenate([true * (1 + s) for s in (-0.002, 0.0, 0.002)])
    noisy = np.concatenate([true * (1 + rng.normal(0, 0.03, len(D))) for _ in range(3)])
    DD = np.tile(D, 3)
    fq = bootstrap_fit(DD, quiet, cfg, seeds=True)
    fn = bootstrap_fit(DD, noisy, cfg, seeds=True)
    # the point estimate is the fit to the seed means
    mean_fit = bootstrap_fit(D, noisy.reshape(3, -1).mean(axis=0), ScalingConfig(n_boot=0))
    assert fn.params["E"] == pytest.approx(mean_fit.params["E"], rel=1e-6)
    assert fn.n_points == 18 and fq.boot is not None and fn.boot is not None
    width = lambda f: f.intervals["E"][1] - f.intervals["E"][0]  # noqa: E731
    assert width(fn) > 3 * width(fq)
