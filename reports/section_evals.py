"""Report section: downstream evaluation (table `evals`) and the decisions made on each metric.

Per mixture, the downstream metrics of the sweep's largest scale with 95% seed intervals and the chance
level drawn; then, per metric, the pairwise decision accuracy from the smaller scales to the largest (table
`decisions`, column `metric`) beside its signal-to-noise ratio (table `decision_snr`), so the reader sees
which metric a decision should be made on at this scale. Reads tables only; computes nothing new.
"""

from __future__ import annotations

import math

import polars as pl

from reports.page import Figure, Section, Table, result_table
from stats import evidence
from stats.findings import latest_evals

FIGURE_METRICS = ("acc_per_char", "correct_prob")


def _interval(df: pl.DataFrame) -> pl.DataFrame:
    """Seed mean and a 95% t-interval per (mixture, task, metric) over the seeds' values."""
    from scipy import stats

    g = df.group_by("mixture", "task", "metric").agg(
        pl.col("value").mean().alias("mean"), pl.col("value").std(ddof=1).alias("sd"), pl.len().alias("n_seeds"),
        pl.col("chance").first(), pl.col("n").first().alias("n_items"))
    half = [float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 and sd is not None else None
            for n, sd in g.select("n_seeds", "sd").iter_rows()]
    return g.with_columns(pl.Series("half", half, dtype=pl.Float64)).with_columns(
        (pl.col("mean") - pl.col("half")).alias("lo"), (pl.col("mean") + pl.col("half")).alias("hi")).sort(
        "task", "metric", "mixture")


def _figure(iv: pl.DataFrame, metric: str, title: str) -> str:
    import matplotlib.pyplot as plt

    from reports.figures import to_data_uri

    sub = iv.filter(pl.col("metric") == metric)
    tasks = sorted(sub["task"].unique().to_list())
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 1, 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        t = sub.filter(pl.col("task") == task).sort("mixture")
        x = range(t.height)
        err = [[m - lo if lo is not None else 0 for m, lo in zip(t["mean"], t["lo"])],
               [hi - m if hi is not None else 0 for m, hi in zip(t["mean"], t["hi"])]]
        ax.errorbar(list(x), t["mean"].to_list(), yerr=err, fmt="o", capsize=3)
        if t["chance"][0] is not None:
            ax.axhline(t["chance"][0], color="k", lw=1, ls="--", label="chance")
            ax.legend(loc="best", fontsize=8)
        ax.set_xticks(list(x), t["mixture"].to_list(), rotation=45, ha="right", fontsize=8)
        ax.set_title(task, fontsize=10)
        ax.set_ylabel(metric)
    fig.suptitle(title, fontsize=11)
    return to_data_uri(fig)


def metric_reliability(store) -> pl.DataFrame | None:
    """Per (metric, domain): pooled pairwise decision accuracy over the smaller scales (seed-mean orders)
    and the signal-to-noise ratio at the largest scale and averaged over scales."""
    dec, snr = store.read_result("decisions"), store.read_result("decision_snr")
    if dec is None or "metric" not in dec.columns or not dec.height:
        return None
    acc = dec.filter(pl.col("seed") == "mean").group_by("metric", "domain").agg(
        (pl.col("n_agree").sum() / pl.col("n_pairs").sum()).alias("decision_accuracy"),
        pl.col("n_pairs").sum().alias("n_decisions"), pl.col("target_model").first(), pl.col("target_tokens").first())
    if snr is not None and snr.height:
        s = snr.join(acc.select("metric", "domain", "target_model", "target_tokens"), on=["metric", "domain"])
        at_target = s.filter((pl.col("model") == pl.col("target_model")) & (pl.col("tokens") == pl.col("target_tokens")))
        acc = acc.join(at_target.select("metric", "domain", pl.col("snr").alias("snr_largest_scale")),
                       on=["metric", "domain"], how="left").join(
            s.group_by("metric", "domain").agg(pl.col("snr").mean().alias("snr_mean_over_scales")),
            on=["metric", "domain"], how="left")
    return acc.sort("domain", "decision_accuracy", descending=[False, True])


def section_evals(store):
    s = Section("evals", "Downstream evaluation and decisions per metric",
                "Ranked-classification (cloze) tasks, OLMES-style: each run scores every choice's log-likelihood "
                "(`python -m stats.evals`). acc: the most likely choice is right; acc_per_char: the same per "
                "character; correct_prob: the right choice's probability normalised over the choices; margin: it "
                "minus the largest other; bpb: bits per byte of the right answer. At small scale raw accuracy sits "
                "near chance while the continuous metrics still order mixtures (DataDecide, Magnusson et al. "
                "2025). Below: per-mixture metrics at the largest scale with 95% seed intervals, then, per "
                "metric, how often smaller scales order mixture pairs as the largest scale does, beside the "
                "metric's signal-to-noise ratio (spread across mixtures over spread across seeds).")
    ev = store.read_result("evals")
    if ev is None or not ev.height:
        s.empty = ("No downstream evaluations yet: they come with the study ([evals] section) or "
                   "`python -m stats.evals run --runs SWEEP --tasks arc_easy:rc_0shot --limit 200`.")
        return s
    ev = latest_evals(store)
    runs = ev.filter(pl.col("run_id").is_not_null() & pl.col("mixture").is_not_null())
    if runs.height:
        top = runs.sort("tokens").group_by("model").agg(pl.col("tokens").max())
        largest = runs.join(top, on=["model", "tokens"])
        iv = _interval(largest)
        scale = ", ".join(f"{m} @ {t:,} tokens" for m, t in top.iter_rows())
        for metric in FIGURE_METRICS:
            if iv.filter(pl.col("metric") == metric).height:
                s.figures.append(Figure(_figure(iv, metric, f"{metric} per mixture ({scale})"),
                                        f"{metric}: seed mean with 95% t-interval over seeds, per mixture and task, "
                                        f"at the largest scale ({scale}); dashed: chance (1 / choices)."))
        s.tables.append(Table.from_df(iv.drop("sd", "half"), f"Per-mixture downstream metrics at {scale}: seed "
                                      "mean, 95% interval [lo, hi], items per task, chance level."))
        verdicts = result_table(store, "downstream_verdicts")  # stats.findings computes them
        if verdicts is not None and verdicts.height:
            s.tables.append(Table.from_df(verdicts, "Downstream verdicts: the report's loss claims on the continuous "
                                          f"downstream metrics, every scale; rule: {evidence.VERDICT_RULE}."))
    rel = metric_reliability(store)
    if rel is not None:
        s.tables.append(Table.from_df(rel, "Per metric and domain (validation domain for loss, task otherwise): "
                                      "pooled pairwise decision accuracy from every smaller scale to the largest "
                                      "(seed-mean orders; 0.5 is a coin flip) and the signal-to-noise ratio."))
    other = ev.filter(pl.col("run_id").is_null())
    if other.height:
        s.tables.append(Table.from_df(other, "Other models (`--model DIR`).",
                                      columns=("model", "task", "metric", "value", "stderr", "n", "chance", "dtype")))
    return s
