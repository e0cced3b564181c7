"""The study's findings: each headline claim of Kang et al. (2025) beside what this store's results say,
with a noise-aware verdict (rule: stats.evidence) and the counts it rests on; result table `findings`.

Computed here from the result tables (runs and their metrics, mixtures, speed-ups, optimal ratios,
decisions, the learning check, unigram comparisons and shrinkage, generation runs) so that the report
only reads and renders them. The study runs this step right before the report:

    python -m stats.findings --store store
    python -m stats.findings --store store --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl

from corpora.cli_common import add_common_args, setup_logging
from corpora.results import declare
from corpora.results import table as results_table
from corpora.store import Store, resolve_store_path
from stats import evidence

TABLE = "findings"
declare(TABLE, {"position": "int, claim order", "claim": "str", "verdict": "str", "counts": "str",
                "measured": "str", "n_boot": "int", "seed": "int"},
        "The study's claims, one row each in claim order, with their verdicts and the bootstrap that judged them.")


def _table(store: Store, name: str) -> pl.DataFrame | None:
    df = store.read_result(name)
    return df if df is not None and df.height else None


def final_val_losses(store: Store) -> pl.DataFrame | None:
    """One row per (run, validation domain): its last validation loss, with the run's sweep, mixture, model,
    budget, seed and status."""
    runs, metrics = _table(store, "runs"), _table(store, "run_metrics")
    if runs is None or metrics is None:
        return None
    final = (metrics.filter(pl.col("split") == "val").sort("step")
             .group_by("run_id", "domain").agg(pl.col("loss").last(), pl.col("tokens_seen").last()))
    if "seed" not in runs.columns:
        runs = runs.with_columns(pl.lit(0).alias("seed"))
    return final.join(runs.select("run_id", "sweep", "mixture", "model", "tokens", "seed", "status"), on="run_id")


def loss_decisions(store: Store) -> pl.DataFrame | None:
    """The decisions made on validation loss (table `decisions`, metric 'loss')."""
    dec = _table(store, "decisions")
    if dec is not None and "metric" in dec.columns:
        dec = dec.filter(pl.col("metric").fill_null("loss") == "loss")
    return dec if dec is not None and dec.height else None


def composition(store: Store) -> dict[str, dict]:
    """{mixture: {"share": its synthetic share, "type": its synthetic type(s) joined by +, or None}}."""
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


def _num(v: float | None, digits: int) -> str:
    """A derived number as the findings print it: `digits` significant digits; a dash when absent."""
    if v is None:
        return "—"
    if not isinstance(v, float):
        return str(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}"


def _row(claim: str, v: dict | str, measured: str) -> dict:
    verdict = v if isinstance(v, str) else v["verdict"]
    counts = "" if isinstance(v, str) else evidence.counts_text(v)
    return {"claim": claim, "verdict": verdict, "counts": counts, "measured": measured}


def _all_or_none(n_ok: int, n: int, unit: str) -> dict:
    """A claim checked on exact numbers (no sampling noise): agrees when every item does, disagrees when none."""
    verdict = evidence.AGREES if n_ok == n else (evidence.DISAGREES if n_ok == 0 else evidence.MIXED)
    return {"verdict": verdict, "n_points": n, "n_agree": n_ok, "n_disagree": n - n_ok, "n_noise": 0, "unit": unit}


def compute_findings(store: Store, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """The study's headline claims beside what this run measured (claim, verdict, counts, measured), each
    with a noise-aware verdict (rule: stats.evidence) and the counts it rests on; writes nothing."""
    rows: list[dict] = []
    add = lambda claim, v, measured: rows.append(_row(claim, v, measured))  # noqa: E731
    final = final_val_losses(store)
    if final is not None:
        final = final.filter(pl.col("status") == "done")
    comp = composition(store)

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
                f"{r['model']} @ {int(r['tokens']):,}: {_num(r['speedup'], 3)}x [{_num(r.get('speedup_lo'), 3)}, "
                f"{_num(r.get('speedup_hi'), 3)}]" + (" (extrapolated)" if r.get("extrapolated") else "")
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
                            f"[{_num(r.get('ratio_lo'), 2)}, {_num(r.get('ratio_hi'), 2)}]"
                            for r in sub.iter_rows(named=True)))
        else:
            add(claim, evidence.NO_DATA, "no successful ratio fit")
    else:
        add(claim, evidence.NO_DATA, "no optimal_ratios table")

    dec = loss_decisions(store)
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


# ------------------------------------------------------------------- verdicts of the report's other sections
VERDICT_METRICS = ("acc_per_char", "correct_prob", "bpb")  # continuous downstream metrics the claims are judged on
DOWNSTREAM_TABLE, SCHEDULE_TABLE = "downstream_verdicts", "schedule_verdicts"
declare(DOWNSTREAM_TABLE, {"claim": "str", "task": "str, TASK:VARIANT", "metric": "str", "verdict": "str",
                           "counts": "str"},
        "One row per (claim, task, metric): the loss claims judged on continuous downstream metrics, paired by "
        "(model, budget, seed) with evidence.paired_verdict.")
declare(SCHEDULE_TABLE, {"domain": "str", "trunk_mixture": "str", "mixture": "str", "cooldown": "float",
                         "n_pairs": "int", "mean_static_minus_annealed": "float", "lo": "float", "hi": "float",
                         "verdict": "str", "counts": "str"},
        "One row per (domain, trunk, cooldown mixture, cooldown fraction): static minus annealed final loss, "
        "paired by (model, budget, lr, seed) with evidence.paired_verdict (> 0: annealing is better).")


def latest_evals(store) -> pl.DataFrame | None:
    """The `evals` table, latest row per (checkpoint, run, task, variant, metric), task as TASK:VARIANT."""
    ev = store.read_result("evals")
    if ev is None or not ev.height:
        return None
    ev = ev.sort("created_at").unique(["content_hash", "run_id", "task", "variant", "metric"], keep="last")
    return ev.with_columns(pl.format("{}:{}", "task", "variant").alias("task"))


def downstream_verdicts(store, n_boot: int = 2000, seed: int = 0) -> pl.DataFrame | None:
    """The report's loss claim "TYPE alone (100%) is not better than CC" on each task's continuous metrics,
    paired by (model, budget, seed) and judged by the same noise-aware rule (stats.evidence.paired_verdict);
    d > 0 when CC scores better (higher acc_per_char / correct_prob, lower bpb)."""
    runs = latest_evals(store)
    if runs is None:
        return None
    runs = runs.filter(pl.col("run_id").is_not_null() & pl.col("mixture").is_not_null())
    comp = composition(store)
    cc = {m for m, c in comp.items() if c["share"] == 0}
    rows = []
    for stype in sorted({c["type"] for c in comp.values() if c["type"]}):
        alone = {m for m, c in comp.items() if c["type"] == stype and c["share"] >= 0.99}
        sub = runs.filter(pl.col("metric").is_in(VERDICT_METRICS))
        for (task, metric), g in sub.partition_by(["task", "metric"], as_dict=True, maintain_order=True).items():
            val = {(r["mixture"], r["model"], r["tokens"], r["seed"]): r["value"] for r in g.iter_rows(named=True)}
            a = {k[1:]: v for k, v in val.items() if k[0] in alone}
            b = {k[1:]: v for k, v in val.items() if k[0] in cc}
            keys = sorted(set(a) & set(b), key=str)
            if not keys:
                continue
            sign = 1.0 if g["higher_is_better"][0] else -1.0
            v = evidence.paired_verdict([sign * (b[k] - a[k]) for k in keys], groups=[k[0] for k in keys],
                                        n_boot=n_boot, seed=seed)
            interval = f" [{v['lo']:+.4f}, {v['hi']:+.4f}]" if v["lo"] is not None else ""
            rows.append({"claim": f"{stype.upper()} alone (100%) is not better than CC", "task": task,
                         "metric": metric, "verdict": v["verdict"],
                         "counts": f"{v['n_agree']}/{v['n_pairs']} pairs as claimed, {v['n_disagree']} against; "
                                   f"mean CC advantage {v['mean']:+.4f}{interval}"})
    return pl.DataFrame(rows) if rows else None


def latest_runs(store) -> pl.DataFrame | None:
    runs = store.read_result("runs")
    if runs is None or not runs.height or "phases" not in runs.columns:
        return None
    return runs.sort("created_at").unique("run_id", keep="last").filter(pl.col("status") == "done")


def static_vs_annealed(store, n_boot: int = 2000, seed: int = 0) -> pl.DataFrame:
    """Per (domain, trunk mixture, cooldown mixture, cooldown fraction): paired differences static - annealed
    final loss (> 0: annealing is better) over (model, tokens, lr, seed), with `evidence.paired_verdict`."""
    runs, pts = latest_runs(store), evidence.final_points(store)
    if runs is None or pts is None:
        return pl.DataFrame()
    loss = {(r["run_id"], r["domain"]): r["loss"] for r in pts.iter_rows(named=True)}
    domains = sorted(set(pts["domain"]))
    key = ("model", "tokens", "lr_peak", "seed")
    static = {(r["mixture"], *(r[k] for k in key)): r["run_id"] for r in runs.filter(pl.col("phases").is_null())
              .iter_rows(named=True)}
    groups: dict[tuple, list] = {}
    for r in runs.filter(pl.col("phases").is_not_null()).iter_rows(named=True):
        phases = json.loads(r["phases"])
        if len(phases) != 2:
            continue
        other = static.get((phases[1]["mixture"], *(r[k] for k in key)))
        if other is None:
            continue
        for d in domains:
            a, s = loss.get((r["run_id"], d)), loss.get((other, d))
            if a is not None and s is not None:
                g = (d, phases[0]["mixture"], phases[1]["mixture"], round(1 - phases[0]["until"], 6))
                groups.setdefault(g, []).append((s - a, r["model"]))
    rows = []
    for (d, trunk, mixture, cooldown), pairs in sorted(groups.items()):
        v = evidence.paired_verdict([p[0] for p in pairs], [p[1] for p in pairs], n_boot=n_boot, seed=seed)
        rows.append({"domain": d, "trunk_mixture": trunk, "mixture": mixture, "cooldown": cooldown,
                     "n_pairs": v["n_pairs"], "mean_static_minus_annealed": v["mean"], "lo": v["lo"], "hi": v["hi"],
                     "verdict": v["verdict"], "counts": evidence.counts_text(v)})
    return pl.DataFrame(rows)


def write_findings(store: Store, n_boot: int = 2000, seed: int = 0) -> pl.DataFrame:
    """`compute_findings`, written to result table `findings` (one part, replaced on every run) in claim order
    (`position`) beside the bootstrap settings that produced it."""
    rows = compute_findings(store, n_boot=n_boot, seed=seed)
    df = pl.DataFrame([{"position": i, **r, "n_boot": n_boot, "seed": seed} for i, r in enumerate(rows)],
                      schema={"position": pl.Int64, "claim": pl.Utf8, "verdict": pl.Utf8, "counts": pl.Utf8,
                              "measured": pl.Utf8, "n_boot": pl.Int64, "seed": pl.Int64})
    store.put_result(TABLE, "all", df)
    # the verdicts the evals and schedules sections show: computed here, the report only renders them
    for table, rows in ((DOWNSTREAM_TABLE, downstream_verdicts(store, n_boot=n_boot, seed=seed)),
                        (SCHEDULE_TABLE, static_vs_annealed(store, n_boot=n_boot, seed=seed))):
        if rows is not None and rows.height:
            store.put_result(table, "all", rows)
        elif store.has_result(table, "all"):  # nothing to judge any more: no stale verdicts
            store.put_result(table, "all", pl.DataFrame(schema=dict.fromkeys(results_table(table).columns, pl.Utf8)))
    return df


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stats.findings",
        description="Judge the study's headline claims against the store's result tables and write them to "
                    "result table `findings`, which the report renders.",
        epilog="examples:\n  python -m stats.findings --store store\n"
               "  python -m stats.findings --store store --n-boot 500 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates per verdict interval")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    add_common_args(p)  # --no-progress: accepted, the bootstrap draws no bars
    args = p.parse_args(argv)
    setup_logging(args)
    df = write_findings(Store(resolve_store_path(args.store)), n_boot=args.n_boot, seed=args.seed)
    if args.json:
        print(json.dumps(df.to_dicts(), indent=2))
    else:
        width = max(len(v) for v in df["verdict"])
        for verdict, claim in df.select("verdict", "claim").iter_rows():
            print(f"{verdict.ljust(width)}  {claim}")
    return 0


if __name__ == "__main__":
    from corpora.exits import run_command

    sys.exit(run_command("", main))
