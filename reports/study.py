"""The whole study, driven by one TOML file: demo store -> generation -> unigram and near-duplicate
analyses -> tokenizer -> mixtures -> sweep -> scaling fits -> evidence -> mixture choice -> findings -> report.

Every step is the library call its CLI makes, and every step is resumable or cached where it lives
(generation skips finished chunks, unigram counts and MinHash signatures are cached per corpus content,
mixtures with an unchanged config are reused, finished runs are skipped), so running the study again
redoes nothing and a killed study picks up where it stopped. A user runs the same study on their own data
by editing a copy of `reports/studies/demo.toml` (set `demo = false` and name their corpora).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from corpora.store import Store
from reports.study_file import (DEMO_STUDY, MIXOPT_SECTION, PROBE_KEYS, SECTIONS, Section, StudyConfig,  # noqa: F401
                                 StudyFileError, _count, _mixopt_settings, load_study, mixture_name, mixture_parts,
                                 probe_config, sweep_document, validate_study)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- steps
def step_demo(store: Store, study: StudyConfig, progress: bool) -> dict:
    from corpora.demo import build_demo

    reports = build_demo(store, progress=progress)
    return {"new_docs": sum(r.n_docs for r in reports)}


def step_generate(store: Store, study: StudyConfig, progress: bool) -> dict:
    from synth.generate import GenerateConfig, generate

    out = {}
    for stype in study.types:
        cfg = GenerateConfig(type=stype, source=study.source, out=stype, progress=progress, **study.generate)
        summary = generate(store, cfg)
        out[stype] = {k: summary.get(k) for k in ("n_docs_written", "n_requests_run", "n_completion_tokens",
                                                  "status", "elapsed_s")}
    return out


def _evidence_config(study: StudyConfig):
    from stats.evidence import EvidenceConfig

    try:
        return EvidenceConfig(**study.evidence)
    except TypeError as e:
        raise ValueError(f"study {study.name}: bad [evidence] section: {e}") from None


def round_corpus(stype: str, rnd: int) -> str:
    """hq for round 1, hq2 for round 2 (rephrasing hq again), ..."""
    return stype if rnd == 1 else f"{stype}{rnd}"


def step_rounds(store: Store, study: StudyConfig, progress: bool) -> dict:
    """Further generation rounds (collapse): round k + 1 of a type rephrases its round k with the same settings."""
    from synth.generate import GenerateConfig, generate

    ev = _evidence_config(study)
    out = {}
    for stype in ev.collapse_types:
        if stype not in study.types:
            continue
        for rnd in range(2, ev.collapse_rounds + 1):
            name = round_corpus(stype, rnd)
            settings = dict(study.generate)
            if ev.collapse_limit is not None:
                settings["limit"] = ev.collapse_limit
            cfg = GenerateConfig(type=stype, source=round_corpus(stype, rnd - 1), out=name, progress=progress,
                                 **settings)
            summary = generate(store, cfg)
            out[name] = {k: summary.get(k) for k in ("n_docs_written", "status", "elapsed_s")}
    return out


def step_unigram(store: Store, study: StudyConfig, progress: bool) -> dict:
    from stats.unigram import UnigramConfig, run_unigram

    trains = [study.source, *study.types]
    for name, parts in mixture_parts(study).items():
        if len(parts) > 1:
            trains.append(",".join(f"{c}:{w:g}" for c, w in parts.items()))
    cfg = UnigramConfig(train=trains, test=list(study.tests), progress=progress, **study.unigram)
    report = run_unigram(store, cfg)
    return {"comparisons": len(report.comparisons) if hasattr(report, "comparisons") else None}


def step_dedup(store: Store, study: StudyConfig, progress: bool) -> dict:
    from stats.dedup import DedupConfig, analyze_against, analyze_corpus

    cfg = DedupConfig(**study.dedup)
    n = 0
    for corpus in [study.source, *study.types, *study.tests]:
        analyze_corpus(store, corpus, cfg, progress=progress)
        n += 1
    for stype in study.types:  # synthetic vs its source (and source-doc Jaccard), training vs test
        analyze_against(store, stype, study.source, cfg, progress=progress)
        n += 1
    for train in [study.source, *study.types]:
        for test in study.tests:
            analyze_against(store, train, test, cfg, progress=progress)
            n += 1
    return {"analyses": n}


def step_tokenizer(store: Store, study: StudyConfig, progress: bool) -> dict:
    from train.tokenizer import train_tokenizer

    name = study.tokenizer["name"]
    if store.has_result("tokenizers", name):
        return {"tokenizer": name, "reused": True}
    corpora = study.tokenizer.get("corpora") or [study.source, *study.types]
    row = train_tokenizer(store, name, corpora, vocab_size=int(study.tokenizer.get("vocab_size", 4096)))
    return {"tokenizer": name, "vocab_size": row.get("vocab_size")}


def step_sweep(store: Store, study: StudyConfig, progress: bool) -> dict:
    from train.sweep import parse_sweep, run_sweep

    results = run_sweep(store, parse_sweep(sweep_document(study), where=f"study {study.name}"), progress=progress)
    status = [r.get("status") for r in results]
    return {"runs": len(results), "done": status.count("done"), "skipped": status.count("skipped"),
            "failed": status.count("failed")}


def step_probe(store: Store, study: StudyConfig, progress: bool) -> dict:
    """An anneal probe over the study's synthetic types: cooldown branches off the sweep's baseline trunks,
    ranked against the sweep's full runs on the same mixtures (docs/schedules.md)."""
    from stats.mixopt.probe import ranking, run_probe

    cfg = probe_config(study)
    if cfg is None:
        return {"probe": None}
    probes, decisions = run_probe(store, cfg, progress=progress)
    r = ranking(probes)
    mean = decisions.filter((decisions["seed"] == "mean") & (decisions["domain"] == r["domain"])) \
        if decisions.height else decisions
    return {"probe": cfg.name, "domain": r.get("domain"), "probe_ranking": r.get("probe"),
            "full_ranking": r.get("full"), "accuracy": mean["accuracy"][0] if mean.height else None}


