"""Evidence a researcher can act on: noise-aware verdicts, decision reliability, learning checks and
collapse rounds.

- **Verdicts** (`paired_verdict`, `interval_verdict`). A claim about losses is tested on paired
  differences: runs of the two mixtures with the same (model, budget, seed), d_i oriented so that d_i > 0
  is what the claim says. The rule, in order:
    1. fewer than `min_pairs` (3) pairs: "inconclusive (within noise)" (no noise estimate);
    2. a 95% percentile bootstrap interval of the mean of d (resampling pairs; seeded), and the same per
       group (model): if one group's interval lies above 0 and another's below 0: "mixed";
    3. the interval above 0: "agrees" if more pairs agree (d > 0) than disagree, else "mixed";
       below 0: "disagrees" if more pairs disagree than agree, else "mixed";
    4. otherwise (the interval contains 0): "inconclusive (within noise)".
  So a verdict never contradicts its own counts: "agrees" always has a majority of agreeing pairs.
  A claim about a derived number with its own interval (a speed-up of at least 5x, an optimal share near
  30%) uses `interval_verdict`: each point agrees when its interval lies inside the claimed range,
  disagrees when it lies outside, is within noise otherwise; "agrees" when most points agree and none
  disagrees, "disagrees" the other way round, "mixed" when some of each, else "inconclusive (within noise)".
- **Decisions** (`decision_table`, DataDecide, Magnusson et al. 2025): for every pair of mixtures, does
  their order by final loss (seed mean) at a smaller scale (model, budget) match their order at the
  largest scale of the sweep (largest model, largest budget)? Pairwise decision accuracy per smaller
  scale; per seed, the accuracy of that seed alone and the share of decisions it flips against the seed
  mean at the same scale. Table `decisions`, column `metric`: 'loss' (the final validation loss, per
  domain) and every downstream metric of table `evals` (per task: acc, acc_per_char, correct_prob, margin,
  bpb), so a decision can be made on the metric that is most reliable at this scale; beside it table
  `decision_snr`: per metric and scale, the spread across mixtures over the spread across seeds.
- **Learning check** (`learning_check`): per run and validation domain, the cross-entropy of the
  evaluated validation tokens under the training mixture's unigram distribution (counted from the
  mixture's token array, same tokenizer, additive smoothing q(v) = (c(v) + alpha) / (N + alpha V),
  alpha = 0.5 by default (Krichevsky-Trofimov)) and under the uniform model (ln V). A run whose final
  loss is not below the unigram loss has learned nothing beyond token frequencies. Table `learning_check`.
- **Collapse rounds** (`collapse_rounds`): per synthetic type and generation round (round 0 = the root
  natural corpus), unigram types and entropy at an equal token budget (the smallest corpus of the chain),
  KL(test || corpus) to each test set, and the share of documents that are near-duplicates of their root
  natural document (MinHash Jaccard >= threshold) with the mean Jaccard. Table `collapse_rounds`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from corpora.names import part_key
from corpora.results import declare

log = logging.getLogger(__name__)

_DECISION = {"model": "str", "n_params": "float", "tokens": "int", "target_model": "str", "target_tokens": "int",
             "n_seeds": "int", "n_pairs": "int", "seed": "str, a seed or 'mean'", "n_agree": "int",
             "accuracy": "float", "n_flip": "int", "flip_share": "float"}  # what decision_table gives
declare("decisions", {"sweep": "str", "domain": "str", **_DECISION, "metric": "str, 'loss' or an eval metric"},
        "One row per (metric, domain, smaller scale, seed): share of mixture pairs ordered as at the target scale.")
declare("decision_snr", {
    "sweep": "str", "domain": "str", "metric": "str", "model": "str", "tokens": "int", "n_mixtures": "int",
    "n_seeds": "int", "signal": "float", "noise": "float", "snr": "float"},
    "One row per (metric, domain, scale): spread across mixtures over spread across seeds.")
declare("learning_check", {
    "sweep": "str", "run_id": "str", "mixture": "str", "model": "str", "tokens": "int", "seed": "int",
    "domain": "str", "loss": "float", "unigram_loss": "float", "uniform_loss": "float ln V", "gap_to_unigram": "float",
    "below_unigram": "bool", "below_uniform": "bool", "alpha": "float", "vocab_size": "int", "n_eval_tokens": "int",
    "n_mixture_tokens": "int"},
    "One row per (run, domain): the final validation loss beside the unigram and uniform baselines.")
declare("collapse_rounds", {
    "corpus": "str", "synthetic_type": "str", "round": "int", "root_corpus": "str", "tokenizer": "str",
    "budget_tokens": "int", "n_tokens": "int", "n_docs": "int", "types_at_budget": "float",
    "entropy_at_budget_nats": "float", "root_jaccard_mean": "float", "root_near_dup_share": "float",
    "n_root_matched": "int", "threshold": "float", "alpha": "float", "test": "str", "kl_nats": "float"},
    "One row per (generation round, test corpus) of a chain of synthetic corpora grown from one root.")

AGREES, DISAGREES, MIXED, INCONCLUSIVE, NO_DATA = (
    "agrees", "disagrees", "mixed", "inconclusive (within noise)", "not enough data")
VERDICT_RULE = (
    "paired by (model, budget, seed); 95% bootstrap interval of the mean difference: above 0 on the claimed "
    "side = agrees, on the other side = disagrees, containing 0 = inconclusive (within noise); models with "
    "opposite significant signs = mixed; fewer than 3 pairs = inconclusive")


@dataclasses.dataclass
class EvidenceConfig:
    """The [evidence] section of a study file; every field has a default."""

    n_boot: int = 2000  # bootstrap replicates for verdict intervals
    ci: float = 0.95
    seed: int = 0
    min_pairs: int = 3
    alpha: float = 0.5  # additive smoothing of the mixture unigram in the learning check
    collapse_types: list[str] = dataclasses.field(default_factory=lambda: ["hq"])  # study: types given a round 2
    collapse_rounds: int = 2  # study: generation rounds per collapse type (1: no extra round)
    collapse_limit: int | None = None  # study: source documents per extra round (None: [generate] limit)


# ------------------------------------------------------------------------------------------------ verdicts
def _boot_ci(d: np.ndarray, n_boot: int, ci: float, rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(axis=1)
    q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]
    lo, hi = np.percentile(means, q)
    return float(lo), float(hi)


def paired_verdict(diffs: Sequence[float], groups: Sequence | None = None, n_boot: int = 2000, ci: float = 0.95,
                   seed: int = 0, min_pairs: int = 3) -> dict:
    """Verdict on paired differences, each oriented so that > 0 is what the claim says (rule: module doc).

    Returns verdict, n_pairs, n_agree, n_disagree, mean, lo, hi and the groups with a significant sign."""
    d = np.asarray(diffs, dtype=float)
    out = {"n_pairs": int(len(d)), "n_agree": int((d > 0).sum()), "n_disagree": int((d < 0).sum()),
           "mean": float(d.mean()) if len(d) else None, "lo": None, "hi": None, "groups_pos": [], "groups_neg": []}
    if not len(d):
        return {**out, "verdict": NO_DATA}
    if len(d) < min_pairs:
        return {**out, "verdict": INCONCLUSIVE}
    rng = np.random.default_rng(seed)
    lo, hi = _boot_ci(d, n_boot, ci, rng)
    out.update(lo=lo, hi=hi)
    if groups is not None:
        g = np.asarray(groups, dtype=object)
        for key in sorted(set(g.tolist()), key=str):
            sub = d[g == key]
            if len(sub) < min_pairs:
                continue
            glo, ghi = _boot_ci(sub, n_boot, ci, rng)
            if glo > 0:
                out["groups_pos"].append(key)
            elif ghi < 0:
                out["groups_neg"].append(key)
    if out["groups_pos"] and out["groups_neg"]:
        verdict = MIXED
    elif lo > 0:
        verdict = AGREES if out["n_agree"] > out["n_disagree"] else MIXED
    elif hi < 0:
        verdict = DISAGREES if out["n_disagree"] > out["n_agree"] else MIXED
    else:
        verdict = INCONCLUSIVE
    return {**out, "verdict": verdict}


def interval_verdict(points: Sequence[tuple[float, float | None, float | None]], low: float = -math.inf,
                     high: float = math.inf) -> dict:
    """Verdict on values with their own intervals against a claimed range [low, high] (rule: module doc)."""
    n_agree = n_disagree = n_noise = 0
    for _, lo, hi in points:
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            n_noise += 1
        elif lo >= low and hi <= high:
            n_agree += 1
        elif hi < low or lo > high:
            n_disagree += 1
        else:
            n_noise += 1
    n = len(points)
    if not n:
        verdict = NO_DATA
    elif n_agree and n_disagree:
        verdict = MIXED
    elif n_agree > n / 2:
        verdict = AGREES
    elif n_disagree > n / 2:
        verdict = DISAGREES
    else:
        verdict = INCONCLUSIVE
    return {"verdict": verdict, "n_points": n, "n_agree": n_agree, "n_disagree": n_disagree, "n_noise": n_noise}


def counts_text(v: dict) -> str:
    """'5/8 pairs as claimed, 3 against; mean +0.041 [0.012, 0.070]' (paired) or points for intervals."""
    if "n_pairs" in v:
        s = f"{v['n_agree']}/{v['n_pairs']} pairs as claimed, {v['n_disagree']} against"
        if v.get("lo") is not None:
            s += f"; mean difference {v['mean']:+.4f} nats [{v['lo']:+.4f}, {v['hi']:+.4f}]"
        elif v.get("mean") is not None:
            s += f"; mean difference {v['mean']:+.4f} nats (too few pairs for an interval)"
        if v.get("groups_pos") or v.get("groups_neg"):
            s += (f"; significant as claimed for {', '.join(map(str, v['groups_pos'])) or 'none'}, "
                  f"against for {', '.join(map(str, v['groups_neg'])) or 'none'}")
        return s
    unit = v.get("unit", "points")
    s = f"{v['n_agree']}/{v['n_points']} {unit} agree, {v['n_disagree']} disagree"
    return s + (f", {v['n_noise']} within noise" if "unit" not in v or v["n_noise"] else "")


# ------------------------------------------------------------------------------------------------ points
def final_points(store, sweep: str | None = None) -> pl.DataFrame | None:
    """One row per (finished run, validation domain): final val loss with the run's sweep, mixture, model,
    n_params, tokens and seed; plus domain 'avg' (mean over domains) for runs with several domains."""
    runs, metrics = store.read_result("runs"), store.read_result("run_metrics")
    if runs is None or metrics is None or not runs.height:
        return None
    runs = runs.filter(pl.col("status") == "done")
    if sweep is not None and "sweep" in runs.columns:
        runs = runs.filter(pl.col("sweep") == sweep)
    if "seed" not in runs.columns:
        runs = runs.with_columns(pl.lit(0).alias("seed"))
    if "n_params" not in runs.columns:
        runs = runs.with_columns(pl.lit(None, dtype=pl.Float64).alias("n_params"))
    if "sweep" not in runs.columns:
        runs = runs.with_columns(pl.lit(None, dtype=pl.Utf8).alias("sweep"))
    final = (metrics.filter((pl.col("split") == "val") & pl.col("domain").is_not_null()).sort("step")
             .group_by("run_id", "domain").agg(pl.col("loss").last().cast(pl.Float64)))
    if not final.height:
        return None
    domains = final["domain"].n_unique()
    if domains > 1:
        avg = (final.group_by("run_id").agg(pl.col("loss").mean(), pl.len().alias("n"))
               .filter(pl.col("n") == domains).drop("n").with_columns(pl.lit("avg").alias("domain")))
        final = pl.concat([final, avg.select(final.columns)])
    pts = final.join(runs.select("run_id", "sweep", "mixture", "model", pl.col("n_params").cast(pl.Float64),
                                 pl.col("tokens").cast(pl.Int64), pl.col("seed").cast(pl.Int64)), on="run_id")
    return pts if pts.height else None


# ------------------------------------------------------------------------------------------------ decisions
def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def decision_table(pts: pl.DataFrame) -> pl.DataFrame:
    """Pairwise decision accuracy of every smaller scale against the largest, for one domain.

    `pts`: mixture, model, n_params, tokens, seed, loss. The largest scale is the largest model (by
    n_params, then name) at its largest budget, among the scales that hold the most mixtures. Rows: per (model, tokens) scale, seed 'mean' (orders by the
    seed-mean loss; n_flip = pairs whose order is not the same under every seed) and one row per seed
    (that seed's order against the target's seed-mean order; n_flip = pairs it orders unlike the seed mean
    at the same scale). A tie (equal losses) counts as not agreeing."""
    mean = pts.group_by("mixture", "model", "tokens").agg(pl.col("loss").mean(), pl.col("n_params").first())
    sizes = mean.group_by("model").agg(pl.col("n_params").max()).sort(["n_params", "model"], nulls_last=False)
    n_params = dict(sizes.iter_rows())
    # the target: among the scales that hold the most mixtures (a scale a partial sweep reached with fewer
    # mixtures cannot rank them), the largest model at its largest budget
    per_scale = mean.group_by("model", "tokens").agg(pl.col("mixture").n_unique().alias("n"))
    full = per_scale.filter(pl.col("n") == pl.col("n").max())
    target_model, target_tokens = max(full.select("model", "tokens").iter_rows(),
                                      key=lambda r: (n_params.get(r[0]) or 0, r[0], r[1]))
    target_tokens = int(target_tokens)
    m = {(r["mixture"], r["model"], r["tokens"]): r["loss"] for r in mean.iter_rows(named=True)}
    per_seed = {(r["mixture"], r["model"], r["tokens"], r["seed"]): r["loss"]
                for r in pts.group_by("mixture", "model", "tokens", "seed").agg(pl.col("loss").mean())
                .iter_rows(named=True)}
    seeds = sorted(pts["seed"].unique().to_list())
    target_mix = sorted({k[0] for k in m if k[1:] == (target_model, target_tokens)})
    rows = []
    scales = sorted({(k[1], k[2]) for k in m}, key=lambda s: (n_params.get(s[0]) or 0, s[0], s[1]))
    for model, tokens in scales:
        mixes = [x for x in target_mix if (x, model, tokens) in m]
        pairs = list(itertools.combinations(mixes, 2))
        if not pairs:
            continue
        is_target = (model, tokens) == (target_model, target_tokens)
        tgt = {p: _sign(m[(p[0], target_model, target_tokens)] - m[(p[1], target_model, target_tokens)]) for p in pairs}
        here = {p: _sign(m[(p[0], model, tokens)] - m[(p[1], model, tokens)]) for p in pairs}
        base = {"model": model, "n_params": n_params.get(model), "tokens": int(tokens), "target_model": target_model,
                "target_tokens": target_tokens, "n_seeds": len(seeds), "n_pairs": len(pairs)}
        seed_signs = {s: {p: _sign(per_seed[(p[0], model, tokens, s)] - per_seed[(p[1], model, tokens, s)])
                          for p in pairs if (p[0], model, tokens, s) in per_seed and (p[1], model, tokens, s) in per_seed}
                      for s in seeds}
        n_flip = sum(1 for p in pairs if len({seed_signs[s][p] for s in seeds if p in seed_signs[s]}) > 1)
        if not is_target:
            n_agree = sum(1 for p in pairs if here[p] != 0 and here[p] == tgt[p])
            rows.append({**base, "seed": "mean", "n_agree": n_agree, "accuracy": n_agree / len(pairs),
                         "n_flip": n_flip, "flip_share": n_flip / len(pairs)})
        if len(seeds) < 2:
            continue
        for s in seeds:
            sp = seed_signs[s]
            if not sp:
                continue
            n_agree = sum(1 for p, v in sp.items() if v != 0 and v == tgt[p])
            flips = sum(1 for p, v in sp.items() if v != here[p])
            rows.append({**base, "seed": str(s), "n_pairs": len(sp), "n_agree": n_agree,
                         "accuracy": n_agree / len(sp), "n_flip": flips, "flip_share": flips / len(sp)})
    return pl.DataFrame(rows, schema={
        "model": pl.Utf8, "n_params": pl.Float64, "tokens": pl.Int64, "target_model": pl.Utf8,
        "target_tokens": pl.Int64, "n_seeds": pl.Int64, "n_pairs": pl.Int64, "seed": pl.Utf8, "n_agree": pl.Int64,
        "accuracy": pl.Float64, "n_flip": pl.Int64, "flip_share": pl.Float64})


def eval_points(store, sweep: str) -> pl.DataFrame | None:
    """One row per (finished run of the sweep, downstream task, metric) from table `evals`, shaped like
    `final_points` with `loss` oriented lower-is-better (the negated value of acc, acc_per_char,
    correct_prob and margin; bpb as is) and `domain` = the task (TASK:VARIANT)."""
    evals = store.read_result("evals")
    runs = store.read_result("runs")
    if evals is None or runs is None or not evals.height or "sweep" not in runs.columns:
        return None
    runs = runs.filter((pl.col("status") == "done") & (pl.col("sweep") == sweep)).unique("run_id", keep="last")
    if "n_params" not in runs.columns:
        runs = runs.with_columns(pl.lit(None, dtype=pl.Float64).alias("n_params"))
    ev = evals.filter(pl.col("run_id").is_not_null()).sort("created_at").unique(
        ["run_id", "task", "variant", "metric"], keep="last")
    pts = ev.select("run_id", "metric", pl.format("{}:{}", "task", "variant").alias("domain"),
                    pl.when(pl.col("higher_is_better")).then(-pl.col("value")).otherwise(pl.col("value"))
                    .cast(pl.Float64).alias("loss")).join(
        runs.select("run_id", "sweep", "mixture", "model", pl.col("n_params").cast(pl.Float64),
                    pl.col("tokens").cast(pl.Int64), pl.col("seed").cast(pl.Int64)), on="run_id")
    return pts if pts.height else None


def signal_to_noise(pts: pl.DataFrame) -> pl.DataFrame:
    """Per (model, tokens) scale: signal = standard deviation across mixtures of the seed-mean value, noise =
    mean over mixtures of the standard deviation across seeds, snr = signal / noise (after "Signal and
    Noise", Heineman et al. 2025: a metric whose mixture differences stand out of its seed noise decides)."""
    per_mix = pts.group_by("model", "tokens", "mixture").agg(
        pl.col("loss").mean().alias("mean"), pl.col("loss").std(ddof=1).alias("seed_sd"), pl.len().alias("n_seeds"))
    out = per_mix.group_by("model", "tokens").agg(
        pl.col("mean").std(ddof=1).alias("signal"), pl.col("seed_sd").mean().alias("noise"),
        pl.len().alias("n_mixtures"), pl.col("n_seeds").min().alias("n_seeds"))
    return out.with_columns(pl.when(pl.col("noise") > 0).then(pl.col("signal") / pl.col("noise"))
                            .otherwise(None).alias("snr")).sort("model", "tokens")


def decisions(store, sweep: str, write: bool = True) -> pl.DataFrame:
    """`decision_table` for every validation domain (and 'avg') of a sweep, metric 'loss', and for every
    downstream task and metric of table `evals` (domain = the task); table `decisions`. The signal-to-noise
    ratio of every (metric, domain, scale) goes to table `decision_snr`."""
    sets = []
    pts = final_points(store, sweep)
    if pts is not None:
        sets.append(pts.with_columns(pl.lit("loss").alias("metric")))
    ev = eval_points(store, sweep)
    if ev is not None:
        sets.append(ev)
    out, snr = [], []
    for pts in sets:
        for (metric, domain), g in pts.partition_by(["metric", "domain"], as_dict=True,
                                                    maintain_order=True).items():
            df = decision_table(g)
            keys = [pl.lit(sweep).alias("sweep"), pl.lit(domain).alias("domain"), pl.lit(metric).alias("metric")]
            if df.height:
                out.append(df.with_columns(*keys))
            snr.append(signal_to_noise(g).with_columns(*keys))
    if not out:
        return pl.DataFrame()
    df = pl.concat(out)
    df = df.select(["sweep", "domain"] + [c for c in df.columns if c not in ("sweep", "domain")])
    if write:
        store.put_result("decisions", _part(sweep), df)
        store.put_result("decision_snr", _part(sweep), pl.concat(snr).select(
            "sweep", "domain", "metric", "model", "tokens", "n_mixtures", "n_seeds", "signal", "noise", "snr"))
    return df


_part = part_key


# ------------------------------------------------------------------------------------------------ learning check
def unigram_counts_of(tokens: np.ndarray, vocab_size: int, rows_per_chunk: int = 65536) -> np.ndarray:
    """Token counts of a (rows, cols) token array, a chunk of rows at a time (flat memory on a memmap)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    arr = tokens if tokens.ndim == 2 else tokens.reshape(1, -1)
    for i in range(0, len(arr), rows_per_chunk):
        counts += np.bincount(np.asarray(arr[i:i + rows_per_chunk]).ravel(), minlength=vocab_size)[:vocab_size]
    return counts


def unigram_cross_entropy(counts: np.ndarray, targets: np.ndarray, alpha: float = 0.5) -> float:
    """Mean -ln q(t) over target tokens t, q(v) = (c(v) + alpha) / (N + alpha V): nats per token."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0 (got {alpha}): an unseen validation token would cost infinity")
    counts = np.asarray(counts, dtype=np.float64)
    logq = np.log(counts + alpha) - math.log(counts.sum() + alpha * len(counts))
    return float(-logq[np.asarray(targets).ravel()].mean())


