"""`python -m stats.scaling`: fit a sweep from the store, or points from a CSV file, and print the tables."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import time
from pathlib import Path

import numpy as np
import polars as pl

from corpora.cli_common import add_common_args, setup_logging
from corpora.exits import run_command
from corpora.store import Store, resolve_store_path
from stats.scaling.laws import FitError, ScalingConfig
from stats.scaling.sweep import fit_points, fit_sweep


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    return str(v)


def _fmt_param(row: dict, name: str) -> str:
    if row.get(name) is None:
        return "-"
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    return _fmt(row[name]) + (f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else "")


def format_table(df: pl.DataFrame, columns: list[str]) -> str:
    """A plain text table; `X` columns with X_lo/X_hi print as 'X [lo, hi]'."""
    rows = df.to_dicts()
    cols = [c for c in columns if c in df.columns]
    cells = [[_fmt_param(r, c) if f"{c}_lo" in df.columns else _fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


FIT_COLUMNS = ["domain", "fit", "group", "n_points", "E", "B", "beta", "A", "alpha", "rmse_log", "status", "error"]
SPEEDUP_COLUMNS = ["domain", "model", "mixture", "tokens", "target_loss", "tokens_needed", "speedup",
                   "extrapolated", "note"]
RATIO_COLUMNS = ["domain", "synthetic_type", "model", "tokens", "ratio_opt", "ratio_lo", "ratio_hi",
                 "at_boundary", "best_measured_ratio", "ratio_trend_per_decade", "status", "error"]


def _jsonable(df: pl.DataFrame) -> list[dict]:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None  # JSON has no inf/nan: unreachable speed-ups read as null with reachable=false
        if isinstance(v, (dt.datetime, dt.date)):
            return v.isoformat()
        return v
    return [{k: clean(v) for k, v in row.items() if k != "config"} for row in df.to_dicts()]


def read_points_csv(path: Path, d_col: str, loss_col: str, n_col: str | None, group_cols: list[str]) -> pl.DataFrame:
    """Points from a CSV file; a missing column or a bad value is a one-line error naming the file and line."""
    try:
        df = pl.read_csv(path, infer_schema_length=None)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise ValueError(f"{path}: cannot read as CSV: {str(e).splitlines()[0]}") from None
    wanted = [c for c in [d_col, loss_col, n_col, *group_cols] if c]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(missing)}; columns: {', '.join(df.columns)} "
                         "(pick them with --d-col/--loss-col/--n-col/--group-col)")
    for c in [d_col, loss_col] + ([n_col] if n_col else []):
        values = df[c].cast(pl.Float64, strict=False)
        bad = np.flatnonzero((values.is_null() | ~values.fill_null(0).is_finite() | (values.fill_null(0) <= 0))
                             .to_numpy())
        if len(bad):
            raise ValueError(f"{path}:{bad[0] + 2}: column {c!r} must be a positive number, "
                             f"got {df[c][int(bad[0])]!r}; fix or drop that row")
        df = df.with_columns(values.alias(c))
    # each row is one run unless the file says otherwise: the bootstrap resamples runs
    return df if "run_id" in df.columns else df.with_row_index("run_id")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stats.scaling",
        description="Fit scaling laws (Huber on log-loss, L-BFGS-B, bootstrap intervals) to a sweep's runs or to "
                    "a CSV of points. Example: python -m stats.scaling --runs cpu_sweep --test wiki --json",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", metavar="SWEEP", help="fit the finished runs of this sweep in the store")
    src.add_argument("--csv", metavar="FILE", type=Path, help="fit points from a CSV file (prints only)")
    p.add_argument("--no-write", action="store_true", help="with --runs: do not write the result tables")
    g = p.add_argument_group("CSV columns")
    g.add_argument("--d-col", default="D", help="tokens / data budget column (default D)")
    g.add_argument("--loss-col", default="loss", help="loss column (default loss)")
    g.add_argument("--n-col", default=None, help="model size column; given: joint L(N, D) fit, else L(D)")
    g.add_argument("--group-col", action="append", default=[], help="fit each group separately (repeatable)")
    c = p.add_argument_group("fit (ScalingConfig)")
    d = ScalingConfig()
    c.add_argument("--test", default=d.test, help="validation domain to fit, or 'avg' (default: all and avg)")
    c.add_argument("--baseline", default=d.baseline, help="natural-only baseline mixture (default: the only one)")
    c.add_argument("--n-boot", type=int, default=d.n_boot, help=f"bootstrap replicates (default {d.n_boot})")
    c.add_argument("--ci", type=float, default=d.ci, help=f"interval level (default {d.ci})")
    c.add_argument("--seed", type=int, default=d.seed)
    c.add_argument("--huber-delta", type=float, default=d.huber_delta, help=f"(default {d.huber_delta})")
    c.add_argument("--n-starts", type=int, default=d.n_starts,
                   help=f"L-BFGS-B starts from the best grid points, 0 = all (default {d.n_starts})")
    c.add_argument("--n-starts-boot", type=int, default=d.n_starts_boot)
    c.add_argument("--max-iter", type=int, default=d.max_iter)
    c.add_argument("--max-exponent", type=float, default=d.max_exponent)
    c.add_argument("--n-params-col", default=d.n_params_col, choices=["n_params", "n_params_total"])
    c.add_argument("--ratio-degree", type=int, default=d.ratio_degree)
    c.add_argument("--budgets", type=float, nargs="*", default=list(d.budgets),
                   help="extra budgets D (tokens) for speed-ups")
    add_common_args(p)  # --no-progress: accepted, the fits draw no bars
    return p


def config_from_args(args: argparse.Namespace) -> ScalingConfig:
    fields = {f.name for f in dataclasses.fields(ScalingConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["budgets"] = tuple(values["budgets"])
    return ScalingConfig(**values)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    cfg = config_from_args(args)
    if cfg.n_boot < 0 or not 0 < cfg.ci < 1 or cfg.huber_delta <= 0 or cfg.ratio_degree < 1:
        parser.error("need --n-boot >= 0, 0 < --ci < 1, --huber-delta > 0, --ratio-degree >= 1")
    return run_command("", lambda: _run(args, cfg), user_errors=(ValueError, FitError))  # corpora.exits


def _run(args, cfg: ScalingConfig) -> int:
    t0 = time.perf_counter()
    if args.csv is not None:
        pts = read_points_csv(args.csv, args.d_col, args.loss_col, args.n_col, args.group_col)
        fits, _ = fit_points(pts, cfg, args.n_col, args.d_col, args.loss_col, args.group_col)
        if args.json:
            print(json.dumps({"fits": _jsonable(fits)}, indent=2))
        else:
            print(format_table(fits, ["group", "n_points", "E", "B", "beta", "A", "alpha", "rmse_log", "status",
                                      "error"]))
        return 0 if (fits["status"] == "ok").any() else 1

    store = Store(resolve_store_path(args.store))
    with store.writer("python -m stats.scaling") if not args.no_write else contextlib.nullcontext():
        res = fit_sweep(store, args.runs, cfg, write=not args.no_write)
    if args.json:
        print(json.dumps({k: _jsonable(getattr(res, k)) for k in ("fits", "speedups", "optimal_ratios")}, indent=2))
        return 0
    for title, df, cols in (("fits", res.fits, FIT_COLUMNS), ("speedups", res.speedups, SPEEDUP_COLUMNS),
                            ("optimal_ratios", res.optimal_ratios, RATIO_COLUMNS)):
        print(f"== {title} ({len(df)} rows)")
        if len(df):
            print(format_table(df, cols))
    where = "not written (--no-write)" if args.no_write else f"written to {store.root} (tables fits, speedups, optimal_ratios)"
    print(f"sweep {args.runs}: {where} in {time.perf_counter() - t0:.1f}s")
    return 0
