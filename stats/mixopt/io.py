"""A swarm as the fit sees it (runs x source weights, runs x metrics), read from a sweep or from CSVs.

The CSV layout is olmix's and RegMix's: `ratios.csv` has a `run` column and one column per source (the
run's mixture weights, summing to 1); `metrics.csv` has a `run` column and one column per metric (lower is
better unless the fit is told otherwise). Every check runs before any fitting, and a bad file gets one
line naming the file, the line and the column.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import polars as pl

from corpora.store import Store, StoreError

log = logging.getLogger(__name__)

RUN = "run"
AVG = "avg"  # the mean over a swarm's metrics (validation domains), as stats.evidence.final_points has it
SUM_TOLERANCE = 1e-3  # as train.data.SHARE_TOLERANCE: "0.333,0.333,0.334" is fine, "0.6,0.3" a mistake


class MixoptError(StoreError, ValueError):
    """Input the mixture fit cannot use as written; the message names the file, line, column or flag."""


@dataclasses.dataclass
class Swarm:
    """Runs with their mixture weights and measured metrics, one row per run (seeds averaged)."""

    runs: list[str]
    sources: list[str]
    weights: np.ndarray  # (n_runs, n_sources), rows on the simplex
    metrics: dict[str, np.ndarray]  # metric -> (n_runs,)
    origin: str  # "sweep NAME" or the CSV paths
    model: str | None = None
    tokens: int | None = None
    tokenizer: str | None = None  # the mixtures' tokenizer (store swarms)

    def objective(self, name: str) -> tuple[np.ndarray, list[str]]:
        """The values to minimise for objective `name` and the metric columns they average: 'avg' is the
        mean of every metric (a stored 'avg' column is not counted twice)."""
        if name == AVG and AVG not in self.metrics:
            cols = [m for m in self.metrics if m != AVG]
        elif name in self.metrics:
            cols = [name]
        else:
            raise MixoptError(f"--objective {name}: the swarm ({self.origin}) has metrics "
                              f"{', '.join(self.metrics) or '(none)'} and 'avg'")
        return np.mean([self.metrics[c] for c in cols], axis=0), cols

    def subset(self, rows: np.ndarray) -> "Swarm":
        return dataclasses.replace(self, runs=[self.runs[i] for i in rows], weights=self.weights[rows],
                                   metrics={k: v[rows] for k, v in self.metrics.items()})


# ---------------------------------------------------------------------------------------- CSV
def _read_table(path: Path, what: str) -> pl.DataFrame:
    if not path.is_file():
        raise MixoptError(f"{what} file {path} does not exist")
    try:
        df = pl.read_csv(path, infer_schema=False)  # every cell a string: we say which one is not a number
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as e:
        raise MixoptError(f"{path}: not a readable CSV: {str(e).splitlines()[0]}") from None
    if RUN not in df.columns:
        raise MixoptError(f"{path}: no `{RUN}` column; the header must name a `{RUN}` column and one column per "
                          f"{'source' if what == 'ratios' else 'metric'} (found: {', '.join(df.columns) or 'nothing'})")
    if df.height == 0:
        raise MixoptError(f"{path}: no rows under the header")
    runs = df[RUN].to_list()
    seen = {}
    for i, r in enumerate(runs):
        if r is None or not str(r).strip():
            raise MixoptError(f"{path} line {i + 2}: empty `{RUN}` value")
        if r in seen:
            raise MixoptError(f"{path} line {i + 2}: run {r!r} appears twice (first on line {seen[r] + 2})")
        seen[r] = i
    if len(df.columns) < 2:
        raise MixoptError(f"{path}: only a `{RUN}` column; add one column per "
                          f"{'source' if what == 'ratios' else 'metric'}")
    return df


def _numbers(df: pl.DataFrame, path: Path) -> dict[str, np.ndarray]:
    """Every non-run column as floats; a blank, non-numeric, NaN or infinite cell is an error naming it."""
    out = {}
    runs = df[RUN].to_list()
    for col in df.columns:
        if col == RUN:
            continue
        values = np.empty(df.height)
        for i, cell in enumerate(df[col].to_list()):
            try:
                values[i] = float(cell)
            except (TypeError, ValueError):
                values[i] = math.nan
            if not math.isfinite(values[i]):
                raise MixoptError(f"{path} line {i + 2} (run {runs[i]}): column {col!r} is {cell!r}, not a finite "
                                  "number; fix or drop that run")
        out[col] = values
    return out


def read_csv_swarm(ratios: str | Path, metrics: str | Path) -> Swarm:
    """A swarm from olmix/RegMix CSVs; checks both files completely before returning."""
    ratios, metrics = Path(ratios), Path(metrics)
    rdf, mdf = _read_table(ratios, "ratios"), _read_table(metrics, "metrics")
    w, m = _numbers(rdf, ratios), _numbers(mdf, metrics)
    runs = rdf[RUN].to_list()
    weights = np.column_stack(list(w.values()))
    for i, row in enumerate(weights):
        if (row < 0).any():
            col = list(w)[int(np.argmax(row < 0))]
            raise MixoptError(f"{ratios} line {i + 2} (run {runs[i]}): weight of {col!r} is negative ({row.min():g})")
        if abs(row.sum() - 1) > SUM_TOLERANCE:
            raise MixoptError(f"{ratios} line {i + 2} (run {runs[i]}): ratios sum to {row.sum():.6g}, not 1")
    mruns = mdf[RUN].to_list()
    only_r, only_m = [r for r in runs if r not in set(mruns)], [r for r in mruns if r not in set(runs)]
    if only_r or only_m:
        r, where, other = (only_r[0], ratios, metrics) if only_r else (only_m[0], metrics, ratios)
        n = len(only_r) + len(only_m)
        raise MixoptError(f"run {r!r} is in {where} but not in {other} ({n} run(s) in one file only); "
                          "both files must list the same runs")
    order = np.array([mruns.index(r) for r in runs])
    return Swarm(runs=runs, sources=list(w), weights=weights / weights.sum(axis=1, keepdims=True),
                 metrics={k: v[order] for k, v in m.items()}, origin=f"{ratios} + {metrics}")


def write_csv_swarm(swarm: Swarm, out_dir: str | Path) -> tuple[Path, Path]:
    """`ratios.csv` and `metrics.csv` of a swarm in the olmix/RegMix layout (what `read_csv_swarm` reads)."""
    from corpora.store import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "ratios.csv", out_dir / "metrics.csv"
    ratios = pl.DataFrame({RUN: swarm.runs, **{s: swarm.weights[:, j] for j, s in enumerate(swarm.sources)}})
    metrics = pl.DataFrame({RUN: swarm.runs, **swarm.metrics})
    for df, path in zip((ratios, metrics), paths):
        with atomic_path(path) as tmp:
            df.write_csv(tmp, float_precision=17)
    return paths


# ---------------------------------------------------------------------------------------- store
def mixture_shares(store: Store) -> dict[str, dict[str, float]]:
    """{mixture: {corpus: share}} from the `mixtures` table (the latest build of each mixture)."""
    df = store.read_result("mixtures")
    if df is None or not df.height:
        return {}
    if "created_at" in df.columns:
        latest = df.group_by("mixture").agg(pl.col("created_at").max().alias("_last"))
        df = df.join(latest, on="mixture").filter(pl.col("created_at") == pl.col("_last"))
    out: dict[str, dict[str, float]] = {}
    for mixture, corpus, share in df.select("mixture", "corpus", "share").iter_rows():
        out.setdefault(mixture, {})[corpus] = float(share)
    return out


def read_store_swarm(store: Store, sweep: str, sources: list[str] | None = None) -> Swarm:
    """A swarm from a sweep's finished runs: one row per mixture (the seed mean of its final validation
    losses, one metric per domain), at the (model, budget) that holds the most mixtures."""
    from stats.evidence import final_points

    pts = final_points(store, sweep)
    if pts is None:
        raise MixoptError(f"--sweep {sweep}: no finished runs of that sweep in {store.root}; run it first "
                          f"(python -m stats.mixopt swarm {sweep} ...)")
    pts = pts.filter(pl.col("domain") != AVG)
    scales = (pts.group_by("model", "tokens").agg(pl.col("mixture").n_unique().alias("n"))
              .sort(["n", "tokens", "model"], descending=True))
    model, tokens = scales.row(0)[:2]
    if scales.height > 1:
        log.warning("sweep %s has %d (model, budget) scales; fitting %s @ %s, the one with the most mixtures",
                    sweep, scales.height, model, tokens)
    pts = pts.filter((pl.col("model") == model) & (pl.col("tokens") == tokens))
    mean = pts.group_by("mixture", "domain").agg(pl.col("loss").mean()).sort("mixture", "domain")
    wide = mean.pivot(on="domain", index="mixture", values="loss").sort("mixture").drop_nulls()
    shares = mixture_shares(store)
    missing = [m for m in wide["mixture"] if m not in shares]
    if missing:
        raise MixoptError(f"--sweep {sweep}: mixture {missing[0]!r} has no row in the mixtures table; rebuild it")
    if sources is None:
        sources = sorted({c for m in wide["mixture"] for c in shares[m]})
    weights = np.array([[shares[m].get(s, 0.0) for s in sources] for m in wide["mixture"]])
    extra = [m for m, row in zip(wide["mixture"], weights) if abs(row.sum() - 1) > SUM_TOLERANCE]
    if extra:
        raise MixoptError(f"--sweep {sweep}: mixture {extra[0]!r} has parts outside the sources "
                          f"{', '.join(sources)}")
    domains = [c for c in wide.columns if c != "mixture"]
    from train.data import mixture_config

    tokenizer = mixture_config(store, wide["mixture"][0]).tokenizer
    return Swarm(runs=wide["mixture"].to_list(), sources=list(sources), weights=weights / weights.sum(1, keepdims=True),
                 metrics={d: wide[d].to_numpy().astype(float) for d in domains}, origin=f"sweep {sweep}",
                 model=model, tokens=int(tokens), tokenizer=tokenizer)