def _valset_tokens(store, domain: str, tokenizer: str, seq_len: int) -> np.ndarray | None:
    from train.data import valset_name

    names = [valset_name(domain, tokenizer, seq_len)]
    vs = store.read_result("valsets")
    if vs is not None:
        sub = vs.filter((pl.col("corpus") == domain) & (pl.col("seq_len") == seq_len))
        names += sub.sort("created_at", descending=True)["valset"].to_list() if "created_at" in sub.columns \
            else sub["valset"].to_list()
    for name in names:
        path = store.artifact_dir("valsets", name, create=False) / "val.npy"
        if path.exists():
            return np.load(path, mmap_mode="r")
    return None


def learning_check(store, sweep: str, alpha: float = 0.5, write: bool = True) -> pl.DataFrame:
    """Each finished run's final loss per validation domain beside the unigram and uniform baselines."""
    from train.data import open_mixture

    pts = final_points(store, sweep)
    if pts is None:
        return pl.DataFrame()
    pts = pts.filter(pl.col("domain") != "avg")
    runs = store.read_result("runs").filter(pl.col("run_id").is_in(pts["run_id"].unique().implode()))
    eval_tokens = {}
    for run_id, config in runs.select("run_id", "config").iter_rows() if "config" in runs.columns else []:
        eval_tokens[run_id] = json.loads(config or "{}").get("eval_tokens")
    rows = []
    for (mixture,), g in pts.partition_by("mixture", as_dict=True, maintain_order=True).items():
        try:
            data = open_mixture(store, mixture, val_corpora_names=[], progress=False)
        except Exception as e:  # a mixture rebuilt or removed since the runs: say so, go on
            log.warning("learning check: mixture %s cannot be opened: %s", mixture, e)
            continue
        counts = unigram_counts_of(data.train, data.vocab_size)
        uniform = math.log(data.vocab_size)
        cache: dict[tuple[str, int], float | None] = {}
        for r in g.iter_rows(named=True):
            val = _valset_tokens(store, r["domain"], data.tokenizer, data.seq_len)
            if val is None:
                log.warning("learning check: no validation set of %s for mixture %s", r["domain"], mixture)
                continue
            n_eval = eval_tokens.get(r["run_id"]) or val.size
            n_rows = min(len(val), max(1, math.ceil(n_eval / data.seq_len)))  # the rows train.loop evaluates
            key = (r["domain"], n_rows)
            if key not in cache:
                cache[key] = unigram_cross_entropy(counts, np.asarray(val[:n_rows, 1:]), alpha)
            uni = cache[key]
            rows.append({"sweep": sweep, "run_id": r["run_id"], "mixture": mixture, "model": r["model"],
                         "tokens": r["tokens"], "seed": r["seed"], "domain": r["domain"], "loss": r["loss"],
                         "unigram_loss": uni, "uniform_loss": uniform, "gap_to_unigram": uni - r["loss"],
                         "below_unigram": bool(r["loss"] < uni), "below_uniform": bool(r["loss"] < uniform),
                         "alpha": alpha, "vocab_size": data.vocab_size, "n_eval_tokens": n_rows * data.seq_len,
                         "n_mixture_tokens": int(counts.sum())})
    df = pl.DataFrame(rows, infer_schema_length=None)
    if write and df.height:
        store.put_result("learning_check", _part(sweep), df)
    return df


