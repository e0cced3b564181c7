"""The whole study, driven by one TOML file: demo store -> generation -> unigram and near-duplicate
analyses -> tokenizer -> mixtures -> sweep -> scaling fits -> report.

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
import tomllib
from pathlib import Path

from tqdm.auto import tqdm

from corpora.store import Store

log = logging.getLogger(__name__)

DEMO_STUDY = Path(__file__).with_name("studies") / "demo.toml"


@dataclasses.dataclass
class StudyConfig:
    """A study: which corpora, which synthetic types and ratios, which models and budgets."""

    name: str = "demo"
    store: str = "store"
    report: str = "report.html"
    demo: bool = True  # build the demo store (cc + wiki) first
    source: str = "cc"  # natural training corpus: rephrased, and the baseline
    tests: list[str] = dataclasses.field(default_factory=lambda: ["wiki"])
    types: list[str] = dataclasses.field(default_factory=lambda: ["hq", "qa", "txbk"])
    generate: dict = dataclasses.field(default_factory=dict)  # synth.generate.GenerateConfig fields
    unigram: dict = dataclasses.field(default_factory=dict)  # stats.unigram.UnigramConfig fields
    dedup: dict = dataclasses.field(default_factory=dict)  # stats.dedup.DedupConfig fields
    tokenizer: dict = dataclasses.field(default_factory=lambda: {"name": "study_bpe", "vocab_size": 4096})
    mixtures: dict = dataclasses.field(default_factory=lambda: {"ratios": [0.0, 0.33, 0.67, 1.0]})
    sweep: dict = dataclasses.field(default_factory=dict)  # [grid] models/tokens, [run] options
    scaling: dict = dataclasses.field(default_factory=dict)  # stats.scaling.ScalingConfig fields
    evidence: dict = dataclasses.field(default_factory=dict)  # stats.evidence.EvidenceConfig fields (all optional)
    evals: dict = dataclasses.field(default_factory=dict)  # stats.evals.STUDY_SECTION keys; empty: no downstream evals


def load_study(path: str | Path | None) -> StudyConfig:
    """Read a study TOML (default: the demo study); unknown keys are a clear error. Sections added later
    ([evidence]) are optional: their fields default."""
    path = Path(path) if path else DEMO_STUDY
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such study file")
    with open(path, "rb") as f:
        try:
            doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: {e}") from None
    known = {f.name for f in dataclasses.fields(StudyConfig)}
    unknown = set(doc) - known
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    study = StudyConfig(**doc)
    if study.evals:  # checked now, not after the sweep
        from stats.evals import evals_config

        evals_config(study.evals, where=f"{path}: [evals]")
    return study


def mixture_name(stype: str | None, ratio: float) -> str:
    """mix_cc for the natural-only baseline, mix_hq33 for 33% HQ + 67% source, ..."""
    return "mix_base" if stype is None or ratio == 0 else f"mix_{stype}{round(ratio * 100):d}"


def mixture_parts(study: StudyConfig) -> dict[str, dict[str, float]]:
    """{mixture name: {corpus: share}} for every (type, ratio) of the study, the baseline once."""
    out = {mixture_name(None, 0): {study.source: 1.0}}
    for stype in study.types:
        for ratio in study.mixtures.get("ratios", [0.0, 0.33, 0.67, 1.0]):
            if ratio <= 0:
                continue
            parts = {stype: round(ratio, 6)}
            if ratio < 1:
                parts[study.source] = round(1 - ratio, 6)
            out[mixture_name(stype, ratio)] = parts
    return out


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


def sweep_document(study: StudyConfig) -> dict:
    """The `python -m train sweep` grid for this study (mixtures defined inline, built when missing)."""
    grid = study.sweep.get("grid", {})
    tokens = grid.get("tokens", ["50k", "100k"])
    mix = dict(study.mixtures)
    mix.pop("ratios", None)
    mix.setdefault("tokenizer", study.tokenizer["name"])
    mix.setdefault("tokens", max(_count(t) for t in tokens))
    mixtures = {name: {"parts": parts, **mix} for name, parts in mixture_parts(study).items()}
    doc = {"name": study.name, "grid": {"mixtures": list(mixtures), **grid, "tokens": tokens},
           "mixtures": mixtures, "val_corpora": list(study.tests)}
    if "run" in study.sweep:
        doc["run"] = dict(study.sweep["run"])
    if "val_tokens" in study.sweep:
        doc["val_tokens"] = study.sweep["val_tokens"]
    return doc


def _count(value) -> int:
    from train.data import parse_count

    return parse_count(value)


def step_sweep(store: Store, study: StudyConfig, progress: bool) -> dict:
    from train.sweep import parse_sweep, run_sweep

    results = run_sweep(store, parse_sweep(sweep_document(study), where=f"study {study.name}"), progress=progress)
    status = [r.get("status") for r in results]
    return {"runs": len(results), "done": status.count("done"), "skipped": status.count("skipped"),
            "failed": status.count("failed")}


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


def step_report(store: Store, study: StudyConfig, progress: bool) -> dict:
    from reports.build import build_report

    path = build_report(store, study.report, title=f"synthmix study: {study.name}", study=dataclasses.asdict(study))
    return {"report": str(Path(path).resolve())}


STEPS = (("demo store", step_demo), ("generate", step_generate), ("generation rounds", step_rounds),
         ("unigram", step_unigram), ("near-duplicates", step_dedup), ("tokenizer", step_tokenizer),
         ("mixtures + sweep", step_sweep), ("downstream evals", step_evals), ("scaling fits", step_scaling),
         ("evidence", step_evidence),
         ("report", step_report))


def run_study(study: StudyConfig, progress: bool = True) -> dict:
    """Run every step in order; return a summary with the report path and each step's time."""
    store = Store(study.store, create=True)
    summary: dict = {"study": study.name, "store": str(store.root), "steps": {}}
    steps = [(n, f) for n, f in STEPS if study.demo or f is not step_demo]
    t_study = time.perf_counter()
    with tqdm(total=len(steps), desc=f"study {study.name}", unit="step", disable=not progress, position=0) as bar:
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