def step_scaling(store: Store, study: StudyConfig, progress: bool) -> dict:
    from stats.scaling import ScalingConfig, fit_sweep

    fits = fit_sweep(store, study.name, ScalingConfig(**study.scaling))
    return {"fits": fits.fits.height, "speedups": fits.speedups.height, "optimal_ratios": fits.optimal_ratios.height}


def step_evals(store: Store, study: StudyConfig, progress: bool) -> dict:
    """Every finished run of the sweep on the [evals] tasks (cached per checkpoint: a rerun scores nothing)."""
    from stats.evals import evals_config, evaluate_sweep

    if not study.evals:
        return {"evals": 0}
    df = evaluate_sweep(store, study.name, evals_config(study.evals, where=f"study {study.name}: [evals]"),
                        progress=progress)
    return {"evals": df.height, "requests_scored": int(df["n_requests_scored"].sum()) if df.height else 0}


def step_evidence(store: Store, study: StudyConfig, progress: bool) -> dict:
    """Decision reliability and the learning check over the sweep; unigram/near-duplicate signature per round."""
    from stats.evidence import collapse_rounds, decisions, learning_check

    ev = _evidence_config(study)
    dec = decisions(store, study.name)
    lc = learning_check(store, study.name, alpha=ev.alpha)
    unigram = {k: v for k, v in study.unigram.items() if k in ("tokenizer", "alpha")}
    cr = collapse_rounds(store, study.tests, dedup=dict(study.dedup), **unigram)
    return {"decisions": dec.height, "learning_check": lc.height,
            "runs_not_below_unigram": int((~lc["below_unigram"]).sum()) if lc.height else 0,
            "collapse_rounds": cr.height}