# ------------------------------------------------------------------------------------------------ collapse rounds
def corpus_rounds(store) -> pl.DataFrame:
    """Every synthetic corpus with its generation round and root natural corpus (from provenance)."""
    rows = []
    for c in store.corpora():
        if c.kind != "synthetic":
            continue
        meta = c.meta or {}
        root = meta.get("root_corpus") or meta.get("source")
        rows.append({"corpus": c.name, "synthetic_type": c.synthetic_type, "round": int(meta.get("round") or 1),
                     "source": meta.get("source"), "root_corpus": root})
    return pl.DataFrame(rows, schema={"corpus": pl.Utf8, "synthetic_type": pl.Utf8, "round": pl.Int64,
                                      "source": pl.Utf8, "root_corpus": pl.Utf8})


def _root_jaccard(store, corpus: str, root: str, cfg) -> tuple[float | None, float | None, int]:
    """Mean MinHash Jaccard of each document with its root natural document, and the share >= threshold."""
    from stats.dedup import build_signatures

    roots = {}
    for batch in store.iter_batches(corpus, ["doc_id", "source_doc_id", "meta"]):
        for d, sd, m in zip(*(batch.column(i).to_pylist() for i in range(3))):
            roots[d] = json.loads(m or "{}").get("root_doc_id") or sd
    a = build_signatures(store, corpus, cfg, progress=False).sigs
    b = build_signatures(store, root, cfg, progress=False).sigs
    pos = {d: i for i, d in enumerate(b.doc_id.tolist()) if b.ok[i]}
    est = []
    for i, d in enumerate(a.doc_id.tolist()):
        j = pos.get(roots.get(d))
        if a.ok[i] and j is not None:
            est.append(float(np.count_nonzero(a.signatures[i] == b.signatures[j]) / cfg.num_perm))
    if not est:
        return None, None, 0
    e = np.array(est)
    return float(e.mean()), float((e >= cfg.threshold).mean()), len(e)


