"""The report section on mixtures that change during training (docs/schedules.md): static vs annealed
runs at equal total tokens with the noise-aware verdict, anneal probes against full runs, and the
per-phase token accounting of phased runs. Reads the `runs`, `run_metrics`, `probes` and
`probe_decisions` tables; computes nothing but paired differences and their verdicts."""

from __future__ import annotations

import json

import polars as pl

from reports import figures
from reports.page import Figure, Section, Table, result_table
from reports.sections_training import figure_domain
from stats import evidence
from stats.findings import latest_runs

INTRO = ("A phase schedule changes a run's data at phase boundaries; an anneal run reads its trunk mixture and "
         "then, for the last part of the steps (the learning-rate cooldown), another mixture. Static vs "
         "annealed: at the same model, budget and seed, the static run on a mixture against the run that spends "
         "that mixture only in the cooldown (the rest on the trunk mixture). Anneal probes value candidate "
         "corpora by such cooldowns off one trunk per seed; their ranking is checked against full runs on the "
         "same mixtures (pairwise decision accuracy).")


def phase_token_rows(runs: pl.DataFrame) -> pl.DataFrame:
    rows = []
    for r in runs.filter(pl.col("phases").is_not_null()).iter_rows(named=True):
        for p in json.loads(r["phase_tokens"] or "[]"):
            rows.append({"run_id": r["run_id"], "phase": p["phase"], "mixture": p["mixture"], "steps": p["steps"],
                         "tokens": p["tokens"], "sources": json.dumps(p["sources"]) if p["sources"] else None})
    return pl.DataFrame(rows)


def section_schedules(store):
    s = Section("schedules", "Phase schedules and anneal probes", INTRO)
    runs = latest_runs(store)
    probes, decisions = result_table(store, "probes"), result_table(store, "probe_decisions")
    if (runs is None or runs["phases"].is_null().all()) and probes is None:
        s.empty = ("No phased runs or anneal probes yet: add `anneal = [0.0, 0.2]` and `anneal_from = \"MIXTURE\"` to "
                   "a sweep grid, give `python -m train run --phases cc:0.8,cc67_hq33:1`, or run `python -m "
                   "stats.mixopt probe --trunk cc --candidates hq,qa --share 0.3 --cooldown 0.2 --seeds 0,1,2`.")
        return s
    if probes is not None:
        dom = figure_domain(probes)
        g = probes.filter((pl.col("domain") == dom) & (pl.col("candidate") != "(trunk)"))
        if g.height:
            s.figures.append(Figure(
                figures.bars(g.with_columns(pl.col("seed").cast(pl.Utf8)), "candidate", "delta",
                             f"Anneal probe: cooldown loss minus the trunk's own cooldown ({dom})", hue="seed",
                             ylabel="loss difference (nats)", ref=0.0),
                "Per candidate and seed: the final validation loss of the cooldown on the candidate mixture minus "
                "that of the trunk's own cooldown; below 0 the candidate helps."))
        summary = (probes.group_by("probe", "domain", "candidate")
                   .agg(pl.col("delta").mean().alias("delta_mean"), pl.col("full_loss").mean().alias("full_loss_mean"),
                        pl.col("probe_rank").first(), pl.col("full_rank").first(), pl.len().alias("n_seeds")))
        s.tables.append(Table.from_df(summary, "Anneal probes: seed means per candidate, the probe's ranking (by "
                                               "delta) and the full runs' ranking (by final loss), 1 = best.",
                                      sort=("probe", "domain", "probe_rank")))
    if decisions is not None:
        s.tables.append(Table.from_df(decisions, "Does the probe order the candidates as full runs do? Pairwise "
                                                 "decision accuracy of the probe (model 'probe') against the full "
                                                 "runs (seed mean; per seed: that seed's probe order).",
                                      columns=("probe", "domain", "model", "seed", "n_pairs", "n_agree", "accuracy",
                                               "n_flip", "flip_share"), sort=("probe", "domain", "model", "seed")))
    sva = result_table(store, "schedule_verdicts")  # stats.findings computes them
    if sva is not None and sva.height:
        s.tables.append(Table.from_df(sva, "Static vs annealed at equal total tokens: the static run's final loss "
                                           "minus the annealed run's, paired by (model, budget, lr, seed); > 0 "
                                           f"means annealing is better. Rule: {evidence.VERDICT_RULE}."))
    if runs is not None and not runs["phases"].is_null().all():
        s.tables.append(Table.from_df(phase_token_rows(runs), "Per-phase token accounting of phased runs: trained "
                                                              "tokens, and the stream tokens per source corpus of "
                                                              "the rows each phase read (exact counts).",
                                      sort=("run_id", "phase")))
    return s