def step_mixopt(store: Store, study: StudyConfig, progress: bool) -> dict:
    """Mixture choice: a swarm over the source and the synthetic types, the fit, the proposal, its validation."""
    from stats.mixopt import FitConfig, SwarmConfig, ValidateConfig, fit_swarm, read_store_swarm, run_swarm, validate_fit

    m = _mixopt_settings(study)
    if not m:
        return {"skipped": "no [mixopt] section"}
    options = {k: v for k, v in study.sweep.get("run", {}).items() if k != "schedule"}  # one budget: no branches
    mix = {"tokenizer": study.tokenizer["name"], "seq_len": study.mixtures.get("seq_len", 512),
           "max_epochs": study.mixtures.get("max_epochs", 16.0)}
    seed = m.get("seed", 0)
    swarm_cfg = SwarmConfig(name=f"{study.name}_swarm", sources=[study.source, *study.types], n=m.get("n", 16),
                            model=m.get("model", "debugmodel"), tokens=m.get("tokens", "48k"), seed=seed,
                            seeds=m.get("seeds", [0]), natural=study.source,
                            concentration=tuple(m.get("concentration", (0.1, 5.0))), run=options,
                            val_corpora=list(study.tests), val_tokens=study.sweep.get("val_tokens", "200k"), **mix)
    swarm_result = run_swarm(store, swarm_cfg, progress=progress)
    vcfg = ValidateConfig(model=m.get("validate_model", swarm_cfg.model),
                          tokens=_count(m.get("validate_tokens", 2 * swarm_cfg.tokens)),
                          seeds=m.get("validate_seeds", [0, 1, 2]), natural=study.source, run=options,
                          evidence=_evidence_config(study), **mix)
    fit_cfg = FitConfig(objective=m.get("objective", study.tests[0]), folds=m.get("folds", 4),
                        n_boot=m.get("n_boot", 100), seed=seed, kl_weight=m.get("kl_weight", 0.0),
                        max_epochs=mix["max_epochs"], target_tokens=vcfg.tokens,
                        unigram_tokenizer=study.unigram.get("tokenizer"))
    fit = fit_swarm(read_store_swarm(store, swarm_cfg.name), fit_cfg, store, f"{swarm_cfg.name}.{fit_cfg.objective}",
                    progress=progress)
    validation = validate_fit(store, fit, vcfg, progress=progress)
    return {"swarm_runs": swarm_result["runs"], "failed": swarm_result["failed"],
            "cv_spearman": {r["regressor"]: r["cv_spearman"] for r in fit.fits.to_dicts()},
            "proposal": fit.proposal["spec"], "rank": validation["rank"], "regret": validation["regret"],
            "verdict": validation["verdict"], "against": validation["against"]}


def step_findings(store: Store, study: StudyConfig, progress: bool) -> dict:
    """The study's claims judged against the result tables (table `findings`), which the report renders."""
    from stats.findings import write_findings

    ev = _evidence_config(study)
    df = write_findings(store, n_boot=ev.n_boot, seed=ev.seed)
    return {"findings": df.height, "verdicts": dict(df.group_by("verdict").len().sort("verdict").iter_rows())}


def step_report(store: Store, study: StudyConfig, progress: bool) -> dict:
    from reports.build import build_report

    path = build_report(store, study.report, title=f"synthmix study: {study.name}", study=dataclasses.asdict(study))
    return {"report": str(Path(path).resolve())}


STEPS = (("demo store", step_demo), ("generate", step_generate), ("generation rounds", step_rounds),
         ("unigram", step_unigram), ("near-duplicates", step_dedup), ("tokenizer", step_tokenizer),
         ("mixtures + sweep", step_sweep), ("anneal probe", step_probe), ("downstream evals", step_evals),
         ("scaling fits", step_scaling), ("evidence", step_evidence), ("mixture choice", step_mixopt),
         ("findings", step_findings), ("report", step_report))


def run_study(study: StudyConfig, progress: bool = True) -> dict:
    """Run every step in order; return a summary with the report path and each step's time."""
    store = Store(study.store, create=True)
    summary: dict = {"study": study.name, "store": str(store.root), "steps": {}}
    steps = [(n, f) for n, f in STEPS if study.demo or f is not step_demo]
    t_study = time.perf_counter()
    # one writer for the whole study: a second study or command on this store is refused at once
    with store.writer(f"python -m reports study {study.name}"), \
            tqdm(total=len(steps), desc=f"study {study.name}", unit="step", disable=not progress, position=0) as bar:
        for name, fn in steps:
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            result = fn(store, study, progress)
            result["elapsed_s"] = round(time.perf_counter() - t0, 1)
            summary["steps"][name] = result
            log.info("step %s: %s", name, result)
            if progress:
                tqdm.write(f"[{name}] done in {result['elapsed_s']}s")
            bar.update()
    summary["elapsed_s"] = round(time.perf_counter() - t_study, 1)
    summary["report"] = summary["steps"]["report"]["report"]
    return summary