def collapse_rounds(store, tests: Sequence[str], tokenizer: str = "cl100k_base", alpha: float | None = None,
                    dedup: dict | None = None, n_subsamples: int = 5, seed: int = 0,
                    write: bool = True) -> pl.DataFrame:
    """Per synthetic type and round (with the root natural corpus as round 0): types and entropy at an equal
    budget, KL to each test set, near-duplicate share against the root documents. Table `collapse_rounds`."""
    from corpora.tokenizers import load_tokenizer
    from stats.dedup import DedupConfig
    from stats.unigram import (DEFAULT_ALPHA, UnigramConfig, build_unigram_counts, rarefied_types,
                               subsampled_entropy_nats)

    alpha = DEFAULT_ALPHA if alpha is None else alpha
    rounds = corpus_rounds(store)
    rounds = rounds.filter(pl.col("root_corpus").is_not_null())
    if not rounds.height:
        return pl.DataFrame()
    dcfg = DedupConfig(**(dedup or {}))
    ucfg = UnigramConfig(tokenizer=tokenizer, progress=False)
    tok = load_tokenizer(tokenizer, store)
    counts = {}

    def count(name):
        if name not in counts:
            counts[name] = build_unigram_counts(store, name, ucfg, tok).counts
        return counts[name]

    test_p = {t: count(t) / count(t).sum() for t in tests}
    rows = []
    for (stype, root), chain in rounds.partition_by(["synthetic_type", "root_corpus"], as_dict=True,
                                                     maintain_order=True).items():
        if not store.has_corpus(root):
            continue
        members = [(root, 0)] + sorted(chain.select("corpus", "round").iter_rows(), key=lambda r: (r[1], r[0]))
        members = [(c, r) for c, r in members if store.corpus(c).n_docs]
        budget = int(min(count(c).sum() for c, _ in members))
        for corpus, rnd in members:
            c = count(corpus)
            q = (c + alpha) / (c.sum() + alpha * len(c))
            jac_mean, near, n_matched = (None, None, 0) if rnd == 0 else _root_jaccard(store, corpus, root, dcfg)
            base = {"corpus": corpus, "synthetic_type": stype, "round": rnd, "root_corpus": root,
                    "tokenizer": tok.name, "budget_tokens": budget, "n_tokens": int(c.sum()),
                    "n_docs": store.corpus(corpus).n_docs, "types_at_budget": rarefied_types(c, budget),
                    "entropy_at_budget_nats": subsampled_entropy_nats(c, budget, n_subsamples, seed),
                    "root_jaccard_mean": jac_mean, "root_near_dup_share": near, "n_root_matched": n_matched,
                    "threshold": dcfg.threshold, "alpha": alpha}
            for t in tests or [None]:
                kl = None
                if t is not None:
                    p = test_p[t]
                    nz = p > 0
                    kl = float((p[nz] * np.log(p[nz] / q[nz])).sum())
                rows.append({**base, "test": t, "kl_nats": kl})
    df = pl.DataFrame(rows, infer_schema_length=None)
    if write and df.height:
        store.put_result("collapse_rounds", "all", df)
    return df
