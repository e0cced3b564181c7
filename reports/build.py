"""Build the study report: one self-contained HTML file from what the store holds.

The report reads result tables through the store and draws them; it computes nothing of its own (the
fitted curves it draws are evaluated from the `fits` table's parameters). Every section is always
present: with no data it says what is missing and which command makes it; a section that fails to
render shows its error instead of vanishing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import logging
import math
import traceback
from collections.abc import Callable
from pathlib import Path

import jinja2
import polars as pl

from corpora.results import CREATED_AT
from corpora.store import Store, atomic_path
from reports import figures
from reports.section_schedules import section_schedules
from reports.section_evals import section_evals
from stats import evidence

log = logging.getLogger(__name__)

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
)


@dataclasses.dataclass
class Figure:
    src: str  # data URI
    caption: str


@dataclasses.dataclass
class Table:
    columns: list[str]
    rows: list[list]
    caption: str = ""

    @classmethod
    def from_df(cls, df: pl.DataFrame, caption: str = "", digits: int = 4, columns=None, sort=()) -> "Table":
        """A table of df; `columns` and `sort` name the wanted columns in order and the sort keys, and the
        ones a table lacks (older result tables, absent optional fields) are left out."""
        if columns is not None:
            df = df.select([c for c in columns if c in df.columns])
        keys = [c for c in sort if c in df.columns]
        if keys:
            df = df.sort(*keys)
        return cls(df.columns, [[_fmt(v, digits) for v in row] for row in df.iter_rows()], caption)

    def cell_class(self, value: str) -> str:
        return "long" if len(str(value)) > 60 else ""


@dataclasses.dataclass
class Section:
    id: str
    title: str
    intro: str
    figures: list[Figure] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    empty: str | None = None  # why there is nothing to show, and how to get it
    error: str | None = None


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        return f"{v:.{digits}g}"
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat(sep=" ", timespec="seconds") if isinstance(v, dt.datetime) else v.isoformat()
    return str(v)


def _table(store: Store, name: str) -> pl.DataFrame | None:
    df = store.read_result(name)
    return df if df is not None and df.height else None


def _loss_decisions(store: Store) -> pl.DataFrame | None:
    """The decisions made on validation loss (downstream metrics have their own section: section_evals)."""
    dec = _table(store, "decisions")
    if dec is not None and "metric" in dec.columns:
        dec = dec.filter(pl.col("metric").fill_null("loss") == "loss")
    return dec if dec is not None and dec.height else None


# ---------------------------------------------------------------------------------------------- sections
def section_inventory(store: Store) -> Section:
    s = Section("inventory", "Corpus inventory",
                "Every corpus in the store with its size; for synthetic corpora, how they were made.")
    corpora = store.corpora()
    if not corpora:
        s.empty = "The store has no corpora: run `python -m corpora demo` or `python -m corpora ingest`."
        return s
    counts = _table(store, "unigram_counts")
    tokens = {}
    if counts is not None and "n_tokens" in counts.columns:
        tokens = {(r["corpus"], r["tokenizer"]): r["n_tokens"] for r in
                  counts.group_by("corpus", "tokenizer").agg(pl.col("n_tokens").first()).iter_rows(named=True)}
    inv = pl.DataFrame([{
        "corpus": c.name, "kind": c.kind, "synthetic_type": c.synthetic_type, "role": c.role, "docs": c.n_docs,
        "MB": round(c.n_bytes / 1e6, 3), "mean bytes/doc": round(c.n_bytes / max(c.n_docs, 1)),
        "tokens": ", ".join(f"{n:,} ({t})" for (cn, t), n in tokens.items() if cn == c.name) or "—",
        "source": c.meta.get("source"),
    } for c in corpora])
    s.tables.append(Table.from_df(inv, "Documents, bytes and tokens per corpus (tokens as counted by stats.unigram, "
                                       "per tokenizer)."))
    runs = _table(store, "synth_runs")
    if runs is not None:
        # a corpus is made by one or more runs (a resumed run, a rerun that found everything done): add them up
        reasons = {}
        for corpus, counts in runs.select("corpus", "counts_by_reason").iter_rows():
            for k, v in json.loads(counts or "{}").items():
                reasons.setdefault(corpus, {}).setdefault(k, 0)
                reasons[corpus][k] += v
        per = (runs.sort("started_at").group_by("corpus", maintain_order=True).agg(
            pl.col("type").last(), pl.col("source").last(),
            pl.col("generator").last().map_elements(lambda g: Path(g).name if g else g, return_dtype=pl.Utf8),
            pl.col("backend").last(), pl.col("prompt_id").last(), pl.col("n_source_docs").max(),
            pl.col("n_docs_written").sum(), pl.col("n_requests_run").sum(), pl.col("n_requests_failed").sum(),
            pl.col("n_completion_tokens").sum(), pl.col("elapsed_s").sum(), pl.len().alias("n_runs"),
            pl.col("status").last().alias("last_status"))
            .with_columns(pl.col("corpus").map_elements(lambda c: json.dumps(reasons.get(c, {}), sort_keys=True),
                                                        return_dtype=pl.Utf8).alias("counts_by_reason")))
        s.tables.append(Table.from_df(per.sort("corpus"), "Synthetic corpora: generator, prompt template id, "
                                      "documents and completion tokens over all generation runs, and "
                                      "post-processing counts by reason (truncated, preamble stripped, empty ...)."))
    else:
        s.tables.append(Table(["note"], [["no generation runs yet: python -m synth generate --type hq --source cc --out hq"]]))
    lengths = pl.from_arrow(store.sql("SELECT corpus, n_bytes FROM documents"))
    if lengths.height:
        import matplotlib.pyplot as plt
        import seaborn as sns

        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        sns.boxplot(data=lengths.to_pandas(), x="corpus", y="n_bytes", ax=ax, showfliers=False)
        ax.set_yscale("log")
        ax.set_ylabel("document length (bytes)")
        s.figures.append(Figure(figures.to_data_uri(fig),
                                f"Document lengths per corpus ({lengths.height:,} documents; outliers hidden)."))
    return s


def section_unigram(store: Store) -> Section:
    s = Section("unigram", "Unigram coverage and KL divergence",
                "P is a test corpus's token unigram distribution, Q a training set's (a mixture's Q is the "
                "weighted mix of its components'). Type coverage: share of distinct test types seen in "
                "training; token coverage: share of test tokens whose type was seen; KL(P||Q) in nats with "
                "additive smoothing alpha of Q.")
    comp = _table(store, "unigram_comparisons")
    if comp is None:
        s.empty = "No unigram comparisons yet: `python -m stats.unigram --train cc --test wiki`."
        return s
    comp = comp.sort(CREATED_AT).unique(["train", "test", "tokenizer"], keep="last")  # latest of each pair
    for tokenizer, sub in comp.group_by("tokenizer"):
        tok = tokenizer[0] if isinstance(tokenizer, tuple) else tokenizer
        n_test = sub["n_tokens_test"].max()
        alpha = sub["alpha"][0]
        for metric, cmap, fmt in (("type_coverage", "crest", ".3f"), ("token_coverage", "crest", ".4f"),
                                  ("kl_nats", "rocket_r", ".3f")):
            s.figures.append(Figure(
                figures.heatmap(sub, "train", "test", metric, f"{metric} ({tok})", fmt=fmt, cmap=cmap),
                f"{metric} of every training set (rows) against every test set (columns), tokenizer {tok}, "
                f"alpha = {alpha:g}; test sets up to {n_test:,} tokens."))
        cols = ["train", "test", "n_tokens_train", "n_types_train", "type_coverage", "token_coverage", "kl_nats",
                "js_nats", "entropy_train_nats", "entropy_test_nats"]
        s.tables.append(Table.from_df(sub, f"All comparisons ({tok}).", columns=cols, sort=("test", "kl_nats")))
        rows = []
        for r in sub.filter(~pl.col("train").str.contains(":")).sort("kl_nats", descending=True).iter_rows(named=True):
            for t in json.loads(r.get("top_kl_tokens") or "[]")[:5]:
                rows.append([r["train"], r["test"], repr(t["token"]), t["count_test"], t["count_train"],
                             _fmt(t["kl_nats"])])
        if rows:
            s.tables.append(Table(["train", "test", "token", "count in test", "count in train", "KL contribution (nats)"],
                                  rows, "Test tokens that contribute most to KL(test || train), five per "
                                        "(single training set, test set) pair; count 0 = missing from training."))
    shrink = _table(store, "unigram_shrinkage")
    if shrink is not None:
        s.tables.append(Table.from_df(shrink, "Shrinkage: distinct types and entropy of each synthetic corpus "
                                      "against its source at an equal token budget (subsampled to the smaller "
                                      "corpus); types_ratio < 1 means the synthetic set is narrower.",
                                      columns=("synthetic", "source", "tokenizer", "budget_tokens",
                                               "types_at_budget_synthetic", "types_at_budget_source", "types_ratio",
                                               "entropy_at_budget_synthetic_nats", "entropy_at_budget_source_nats",
                                               "entropy_diff_nats")))
    return s


def section_dedup(store: Store) -> Section:
    s = Section("dedup", "Near-duplicates",
                "MinHash LSH over word shingles: near-duplicate clusters inside each corpus, the share of one "
                "corpus's documents with a near-duplicate in another (synthetic vs source, training vs test), "
                "and how far each synthetic document moved from its own source document.")
    summ = _table(store, "dup_summary")
    if summ is None:
        s.empty = "No near-duplicate analysis yet: `python -m stats.dedup --corpus cc`."
        return s
    within = summ.filter(pl.col("mode") == "within")
    if within.height:
        s.tables.append(Table.from_df(within, "Within each corpus: duplicate rate = documents beyond the first "
                                      "of each cluster / all documents.",
                                      columns=("corpus", "n_docs", "n_clusters", "n_docs_in_clusters", "n_duplicates",
                                               "dup_rate", "largest_cluster", "threshold", "num_perm", "ngram"),
                                      sort=("corpus",)))
        s.figures.append(Figure(figures.bars(within.sort("corpus"), "corpus", "dup_rate", "Near-duplicate rate"),
                                f"Near-duplicate rate per corpus at Jaccard threshold {within['threshold'][0]} "
                                f"({int(within['n_docs'].sum()):,} documents in all)."))
    across = summ.filter(pl.col("mode") == "across")
    if across.height:
        s.tables.append(Table.from_df(across, "Across corpora: share of the first corpus's documents with a "
                                      "near-duplicate in the second (contamination when the second is a test set).",
                                      columns=("corpus", "against", "n_docs_hashed", "n_against_docs", "n_with_match",
                                               "share_with_match", "n_pairs"), sort=("corpus", "against")))
    src = _table(store, "dup_source")
    jaccard = "jaccard_est"  # declared by stats.dedup.analyze (dup_source); tests/test_results.py holds it
    if src is not None and jaccard in src.columns and src[jaccard].drop_nulls().len():
        import matplotlib.pyplot as plt
        import seaborn as sns

        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        sns.histplot(data=src.drop_nulls(jaccard).to_pandas(), x=jaccard, hue="corpus", bins=20, binrange=(0, 1),
                     ax=ax, element="step")
        ax.set_xlabel("estimated Jaccard(synthetic doc, its source doc)")
        s.figures.append(Figure(figures.to_data_uri(fig),
                                f"How far generation moved the text: Jaccard of {src.height:,} synthetic documents "
                                "against their own source documents (1 = copied, 0 = nothing shared)."))
    return s


def _ok(df: pl.DataFrame) -> pl.DataFrame:
    """The rows of a fit table whose status is ok (all rows of a table without a status column)."""
    return df.filter(pl.col("status") == "ok") if "status" in df.columns else df


def _figure_domain(df: pl.DataFrame) -> str:
    """The domain a figure shows: the average over test domains when there is one, else the first
    (`_main_domain`, for findings, instead refuses to pick among several domains)."""
    return "avg" if "avg" in df["domain"].to_list() else df["domain"][0]


def _final_val(store: Store) -> pl.DataFrame | None:
    runs, metrics = _table(store, "runs"), _table(store, "run_metrics")
    if runs is None or metrics is None:
        return None
    final = (metrics.filter(pl.col("split") == "val").sort("step")
             .group_by("run_id", "domain").agg(pl.col("loss").last(), pl.col("tokens_seen").last()))
    if "seed" not in runs.columns:
        runs = runs.with_columns(pl.lit(0).alias("seed"))
    return final.join(runs.select("run_id", "sweep", "mixture", "model", "tokens", "seed", "status"), on="run_id")


def section_training(store: Store) -> Section:
    s = Section("training", "Training curves",
                "Validation loss (nats/token) during training, per mixture and per validation domain.")
    runs, metrics = _table(store, "runs"), _table(store, "run_metrics")
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
    final = _final_val(store)
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
    fits = _table(store, "fits")
    if fits is None:
        s.empty = "No fits yet: `python -m stats.scaling --runs SWEEP` after a sweep."
        return s
    ok = _ok(fits)
    s.tables.append(Table.from_df(fits, "Fitted parameters with bootstrap intervals (E = irreducible loss).",
                                  columns=("sweep", "domain", "fit", "mixture", "model", "n_points", "E", "E_lo",
                                           "E_hi", "B", "beta", "beta_lo", "beta_hi", "A", "alpha", "status", "error"),
                                  sort=("domain", "fit", "mixture", "model")))
    final = _final_val(store)
    data = ok.filter(pl.col("fit") == "data") if "fit" in ok.columns else ok
    if final is not None and data.height and {"E", "B", "beta"} <= set(data.columns):
        domain = _figure_domain(data)
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
    sp = _table(store, "speedups")
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
        domain = _figure_domain(ok)
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
    r = _table(store, "optimal_ratios")
    if r is None:
        s.empty = "No optimal ratios yet: they come with `python -m stats.scaling --runs SWEEP`."
        return s
    s.tables.append(Table.from_df(r, "Optimal synthetic share.",
                                  columns=("domain", "synthetic_type", "model", "n_params", "tokens", "ratio_opt",
                                           "ratio_lo", "ratio_hi", "loss_opt", "status", "error"),
                                  sort=("domain", "synthetic_type", "model", "tokens")))
    ok = _ok(r)
    if ok.height and {"ratio_opt", "n_params"} <= set(ok.columns):
        domain = _figure_domain(ok)
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
    dec = _loss_decisions(store)
    if dec is None:
        s.empty = ("No decision table yet: it comes with the study (`python -m reports study`) or "
                   "`stats.evidence.decisions(store, SWEEP)` after a sweep.")
        return s
    dom = _figure_domain(dec)
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
    lc = _table(store, "learning_check")
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


def section_collapse(store: Store) -> Section:
    s = Section("collapse", "Generation rounds (collapse)",
                "Rephrasing synthetic text again (`python -m synth generate --source hq --out hq2`) makes round 2, "
                "and so on; round 0 is the root natural corpus. Per type and round: distinct unigram types and "
                "entropy at an equal token budget (the chain's smallest corpus), KL(test || round) to each test set, "
                "and the share of documents that are near-duplicates of their root natural document: the "
                "low-level signature of model collapse (types and entropy shrink, KL grows).")
    cr = _table(store, "collapse_rounds")
    if cr is None:
        s.empty = ("No generation rounds analysed yet: generate a round 2 (`python -m synth generate --type hq "
                   "--source hq --out hq2`), then `python -m reports study` (or `stats.evidence.collapse_rounds`).")
        return s
    s.figures.append(Figure(figures.collapse(cr), "Per synthetic type (colour) and round: types and entropy at the "
                     "chain's equal budget, KL to the test sets (mean over them) and near-duplicate share against "
                     "the root documents."))
    s.tables.append(Table.from_df(cr, "Rounds: unigram types and entropy at an equal budget, KL to each test set, "
                                      "Jaccard to the root natural document.",
                                  columns=("synthetic_type", "round", "corpus", "root_corpus", "n_docs", "budget_tokens",
                                           "types_at_budget", "entropy_at_budget_nats", "test", "kl_nats",
                                           "root_jaccard_mean", "root_near_dup_share", "n_root_matched"),
                                  sort=("synthetic_type", "round", "test")))
    return s


# ---------------------------------------------------------------------------------------------- findings
def _composition(store: Store) -> dict[str, dict]:
    mixtures = _table(store, "mixtures")
    comp: dict[str, dict] = {}
    if mixtures is not None:
        for m, g in mixtures.group_by("mixture"):
            syn = g.filter(pl.col("kind") == "synthetic")
            comp[m[0]] = {"share": float(syn["share"].sum()) if syn.height else 0.0,
                          "type": "+".join(sorted(set(syn["synthetic_type"].drop_nulls().to_list()))) or None}
    return comp


def _loss_by_key(final: pl.DataFrame, pred: Callable[[dict], bool], comp: dict) -> dict:
    """{(model, tokens, seed): mean final val loss over domains} of the runs whose mixture matches."""
    out = {}
    per_run = final.group_by("run_id", "mixture", "model", "tokens", "seed").agg(pl.col("loss").mean())
    for row in per_run.iter_rows(named=True):
        c = comp.get(row["mixture"])
        if c is not None and pred(c):
            out[(row["model"], row["tokens"], row["seed"])] = row["loss"]
    return out


def _main_domain(df: pl.DataFrame) -> pl.DataFrame:
    """Rows of the average over validation domains ('avg'), or of the only domain there is."""
    domains = set(df["domain"].drop_nulls().to_list())
    if "avg" in domains:
        return df.filter(pl.col("domain") == "avg")
    return df if len(domains) <= 1 else df.head(0)


def _row(claim: str, v: dict | str, measured: str) -> dict:
    verdict = v if isinstance(v, str) else v["verdict"]
    counts = "" if isinstance(v, str) else evidence.counts_text(v)
    return {"claim": claim, "verdict": verdict, "counts": counts, "measured": measured,
            "css": verdict.split(" ")[0].replace(" ", "-") if verdict != evidence.NO_DATA else "not-enough-data"}


def _all_or_none(n_ok: int, n: int, unit: str) -> dict:
    """A claim checked on exact numbers (no sampling noise): agrees when every item does, disagrees when none."""
    verdict = evidence.AGREES if n_ok == n else (evidence.DISAGREES if n_ok == 0 else evidence.MIXED)
    return {"verdict": verdict, "n_points": n, "n_agree": n_ok, "n_disagree": n - n_ok, "n_noise": 0, "unit": unit}


def findings(store: Store, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """The study's headline claims beside what this run measured, each with a noise-aware verdict
    (rule: stats.evidence) and the counts it rests on."""
    rows: list[dict] = []
    add = lambda claim, v, measured: rows.append(_row(claim, v, measured))  # noqa: E731
    final = _final_val(store)
    if final is not None:
        final = final.filter(pl.col("status") == "done")
    comp = _composition(store)

    def compare(claim, pred_a, pred_b, what: str):
        """Claim: mixture a's loss is higher than b's; paired by (model, budget, seed)."""
        if final is None or not final.height or not comp:
            add(claim, evidence.NO_DATA, "no finished runs with mixtures")
            return
        a, b = _loss_by_key(final, pred_a, comp), _loss_by_key(final, pred_b, comp)
        keys = sorted(set(a) & set(b), key=str)
        if not keys:
            add(claim, evidence.NO_DATA, f"no (model, budget, seed) with both {what}")
            return
        v = evidence.paired_verdict([a[k] - b[k] for k in keys], groups=[k[0] for k in keys], n_boot=n_boot,
                                    seed=seed)
        detail = "; ".join(f"{m} @ {t:,} s{sd}: {a[(m, t, sd)]:.3f} vs {b[(m, t, sd)]:.3f}" for m, t, sd in keys[:6])
        add(claim, v, f"{what}, difference = first - second (claimed > 0): {detail}"
            + (f" ... ({len(keys)} pairs)" if len(keys) > 6 else ""))

    is_cc = lambda c: c["share"] == 0  # noqa: E731
    for stype, label in (("hq", "HQ"), ("qa", "QA")):
        compare(f"{label} alone (100%) is not better than CC (its loss is higher)",
                lambda c, t=stype: c["type"] == t and c["share"] >= 0.99, is_cc, f"{label} 100% vs CC loss")
    compare("TXBK alone (100%) gives higher loss than CC",
            lambda c: c["type"] == "txbk" and c["share"] >= 0.99, is_cc, "TXBK 100% vs CC loss")
    compare("33% TXBK beats 67% TXBK",
            lambda c: c["type"] == "txbk" and 0.6 < c["share"] < 0.75,
            lambda c: c["type"] == "txbk" and 0.25 < c["share"] < 0.4, "TXBK 67% vs 33% loss")

    sp = _table(store, "speedups")
    for stype, label in (("hq", "HQ"), ("qa", "QA")):
        claim = f"~1/3 {label} + 2/3 CC reaches CC's loss 5-10x sooner"
        if sp is None or "speedup" not in sp.columns:
            add(claim, evidence.NO_DATA, "no speed-ups table")
            continue
        sub = _main_domain(sp).filter((pl.col("synthetic_type") == stype)
                                      & (pl.col("synthetic_share").is_between(0.25, 0.4)) & (pl.col("status") == "ok"))
        if not sub.height:
            add(claim, evidence.NO_DATA, f"no speed-up of a ~33% {label} mixture over CC")
            continue
        pts = [(r["speedup"], r.get("speedup_lo"), r.get("speedup_hi")) for r in sub.iter_rows(named=True)]
        v = evidence.interval_verdict(pts, low=5.0)
        add(claim, v, "a point agrees when its bootstrap interval (over runs and seeds) lies at or above 5x, "
            "disagrees when below: " + ", ".join(
                f"{r['model']} @ {int(r['tokens']):,}: {_fmt(r['speedup'], 3)}x [{_fmt(r.get('speedup_lo'), 3)}, "
                f"{_fmt(r.get('speedup_hi'), 3)}]" + (" (extrapolated)" if r.get("extrapolated") else "")
                for r in sub.iter_rows(named=True)))

    ratios = _table(store, "optimal_ratios")
    claim = "Good ratios for rephrased data (HQ/QA) converge to ~30%"
    if ratios is not None and "ratio_opt" in ratios.columns:
        sub = _main_domain(ratios).filter((pl.col("status") == "ok") & pl.col("synthetic_type").is_in(["hq", "qa"]))
        if sub.height:
            pts = [(r["ratio_opt"], r.get("ratio_lo"), r.get("ratio_hi")) for r in sub.iter_rows(named=True)]
            add(claim, evidence.interval_verdict(pts, low=0.15, high=0.5),
                "a point agrees when its bootstrap interval lies within 15-50%, disagrees when outside: "
                + ", ".join(f"{r['synthetic_type']} {r['model']} @ {int(r['tokens']):,}: {r['ratio_opt']:.2f} "
                            f"[{_fmt(r.get('ratio_lo'), 2)}, {_fmt(r.get('ratio_hi'), 2)}]"
                            for r in sub.iter_rows(named=True)))
        else:
            add(claim, evidence.NO_DATA, "no successful ratio fit")
    else:
        add(claim, evidence.NO_DATA, "no optimal_ratios table")

    dec = _loss_decisions(store)
    claim = "Mixture rankings at small scale predict the largest scale (DataDecide: ~80% pairwise accuracy)"
    if dec is not None:
        mean = _main_domain(dec).filter(pl.col("seed") == "mean")
        seeds = _main_domain(dec).filter((pl.col("seed") != "mean") & (pl.col("model") == pl.col("target_model"))
                                         & (pl.col("tokens") == pl.col("target_tokens")))
        if mean.height:
            n_agree, n_pairs = int(mean["n_agree"].sum()), int(mean["n_pairs"].sum())
            acc = n_agree / n_pairs
            v = {"verdict": evidence.AGREES if acc >= 0.8 else (evidence.DISAGREES if acc <= 0.6 else evidence.MIXED),
                 "n_points": n_pairs, "n_agree": n_agree, "n_disagree": n_pairs - n_agree, "n_noise": 0,
                 "unit": "pair decisions (as at the largest scale)"}
            flips = (f"; at the largest scale single seeds flip {seeds['n_flip'].sum()}/{seeds['n_pairs'].sum()} "
                     "pair decisions against the seed mean" if seeds.height else "; one seed: no flip rate")
            add(claim, v, f"pairwise decision accuracy {acc:.0%} over {mean.height} smaller scales against "
                f"{mean['target_model'][0]} @ {mean['target_tokens'][0]:,} (per scale "
                f"{mean['accuracy'].min():.0%}-{mean['accuracy'].max():.0%}){flips}. Agrees at >= 80%, "
                "disagrees at <= 60% (a coin flip is 50%), mixed between.")
        else:
            add(claim, evidence.NO_DATA, "fewer than two scales with two mixtures")
    else:
        add(claim, evidence.NO_DATA, "no decisions table")

    lc = _table(store, "learning_check")
    claim = "The models learned more than token frequencies (final loss below the mixture's unigram loss)"
    if lc is not None:
        n_ok = int(lc["below_unigram"].sum())
        v = _all_or_none(n_ok, lc.height, "(run, domain) results")
        add(claim, v, f"a precondition of every claim above, not a claim of the paper: {lc.height - n_ok} (run, domain) "
            f"results are not below their unigram baseline (median unigram loss {lc['unigram_loss'].median():.3f}, "
            f"ln V = {lc['uniform_loss'][0]:.3f}, median final loss {lc['loss'].median():.3f}); their rankings say "
            "nothing beyond token frequencies")
    else:
        add(claim, evidence.NO_DATA, "no learning_check table")

    shrink = _table(store, "unigram_shrinkage")
    claim = "Synthetic data shrinks the unigram distribution against its CC source"
    if shrink is not None and "types_ratio" in shrink.columns:
        vals = list(shrink.select("synthetic", "types_ratio").iter_rows())
        n_ok = sum(r < 1 for _, r in vals)
        v = _all_or_none(n_ok, len(vals), "synthetic corpora")
        add(claim, v, "distinct types at equal budget (exact rarefaction expectation, no sampling noise), "
            "synthetic/source: " + ", ".join(f"{n} {r:.3f}" for n, r in vals))
    else:
        add(claim, evidence.NO_DATA, "no unigram_shrinkage table")

    comp_u = _table(store, "unigram_comparisons")
    claim = "CC has the widest coverage and lowest KL against the test sets"
    if comp_u is not None:
        single = comp_u.filter(~pl.col("train").str.contains(":"))
        oks, details = [], []
        for test, g in single.group_by("test"):
            best_cov = g.sort("type_coverage", descending=True)["train"][0]
            best_kl = g.sort("kl_nats")["train"][0]
            oks.append(best_cov == "cc" and best_kl == "cc")
            details.append(f"{test[0]}: widest coverage {best_cov}, lowest KL {best_kl}")
        if oks and single["train"].n_unique() > 1:
            n_ok = sum(oks)
            v = _all_or_none(n_ok, len(oks), "test sets")
            add(claim, v, "; ".join(details))
        else:
            add(claim, evidence.NO_DATA, "fewer than two single training sets compared")
    else:
        add(claim, evidence.NO_DATA, "no unigram comparisons")

    synth = _table(store, "synth_runs")
    gens = sorted(set(synth["generator"].to_list())) if synth is not None else []
    add("An ~8B generator is as good as a 70B one", evidence.NO_DATA,
        f"this run used {len(gens)} generator(s): {', '.join(Path(g).name for g in gens) or 'none'}; "
        "comparing generators needs runs from each")
    return rows


# ---------------------------------------------------------------------------------------------- build
from reports.section_mixopt import section_mixopt  # noqa: E402 (its module imports Section from here lazily)

SECTIONS = (section_inventory, section_unigram, section_dedup, section_training, section_learning, section_scaling,
            section_speedups, section_ratios, section_decisions, section_evals, section_collapse, section_schedules,
            section_mixopt)


def build_sections(store: Store) -> list[Section]:
    out = []
    for fn in SECTIONS:
        try:
            out.append(fn(store))
        except Exception as e:  # one broken section must not hide the others
            log.exception("section %s failed", fn.__name__)
            name = fn.__name__.removeprefix("section_")
            out.append(Section(name, name.title(), "", error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
    return out


def build_report(store: Store, out: str | Path, title: str = "synthmix study report",
                 study: dict | None = None) -> Path:
    """Render the report to `out` (atomically) and return its path."""
    store.check_outside(out)  # a report path inside the store could replace a shard or a result part
    out = Path(out)
    sections = build_sections(store)
    try:
        claims = findings(store)
    except Exception as e:
        log.exception("findings failed")
        claims = [_row("(findings could not be computed)", evidence.NO_DATA, str(e))]
    page = _TEMPLATES.get_template("report.html.j2").render(
        title=title, generated_at=dt.datetime.now().isoformat(timespec="seconds"), store=str(store.root),
        sections=sections, findings=claims, verdict_rule=evidence.VERDICT_RULE,
        study_json=json.dumps(study, indent=2) if study else None,
        escape=html.escape)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
