"""Validate a proposal: train it beside three baselines at a larger scale and judge it with the study's rule.

The four mixtures are the proposal, the best mixture of the swarm (lowest observed objective), the
natural source alone and the uniform mixture (a baseline equal to another is trained once). They train at
a larger scale (a bigger model or budget, 2-3 seeds) as one sweep through train.sweep (resumable). Reported:
the proposal's rank among the four by seed-mean objective and its regret (its objective minus the best
one's, 0 when it is best); per baseline, the noise-aware verdict of stats.evidence.paired_verdict on the
per-seed differences (baseline - proposal, so "agrees" = the proposal is better beyond noise); the
proxy-to-target decision accuracy of the swarm's own runs (stats.evidence.decision_table over the baselines
present at both scales) and of the regressor's predictions over all four. Table `mixopt_validations`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging

import numpy as np
import polars as pl

from corpora.cli_common import show_progress
from corpora.results import declare
from corpora.store import Store
from stats.evidence import EvidenceConfig, counts_text, decision_table, final_points, paired_verdict
from stats.mixopt.io import AVG, MixoptError
from stats.mixopt.propose import effective_caps, mixture_spec, project

log = logging.getLogger(__name__)

VALIDATIONS_TABLE = "mixopt_validations"
declare(VALIDATIONS_TABLE, {
    "fit": "str", "sweep": "str", "role": "str proposal|best_swarm|natural|uniform", "mixture": "str",
    "same_as": "str, the role it duplicates", "spec": "str mixture", "objective": "str", "model": "str",
    "tokens": "int", "n_seeds": "int", "loss_mean": "float", "loss_sd": "float", "predicted": "float",
    "rank": "int", "regret": "float", "verdict": "str", "verdict_detail": "str", "against": "str",
    "decision_accuracy_proxy": "float", "n_proxy_pairs": "int", "decision_accuracy_regressor": "float",
    "proxy_model": "str", "proxy_tokens": "int"},
    "One row per (fit, role): the proposal and its rivals trained at the target scale, ranked and judged.")
PROPOSAL, BEST, NATURAL, UNIFORM = "proposal", "best_swarm", "natural", "uniform"


@dataclasses.dataclass
class ValidateConfig:
    """`--validate-*` flags of `fit --validate` and `validate`."""

    model: str  # target model preset
    tokens: int  # target budget
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    natural: str | None = None  # default: the first source
    name: str | None = None  # validation sweep name (default: FIT_validate)
    tokenizer: str = "cl100k_base"
    seq_len: int = 512
    max_epochs: float = 16.0
    run: dict = dataclasses.field(default_factory=dict)  # trainer options (train.config.RunConfig)
    lr: float | None = None  # peak learning rate (default: the trainer's)
    val_tokens: int | None = None
    evidence: EvidenceConfig = dataclasses.field(default_factory=EvidenceConfig)


def _swarm_mixture_config(store: Store, swarm):
    """The mixture config and run options of a stored swarm's first run (what validation mixtures copy)."""
    import json

    from train.data import mixture_config

    if not swarm.origin.startswith("sweep "):
        return None, {}
    cfg = mixture_config(store, swarm.runs[0])
    runs = store.read_result("runs")
    options = {}
    if runs is not None and "config" in runs.columns:
        row = runs.filter(pl.col("mixture") == swarm.runs[0]).tail(1)
        if row.height:
            conf = json.loads(row["config"][0] or "{}")
            # what the swarm's runs were trained with and the target's should be too (the grid sets lr_peak)
            options = {k: conf[k] for k in ("batch_size", "grad_accum", "eval_tokens", "weights_dtype", "lr_peak")
                       if conf.get(k) is not None}
    return cfg, options


