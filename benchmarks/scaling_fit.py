"""Fit the scaling laws of a real sweep and time the fits (in the spirit of nanoGPT's bench.py).

    python benchmarks/scaling_fit.py --store PATH --sweep NAME [--n-boot 100] [--repeats 3] [--full-grid]
    python benchmarks/scaling_fit.py --synthetic          # no store: points from a known law (labelled so)

Prints, for the largest (mixture, model) group of the sweep's average validation loss:
- a point fit L(D) with BLAS limited to one thread (what stats.scaling does) against the same fit with the
  BLAS library's default threads (the baseline), median of --repeats, and their ratio;
- the Hoffmann et al. full initialisation grid (every grid point starts L-BFGS-B) against our
  best-n_starts-of-the-grid shortcut: time ratio and the difference in the optimum reached;
- a bootstrap fit (--n-boot replicates), median time and time per replicate;
then runs the whole driver `fit_sweep` once (without writing unless --write) and prints its tables.
Timings on a shared machine are noisy: compare the ratios, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stats import scaling  # noqa: E402
from stats.scaling import ScalingConfig, bootstrap_fit, fit_sweep, format_table, read_sweep_points  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def synthetic_points(seed: int = 0) -> pl.DataFrame:
    """Points from L = 2 + 300/N^0.35 + 400/D^0.3 with 0.5% noise: 3 sizes x 6 budgets x 2 seeds."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, n in (("s", 1e6), ("m", 4e6), ("l", 1.6e7)):
        for D in np.geomspace(1e6, 3e8, 6):
            for s in range(2):
                loss = (2 + 300 / n ** 0.35 + 400 / D ** 0.3) * np.exp(rng.normal(0, 0.005))
                rows.append({"run_id": f"{model}-{D:.0f}-{s}", "mixture": "synthetic_law", "model": model,
                             "N": n, "D": D, "loss": loss, "domain": "avg"})
    return pl.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", help="store directory (default: $SYNTHMIX_STORE, else ./store)")
    p.add_argument("--sweep", help="sweep name in the store's `runs` table")
    p.add_argument("--synthetic", action="store_true", help="no store: fit points generated from a known law")
    p.add_argument("--n-boot", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full-grid", action="store_true", help="also time the joint fit from every grid point (slow)")
    p.add_argument("--write", action="store_true", help="let fit_sweep write fits/speedups/optimal_ratios")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    cfg = ScalingConfig(n_boot=args.n_boot)

    if args.synthetic:
        pts, store = synthetic_points(), None
        source = "SYNTHETIC points from a known law (no real runs)"
    else:
        if not args.sweep:
            p.error("give --sweep NAME (and --store PATH), or --synthetic")
        from corpora.store import Store, resolve_store_path

        store = Store(resolve_store_path(args.store))
        pts = read_sweep_points(store, args.sweep, cfg)
        domain = "avg" if "avg" in set(pts["domain"]) else pts["domain"][0]
        pts = pts.filter(pl.col("domain") == domain)
        source = f"sweep {args.sweep} in {store.root}, domain {domain}"

    sizes = pts.group_by("mixture", "model").agg(pl.col("D").n_unique().alias("n_budgets"), pl.len())
    sizes = sizes.sort("n_budgets", "len", descending=True)
    mixture, model, n_budgets = sizes.row(0)[:3]
    if n_budgets < 3:
        print(f"error: {source}: no (mixture, model) has runs at 3 or more budgets (the most: {mixture}/{model} "
              f"with {n_budgets}); L(D) = E + B/D^beta needs 3. Train more budgets.", file=sys.stderr)
        return 2
    g = pts.filter((pl.col("mixture") == mixture) & (pl.col("model") == model))
    D, L = g["D"].to_numpy(), g["loss"].to_numpy()
    report: dict = {"source": source, "group": f"{mixture}/{model}", "n_points": len(g)}

    # 1. BLAS threads: one (ours) against the library default (baseline).
    t_one, fit = timed(lambda: scaling.fit_data_scaling(D, L, cfg), args.repeats)
    t_default, fit_default = timed(
        lambda: scaling._fit_one("data", D, L, None, cfg, None, None), args.repeats)
    report["data_fit_s"] = t_one
    report["data_fit_default_blas_threads_s"] = t_default
    report["blas_one_thread_speedup"] = t_default / t_one
    report["data_fit"] = fit.params

    # 2. Every grid point as a start (Hoffmann et al.'s procedure) against the best n_starts of the grid.
    full = dataclasses.replace(cfg, n_starts=0)
    t_full, fit_full = timed(lambda: scaling.fit_data_scaling(D, L, full), args.repeats)
    report["data_fit_full_grid_s"] = t_full
    report["full_grid_time_ratio"] = t_full / t_one
    report["full_grid_starts"] = fit_full.n_starts
    report["full_grid_objective_minus_ours"] = fit_full.objective - fit.objective
    report["full_grid_max_rel_param_diff"] = max(
        abs(fit_full.params[k] - fit.params[k]) / abs(fit.params[k]) for k in fit.params)

    # 3. Bootstrap.
    t_boot, boot = timed(lambda: bootstrap_fit(D, L, cfg), max(1, args.repeats // 2))
    report["bootstrap_s"] = t_boot
    report["bootstrap_per_replicate_ms"] = 1e3 * (t_boot - t_one) / max(cfg.n_boot, 1)
    report["bootstrap_n_ok"] = 0 if boot.boot is None else len(boot.boot)
    report["data_fit_intervals"] = boot.intervals

    # 4. Joint fit over model sizes (when there are >= 3).
    joint_pts = pts.filter(pl.col("mixture") == mixture)
    if joint_pts["N"].n_unique() >= 3:
        args_j = (joint_pts["N"].to_numpy(), joint_pts["D"].to_numpy(), joint_pts["loss"].to_numpy())
        t_joint, jfit = timed(lambda: scaling.fit_joint(*args_j, cfg), args.repeats)
        report["joint_fit_s"], report["joint_fit"] = t_joint, jfit.params
        if args.full_grid:
            t_jfull, jfull = timed(lambda: scaling.fit_joint(*args_j, full), 1)
            report["joint_full_grid_s"] = t_jfull
            report["joint_full_grid_time_ratio"] = t_jfull / t_joint
            report["joint_full_grid_objective_minus_ours"] = jfull.objective - jfit.objective

    # 5. The whole driver.
    if store is not None:
        t0 = time.perf_counter()
        res = fit_sweep(store, args.sweep, cfg, write=args.write)
        report["fit_sweep_s"] = time.perf_counter() - t0
        report["fit_sweep_rows"] = {"fits": len(res.fits), "speedups": len(res.speedups),
                                    "optimal_ratios": len(res.optimal_ratios)}

    if args.json:
        print(json.dumps(report, indent=2, default=float))
        return 0
    for k, v in report.items():
        print(f"{k:40s} {v:.4g}" if isinstance(v, float) else f"{k:40s} {v}")
    if store is not None:
        print(format_table(res.fits, scaling.FIT_COLUMNS))
        if len(res.speedups):
            print(format_table(res.speedups, scaling.SPEEDUP_COLUMNS))
        if len(res.optimal_ratios):
            print(format_table(res.optimal_ratios, scaling.RATIO_COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
