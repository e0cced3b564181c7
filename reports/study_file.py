"""The study file: `StudyConfig` (one TOML file drives the whole study), its table-driven checks (SECTIONS: every
section's keys, types and ranges, checked before the first step runs) and what the file means for the steps
(mixture names and parts, the sweep grid, the probe config). The steps themselves are in `reports/study.py`."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path


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
    mixopt: dict = dataclasses.field(default_factory=dict)  # mixture choice (MIXOPT_SECTION); empty: step skipped
    evals: dict = dataclasses.field(default_factory=dict)  # stats.evals.STUDY_SECTION keys; empty: no downstream evals
    probe: dict = dataclasses.field(default_factory=dict)  # an anneal probe after the sweep (PROBE_KEYS; {}: none)


# [probe]: key -> accepted types; every key is optional (defaults: `probe_config`)
PROBE_KEYS = {"trunk": (str,), "candidates": (list,), "share": (float, int), "cooldown": (float, int),
              "seeds": (list,), "model": (str,), "tokens": (str, int)}


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
    validate_study(doc, path)
    return StudyConfig(**doc)


# ------------------------------------------------------------------------------------ study-file checks
@dataclasses.dataclass(frozen=True)
class Section:
    """How one section of a study file is checked, before any step runs. Its keys are the fields of
    `config` ("module:Class", a dataclass: the step's config) less `exclude` (fields the study sets
    itself), plus `keys` (name -> type, e.g. "int | None", "list[float]"); `ranges` bound numbers (and every
    number of a list) with (low, high), None for open; `check` (name of a function in this module) runs
    last for what a table cannot say. Adding a section to the study format is one entry in SECTIONS."""
    config: str | None = None
    exclude: tuple[str, ...] = ()
    keys: dict = dataclasses.field(default_factory=dict)
    ranges: dict = dataclasses.field(default_factory=dict)
    check: str | None = None


_POSITIVE = (1, None)


SECTIONS: dict[str, Section] = {
    "": Section(keys={"name": "str", "store": "str", "report": "str", "demo": "bool", "source": "str",
                      "tests": "list[str]", "types": "list[str]"}),
    "generate": Section("synth.generate:GenerateConfig", exclude=("type", "source", "out", "progress"),
                        ranges={"limit": _POSITIVE, "max_new_tokens": _POSITIVE, "temperature": (0, None),
                                "top_p": (0, 1), "batch_size": _POSITIVE, "max_chunk_tokens": _POSITIVE,
                                "max_chunks": _POSITIVE, "n_topics": (0, None), "shard_docs": _POSITIVE,
                                "max_retries": (0, None), "concurrency": _POSITIVE, "timeout_s": (0, None),
                                "tensor_parallel_size": _POSITIVE, "num_threads": (0, None), "workers": (0, None)}),
    "unigram": Section("stats.unigram:UnigramConfig", exclude=("train", "test", "progress"),
                       ranges={"alpha": (0, None), "top": _POSITIVE, "workers": (0, None), "threads": (0, None),
                               "batch_size": _POSITIVE, "n_subsamples": _POSITIVE}),
    "dedup": Section("stats.dedup:DedupConfig",
                     ranges={"threshold": (0, 1), "num_perm": _POSITIVE, "ngram": _POSITIVE,
                             "lsh_fn_weight": (0, 1), "bands": (0, None), "rows": (0, None),
                             "max_bucket": _POSITIVE, "threads": (0, None), "workers": (0, None),
                             "batch_docs": _POSITIVE}),
    "scaling": Section("stats.scaling:ScalingConfig",
                       ranges={"n_boot": _POSITIVE, "ci": (0, 1), "n_starts": _POSITIVE, "n_starts_boot": _POSITIVE,
                               "max_iter": _POSITIVE, "max_exponent": (0, None), "ratio_degree": (0, None),
                               "huber_delta": (0, None), "budgets": (0, None)}),
    "evidence": Section("stats.evidence:EvidenceConfig",
                        ranges={"n_boot": _POSITIVE, "ci": (0, 1), "min_pairs": _POSITIVE, "alpha": (0, 1),
                                "collapse_rounds": _POSITIVE, "collapse_limit": _POSITIVE}),
    "tokenizer": Section(keys={"name": "str", "vocab_size": "int", "corpora": "list[str]"},
                         ranges={"vocab_size": (256, None)}),
    "mixtures": Section("train.data:MixtureConfig", exclude=("name", "parts"), keys={"ratios": "list[float]"},
                        ranges={"ratios": (0, 1), "seq_len": _POSITIVE, "max_epochs": (0, None)}),
    "sweep": Section(keys={"grid": "dict", "run": "dict", "val_tokens": "int | str"}, check="_check_sweep"),
    # the later steps declare their keys where the step lives; `check` runs the step's own validation early
    "probe": Section(keys=dict.fromkeys(PROBE_KEYS, "any"), check="_check_probe"),
    "evals": Section("stats.evals:EvalConfig", check="_check_evals"),
}


class StudyFileError(ValueError):
    """A study file that does not pass the checks; the message names the file, section and key."""


def validate_study(doc: dict, path: str | Path) -> None:
    """Check every declared section of a parsed study file before the first step: unknown keys, wrong
    types and values out of range are one StudyFileError naming the file, section and key."""
    for name, section in SECTIONS.items():
        table = doc if name == "" else doc.get(name, {})
        where = f"{path}: [{name}]" if name else f"{path}:"
        if not isinstance(table, dict):
            raise StudyFileError(f"{where} must be a table ([{name}] with key = value lines)")
        types = _section_types(section)
        for key, value in table.items():
            if name == "" and isinstance(value, dict) and key in SECTIONS:
                continue  # a section, checked as its own entry
            if name == "" and key not in types:
                continue  # a section that declares no checks of its own (StudyConfig already knows its name)
            if key not in types:
                raise StudyFileError(f"{where} unknown key {key!r}; allowed: {', '.join(sorted(types))}")
            if not _has_type(value, types[key]):
                raise StudyFileError(f"{where} {key} = {value!r} must be {types[key]}")
            low, high = section.ranges.get(key, (None, None))
            for x in value if isinstance(value, list) else [value]:
                if isinstance(x, (int, float)) and not isinstance(x, bool) and \
                        ((low is not None and x < low) or (high is not None and x > high)):
                    bound = f"between {low} and {high}" if low is not None and high is not None else \
                        (f"at least {low}" if low is not None else f"at most {high}")
                    raise StudyFileError(f"{where} {key} = {value!r} must be {bound}")
        if section.check:
            globals()[section.check](doc, table, where)


def _section_types(section: Section) -> dict[str, str]:
    types = {}
    if section.config:
        import importlib

        module, cls = section.config.split(":")
        for f in dataclasses.fields(getattr(importlib.import_module(module), cls)):
            if f.name not in section.exclude:
                types[f.name] = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    types.update(section.keys)
    return types


def _has_type(value, spec: str) -> bool:
    """Whether a TOML value fits a type as dataclasses spell it ("int", "str | None", "list[str]", ...)."""
    for alt in (a.strip() for a in spec.split("|")):
        if alt == "None":
            continue  # TOML has no null: an optional key is simply left out
        base, _, inner = alt.partition("[")
        if base in ("list", "tuple"):
            item = inner.rstrip("]").split(",")[0].strip() or "str"
            if isinstance(value, list) and all(_has_type(v, item) for v in value):
                return True
        elif base == "dict" and isinstance(value, dict):
            return True
        elif base == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        elif base == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        elif base in ("str", "Path") and isinstance(value, str):
            return True
        elif base == "bool" and isinstance(value, bool):
            return True
        elif base not in ("list", "tuple", "dict", "int", "float", "str", "Path", "bool"):
            return True  # a type this table cannot check: the step's own config checks it
    return False


def _check_sweep(doc: dict, table: dict, where: str) -> None:
    """The sweep grid as the sweep parser reads it, budgets that parse, and model presets that exist
    (a bad preset would otherwise surface only after generation, minutes in)."""
    import train.loop
    from train.model import PRESETS
    from train.sweep import SweepError, parse_sweep

    study = StudyConfig(**doc)
    try:
        parse_sweep(sweep_document(study), where=where.rstrip(":"))
    except (SweepError, ValueError, TypeError) as e:
        raise StudyFileError(str(e) if str(e).startswith(str(where).split(":")[0]) else f"{where} {e}") from None
    models = (table.get("grid") or {}).get("models", [])
    for model in models if isinstance(models, list) else [models]:
        if model not in PRESETS:
            raise StudyFileError(f"{where} grid.models: unknown model preset {model!r}; choose one of: "
                                 f"{', '.join(PRESETS)}")
    run_keys = {f.name for f in dataclasses.fields(train.loop.RunConfig)}
    for key in table.get("run") or {}:
        if key not in run_keys:
            raise StudyFileError(f"{where} unknown key {key!r} in [sweep.run]; allowed: {', '.join(sorted(run_keys))}")


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
    probe = probe_config(study)
    if probe is not None:   # its trunks keep the checkpoint its cooldown branches start from
        doc["anneal_points"] = [probe.trunk]
    return doc


def probe_config(study: StudyConfig):
    """The [probe] section as a stats.mixopt.probe.ProbeConfig whose runs are the sweep's where they can be:
    trunk = the baseline mixture, candidates = the synthetic types, budget = the largest, the sweep's seeds,
    first model, lr and [run] options; None without a [probe] section."""
    if not study.probe:
        return None
    for key, value in study.probe.items():
        if key not in PROBE_KEYS:
            raise ValueError(f"study {study.name}: unknown key {key!r} in [probe]; known: {', '.join(PROBE_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, PROBE_KEYS[key]):
            raise ValueError(f"study {study.name}: [probe] {key} = {value!r} should be "
                             f"{' or '.join(t.__name__ for t in PROBE_KEYS[key])}")
    from stats.mixopt.probe import ProbeConfig

    grid, p = study.sweep.get("grid", {}), study.probe
    return ProbeConfig(
        trunk=p.get("trunk", mixture_name(None, 0)), candidates=list(p.get("candidates", study.types)),
        share=float(p.get("share", 0.33)), cooldown=float(p.get("cooldown", 0.2)),
        seeds=[int(x) for x in p.get("seeds", grid.get("seed", [0]))],
        model=p.get("model", grid.get("models", ["debugmodel"])[0]),
        tokens=_count(p.get("tokens", max(_count(t) for t in grid.get("tokens", ["50k", "100k"])))),
        lr=grid.get("lr", [None])[0], options=dict(study.sweep.get("run", {})),
        val_tokens=_count(study.sweep.get("val_tokens", 200_000)), val_corpora=list(study.tests),
        name=f"{study.name}_probe")


def _count(value) -> int:
    from train.data import parse_count

    return parse_count(value)


# [mixopt]: key -> (type(s), low, high), None = unbounded; the study's table-driven check can take it over
MIXOPT_SECTION = {
    "n": (int, 4, 1024),                   # swarm mixtures, corners included
    "model": (str, None, None),            # proxy model preset
    "tokens": ((int, str), None, None),    # proxy budget, e.g. "48k"
    "seeds": (list, None, None),           # proxy training seeds
    "seed": (int, 0, None),                # design, CV and bootstrap seed
    "concentration": (list, None, None),   # Dirichlet concentration range [low, high]
    "objective": (str, None, None),        # a test domain or "avg"
    "folds": (int, 2, 50),
    "n_boot": (int, 0, 100_000),
    "kl_weight": ((int, float), 0, None),
    "validate_model": (str, None, None),   # target scale of the validation (default: the proxy model)
    "validate_tokens": ((int, str), None, None),
    "validate_seeds": (list, None, None),
}


SECTIONS["mixopt"] = Section(keys=dict.fromkeys(MIXOPT_SECTION, "any"), check="_check_mixopt")


def _check_probe(doc: dict, table: dict, where: str) -> None:
    try:
        probe_config(StudyConfig(name=where, probe=table))
    except ValueError as e:
        raise StudyFileError(f"{where} {e}".replace(f"study {where}: ", "")) from None


def _check_mixopt(doc: dict, table: dict, where: str) -> None:
    try:
        _mixopt_settings(StudyConfig(name=where, mixopt=table))
    except ValueError as e:
        raise StudyFileError(f"{where} {e}".replace(f"study {where}: ", "")) from None


def _check_evals(doc: dict, table: dict, where: str) -> None:
    from stats.evals import evals_config

    try:
        evals_config(table, where=where)
    except ValueError as e:
        raise StudyFileError(str(e)) from None


def _mixopt_settings(study: StudyConfig) -> dict:
    for key, value in study.mixopt.items():
        if key not in MIXOPT_SECTION:
            raise ValueError(f"study {study.name}: unknown key [mixopt] {key}; known: {', '.join(MIXOPT_SECTION)}")
        kind, low, high = MIXOPT_SECTION[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"study {study.name}: [mixopt] {key} = {value!r} has the wrong type")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"study {study.name}: [mixopt] {key} = {value!r} is outside [{low}, {high}]")
    return dict(study.mixopt)
