"""Report sections on training: curves, the learning check, scaling-law fits, speed-ups, optimal ratios and
decision reliability, each read from its result table (stats.scaling, stats.evidence) and drawn.
"""

from __future__ import annotations

import polars as pl

from corpora.store import Store
from reports import figures
from reports.page import Figure, Section, Table, result_table
from stats.findings import final_val_losses, loss_decisions


def _ok(df: pl.DataFrame) -> pl.DataFrame:
    """The rows of a fit table whose status is ok (all rows of a table without a status column)."""
    return df.filter(pl.col("status") == "ok") if "status" in df.columns else df


def figure_domain(df: pl.DataFrame) -> str:
    """The domain a figure shows: the average over test domains when there is one, else the first
    (the findings, stats.findings, instead refuse to pick among several domains)."""
    return "avg" if "avg" in df["domain"].to_list() else df["domain"][0]


def section_training(store: Store) -> Section:
    s = Section("training", "Training curves",
                "Validation loss (nats/token) during training, per mixture and per validation domain.")
    runs, metrics = result_table(store, "runs"), result_table(store, "run_metrics")
    if runs is None or metrics is None:
        s.empty = "No training runs yet: `python -m train run --mixture M --model cpu-1m --tokens 200k` or a sweep."
        return s
    done = runs.filter(pl.col("status") == "done")
    val = metrics.filter(pl.col("split") == "val").join(done.select("run_id", "mixture", "model", "tokens"),
                                                         on="run_id")
    if val.height:
        for model in sorted(val["model"].unique().to_list()):
            sub = val.filter(pl.col("model") == model)
            top = sub["tokens"].max()
            sub = sub.filter(pl.col("tokens") == top)
            s.figures.append(Figure(
                figures.curves(sub, "tokens_seen", "loss", "mixture", f"model {model}, budget {top:,} tokens",
                               col="domain", xlabel="tokens seen", ylabel="validation loss"),
                f"Validation loss against tokens seen for model {model} at the largest budget ({top:,} tokens), "
                f"one line per mixture (the mean over seeds, with a band where there are several), one panel per "
                f"validation domain ({sub['run_id'].n_unique()} runs)."))
    final = final_val_losses(store)
    s.tables.append(Table.from_df(runs, "Runs: budget, tokens seen, final training loss, wall time and throughput.",
                                  columns=("run_id", "sweep", "mixture", "model", "n_params", "tokens", "seed",
                                           "tokens_seen",
                                           "final_train_loss", "elapsed_s", "tokens_per_s", "status"),
                                  sort=("mixture", "model", "tokens")))
    if final is not None and final.height:
        done = final.filter(pl.col("status") == "done")
        grouped = (done.group_by("mixture", "model", "tokens", "domain")
                   .agg(pl.col("loss").mean().alias("mean"), pl.col("loss").std().alias("sd"),
                        pl.len().alias("seeds"))
                   .with_columns(pl.format("{} ± {} ({} seeds)", pl.col("mean").round(4),
                                           pl.col("sd").fill_null(0).round(4), pl.col("seeds")).alias("cell")))
        pivot = grouped.pivot(on="domain", index=["mixture", "model", "tokens"], values="cell",
                              aggregate_function="first").sort("model", "tokens", "mixture")
        s.tables.append(Table.from_df(pivot, "Final validation loss per domain (nats/token): mean ± standard "
                                             "deviation over the runs of one configuration that differ only in seed."))
    return s