def validate_fit(store: Store, fit, cfg: ValidateConfig, progress: bool = True) -> dict:
    """Train the four mixtures at the target scale, then rank, regret, verdicts and decision accuracy."""
    from train.sweep import parse_sweep, run_sweep

    swarm = fit.swarm
    sign = -1.0 if fit.config.maximize else 1.0
    y, cols = swarm.objective(fit.config.objective)
    k = len(swarm.sources)
    natural = cfg.natural or swarm.sources[0]
    if natural not in swarm.sources:
        raise MixoptError(f"--natural {natural} is not a source of the swarm ({', '.join(swarm.sources)})")
    best_row = int(np.argmin(sign * y))
    weights = {PROPOSAL: np.array(list(fit.proposal["weights"].values())), BEST: swarm.weights[best_row],
               NATURAL: np.eye(k)[swarm.sources.index(natural)],
               UNIFORM: project(np.full(k, 1 / k), np.zeros(k), effective_caps(fit.bounds.caps))[0]}
    specs, same_as = {}, {}
    for role, w in weights.items():
        spec = mixture_spec(swarm.sources, w)
        twin = next((r for r, s in specs.items() if s == spec), None)
        if twin:
            same_as[role] = twin
        else:
            specs[role] = spec
    name = cfg.name or f"{fit.name}_validate"
    parts = {role: {p.split("=")[0]: float(p.split("=")[1]) for p in spec.split(",")} for role, spec in specs.items()}
    mixtures = {r: {"parts": parts[r], "tokens": cfg.tokens, "tokenizer": cfg.tokenizer, "seq_len": cfg.seq_len,
                    "max_epochs": cfg.max_epochs} for r in specs}
    # the name carries a hash of the mixture's config: another scale or another proposal is another mixture
    mix_name = {r: f"{name}_{r}_{_digest(m)}".replace("/", "-") for r, m in mixtures.items()}
    doc = {"name": name,
           "grid": {"mixtures": list(mix_name.values()), "models": [cfg.model], "tokens": [cfg.tokens],
                    "seed": list(cfg.seeds), **({"lr": [cfg.lr]} if cfg.lr is not None else {})},
           "mixtures": {mix_name[r]: m for r, m in mixtures.items()}}
    if set(cols) - {AVG}:
        doc["val_corpora"] = [c for c in cols if store.has_corpus(c)] or None
        if doc["val_corpora"] is None:
            doc.pop("val_corpora")
    if cfg.val_tokens:
        doc["val_tokens"] = cfg.val_tokens
    if cfg.run:
        doc["run"] = dict(cfg.run)
    run_sweep(store, parse_sweep(doc, where=f"validation {name}"), progress=progress)

    role_of = {m: r for r, m in mix_name.items()}
    target = _objective_points(store, name, cols, sign, role_of)
    if target is None or not target.height:
        raise MixoptError(f"validation {name}: no finished run; see the runs table for the failures")
    per_role = {r: g.sort("seed") for (r,), g in target.partition_by("mixture", as_dict=True).items()}
    if PROPOSAL not in per_role:
        raise MixoptError(f"validation {name}: the proposal's runs did not finish; see the runs table")
    means = {r: float(g["loss"].mean()) for r, g in per_role.items()}  # unique mixtures only (twins share)
    order = sorted(means, key=lambda r: means[r])
    rank = {r: 1 + sum(means[o] < means[r] for o in means) for r in means}
    for role, twin in same_as.items():
        rank[role], means[role] = rank.get(twin), means.get(twin)
    best_other = min((r for r in per_role if r != PROPOSAL), key=lambda r: means[r], default=None)
    regret = max(0.0, means[PROPOSAL] - min(means[r] for r in per_role))
    ev = cfg.evidence
    verdicts = {}
    for role in per_role:
        if role == PROPOSAL:
            continue
        a = dict(per_role[role].select("seed", "loss").iter_rows())
        b = dict(per_role[PROPOSAL].select("seed", "loss").iter_rows())
        seeds = sorted(set(a) & set(b))
        verdicts[role] = paired_verdict([a[s] - b[s] for s in seeds], n_boot=ev.n_boot, ci=ev.ci, seed=ev.seed,
                                        min_pairs=ev.min_pairs)
    headline = verdicts.get(best_other) if best_other else None

    # proxy -> target decision accuracy over the distinct mixtures: the swarm's own runs of those it holds
    # (stats.evidence.decision_table), and the regressor's predictions of all of them
    proxy_acc, n_proxy_pairs = None, 0
    if swarm.origin.startswith("sweep "):
        proxy_role = {}
        for role, spec in specs.items():
            hit = [i for i, w in enumerate(swarm.weights) if mixture_spec(swarm.sources, w) == spec]
            if hit and role in per_role:
                proxy_role[swarm.runs[hit[0]]] = role
        proxy = _objective_points(store, swarm.origin.removeprefix("sweep "), cols, sign, proxy_role)
        if proxy is not None and proxy.height:
            proxy = proxy.filter((pl.col("model") == swarm.model) & (pl.col("tokens") == swarm.tokens))
            dec = decision_table(pl.concat([proxy, target.select(proxy.columns)]))
            row = dec.filter((pl.col("seed") == "mean") & (pl.col("model") == swarm.model)
                             & (pl.col("tokens") == swarm.tokens))
            if row.height:
                proxy_acc, n_proxy_pairs = float(row["accuracy"][0]), int(row["n_pairs"][0])
    model = fit.models[fit.proposal["regressor"]]
    predicted = {r: float(sign * model.predict(weights[r][None])[0]) for r in weights}
    pairs = list(itertools.combinations(per_role, 2))
    agree = sum(1 for a, b in pairs if np.sign(sign * (predicted[a] - predicted[b])) == np.sign(means[a] - means[b]) != 0)
    reg_acc = agree / len(pairs) if pairs else None

    rows = []
    for role in weights:
        g = per_role.get(same_as.get(role, role))
        v = verdicts.get(role) if role != PROPOSAL else headline
        rows.append({"fit": fit.name, "sweep": name, "role": role, "mixture": mix_name.get(role, mix_name.get(
            same_as.get(role, ""), None)), "same_as": same_as.get(role), "spec": mixture_spec(swarm.sources, weights[role]),
            "objective": fit.config.objective, "model": cfg.model, "tokens": cfg.tokens,
            "n_seeds": 0 if g is None else g.height,
            "loss_mean": None if g is None else float(sign * g["loss"].mean()),
            "loss_sd": None if g is None or g.height < 2 else float(g["loss"].std()),
            "predicted": predicted[role], "rank": rank.get(role), "regret": regret if role == PROPOSAL else None,
            "verdict": v["verdict"] if v else None, "verdict_detail": counts_text(v) if v else None,
            "against": best_other if role == PROPOSAL else (PROPOSAL if v else None),
            "decision_accuracy_proxy": proxy_acc, "n_proxy_pairs": n_proxy_pairs,
            "decision_accuracy_regressor": reg_acc, "proxy_model": swarm.model, "proxy_tokens": swarm.tokens})
    table = pl.DataFrame(rows, infer_schema_length=None)
    from stats.mixopt.fit import part_name

    store.put_result(VALIDATIONS_TABLE, part_name(fit.name), table)
    return {"sweep": name, "model": cfg.model, "tokens": cfg.tokens, "seeds": list(cfg.seeds),
            "objective": fit.config.objective, "rank": rank[PROPOSAL], "of": len(means), "regret": regret,
            "order": order, "means": {r: sign * m for r, m in means.items() if m is not None}, "same_as": same_as,
            "verdict": headline["verdict"] if headline else None, "against": best_other,
            "verdict_detail": counts_text(headline) if headline else None,
            "verdicts": {r: v["verdict"] for r, v in verdicts.items()},
            "decision_accuracy_proxy": proxy_acc, "n_proxy_pairs": n_proxy_pairs,
            "decision_accuracy_regressor": reg_acc}


