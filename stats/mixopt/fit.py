"""Fit: cross-validated regressors from a swarm's mixtures to an objective, then the proposal.

For each regressor (stats.mixopt.regressors): K-fold CV over the runs (scikit-learn's KFold, shuffled,
seeded); its CV Spearman and R^2 are over the pooled held-out predictions. The regressor with the best CV
Spearman proposes (stats.mixopt.propose) with a bootstrap interval per weight. Tables: `mixopt_fits` (one
row per regressor), `mixopt_predictions` (held-out prediction per run and regressor) and
`mixopt_proposals` (one row per source), each one part per fit name.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import spearmanr
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold
from tqdm.auto import tqdm

from corpora.names import part_key
from corpora.cli_common import show_progress
from corpora.results import declare
from corpora.store import Store
from stats.mixopt.io import AVG, MixoptError, Swarm, read_csv_swarm, read_store_swarm, write_csv_swarm
from stats.mixopt.propose import Bounds, bootstrap, effective_caps, mixture_spec, optimize
from stats.mixopt.regressors import Boosted, LogLinear, unigram_predictor

log = logging.getLogger(__name__)

FITS_TABLE, PREDICTIONS_TABLE, PROPOSALS_TABLE = "mixopt_fits", "mixopt_predictions", "mixopt_proposals"
declare(FITS_TABLE, {
    "fit": "str", "origin": "str", "objective": "str", "maximize": "bool", "regressor": "str", "backend": "str",
    "n_runs": "int", "n_sources": "int", "sources": "str, comma-separated", "folds": "int", "cv_spearman": "float",
    "cv_r2": "float", "status": "str ok|failed|unavailable", "note": "str", "chosen": "bool",
    "config": "json FitConfig"},
    "One row per (fit, regressor): its cross-validated score, and which regressor proposes.")
declare(PREDICTIONS_TABLE, {"fit": "str", "regressor": "str", "run": "str", "fold": "int", "observed": "float",
                            "predicted": "float"},
        "One row per (fit, regressor, swarm run): the held-out prediction of its cross-validation fold.")
declare(PROPOSALS_TABLE, {
    "fit": "str", "objective": "str", "regressor": "str", "source": "str", "weight": "float", "lo": "float",
    "hi": "float", "lower": "float", "upper": "float", "cap": "float", "prior": "float", "kl_weight": "float",
    "n_boot": "int", "ci": "float", "predicted": "float", "spec": "str mixture", "origin": "str", "model": "str",
    "tokens": "int"},
    "One row per (fit, source): the proposed mixture weight with its bootstrap interval and bounds.")
REGRESSORS = ("loglinear", "gbm", "unigram")


@dataclasses.dataclass
class FitConfig:
    """`python -m stats.mixopt fit` flags, one to one."""

    objective: str = AVG  # a metric (validation domain), or 'avg'
    maximize: bool = False  # the metric is better when higher (accuracy); losses are lower-is-better
    regressors: list[str] = dataclasses.field(default_factory=lambda: list(REGRESSORS))
    folds: int = 5
    seed: int = 0
    n_boot: int = 100
    ci: float = 0.95
    lower: dict[str, float] = dataclasses.field(default_factory=dict)
    upper: dict[str, float] = dataclasses.field(default_factory=dict)
    max_epochs: float | None = None  # repetition cap at target_tokens (needs the sources in the store)
    target_tokens: int | None = None  # budget the caps are for (default: the swarm's)
    kl_weight: float = 0.0  # olmix's pull towards the prior: + kl_weight * KL(w || prior)
    prior: dict[str, float] | None = None  # default: the swarm design's prior, else uniform
    unigram_tokenizer: str | None = None  # default: cl100k_base when counted, else any with every corpus
    n_candidates: int = 4096
    propose_with: str | None = None  # default: the regressor with the best CV Spearman


@dataclasses.dataclass
class MixFit:
    name: str
    swarm: Swarm
    config: FitConfig
    fits: pl.DataFrame
    predictions: pl.DataFrame
    proposal: dict  # regressor, weights {source: w}, lo, hi, predicted, spec
    proposals: pl.DataFrame
    models: dict  # regressor name -> fitted on every run
    bounds: Bounds

    def summary(self) -> dict:
        """What `--json` prints: per regressor its CV Spearman and R^2, and the proposal as {source: weight}."""
        regs = {r["regressor"]: {k: r[k] for k in ("cv_spearman", "cv_r2", "status", "backend", "note")}
                for r in self.fits.to_dicts()}
        return {"fit": self.name, "swarm": self.swarm.origin, "objective": self.config.objective,
                "n_runs": len(self.swarm.runs), "folds": self.config.folds, "regressors": regs,
                "proposal": self.proposal}


part_name = part_key


def cross_validate(make, X: np.ndarray, Y: np.ndarray, y: np.ndarray, folds: int, seed: int):
    """Held-out predictions of every run (each from a model fitted without its fold), and each run's fold."""
    pred, fold_of = np.empty(len(X)), np.empty(len(X), dtype=np.int64)
    for f, (tr, te) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(X)):
        pred[te] = make().fit(X[tr], Y[tr]).predict(X[te])
        fold_of[te] = f
    return pred, fold_of