def section_scaling(store: Store) -> Section:
    s = Section("scaling", "Scaling-law fits",
                "Per (mixture, model): L(D) = E + B / D^beta; per mixture: L(N, D) = E + A/N^alpha + B/D^beta. "
                "Huber loss on log-loss residuals, L-BFGS-B from a grid of starts, bootstrap over runs for the "
                "intervals (lo-hi).")
    fits = result_table(store, "fits")
    if fits is None:
        s.empty = "No fits yet: `python -m stats.scaling --runs SWEEP` after a sweep."
        return s
    ok = _ok(fits)
    s.tables.append(Table.from_df(fits, "Fitted parameters with bootstrap intervals (E = irreducible loss).",
                                  columns=("sweep", "domain", "fit", "mixture", "model", "n_points", "E", "E_lo",
                                           "E_hi", "B", "beta", "beta_lo", "beta_hi", "A", "alpha", "status", "error"),
                                  sort=("domain", "fit", "mixture", "model")))
    final = final_val_losses(store)
    data = ok.filter(pl.col("fit") == "data") if "fit" in ok.columns else ok
    if final is not None and data.height and {"E", "B", "beta"} <= set(data.columns):
        domain = figure_domain(data)
        for model in sorted(set(data["model"].drop_nulls().to_list())):
            fsub = data.filter((pl.col("domain") == domain) & (pl.col("model") == model))
            if domain == "avg":
                pts = final.group_by("run_id", "mixture", "model", "tokens").agg(pl.col("loss").mean())
            else:
                pts = final.filter(pl.col("domain") == domain)
            pts = pts.filter(pl.col("model") == model).select(pl.col("mixture").alias("group"), "tokens", "loss")
            if not pts.height:
                continue
            lines = [{"group": r["mixture"], "E": r["E"], "B": r["B"], "beta": r["beta"],
                      "d_min": pts["tokens"].min(), "d_max": pts["tokens"].max()} for r in fsub.iter_rows(named=True)
                     if r["E"] is not None and r["B"] is not None]
            s.figures.append(Figure(
                figures.scaling_fits(pts, lines, f"L(D) fits, model {model}, domain {domain}"),
                f"Final validation loss ({domain}) against training tokens for model {model} "
                f"({pts.height} runs), with the fitted L(D) per mixture; dotted lines mark each fit's E."))
    return s


def section_speedups(store: Store) -> Section:
    s = Section("speedups", "Compute efficiency",
                "Speed-up = tokens the natural-only baseline needs to reach its loss at budget D, divided by the "
                "tokens the mixture needs for the same loss (read off the fitted curves). Values outside the "
                "measured token range are extrapolations.")
    sp = result_table(store, "speedups")
    if sp is None:
        s.empty = "No speed-ups yet: they come with `python -m stats.scaling --runs SWEEP`."
        return s
    s.tables.append(Table.from_df(sp, "Speed-ups over the baseline.",
                                  columns=("domain", "model", "mixture", "baseline", "synthetic_type",
                                           "synthetic_share", "tokens", "target_loss", "tokens_needed", "speedup",
                                           "speedup_lo", "speedup_hi", "reachable", "extrapolated", "status", "error"),
                                  sort=("domain", "model", "mixture", "tokens")))
    ok = _ok(sp)
    if ok.height and "speedup" in ok.columns:
        domain = figure_domain(ok)
        top = ok.filter(pl.col("domain") == domain)
        top = top.filter(pl.col("tokens") == top["tokens"].max())
        s.figures.append(Figure(
            figures.bars(top.with_columns(pl.col("speedup").clip(0, 50)), "mixture", "speedup",
                         f"Speed-up over the baseline at {int(top['tokens'].max()):,} tokens ({domain})",
                         hue="model", ref=1.0, ref_label="no speed-up"),
            f"Speed-up of each mixture over the baseline at the largest measured budget, domain {domain}; "
            "bars are clipped at 50x."))
    return s


def section_ratios(store: Store) -> Section:
    s = Section("ratios", "Optimal synthetic ratio",
                "For each synthetic type, model and budget: a quadratic in the synthetic share fitted to "
                "log-loss over the mixtures at 0/33/67/100%; its minimiser with a bootstrap interval.")
    r = result_table(store, "optimal_ratios")
    if r is None:
        s.empty = "No optimal ratios yet: they come with `python -m stats.scaling --runs SWEEP`."
        return s
    s.tables.append(Table.from_df(r, "Optimal synthetic share.",
                                  columns=("domain", "synthetic_type", "model", "n_params", "tokens", "ratio_opt",
                                           "ratio_lo", "ratio_hi", "loss_opt", "status", "error"),
                                  sort=("domain", "synthetic_type", "model", "tokens")))
    ok = _ok(r)
    if ok.height and {"ratio_opt", "n_params"} <= set(ok.columns):
        domain = figure_domain(ok)
        sub = ok.filter(pl.col("domain") == domain)
        sub = sub.filter(pl.col("tokens") == sub["tokens"].max())
        lo, hi = ("ratio_lo", "ratio_hi") if {"ratio_lo", "ratio_hi"} <= set(sub.columns) else (None, None)
        s.figures.append(Figure(
            figures.ratio_curve(sub, "n_params", "ratio_opt", "synthetic_type",
                                f"Optimal synthetic share against model size ({domain})", lo, hi),
            f"Loss-minimising synthetic share against non-embedding parameters, at the largest budget "
            f"({int(sub['tokens'].max()):,} tokens), domain {domain}; bands are bootstrap intervals."))
    return s