def _digest(config: dict) -> str:
    import hashlib
    import json

    return hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=3).hexdigest()


def _objective_points(store: Store, sweep: str, cols: list[str], sign: float, role_of: dict) -> pl.DataFrame | None:
    """Per finished run of `sweep` whose mixture is in `role_of`: its objective (signed so lower is better),
    with the mixture renamed to its role; columns as stats.evidence.decision_table takes them."""
    pts = final_points(store, sweep)
    if pts is None:
        return None
    pts = pts.filter(pl.col("domain").is_in(cols) & pl.col("mixture").is_in(list(role_of)))
    if not pts.height:
        return None
    return (pts.group_by("run_id", "mixture", "model", "n_params", "tokens", "seed")
            .agg((pl.col("loss").mean() * sign).alias("loss"), pl.len().alias("_n"))
            .filter(pl.col("_n") == len(cols)).drop("_n", "run_id")
            .with_columns(pl.col("mixture").replace_strict(role_of, return_dtype=pl.Utf8))
            .select("mixture", "model", "n_params", "tokens", "seed", "loss"))


def format_validation(v: dict) -> str:
    acc = ("—" if v["decision_accuracy_proxy"] is None else
           f"{v['decision_accuracy_proxy']:.2f} over {v['n_proxy_pairs']} pairs")
    reg = "—" if v["decision_accuracy_regressor"] is None else f"{v['decision_accuracy_regressor']:.2f}"
    lines = [f"validation {v['sweep']} ({v['model']} @ {v['tokens']:,} tokens, seeds {v['seeds']}):",
             f"  proposal ranks {v['rank']} of {v['of']}, regret {v['regret']:.4f} ({v['objective']})",
             f"  against {v['against']}: {v['verdict']} ({v['verdict_detail']})",
             "  per baseline: " + ", ".join(f"{r}: {x}" for r, x in v["verdicts"].items()),
             f"  decision accuracy proxy -> target: swarm runs {acc}; regressor {reg}",
             "  seed-mean objective: " + ", ".join(f"{r} {v['means'][r]:.4f}" for r in v["order"])]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- CLI