def _scores(y: np.ndarray, pred: np.ndarray) -> tuple[float | None, float | None]:
    if np.ptp(pred) == 0 or np.ptp(y) == 0:
        return None, None
    return float(spearmanr(y, pred).statistic), float(r2_score(y, pred))


def _bounds(swarm: Swarm, cfg: FitConfig, store: Store | None) -> Bounds:
    k = len(swarm.sources)
    for flag, given in (("--lower", cfg.lower), ("--upper", cfg.upper)):
        unknown = sorted(set(given) - set(swarm.sources))
        if unknown:
            raise MixoptError(f"{flag} names {', '.join(unknown)}, not a source of the swarm "
                              f"({', '.join(swarm.sources)})")
        bad = [s for s, v in given.items() if not 0 <= v <= 1]
        if bad:
            raise MixoptError(f"{flag} {bad[0]}={given[bad[0]]:g}: bounds are shares in [0, 1]")
    caps = np.ones(k)
    if cfg.max_epochs is not None:
        from stats.mixopt.swarm import repetition_caps, source_tokens

        target = cfg.target_tokens or swarm.tokens
        if store is None or target is None:
            raise MixoptError("--max-epochs needs the sources' token counts and a budget: give --store (with the "
                              "sources as corpora) and --target-tokens")
        missing = [s for s in swarm.sources if not store.has_corpus(s)]
        if missing:
            raise MixoptError(f"--max-epochs: source {missing[0]!r} is not a corpus of {store.root}; drop "
                              "--max-epochs or cap it with --upper")
        n_tokens = source_tokens(store, swarm.sources, *([swarm.tokenizer] if swarm.tokenizer else []))
        caps = repetition_caps(n_tokens, swarm.sources, target, cfg.max_epochs)
    lower = np.array([cfg.lower.get(s, 0.0) for s in swarm.sources])
    upper = np.minimum([cfg.upper.get(s, 1.0) for s in swarm.sources], effective_caps(caps))
    return Bounds(list(swarm.sources), lower, upper, caps)


def _prior(swarm: Swarm, cfg: FitConfig, store: Store | None) -> np.ndarray:
    if cfg.prior:
        unknown = sorted(set(cfg.prior) - set(swarm.sources))
        if unknown:
            raise MixoptError(f"--prior names {', '.join(unknown)}, not a source of the swarm")
        p = np.array([cfg.prior.get(s, 0.0) for s in swarm.sources]) + 1e-9
        return p / p.sum()
    if store is not None and swarm.origin.startswith("sweep "):
        from stats.mixopt.swarm import stored_prior

        p = stored_prior(store, swarm.origin.removeprefix("sweep "), swarm.sources)
        if p is not None:
            return (p + 1e-9) / (p + 1e-9).sum()
    return np.full(len(swarm.sources), 1 / len(swarm.sources))


def check_fit(swarm: Swarm, cfg: FitConfig, store: Store | None) -> tuple[Bounds, np.ndarray]:
    """Every check that needs no fitting: objective, folds, regressors, bounds (raises naming the flag)."""
    swarm.objective(cfg.objective)
    unknown = sorted(set(cfg.regressors) - set(REGRESSORS))
    if unknown or not cfg.regressors:
        raise MixoptError(f"--regressors {','.join(cfg.regressors)}: choose from {', '.join(REGRESSORS)}")
    if cfg.propose_with is not None and cfg.propose_with not in cfg.regressors:
        raise MixoptError(f"--propose-with {cfg.propose_with} is not one of --regressors {','.join(cfg.regressors)}")
    if cfg.folds < 2:
        raise MixoptError(f"--folds {cfg.folds}: K-fold cross-validation needs K >= 2")
    n = len(swarm.runs)
    if n < 2 * cfg.folds:
        raise MixoptError(f"the swarm ({swarm.origin}) has {n} runs, too few for {cfg.folds}-fold cross-validation "
                          f"(at least {2 * cfg.folds} runs, two per fold); add runs or lower --folds")
    if cfg.n_boot < 0 or not 0 < cfg.ci < 1 or cfg.kl_weight < 0:
        raise MixoptError("need --n-boot >= 0, 0 < --ci < 1 and --kl-weight >= 0")
    bounds = _bounds(swarm, cfg, store)
    bounds.check()
    return bounds, _prior(swarm, cfg, store)


