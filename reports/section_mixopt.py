"""Report section: mixture choice (stats.mixopt), read from the mixopt_* result tables.

Held-out predicted vs observed per regressor, the CV Spearman of each side by side (the unigram predictor
among them), the proposed weights with their bootstrap intervals, and the validation verdict.
"""

from __future__ import annotations

import polars as pl

from corpora.store import Store
from reports.page import Figure, Section, Table, result_table


def _latest(df: pl.DataFrame, key: str = "fit") -> pl.DataFrame:
    """The rows of the most recently written fit."""
    last = df.sort("created_at")[key][-1] if "created_at" in df.columns else df[key][-1]
    return df.filter(pl.col(key) == last)


def _predicted_vs_observed(pred: pl.DataFrame, fits: pl.DataFrame) -> str:
    import matplotlib.pyplot as plt

    from reports.figures import to_data_uri

    regs = [r for r in fits["regressor"].to_list() if r in set(pred["regressor"].to_list())]
    sp = dict(fits.select("regressor", "cv_spearman").iter_rows())
    fig, axes = plt.subplots(1, len(regs), figsize=(3.4 * len(regs) + 0.6, 3.4), squeeze=False)
    lo, hi = min(pred["observed"].min(), pred["predicted"].min()), max(pred["observed"].max(), pred["predicted"].max())
    pad = 0.05 * (hi - lo or 1)
    for ax, reg in zip(axes[0], regs):
        sub = pred.filter(pl.col("regressor") == reg)
        ax.scatter(sub["observed"], sub["predicted"], s=18, alpha=0.8, c=sub["fold"], cmap="tab10")
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=0.8, ls="--")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        rho = sp.get(reg)
        ax.set_title(f"{reg}: CV Spearman {rho:.2f}" if rho is not None else f"{reg}: constant prediction")
        ax.set_xlabel("observed")
        ax.set_ylabel("predicted (held out)")
    return to_data_uri(fig)


def _weights_figure(prop: pl.DataFrame) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    from reports.figures import to_data_uri

    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * prop.height + 2), 3.2))
    x = np.arange(prop.height)
    w = prop["weight"].to_numpy()
    lo, hi = prop["lo"].fill_nan(None).to_numpy(), prop["hi"].fill_nan(None).to_numpy()
    have = ~(np.isnan(lo.astype(float)) | np.isnan(hi.astype(float)))
    ax.bar(x - 0.2, w, width=0.4, label="proposal")
    ax.errorbar(x[have] - 0.2, w[have], yerr=[w[have] - lo[have].astype(float), hi[have].astype(float) - w[have]],
                fmt="none", ecolor="k", capsize=4, label="bootstrap interval")
    ax.bar(x + 0.2, prop["prior"].to_numpy(), width=0.4, alpha=0.5, label="prior")
    caps = prop["cap"].to_numpy()
    for xi, c in zip(x, caps):
        if c < 1:
            ax.plot([xi - 0.4, xi + 0.4], [c, c], color="r", lw=1.2)
    ax.set_xticks(x, prop["source"].to_list())
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of tokens")
    ax.legend(fontsize=8)
    ax.set_title(f"Proposed mixture ({prop['regressor'][0]}, objective {prop['objective'][0]})")
    return to_data_uri(fig)


def section_mixopt(store: Store):
    s = Section("mixopt", "Mixture choice",
                "A swarm of small proxy runs over mixtures of the training sources (Dirichlet around a prior, "
                "repetition caps, the natural source alone and the uniform mixture always in), regressors from "
                "mixture weights to the objective (the log-linear mixing law of Ye et al. 2024, boosted trees as "
                "in RegMix, and a predictor that trains no proxy: the mixture's unigram KL to the test domains from "
                "the stored counts), each judged by K-fold cross-validated Spearman; the best one proposes the "
                "mixture, with a bootstrap interval per weight; the proposal is then trained beside three "
                "baselines at a larger scale.")
    fits = result_table(store, "mixopt_fits")
    if fits is None:
        s.empty = ("No mixture fit yet: run `python -m stats.mixopt swarm NAME --sources cc,hq,...` and then "
                   "`python -m stats.mixopt fit --sweep NAME --validate` (the study does it in its mixture-choice step).")
        return s
    fits = _latest(fits)
    name = fits["fit"][0]
    ok = fits.filter(pl.col("cv_spearman").is_not_null())
    if ok.height:
        parts = [f"{r['regressor']} {r['cv_spearman']:.2f}" for r in ok.sort("cv_spearman", descending=True).to_dicts()]
        s.intro += (f" Fit {name} ({fits['origin'][0]}, {fits['n_runs'][0]} runs, objective {fits['objective'][0]}): "
                    f"CV Spearman {', '.join(parts)}.")
    pred = result_table(store, "mixopt_predictions")
    pred = pred.filter(pl.col("fit") == name) if pred is not None else None
    if pred is not None and pred.height:
        s.figures.append(Figure(_predicted_vs_observed(pred, fits),
                                "Held-out prediction of each run (its fold's model never saw it) against its "
                                "observed objective, per regressor; colours are folds, the dashed line is y = x."))
    s.tables.append(Table.from_df(fits, "Regressors: K-fold cross-validated Spearman and R² (pooled held-out "
                                        "predictions); 'chosen' proposes.",
                                  columns=("regressor", "backend", "cv_spearman", "cv_r2", "status", "chosen",
                                           "n_runs", "folds", "note")))
    prop = result_table(store, "mixopt_proposals")
    prop = prop.filter(pl.col("fit") == name) if prop is not None else None
    if prop is not None and prop.height:
        s.figures.append(Figure(_weights_figure(prop),
                                f"Proposed weights with {prop['ci'][0]:.0%} bootstrap intervals "
                                f"({prop['n_boot'][0]} refits on resampled runs) beside the prior; red lines "
                                f"are repetition caps. As a mixture: `--parts {prop['spec'][0]}`."))
        s.tables.append(Table.from_df(prop, "The proposal per source: weight, bootstrap interval, bounds, repetition "
                                            "cap and prior.",
                                      columns=("source", "weight", "lo", "hi", "lower", "upper", "cap", "prior")))
    val = result_table(store, "mixopt_validations")
    val = val.filter(pl.col("fit") == name) if val is not None else None
    if val is not None and val.height:
        p = val.filter(pl.col("role") == "proposal").to_dicts()[0]
        acc, reg = (("—" if v is None else f"{v:.2f}") for v in (p["decision_accuracy_proxy"],
                                                                 p["decision_accuracy_regressor"]))
        s.intro += (f" Validation at {p['model']} @ {p['tokens']:,} tokens ({p['n_seeds']} seeds): the proposal ranks "
                    f"{p['rank']} of {val.filter(pl.col('same_as').is_null()).height} distinct mixtures, regret "
                    f"{p['regret']:.4f}; against {p['against']}: {p['verdict']} ({p['verdict_detail']}). Proxy-to-"
                    f"target decision accuracy: swarm runs {acc}, regressor {reg}.")
        s.tables.append(Table.from_df(val, "Validation: the proposal and the baselines at the larger scale (seed "
                                           "mean; verdict of each baseline row: baseline minus proposal, 'agrees' = "
                                           "the proposal is better beyond noise).",
                                      columns=("role", "spec", "same_as", "model", "tokens", "n_seeds", "loss_mean",
                                               "loss_sd", "predicted", "rank", "regret", "verdict", "verdict_detail")))
    return s
