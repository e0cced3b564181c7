"""The columns of every result table that more than one module reads: declared once, here.

A writer (stats.unigram, stats.dedup, train, stats.scaling, stats.evidence, stats.findings, stats.mixopt, synth) writes at least these
columns; a reader (reports, stats.evidence, stats.findings) names a column through these declarations instead of
spelling it again, so a renamed column fails a test instead of silently blanking a report section.
`Store.put_result` stamps `created_at` (UTC, naive timestamp) on every part it writes, so every table has
it and readers order rows by it. Tables not listed here are free-form (a new analysis may add its own).
"""

from __future__ import annotations

CREATED_AT = "created_at"  # stamped by Store.put_result on every result row

COLUMNS: dict[str, tuple[str, ...]] = {
    # stats.unigram
    "unigram_counts": ("corpus", "tokenizer", "n_tokens"),
    "unigram_comparisons": ("train", "test", "tokenizer", "n_tokens_train", "n_tokens_test", "n_types_train",
                            "type_coverage", "token_coverage", "kl_nats", "js_nats", "entropy_train_nats",
                            "entropy_test_nats", "alpha", "top_kl_tokens"),
    "unigram_shrinkage": ("synthetic", "source", "tokenizer", "budget_tokens", "types_at_budget_synthetic",
                          "types_at_budget_source", "types_ratio", "entropy_at_budget_synthetic_nats",
                          "entropy_at_budget_source_nats", "entropy_diff_nats"),
    # stats.dedup
    "dup_summary": ("corpus", "against", "mode", "n_docs", "dup_rate", "threshold"),
    "dup_source": ("corpus", "doc_id", "source_doc_id", "source_corpus", "jaccard_est"),
    # synth
    "synth_runs": ("run_id", "corpus", "source", "type", "generator", "started_at", "counts_by_reason"),
    # train
    "mixtures": ("mixture", "corpus", "kind", "synthetic_type", "share"),
    "runs": ("run_id", "sweep", "mixture", "model", "tokens", "seed", "status"),
    "run_metrics": ("run_id", "step", "tokens_seen", "split", "domain", "loss"),
    # stats.scaling
    "fits": ("sweep", "domain", "fit", "mixture", "model", "E", "B", "beta", "status"),
    "speedups": ("sweep", "domain", "model", "mixture", "synthetic_type", "synthetic_share", "tokens", "speedup",
                 "speedup_lo", "speedup_hi", "extrapolated", "status"),
    "optimal_ratios": ("sweep", "domain", "synthetic_type", "model", "tokens", "ratio_opt", "ratio_lo", "ratio_hi",
                       "status"),
    # stats.evidence
    "decisions": ("sweep", "domain", "model", "tokens", "target_model", "target_tokens", "seed", "n_pairs",
                  "n_agree", "accuracy", "n_flip", "flip_share", "metric"),
    "decision_snr": ("sweep", "domain", "metric", "model", "tokens", "n_mixtures", "n_seeds", "signal", "noise", "snr"),
    # stats.evals
    "evals": ("run_id", "sweep", "mixture", "model", "tokens", "seed", "content_hash", "task", "variant", "metric",
              "value", "n", "stderr", "chance", "higher_is_better", "dtype"),
    "learning_check": ("sweep", "run_id", "mixture", "model", "tokens", "seed", "domain", "loss", "unigram_loss",
                       "uniform_loss", "below_unigram", "alpha"),
    # stats.mixopt.probe
    "probes": ("probe", "domain", "trunk_run", "trunk_mixture", "candidate", "mixture", "share", "cooldown", "seed",
               "model", "tokens", "run_id", "branch_step", "probe_loss", "reference_loss", "delta", "full_run",
               "full_loss", "probe_rank", "full_rank"),
    "probe_decisions": ("probe", "domain", "model", "tokens", "seed", "n_pairs", "n_agree", "accuracy", "n_flip",
                        "flip_share"),
    "collapse_rounds": ("corpus", "synthetic_type", "round", "root_corpus", "tokenizer", "budget_tokens",
                        "types_at_budget", "entropy_at_budget_nats", "test", "kl_nats", "n_docs",
                        "root_jaccard_mean", "root_near_dup_share"),
    # stats.findings: the study's claims and their verdicts, in claim order, with the bootstrap that judged them
    "findings": ("position", "claim", "verdict", "counts", "measured", "n_boot", "seed"),
    # stats.mixopt
    "mixopt_swarms": ("sweep", "mixture", "kind", "source", "weight", "prior", "cap", "model", "tokens"),
    "mixopt_fits": ("fit", "origin", "objective", "regressor", "backend", "n_runs", "n_sources", "folds",
                    "cv_spearman", "cv_r2", "status", "note", "chosen"),
    "mixopt_predictions": ("fit", "regressor", "run", "fold", "observed", "predicted"),
    "mixopt_proposals": ("fit", "objective", "regressor", "source", "weight", "lo", "hi", "lower", "upper", "cap",
                         "prior", "predicted", "spec", "n_boot"),
    "mixopt_validations": ("fit", "sweep", "role", "mixture", "spec", "model", "tokens", "n_seeds", "loss_mean",
                           "predicted", "rank", "regret", "verdict", "verdict_detail", "against",
                           "decision_accuracy_proxy", "decision_accuracy_regressor"),
}


def missing_columns(table: str, columns) -> list[str]:
    """Declared columns of `table` that `columns` lacks (none for an undeclared table)."""
    have = set(columns)
    return [c for c in COLUMNS.get(table, ()) if c not in have]
