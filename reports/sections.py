"""Report sections on the corpora: inventory, unigram coverage and KL, near-duplicates, generation rounds.

Each `section_*` reads result tables through the store and returns a Section; with no data it says which
command makes it. The sections on training runs and their fits live in reports/sections_training.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from corpora.results import CREATED_AT
from corpora.store import Store
from reports import figures
from reports.page import Figure, Section, Table, format_cell, result_table


def section_inventory(store: Store) -> Section:
    s = Section("inventory", "Corpus inventory",
                "Every corpus in the store with its size; for synthetic corpora, how they were made.")
    corpora = store.corpora()
    if not corpora:
        s.empty = "The store has no corpora: run `python -m corpora demo` or `python -m corpora ingest`."
        return s
    counts = result_table(store, "unigram_counts")
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
    runs = result_table(store, "synth_runs")
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
    comp = result_table(store, "unigram_comparisons")
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
                             format_cell(t["kl_nats"])])
        if rows:
            s.tables.append(Table(["train", "test", "token", "count in test", "count in train", "KL contribution (nats)"],
                                  rows, "Test tokens that contribute most to KL(test || train), five per "
                                        "(single training set, test set) pair; count 0 = missing from training."))
    shrink = result_table(store, "unigram_shrinkage")
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
    summ = result_table(store, "dup_summary")
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
    src = result_table(store, "dup_source")
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


def section_collapse(store: Store) -> Section:
    s = Section("collapse", "Generation rounds (collapse)",
                "Rephrasing synthetic text again (`python -m synth generate --source hq --out hq2`) makes round 2, "
                "and so on; round 0 is the root natural corpus. Per type and round: distinct unigram types and "
                "entropy at an equal token budget (the chain's smallest corpus), KL(test || round) to each test set, "
                "and the share of documents that are near-duplicates of their root natural document: the "
                "low-level signature of model collapse (types and entropy shrink, KL grows).")
    cr = result_table(store, "collapse_rounds")
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