EXAMPLE = "python -m stats.mixopt validate --fit demo_swarm.wiki --validate-tokens 96k --validate-seeds 0,1,2"


def add_validate_arguments(p) -> None:
    from stats.mixopt.swarm import _count, _ints

    p.add_argument("--validate-model", help="target model preset (default: the swarm's)")
    p.add_argument("--validate-tokens", type=_count, help="target budget (default: twice the swarm's)")
    p.add_argument("--validate-seeds", type=_ints, default=[0, 1, 2], help="seeds (default 0,1,2)")
    p.add_argument("--natural", help="the natural source (default: the first source)")
    p.add_argument("--batch-size", type=int, help="trainer batch size (default: the swarm runs')")


def validate_config(args, swarm, store: Store | None) -> ValidateConfig:
    """Checked before any fitting or training: the target scale and the mixtures' settings."""
    from train.model import PRESETS

    if store is None:
        raise MixoptError("--validate trains runs: give --store (the sources must be its corpora)")
    missing = [s for s in swarm.sources if not store.has_corpus(s)]
    if missing:
        raise MixoptError(f"--validate: source {missing[0]!r} is not a corpus of {store.root}")
    model = args.validate_model or swarm.model
    if model is None or model not in PRESETS:
        raise MixoptError(f"--validate-model {model}: choose one of {', '.join(PRESETS)}")
    tokens = args.validate_tokens or (2 * swarm.tokens if swarm.tokens else None)
    if tokens is None:
        raise MixoptError("--validate needs --validate-tokens for a swarm read from CSVs")
    mix, options = _swarm_mixture_config(store, swarm)
    if args.batch_size:
        options["batch_size"] = args.batch_size
    extra = {"tokenizer": mix.tokenizer, "seq_len": mix.seq_len, "max_epochs": mix.max_epochs} if mix else {}
    lr = options.pop("lr_peak", None)
    return ValidateConfig(model=model, tokens=tokens, seeds=args.validate_seeds, natural=args.natural,
                          run=options, lr=lr, **extra)


def add_parser(sub) -> None:
    from stats.mixopt.cli import add_command

    p = add_command(sub, "validate", "train a stored fit's proposal and three baselines at a larger scale",
                    "Refit a stored fit (same swarm and settings, so the same proposal), then train the proposal, "
                    "the best swarm mixture, the natural source alone and the uniform mixture at a larger scale "
                    "and report the proposal's rank, regret and noise-aware verdict, and the proxy-to-target "
                    "decision accuracy.", [EXAMPLE])
    p.add_argument("--fit", required=True, help="a fit name from the mixopt_fits table (SWEEP.OBJECTIVE by default)")
    add_validate_arguments(p)


def run(args) -> int:
    import json

    from stats.mixopt.cli import emit, open_store
    from stats.mixopt.fit import FITS_TABLE, FitConfig, fit_swarm, part_name
    from stats.mixopt.io import read_store_swarm

    store = open_store(args)
    fits = store.read_result(FITS_TABLE, part_name(args.fit))
    if fits is None or not fits.height:
        raise MixoptError(f"--fit {args.fit}: no such fit in {store.root}; run python -m stats.mixopt fit first")
    origin = fits["origin"][0]
    if not origin.startswith("sweep "):
        raise MixoptError(f"--fit {args.fit} was fitted from CSVs ({origin}); validate it with fit --validate")
    swarm = read_store_swarm(store, origin.removeprefix("sweep "))
    cfg = FitConfig(**json.loads(fits["config"][0]))
    vcfg = validate_config(args, swarm, store)
    with store.writer("python -m stats.mixopt validate"):
        fit = fit_swarm(swarm, cfg, store, args.fit, write=False)
        result = validate_fit(store, fit, vcfg, progress=show_progress(args))
    return emit(args, result, format_validation(result))