def _factories(swarm: Swarm, cfg: FitConfig, cols: list[str], store: Store | None) -> dict:
    """regressor -> (factory or None, backend, note)."""
    out = {}
    for name in cfg.regressors:
        if name == "loglinear":
            out[name] = (LogLinear, LogLinear.backend, "L_i(r) = c_i + exp(b_i + t_i . r), averaged over "
                         f"{', '.join(cols)}")
        elif name == "gbm":
            out[name] = (lambda: Boosted(cfg.seed), Boosted(cfg.seed).backend, "boosted trees on the objective")
        elif store is None:
            out[name] = (None, "unigram_counts", "needs --store with unigram counts of the sources and test domains")
        else:
            missing = [c for c in [*swarm.sources, *cols] if not store.has_corpus(c)]
            if missing:
                out[name] = (None, "unigram_counts", f"{missing[0]!r} is not a corpus of the store (the sources and "
                             "the objective's metrics must be corpora)")
                continue
            model, note = unigram_predictor(store, swarm.sources, cols, cfg.unigram_tokenizer)
            out[name] = ((lambda m=model: m), "unigram_counts", note) if model is not None else (None, "unigram_counts", note)
    return out


def fit_swarm(swarm: Swarm, cfg: FitConfig, store: Store | None = None, name: str = "fit",
              write: bool = True, progress: bool = False) -> MixFit:
    """Cross-validate every regressor, propose with the best, bootstrap the proposal; write the tables."""
    bounds, prior = check_fit(swarm, cfg, store)
    y, cols = swarm.objective(cfg.objective)
    sign = -1.0 if cfg.maximize else 1.0
    X, Y = swarm.weights, sign * np.column_stack([swarm.metrics[c] for c in cols])
    y = sign * y
    rows, preds, models = [], [], {}
    factories = _factories(swarm, cfg, cols, store)
    for reg, (make, backend, note) in tqdm(factories.items(), desc="mixopt fit", unit="regressor",
                                           disable=not progress):
        row = {"fit": name, "origin": swarm.origin, "objective": cfg.objective, "maximize": cfg.maximize,
               "regressor": reg, "backend": backend, "n_runs": len(X), "n_sources": X.shape[1],
               "sources": ",".join(swarm.sources), "folds": cfg.folds, "cv_spearman": None, "cv_r2": None,
               "status": "ok", "note": note, "chosen": False, "config": json.dumps(dataclasses.asdict(cfg))}
        if make is None:
            rows.append({**row, "status": "unavailable"})
            continue
        try:
            pred, fold = cross_validate(make, X, Y, y, cfg.folds, cfg.seed)
            models[reg] = make().fit(X, Y)
        except (ValueError, np.linalg.LinAlgError, MixoptError) as e:
            log.warning("fit %s: %s failed: %s", name, reg, e)
            rows.append({**row, "status": "failed", "note": str(e)})
            continue
        row["cv_spearman"], row["cv_r2"] = _scores(y, pred)
        rows.append(row)
        preds.append(pl.DataFrame({"fit": name, "regressor": reg, "run": swarm.runs, "fold": fold,
                                   "observed": sign * y, "predicted": sign * pred}))
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise MixoptError(f"fit {name}: no regressor could be fitted ({'; '.join(r['note'] for r in rows)})")
    chosen = cfg.propose_with or max(ok, key=lambda r: (-np.inf if r["cv_spearman"] is None else r["cv_spearman"],
                                                        -REGRESSORS.index(r["regressor"])))["regressor"]
    for r in rows:
        r["chosen"] = r["regressor"] == chosen
    w = optimize(models[chosen].predict, bounds, prior, cfg.kl_weight, cfg.seed, cfg.n_candidates)
    predicted = float(sign * models[chosen].predict(w[None])[0])
    lo = hi = np.full(len(w), np.nan)
    if cfg.n_boot:
        make = getattr(models[chosen], "warm", None) or factories[chosen][0]
        boots = bootstrap(make, X, Y, bounds, prior, cfg.kl_weight, cfg.n_boot, cfg.seed, start=w)
        q = [(1 - cfg.ci) / 2 * 100, (1 + cfg.ci) / 2 * 100]
        lo, hi = np.percentile(boots, q, axis=0)
    spec = mixture_spec(swarm.sources, w)
    proposal = {"regressor": chosen, "weights": dict(zip(swarm.sources, map(float, w))),
                "lo": dict(zip(swarm.sources, map(float, lo))), "hi": dict(zip(swarm.sources, map(float, hi))),
                "predicted": predicted, "spec": spec, "n_boot": cfg.n_boot, "ci": cfg.ci}
    proposals = pl.DataFrame([{"fit": name, "objective": cfg.objective, "regressor": chosen, "source": s,
                               "weight": float(w[j]), "lo": float(lo[j]), "hi": float(hi[j]),
                               "lower": float(bounds.lower[j]), "upper": float(bounds.upper[j]),
                               "cap": float(bounds.caps[j]), "prior": float(prior[j]), "kl_weight": cfg.kl_weight,
                               "n_boot": cfg.n_boot, "ci": cfg.ci, "predicted": predicted, "spec": spec,
                               "origin": swarm.origin, "model": swarm.model, "tokens": swarm.tokens}
                              for j, s in enumerate(swarm.sources)])
    fits = pl.DataFrame(rows, infer_schema_length=None)
    predictions = pl.concat(preds) if preds else pl.DataFrame()
    if write and store is not None:
        part = part_name(name)
        store.put_result(FITS_TABLE, part, fits)
        if predictions.height:
            store.put_result(PREDICTIONS_TABLE, part, predictions)
        store.put_result(PROPOSALS_TABLE, part, proposals)
    return MixFit(name, swarm, cfg, fits, predictions, proposal, proposals, models, bounds)


