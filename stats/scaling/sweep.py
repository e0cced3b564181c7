"""The driver: a sweep's points read from the store (runs, run_metrics, mixtures), fitted per validation
domain, and written back as the `fits`, `speedups` and `optimal_ratios` result tables."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from corpora.names import part_key
from corpora.results import declare
from corpora.store import StoreError
from stats.scaling.derived import compute_speedup, fit_optimal_ratio
from stats.scaling.laws import AVG_DOMAIN, FitError, FitResult, ScalingConfig, bootstrap_fit

log = logging.getLogger(__name__)

_FIT_KEYS = {"sweep": "str", "domain": "str, a validation corpus or 'avg'", "config": "json ScalingConfig",
             "fitted_at": "time"}
_OPEN = ("Its other columns follow the law and the outcome (a failed fit's row has its keys, status and error "
         "only; a domain with nothing to fit writes just the keys), so more columns are allowed.")
declare("fits", _FIT_KEYS, "One row per fitted law, L(D) per (mixture, model) and L(N, D) per mixture; part "
        "<sweep>__<domain>. " + _OPEN,
        optional={"fit": "str data|joint", "group": "str", "mixture": "str", "model": "str", "n_params": "float",
                  "n_seeds": "int", "E": "float", "B": "float", "beta": "float", "A": "float", "alpha": "float",
                  "synthetic_share": "float", "synthetic_type": "str", "status": "str ok|error", "error": "str"},
        extra=True)
declare("speedups", _FIT_KEYS, "One row per (mixture, model, budget): tokens the baseline needs over the "
        "mixture's for the same loss. " + _OPEN,
        optional={"model": "str", "n_params": "float", "mixture": "str", "baseline": "str", "synthetic_type": "str",
                  "synthetic_share": "float", "tokens": "float", "target_loss": "float", "tokens_needed": "float",
                  "speedup": "float", "speedup_lo": "float", "speedup_hi": "float", "reachable": "bool",
                  "extrapolated": "bool", "note": "str", "status": "str ok|error", "error": "str"},
        extra=True)
declare("optimal_ratios", _FIT_KEYS, "One row per (synthetic type, model, budget): the loss-minimising synthetic "
        "share. " + _OPEN,
        optional={"synthetic_type": "str", "model": "str", "n_params": "float", "tokens": "int",
                  "ratio_opt": "float", "ratio_lo": "float", "ratio_hi": "float", "ratio_min": "float",
                  "ratio_max": "float", "coef": "json", "ratio_trend_per_decade": "float", "status": "str ok|error",
                  "error": "str"},
        extra=True)


# --------------------------------------------------------------------------------- reading the store
_part_name = part_key


def read_mixture_composition(store) -> pl.DataFrame:
    """Per mixture: synthetic_share (share of 'synthetic' parts over all parts) and synthetic_type ('+'-joined)."""
    mix = store.read_result("mixtures")
    if mix is None:
        return pl.DataFrame(schema={"mixture": pl.Utf8, "synthetic_share": pl.Float64, "synthetic_type": pl.Utf8})
    mix = mix.with_columns(pl.col("share").cast(pl.Float64))
    return (
        mix.group_by("mixture")
        .agg(
            (pl.col("share").filter(pl.col("kind") == "synthetic").sum() / pl.col("share").sum())
            .alias("synthetic_share"),
            pl.col("synthetic_type").filter(pl.col("kind") == "synthetic").drop_nulls().unique().sort()
            .str.join("+").alias("synthetic_type"),
        )
        .with_columns(pl.when(pl.col("synthetic_type") == "").then(None).otherwise(pl.col("synthetic_type"))
                      .alias("synthetic_type"))
        .sort("mixture")
    )


def read_sweep_points(store, sweep: str, cfg: ScalingConfig) -> pl.DataFrame:
    """One row per (finished run, validation domain) of a sweep: final val loss, N, D and the mixture's makeup.

    The final loss is the val row with the highest step per domain; domain 'avg' is the mean over the
    domains, for runs that have every domain of the sweep."""

    if not store.result_parts("runs") or not store.result_parts("run_metrics"):
        raise StoreError(f"the store {store.root} has no `runs`/`run_metrics` tables yet; "
                         "train a sweep first (python -m train ...)")
    runs = store.read_result("runs")
    sweeps = sorted({s for s in runs["sweep"].to_list() if s is not None}) if "sweep" in runs.columns else []
    runs = runs.filter(pl.col("sweep") == sweep)
    if runs.is_empty():
        raise StoreError(f"no runs of sweep {sweep!r} in {store.root}; sweeps there: {', '.join(sweeps) or '(none)'}")
    n_col = cfg.n_params_col
    if n_col not in runs.columns:
        raise StoreError(f"`runs` has no column {n_col!r} (n_params_col); it has: {', '.join(runs.columns)}")
    not_done = runs.filter(pl.col("status") != "done")
    if len(not_done):
        log.warning("sweep %s: skipping %d run(s) that are not done: %s", sweep, len(not_done),
                    ", ".join(f"{r} ({s})" for r, s in not_done.select("run_id", "status").iter_rows()))
    runs = runs.filter(pl.col("status") == "done")
    ids = runs["run_id"].to_list()
    if not ids:
        raise StoreError(f"sweep {sweep!r} has no finished runs (status 'done') yet")
    marks = ", ".join("?" for _ in ids)
    # Last 'val' row per (run, domain): the loss at the end of training.
    final = pl.from_arrow(store.sql(
        f"""SELECT run_id, domain, loss, step FROM run_metrics
            WHERE split = 'val' AND domain IS NOT NULL AND run_id IN ({marks})
            QUALIFY row_number() OVER (PARTITION BY run_id, domain ORDER BY step DESC) = 1""", ids))
    if final.is_empty():
        raise StoreError(f"sweep {sweep!r}: its finished runs have no 'val' rows in run_metrics")
    domains = sorted(final["domain"].unique().to_list())
    complete = final.group_by("run_id").agg(pl.len().alias("n")).filter(pl.col("n") == len(domains))["run_id"]
    avg = (final.filter(pl.col("run_id").is_in(complete.implode())).group_by("run_id")
           .agg(pl.col("loss").mean(), pl.col("step").max()).with_columns(pl.lit(AVG_DOMAIN).alias("domain")))
    final = pl.concat([final, avg.select(final.columns)]) if len(domains) > 1 else final
    if cfg.test is not None:
        if cfg.test not in domains and cfg.test != AVG_DOMAIN:
            raise StoreError(f"sweep {sweep!r} has no validation domain {cfg.test!r}; it has: {', '.join(domains)}")
        final = final.filter(pl.col("domain") == cfg.test)
    comp = read_mixture_composition(store)
    pts = (
        final.join(runs.select("run_id", "mixture", "model", pl.col(n_col).cast(pl.Float64).alias("N"),
                               pl.col("tokens").cast(pl.Float64).alias("D"),
                               (pl.col("seed") if "seed" in runs.columns else pl.lit(0)).cast(pl.Int64).alias("seed")),
                   on="run_id")
        .join(comp, on="mixture", how="left")
        .with_columns(pl.col("loss").cast(pl.Float64))
        .sort("domain", "mixture", "model", "D", "run_id")
    )
    missing = sorted(set(pts.filter(pl.col("synthetic_share").is_null())["mixture"].to_list()))
    if missing:
        log.warning("mixtures without a `mixtures` row (left out of speed-ups and ratios): %s", ", ".join(missing))
    return pts


# ------------------------------------------------------------------------------------------ driver
@dataclasses.dataclass
class SweepFits:
    fits: pl.DataFrame
    speedups: pl.DataFrame
    optimal_ratios: pl.DataFrame


def _fit_row(keys: dict, fn) -> tuple[dict, FitResult | None]:
    """Run one fit; a FitError becomes a row with status 'error' and the reason, so one bad group never stops the sweep."""
    try:
        fit = fn()
    except FitError as e:
        log.warning("%s: %s", keys.get("group"), e)
        return {**keys, "status": "error", "error": str(e)}, None
    return {**keys, **fit.to_row(), "status": "ok", "error": None}, fit


def fit_points(pts: pl.DataFrame, cfg: ScalingConfig, n_col: str | None, d_col: str, loss_col: str,
               group_cols: list[str]) -> tuple[pl.DataFrame, dict]:
    """Bootstrap fits per group of a points table: joint L(N, D) when n_col is given, else L(D).

    Returns the fits table and {group key tuple: FitResult} for the fits that succeeded."""
    rows, fits = [], {}
    groups = pts.partition_by(group_cols, as_dict=True, maintain_order=True) if group_cols else {(): pts}
    for key, g in tqdm(groups.items(), desc="fits", unit="fit", disable=None):
        key = tuple(key)
        label = ",".join(f"{c}={v}" for c, v in zip(group_cols, key)) or "all"
        run_ids = g["run_id"].to_numpy() if "run_id" in g.columns else None
        n_seeds = g["seed"].n_unique() if "seed" in g.columns else 1
        row, fit = _fit_row(
            {"group": label, **dict(zip(group_cols, key)), "n_seeds": n_seeds},
            lambda: bootstrap_fit(g[d_col].to_numpy(), g[loss_col].to_numpy(), cfg,
                                  N=None if n_col is None else g[n_col].to_numpy(), groups=run_ids,
                                  seeds=n_seeds > 1),
        )
        rows.append(row)
        if fit is not None:
            fits[key] = fit
    return pl.DataFrame(rows, infer_schema_length=None), fits


def fit_sweep(store, sweep: str, cfg: ScalingConfig | None = None, write: bool = True) -> SweepFits:
    """Fit every law of a sweep, derive speed-ups and optimal ratios, and write them to the store.

    Per validation domain (and 'avg'): L(D) per (mixture, model), L(N, D) per mixture, speed-ups of each
    mixture over the natural-only baseline at each model size and baseline budget, optimal synthetic share
    per (synthetic type, model, budget). Tables `fits`, `speedups`, `optimal_ratios`, part `<sweep>__<domain>`."""
    cfg = cfg or ScalingConfig()
    pts = read_sweep_points(store, sweep, cfg)
    cfg_json = json.dumps(dataclasses.asdict(cfg), default=list)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    out = {"fits": [], "speedups": [], "optimal_ratios": []}
    for (domain,), dpts in pts.partition_by("domain", as_dict=True, maintain_order=True).items():
        fits, speedups, ratios = _fit_domain(dpts, cfg)
        common = {"sweep": sweep, "domain": domain, "config": cfg_json, "fitted_at": now}
        tables = {"fits": fits, "speedups": speedups, "optimal_ratios": ratios}
        for name, df in tables.items():
            df = df.with_columns(**{k: pl.lit(v) for k, v in common.items()})
            df = df.select(["sweep", "domain"] + [c for c in df.columns if c not in ("sweep", "domain")])
            out[name].append(df)
            if write:
                store.put_result(name, _part_name(sweep, domain), df)
    return SweepFits(*(pl.concat(out[k], how="diagonal_relaxed") if out[k] else pl.DataFrame()
                       for k in ("fits", "speedups", "optimal_ratios")))


def _mixture_meta(dpts: pl.DataFrame) -> dict[str, dict]:
    return {r["mixture"]: r for r in dpts.unique("mixture").select("mixture", "synthetic_share", "synthetic_type")
            .iter_rows(named=True)}


def _pick_baseline(meta: dict[str, dict], cfg: ScalingConfig) -> str | None:
    if cfg.baseline is not None:
        if cfg.baseline not in meta:
            raise FitError(f"baseline mixture {cfg.baseline!r} has no runs here; mixtures: {', '.join(sorted(meta))}")
        return cfg.baseline
    natural = sorted(m for m, r in meta.items() if r["synthetic_share"] == 0)
    if len(natural) > 1:
        raise FitError(f"several natural-only mixtures ({', '.join(natural)}): name the baseline (--baseline)")
    return natural[0] if natural else None


def _fit_domain(dpts: pl.DataFrame, cfg: ScalingConfig) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    meta = _mixture_meta(dpts)
    n_of_model = dict(dpts.group_by("model").agg(pl.col("N").median()).iter_rows())
    # L(D) per (mixture, model), then L(N, D) per mixture.
    data_fits, dfit = fit_points(dpts, cfg, None, "D", "loss", ["mixture", "model"])
    joint_fits, _ = fit_points(dpts, cfg, "N", "D", "loss", ["mixture"])
    data_fits = data_fits.with_columns(
        pl.col("model").replace_strict(n_of_model, return_dtype=pl.Float64).alias("n_params"))
    fits = pl.concat([data_fits, joint_fits], how="diagonal_relaxed")
    fits = fits.with_columns(
        pl.col("mixture").replace_strict({m: r["synthetic_share"] for m, r in meta.items()},
                                         return_dtype=pl.Float64).alias("synthetic_share"),
        pl.col("mixture").replace_strict({m: r["synthetic_type"] for m, r in meta.items()},
                                         return_dtype=pl.Utf8).alias("synthetic_type"),
    )
    if "fit" in fits.columns:
        fits = fits.with_columns(pl.col("fit").fill_null(
            pl.when(pl.col("model").is_null()).then(pl.lit("joint")).otherwise(pl.lit("data"))))
    else:
        fits = fits.with_columns(pl.when(pl.col("model").is_null()).then(pl.lit("joint"))
                                 .otherwise(pl.lit("data")).alias("fit"))

    # Speed-ups of every mixture over the baseline at the same model size.
    rows = []
    baseline = _pick_baseline(meta, cfg)
    if baseline is None:
        log.warning("no natural-only mixture (synthetic share 0) among %s: no speed-ups", ", ".join(sorted(meta)))
    for (mixture, model), fit in dfit.items():
        base = dfit.get((baseline, model))
        if baseline is None or mixture == baseline or meta[mixture]["synthetic_share"] is None:
            continue
        keys = {"model": model, "n_params": n_of_model[model], "mixture": mixture, "baseline": baseline,
                "synthetic_type": meta[mixture]["synthetic_type"], "synthetic_share": meta[mixture]["synthetic_share"]}
        if base is None:
            rows.append({**keys, "status": "error", "error": f"no baseline fit for model {model}"})
            continue
        measured = dpts.filter((pl.col("mixture") == baseline) & (pl.col("model") == model))["D"].unique().sort()
        for D in sorted(set(measured.to_list()) | set(cfg.budgets)):
            rows.append({**keys, **compute_speedup(fit, base, float(D), cfg.ci), "status": "ok", "error": None})
    speedups = pl.DataFrame(rows, infer_schema_length=None)

    # Optimal synthetic share per (synthetic type, model, budget); the baseline is share 0 of every type.
    rows = []
    types = sorted({r["synthetic_type"] for r in meta.values() if r["synthetic_type"] and "+" not in r["synthetic_type"]})
    for stype in types:
        members = [m for m, r in meta.items() if r["synthetic_type"] == stype or m == baseline]
        sub = dpts.filter(pl.col("mixture").is_in(members))
        for (model, D), g in sub.partition_by(["model", "D"], as_dict=True, maintain_order=True).items():
            keys = {"synthetic_type": stype, "model": model, "n_params": n_of_model[model], "tokens": D}
            try:
                res = fit_optimal_ratio(g["synthetic_share"], g["loss"], cfg, groups=g["run_id"])
            except FitError as e:
                rows.append({**keys, "status": "error", "error": str(e)})
                continue
            row = dataclasses.asdict(res)
            row["ratio_min"], row["ratio_max"] = row.pop("ratio_range")
            row["coef"] = json.dumps(row["coef"])
            rows.append({**keys, **row, "status": "ok", "error": None})
    ratios = pl.DataFrame(rows, infer_schema_length=None)
    if "ratio_opt" in ratios.columns:
        ratios = _with_ratio_trend(ratios)
    return fits, speedups, ratios


def _with_ratio_trend(ratios: pl.DataFrame) -> pl.DataFrame:
    """How the optimum moves with scale: slope of ratio_opt against log10(n_params), per (type, budget)."""
    trend = {}
    ok = ratios.filter(pl.col("status") == "ok")
    for (stype, D), g in ok.partition_by(["synthetic_type", "tokens"], as_dict=True).items():
        if g["n_params"].n_unique() >= 2:
            slope = np.polyfit(np.log10(g["n_params"].to_numpy()), g["ratio_opt"].to_numpy(), 1)[0]
            trend[(stype, D)] = float(slope)
    return ratios.with_columns(pl.Series(
        "ratio_trend_per_decade",
        [trend.get((s, d)) for s, d in ratios.select("synthetic_type", "tokens").iter_rows()],
        dtype=pl.Float64))
