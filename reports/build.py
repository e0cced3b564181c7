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

from corpora.store import Store, atomic_path
from reports import figures

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
    comp = comp.sort("computed_at" if "computed_at" in comp.columns else "train").unique(
        ["train", "test", "tokenizer"], keep="last")
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
    if src is not None and "jaccard" in src.columns:
        import matplotlib.pyplot as plt
        import seaborn as sns

        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        sns.histplot(data=src.to_pandas(), x="jaccard", hue="corpus", bins=20, ax=ax, element="step")
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
    return final.join(runs.select("run_id", "sweep", "mixture", "model", "tokens", "status"), on="run_id")


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
                f"one line per mixture, one panel per validation domain ({sub['run_id'].n_unique()} runs)."))
    final = _final_val(store)
    s.tables.append(Table.from_df(runs, "Runs: budget, tokens seen, final training loss, wall time and throughput.",
                                  columns=("run_id", "sweep", "mixture", "model", "n_params", "tokens", "tokens_seen",
                                           "final_train_loss", "elapsed_s", "tokens_per_s", "status"),
                                  sort=("mixture", "model", "tokens")))
    if final is not None and final.height:
        done = final.filter(pl.col("status") == "done")
        pivot = done.pivot(on="domain", index=["mixture", "model", "tokens"], values="loss",
                           aggregate_function="last").sort("model", "tokens", "mixture")
        s.tables.append(Table.from_df(pivot, "Final validation loss per domain (nats/token)."))
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


# ---------------------------------------------------------------------------------------------- findings
def _loss_of(final: pl.DataFrame, mixture_pred: Callable[[dict], bool], comp: dict) -> dict:
    """{(model, tokens): mean final val loss over domains} for the mixture that matches."""
    out = {}
    for row in final.group_by("mixture", "model", "tokens").agg(pl.col("loss").mean()).iter_rows(named=True):
        c = comp.get(row["mixture"])
        if c is not None and mixture_pred(c):
            out[(row["model"], row["tokens"])] = row["loss"]
    return out


def _main_domain(df: pl.DataFrame) -> pl.DataFrame:
    """Rows of the average over validation domains ('avg'), or of the only domain there is."""
    domains = set(df["domain"].drop_nulls().to_list())
    if "avg" in domains:
        return df.filter(pl.col("domain") == "avg")
    return df if len(domains) <= 1 else df.head(0)