def section_decisions(store: Store) -> Section:
    s = Section("decisions", "Decision reliability",
                "For every pair of mixtures: is their order by final validation loss at a smaller scale (model, "
                "budget) the same as at the largest scale of the sweep? Pairwise decision accuracy per smaller "
                "scale (DataDecide, Magnusson et al. 2025, report ~80% from 150M to 1B parameters); 50% is a coin "
                "flip. Per seed: that seed's accuracy alone, and the share of pair decisions it orders unlike the "
                "seed mean at the same scale (flips).")
    dec = loss_decisions(store)
    if dec is None:
        s.empty = ("No decision table yet: it comes with the study (`python -m reports study`) or "
                   "`stats.evidence.decisions(store, SWEEP)` after a sweep.")
        return s
    dom = figure_domain(dec)
    mean = dec.filter((pl.col("seed") == "mean") & (pl.col("domain") == dom))
    if mean.height:
        s.figures.append(Figure(
            figures.heatmap(mean.with_columns(pl.col("tokens").cast(pl.Utf8)), "model", "tokens", "accuracy",
                            f"Decision accuracy against {mean['target_model'][0]} @ {mean['target_tokens'][0]:,} "
                            f"({dom})", fmt=".2f", cmap="crest", vmin=0, vmax=1),
            f"Share of mixture pairs ordered as at the largest scale, per smaller (model, budget), domain {dom}; "
            f"{mean['n_pairs'][0]} pairs, orders by the seed-mean loss."))
    per_seed = dec.filter((pl.col("seed") != "mean") & (pl.col("domain") == dom))
    if per_seed.height:
        s.figures.append(Figure(
            figures.bars(per_seed.with_columns(pl.format("{} @ {}", "model", "tokens").alias("scale")), "scale",
                         "flip_share", f"Decisions a seed flips against the seed mean ({dom})", hue="seed"),
            "Per scale and seed: share of mixture-pair decisions that seed orders unlike the mean over seeds."))
    s.tables.append(Table.from_df(dec, "Pairwise decision accuracy (seed 'mean': orders by the seed-mean loss; "
                                       "n_flip there = pairs not ordered alike by every seed).",
                                  columns=("sweep", "domain", "model", "tokens", "target_model", "target_tokens",
                                           "seed", "n_pairs", "n_agree", "accuracy", "n_flip", "flip_share",
                                           "metric", "n_seeds"),
                                  sort=("domain", "seed", "model", "tokens")))
    return s


def section_learning(store: Store) -> Section:
    s = Section("learning", "Learning check",
                "Each run's final validation loss beside two baselines on the same validation tokens: the best "
                "unigram model of its training mixture (cross-entropy under the mixture's token frequencies, "
                "same tokenizer, additive smoothing alpha) and the uniform model (ln V). A run not below its "
                "unigram baseline has learned nothing beyond token frequencies: its ranking is no evidence "
                "about mixtures.")
    lc = result_table(store, "learning_check")
    if lc is None:
        s.empty = ("No learning check yet: it comes with the study or `stats.evidence.learning_check(store, "
                   "SWEEP)` after a sweep.")
        return s
    n_bad = int((~lc["below_unigram"]).sum())
    runs_bad = lc.filter(~pl.col("below_unigram"))["run_id"].n_unique()
    s.intro += (f" Here {n_bad} of {lc.height} (run, domain) results ({runs_bad} of {lc['run_id'].n_unique()} "
                f"runs) are NOT below their unigram baseline." if n_bad else
                f" Here every one of {lc.height} (run, domain) results is below its unigram baseline.")
    s.figures.append(Figure(figures.learning_check(lc), "Final validation loss of each run (dots, per model) "
                     "against its budget, with the unigram baseline of each mixture (grey ticks) and ln V (dashed); "
                     "runs at or above their unigram baseline are red."))
    s.tables.append(Table.from_df(lc.filter(~pl.col("below_unigram")) if n_bad else lc.head(0),
                                  "Flagged: runs not below the unigram baseline.",
                                  columns=("run_id", "domain", "loss", "unigram_loss", "uniform_loss",
                                           "gap_to_unigram"), sort=("domain", "run_id")))
    per_mix = (lc.group_by("mixture", "domain").agg(
        pl.col("unigram_loss").first(), pl.col("uniform_loss").first(), pl.col("loss").min().alias("best_run_loss"),
        pl.col("below_unigram").sum().alias("runs_below_unigram"), pl.len().alias("runs"), pl.col("alpha").first()))
    s.tables.append(Table.from_df(per_mix, "Baselines per mixture and domain, and how many runs beat the unigram "
                                           "baseline.", sort=("domain", "mixture")))
    return s