def write_proposal_csv(fit: MixFit, path: str | Path) -> Path:
    """The proposal as one row of olmix's ratios.csv (run 'proposal', one column per source)."""
    from corpora.store import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pl.DataFrame({"run": ["proposal"], **{s: [w] for s, w in fit.proposal["weights"].items()}}).write_csv(tmp)
    return path


def format_fit(fit: MixFit) -> str:
    lines = [f"fit {fit.name}: {fit.swarm.origin}, {len(fit.swarm.runs)} runs x {len(fit.swarm.sources)} sources, "
             f"objective {fit.config.objective} ({'higher' if fit.config.maximize else 'lower'} is better), "
             f"{fit.config.folds}-fold CV",
             f"  {'regressor':<10} {'CV Spearman':>12} {'CV R2':>8}  status"]
    for r in fit.fits.to_dicts():
        sp = "—" if r["cv_spearman"] is None else f"{r['cv_spearman']:.3f}"
        r2 = "—" if r["cv_r2"] is None else f"{r['cv_r2']:.3f}"
        mark = " <- proposes" if r["chosen"] else ""
        lines.append(f"  {r['regressor']:<10} {sp:>12} {r2:>8}  {r['status']}{mark}"
                     + (f" ({r['note']})" if r["status"] != "ok" else ""))
    p = fit.proposal
    lines.append(f"proposal ({p['regressor']}, predicted {fit.config.objective} {p['predicted']:.4f}):")
    for s, w in p["weights"].items():
        ci = "" if not np.isfinite(p["lo"][s]) else f"  [{p['lo'][s]:.3f}, {p['hi'][s]:.3f}]"
        lines.append(f"  {s:<12} {w:.4f}{ci}")
    lines.append(f"as a mixture: python -m train mix NAME --parts {p['spec']} --tokens ...")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- CLI