def findings(store: Store) -> list[dict]:
    """The study's headline claims beside what this run measured: agrees / disagrees / not enough data."""
    rows: list[dict] = []

    def add(claim: str, verdict: str, measured: str) -> None:
        rows.append({"claim": claim, "verdict": verdict, "measured": measured})

    final = _final_val(store)
    mixtures = _table(store, "mixtures")
    comp: dict[str, dict] = {}
    if mixtures is not None:
        for m, g in mixtures.group_by("mixture"):
            syn = g.filter(pl.col("kind") == "synthetic")
            comp[m[0]] = {"share": float(syn["share"].sum()) if syn.height else 0.0,
                          "type": "+".join(sorted(set(syn["synthetic_type"].drop_nulls().to_list()))) or None}

    def compare(claim, pred_a, pred_b, expect_a_higher: bool, what: str):
        if final is None or not comp:
            add(claim, "not enough data", "no finished runs with mixtures")
            return
        a, b = _loss_of(final, pred_a, comp), _loss_of(final, pred_b, comp)
        keys = sorted(set(a) & set(b))
        if not keys:
            add(claim, "not enough data", f"no model/budget with both {what}")
            return
        ok = [(a[k] > b[k]) == expect_a_higher for k in keys]
        verdict = "agrees" if all(ok) else "disagrees"  # a partial agreement is not hidden as agreement
        detail = "; ".join(f"{m} @ {t:,}: {a[(m, t)]:.3f} vs {b[(m, t)]:.3f}" for m, t in keys[:6])
        add(claim, verdict, f"{sum(ok)}/{len(ok)} (model, budget) pairs as claimed ({what}): {detail}")

    is_cc = lambda c: c["share"] == 0  # noqa: E731
    for stype, label in (("hq", "HQ"), ("qa", "QA")):
        compare(f"{label} alone (100%) is not better than CC (its loss is not lower)",
                lambda c, t=stype: c["type"] == t and c["share"] >= 0.99, is_cc, True, f"{label} 100% vs CC loss")
    compare("TXBK alone (100%) gives higher loss than CC",
            lambda c: c["type"] == "txbk" and c["share"] >= 0.99, is_cc, True, "TXBK 100% vs CC loss")
    compare("33% TXBK beats 67% TXBK",
            lambda c: c["type"] == "txbk" and 0.6 < c["share"] < 0.75,
            lambda c: c["type"] == "txbk" and 0.25 < c["share"] < 0.4, True, "TXBK 67% vs 33% loss")

    sp = _table(store, "speedups")
    if sp is not None and "speedup" in sp.columns:
        sp = _main_domain(sp)
        for stype, label in (("hq", "HQ"), ("qa", "QA")):
            sub = sp.filter((pl.col("synthetic_type") == stype) & (pl.col("synthetic_share").is_between(0.25, 0.4))
                            & (pl.col("status") == "ok"))
            if sub.height:
                vals = sub["speedup"].to_list()
                verdict = "agrees" if all(v >= 5 for v in vals) else "disagrees"
                add(f"~1/3 {label} + 2/3 CC reaches CC's loss 5-10x sooner", verdict,
                    f"speed-ups over CC at {sub.height} (model, budget) points: "
                    + ", ".join(f"{v:.2f}x" + (" (extrapolated)" if e else "")
                                for v, e in zip(vals, sub["extrapolated"].to_list())))
            else:
                add(f"~1/3 {label} + 2/3 CC reaches CC's loss 5-10x sooner", "not enough data",
                    f"no speed-up of a ~33% {label} mixture over CC")
    else:
        add("~1/3 rephrased + 2/3 CC reaches CC's loss 5-10x sooner", "not enough data", "no speed-ups table")

    ratios = _table(store, "optimal_ratios")
    if ratios is not None and "ratio_opt" in ratios.columns:
        sub = _main_domain(ratios).filter((pl.col("status") == "ok") & pl.col("synthetic_type").is_in(["hq", "qa"]))
        if sub.height:
            vals = sub["ratio_opt"].to_list()
            inside = [0.15 <= v <= 0.5 for v in vals]
            verdict = "agrees" if all(inside) else "disagrees"
            add("Good ratios for rephrased data (HQ/QA) converge to ~30%", verdict,
                "optimal shares: " + ", ".join(f"{t} {m} @ {int(d):,}: {v:.2f}" for t, m, d, v in
                                               sub.select("synthetic_type", "model", "tokens", "ratio_opt").iter_rows()))
        else:
            add("Good ratios for rephrased data (HQ/QA) converge to ~30%", "not enough data", "no successful ratio fit")
    else:
        add("Good ratios for rephrased data (HQ/QA) converge to ~30%", "not enough data", "no optimal_ratios table")

    shrink = _table(store, "unigram_shrinkage")
    if shrink is not None and "types_ratio" in shrink.columns:
        vals = shrink.select("synthetic", "types_ratio").iter_rows()
        vals = list(vals)
        ok = [r < 1 for _, r in vals]
        add("Synthetic data shrinks the unigram distribution against its CC source",
            "agrees" if all(ok) else "disagrees",
            "distinct types at equal budget, synthetic/source: " + ", ".join(f"{n} {r:.3f}" for n, r in vals))
    else:
        add("Synthetic data shrinks the unigram distribution against its CC source", "not enough data",
            "no unigram_shrinkage table")

    comp_u = _table(store, "unigram_comparisons")
    if comp_u is not None:
        single = comp_u.filter(~pl.col("train").str.contains(":"))
        rows_ok, details = [], []
        for test, g in single.group_by("test"):
            best_cov = g.sort("type_coverage", descending=True)["train"][0]
            best_kl = g.sort("kl_nats")["train"][0]
            rows_ok.append(best_cov == "cc" and best_kl == "cc")
            details.append(f"{test[0]}: widest coverage {best_cov}, lowest KL {best_kl}")
        if rows_ok and single["train"].n_unique() > 1:
            add("CC has the widest coverage and lowest KL against the test sets",
                "agrees" if all(rows_ok) else "disagrees", "; ".join(details))
        else:
            add("CC has the widest coverage and lowest KL against the test sets", "not enough data",
                "fewer than two single training sets compared")
    else:
        add("CC has the widest coverage and lowest KL against the test sets", "not enough data",
            "no unigram comparisons")

    synth = _table(store, "synth_runs")
    gens = sorted(set(synth["generator"].to_list())) if synth is not None else []
    add("An ~8B generator is as good as a 70B one", "not enough data",
        f"this run used {len(gens)} generator(s): {', '.join(Path(g).name for g in gens) or 'none'}; "
        "comparing generators needs runs from each")
    return rows


# ---------------------------------------------------------------------------------------------- build
SECTIONS = (section_inventory, section_unigram, section_dedup, section_training, section_scaling,
            section_speedups, section_ratios)


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
    out = Path(out)
    sections = build_sections(store)
    try:
        claims = findings(store)
    except Exception as e:
        log.exception("findings failed")
        claims = [{"claim": "(findings could not be computed)", "verdict": "not enough data", "measured": str(e)}]
    page = _TEMPLATES.get_template("report.html.j2").render(
        title=title, generated_at=dt.datetime.now().isoformat(timespec="seconds"), store=str(store.root),
        sections=sections, findings=claims, study_json=json.dumps(study, indent=2) if study else None,
        escape=html.escape)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