EXAMPLE = "python -m stats.mixopt fit --sweep demo_swarm --objective wiki --json"


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    from stats.mixopt.swarm import _count, _names, _weights

    src = p.add_argument_group("swarm (one of)")
    src.add_argument("--sweep", help="a swarm (sweep) in the store")
    src.add_argument("--ratios", help="ratios.csv: a `run` column and one column per source (olmix/RegMix layout)")
    src.add_argument("--metrics", help="metrics.csv: a `run` column and one column per metric")
    p.add_argument("--objective", default=AVG, help="a metric (validation domain) or avg (default avg)")
    p.add_argument("--maximize", action="store_true", help="the objective is better when higher")
    p.add_argument("--name", help="fit name (default: SWEEP.OBJECTIVE, or csv.OBJECTIVE)")
    p.add_argument("--regressors", type=_names, default=list(REGRESSORS),
                   help=f"regressors (default {','.join(REGRESSORS)})")
    p.add_argument("--propose-with", help="regressor that proposes (default: the best CV Spearman)")
    p.add_argument("--folds", type=int, default=5, help="K of K-fold CV (default 5)")
    p.add_argument("--seed", type=int, default=0, help="CV, search and bootstrap seed (default 0)")
    p.add_argument("--n-boot", type=int, default=100, help="bootstrap replicates of the proposal (default 100)")
    p.add_argument("--lower", type=_weights, default={}, help="per-source lower bounds, e.g. cc=0.2")
    p.add_argument("--upper", type=_weights, default={}, help="per-source upper bounds, e.g. qa=0.3")
    p.add_argument("--max-epochs", type=float, help="repetition cap per source at --target-tokens")
    p.add_argument("--target-tokens", type=_count, help="budget for the repetition cap (default: the swarm's)")
    p.add_argument("--kl-weight", type=float, default=0.0, help="penalty weight of KL(w || prior) (default 0)")
    p.add_argument("--prior", type=_weights, help="prior weights (default: the swarm design's, else uniform)")
    p.add_argument("--unigram-tokenizer", help="tokenizer of the stored unigram counts (default: cl100k_base if counted)")
    p.add_argument("--export", metavar="DIR", help="write proposal.csv (olmix) and the swarm's ratios/metrics CSVs")


def fit_config(args) -> FitConfig:
    return FitConfig(objective=args.objective, maximize=args.maximize, regressors=args.regressors,
                     folds=args.folds, seed=args.seed, n_boot=args.n_boot, lower=args.lower, upper=args.upper,
                     max_epochs=args.max_epochs, target_tokens=args.target_tokens, kl_weight=args.kl_weight,
                     prior=args.prior, unigram_tokenizer=args.unigram_tokenizer, propose_with=args.propose_with)


def load_swarm(args, store: Store | None) -> tuple[Swarm, str]:
    """The swarm the flags name, and the default fit name."""
    if args.sweep and (args.ratios or args.metrics):
        raise MixoptError("give --sweep or --ratios with --metrics, not both")
    if args.sweep:
        return read_store_swarm(store, args.sweep), f"{args.sweep}.{args.objective}"
    if not (args.ratios and args.metrics):
        raise MixoptError("name the swarm: --sweep NAME, or --ratios ratios.csv --metrics metrics.csv")
    return read_csv_swarm(args.ratios, args.metrics), f"csv.{args.objective}"


def add_parser(sub) -> None:
    from stats.mixopt.cli import add_command
    from stats.mixopt.validate import add_validate_arguments

    p = add_command(sub, "fit", "fit regressors to a swarm (K-fold CV) and propose a mixture",
                    "Fit the log-linear mixing law, boosted trees and the unigram predictor to a swarm (a sweep in "
                    "the store, or olmix/RegMix CSVs), report each one's K-fold CV Spearman and R2, and propose the "
                    "best predicted mixture under constraints with bootstrap intervals (--validate then trains it "
                    "at a larger scale).",
                    [EXAMPLE, "python -m stats.mixopt fit --ratios ratios.csv --metrics metrics.csv --objective wiki"])
    add_fit_arguments(p)
    g = p.add_argument_group("validation (with --validate)")
    g.add_argument("--validate", action="store_true", help="train the proposal and three baselines at a larger scale")
    add_validate_arguments(g)


def run(args) -> int:
    from stats.mixopt.cli import emit, open_store

    store = open_store(args) if args.sweep or args.store or args.validate else None
    swarm, default_name = load_swarm(args, store)
    cfg = fit_config(args)
    name = args.name or default_name
    if args.validate:
        from stats.mixopt.validate import format_validation, validate_config, validate_fit

        vcfg = validate_config(args, swarm, store)  # checked before any fitting
        if cfg.target_tokens is None:  # repetition caps for the budget the proposal will train at
            cfg.target_tokens = vcfg.tokens
    with store.writer("python -m stats.mixopt fit") if store is not None else contextlib.nullcontext():
        fit = fit_swarm(swarm, cfg, store, name, write=store is not None, progress=show_progress(args))
        if args.export:
            write_csv_swarm(swarm, args.export)
            write_proposal_csv(fit, Path(args.export) / "proposal.csv")
        summary = fit.summary()
        text = format_fit(fit)
        if args.validate:
            summary["validation"] = validate_fit(store, fit, vcfg, progress=show_progress(args))
            text += "\n" + format_validation(summary["validation"])
    return emit(args, summary, text)
