"""Sweeps: a grid of mixtures x model presets x token budgets (x lr x seed), the study's protocol.

`python -m train sweep GRID.toml` runs every combination that is not done yet: a run whose `runs` row
says status 'done' is skipped, an interrupted one (status 'running' or 'failed', or a checkpoint on
disk) resumes from its checkpoint, a new one starts. Each run's id is derived from its config (mixture
and its content, preset, budget, lr, seed, fixed options), so rerunning a sweep, or listing the same
run in two sweeps, never trains it twice. One failing run is recorded and the sweep goes on.

Grid TOML format (see examples/sweep_cpu.toml)::

    name = "cpu_demo"                # sweep name, recorded in runs.sweep (required)
    val_tokens = "200k"              # tokens per validation set (optional, default 200k)
    val_corpora = ["wiki"]           # validation corpora (optional, default: every test-role corpus)

    [grid]                           # the cross product of these lists is the sweep
    mixtures = ["cc_only", "cc_hq"]  # mixture names: built ones, or ones defined under [mixtures.NAME]
    models = ["cpu-1m", "cpu-4m"]    # model presets (`python -m train presets`)
    tokens = ["1M", "4M"]            # training token budgets: integers or strings with k/M/B suffixes
    lr = [3e-3]                      # optional: peak learning rates (default: the trainer's)
    seed = [0]                       # optional: seeds (default [0])

    [run]                            # optional: fixed trainer options for every run (RunConfig fields,
    batch_size = 8                   # e.g. batch_size, warmup_steps, eval_every_tokens, compile)
    schedule = "wsd-branches"        # optional: see below (also accepted as a top-level key)

    [mixtures.cc_hq]                 # optional: how to build a mixture the store lacks (the fields of
    parts = { cc = 0.67, hq = 0.33 } # `python -m train mix`: parts, tokens, seed, tokenizer, seq_len,
    tokens = "8M"                    # max_epochs); an existing mixture with another config is an error
    tokenizer = "demo_bpe"
    seq_len = 256

Runs execute in grid order (mixtures, then models, then tokens, lr, seed), smallest budgets of a
mixture/model first, so early results come early.

`schedule = "wsd-branches"` (Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
Training Durations"): the budgets of one (mixture, model, lr, seed) share a warmup-stable-decay trunk. The
largest budget trains first and keeps a stable-phase checkpoint at each smaller budget's decay start; each
smaller budget then trains only its cooldown (`decay_frac` of its steps) from there. Every budget is still
its own `runs` row with the same columns, and its id is that of a from-scratch wsd run of its budget, which
it equals exactly (same warmup_steps, default 5% of the largest budget's steps). The sweep costs about the
largest budget plus the cooldowns instead of the sum of the budgets. Interrupted trunks and branches
resume; a branch whose stable checkpoint is gone (e.g. a budget added after the trunk finished) trains
from scratch, which computes the same run. Stable checkpoints are deleted once every branch is done,
unless keep_optimizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import tomllib
import traceback
from pathlib import Path

from corpora.store import Store, StoreError
from train.data import (MixtureConfig, MixtureError, build_mixture, check_mixture_config, format_count,
                        mixture_config, open_mixture, parse_count, read_mixture_meta)
from train.phases import PhaseError, format_phases, parse_phases, phase_mixtures, prefix, spans

log = logging.getLogger(__name__)

DEFAULT_VAL_TOKENS = 200_000
_TOP_KEYS = {"name", "val_tokens", "val_corpora", "grid", "run", "mixtures", "schedule", "anneal_from",
             "anneal_points"}
BRANCHES = "wsd-branches"
_GRID_KEYS = {"mixtures", "models", "tokens", "lr", "seed", "anneal"}
_GRID_OWNED = {"run_id", "mixture", "model", "tokens", "seed", "lr_peak", "sweep"}  # RunConfig fields
_BRANCH_OWNED = {"branch_from", "branch_tokens"}  # set by schedule = "wsd-branches", not in [run]
_MIXTURE_KEYS = {f.name for f in dataclasses.fields(MixtureConfig)} - {"name"}


class SweepError(StoreError, ValueError):
    """A grid file or run spec that cannot run as written; the message names the file and key."""


@dataclasses.dataclass
class RunSpec:
    """One run as the CLI and the grid describe it; `run_config` turns it into the trainer's RunConfig."""
    mixture: str
    model: str
    tokens: int
    lr: float | None = None
    seed: int = 0
    options: dict = dataclasses.field(default_factory=dict)  # other RunConfig fields (batch_size, ...)
    val_tokens: int = DEFAULT_VAL_TOKENS
    val_corpora: list[str] | None = None
    sweep: str | None = None


@dataclasses.dataclass
class Sweep:
    name: str
    runs: list[RunSpec]
    mixtures: dict[str, MixtureConfig]  # mixtures to build when missing
    path: str | None = None
    branches: bool = False              # schedule = "wsd-branches"
    anneal_points: list[str] = dataclasses.field(default_factory=list)  # trunks on these mixtures keep the
                                        # stable checkpoint at their own decay start (for later anneal probes)


# ---------------------------------------------------------------------------------------- run config
def _run_config_class():
    from train.config import RunConfig

    return RunConfig


def _not_in_run_id() -> set[str]:
    """Options that change how a run executes but not what it computes (the trainer lets a resume change
    them): they stay out of the run id, so e.g. a run stopped early resumes under the same id."""
    from train.config import _RESUMABLE_CHANGES

    return set(_RESUMABLE_CHANGES) | {"run_id"}


def _run_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(_run_config_class())}


def check_run_spec(store: Store, spec: RunSpec, check_mixture: bool = True,
                   planned: dict[str, MixtureConfig] | None = None) -> None:
    """Everything that can be checked before training: preset, budget, options, and that the mixture (each
    phase's) exists with one tokenizer and seq_len (`planned`: mixtures a sweep will build, checked by
    their config; `check_mixture` False: skip the run's mixtures that do not exist yet)."""
    from train.model import PRESETS, UnknownPreset

    if spec.model not in PRESETS:
        raise UnknownPreset(f"unknown model preset {spec.model!r}; choose one of: {', '.join(PRESETS)}")
    if spec.tokens <= 0:
        raise SweepError(f"token budget must be positive, not {spec.tokens}")
    if spec.lr is not None and not spec.lr > 0:
        raise SweepError(f"learning rate must be positive, not {spec.lr}")
    fields = _run_fields()
    unknown = sorted(set(spec.options) - set(fields))
    if unknown:
        raise SweepError(f"unknown trainer option(s) {', '.join(unknown)}; RunConfig has: {', '.join(fields)}")
    owned = sorted(set(spec.options) & _GRID_OWNED)
    if owned:
        raise SweepError(f"option(s) {', '.join(owned)} are set by the grid or the command line, not by [run]")
    try:
        cfg = _run_config_class()(**_config_values(spec))
    except (TypeError, ValueError) as e:
        raise SweepError(f"bad trainer option: {e}") from None
    configs = {}
    for name in phase_mixtures(cfg.phases, cfg.mixture):
        if planned and name in planned:
            configs[name] = planned[name]
        elif check_mixture or read_mixture_meta(store, name) is not None:
            configs[name] = mixture_config(store, name)  # raises naming the built mixtures
    kinds = {(c.tokenizer, c.seq_len) for c in configs.values()}
    if len(kinds) > 1:
        detail = ", ".join(f"{n}: {c.tokenizer} / seq_len {c.seq_len}" for n, c in configs.items())
        raise SweepError(f"the phases of run {format_phases(cfg.phases)} read mixtures with different tokenizers "
                         f"or sequence lengths ({detail}); build them with one tokenizer and seq_len")
    if cfg.phases and configs:   # every phase gets at least one optimizer step (on one process)
        per_step = cfg.batch_size * cfg.grad_accum
        n_steps = spec.tokens // (per_step * next(iter(configs.values())).seq_len)
        if n_steps >= 1:
            try:
                spans(cfg.phases, cfg.mixture, n_steps, per_step)
            except PhaseError as e:
                raise SweepError(str(e)) from None


def _mixture_fingerprint(store: Store, name: str) -> str:
    meta = read_mixture_meta(store, name) or {}
    identity = {k: meta.get(k) for k in ("config", "tokenizer_fingerprint", "content_hashes")}
    return hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=6).hexdigest()


def _config_values(spec: RunSpec, progress: bool = True) -> dict:
    values = {"mixture": spec.mixture, "model": spec.model, "tokens": spec.tokens, "seed": spec.seed,
              "sweep": spec.sweep, "progress": progress, **spec.options}
    if spec.lr is not None:
        values["lr_peak"] = spec.lr
    return values


def make_run_id(store: Store, spec: RunSpec) -> str:
    """`{mixture}.{model}.{tokens}.s{seed}.{hash}`: readable, and the hash covers everything that changes
    the result (the full trainer config with its defaults, the mixture's config and content, the
    validation sets), so a changed run gets a new id and an unchanged one is found again."""
    cfg = dataclasses.asdict(_run_config_class()(**_config_values(spec)))
    fingerprint = _mixture_fingerprint(store, spec.mixture) if not cfg["phases"] else \
        {m: _mixture_fingerprint(store, m) for m in phase_mixtures(cfg["phases"], cfg["mixture"])}
    # a static run leaves `phases` out, so its id is the one it had before phase schedules existed
    key = {"config": {k: v for k, v in cfg.items() if k not in _not_in_run_id() and (k != "phases" or v)},
           "mixture_fingerprint": fingerprint,
           "val_tokens": spec.val_tokens, "val_corpora": spec.val_corpora}
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True, default=str).encode(), digest_size=4).hexdigest()
    return f"{spec.mixture}.{spec.model}.{format_count(spec.tokens)}.s{spec.seed}.{digest}"


def run_config(store: Store, spec: RunSpec, progress: bool = True):
    """The trainer's RunConfig for a spec (fields the spec leaves out keep RunConfig's defaults)."""
    return _run_config_class()(run_id=make_run_id(store, spec), **_config_values(spec, progress))


def run_status(store: Store, run_id: str) -> str | None:
    row = store.read_result("runs", run_id)
    return None if row is None or row.is_empty() else row["status"][-1]


def _has_checkpoint(store: Store, run_id: str) -> bool:
    from train.checkpoint import checkpoint_path

    return checkpoint_path(store, run_id).exists()


def execute_run(store: Store, spec: RunSpec, progress: bool = True) -> dict:
    """Train one run unless it is done (then return its `runs` row); resumes from its checkpoint."""
    from train.loop import train_run

    check_run_spec(store, spec)
    run_id = make_run_id(store, spec)
    if run_status(store, run_id) == "done":
        log.info("run %s is done; skipping", run_id)
        return {**store.read_result("runs", run_id).to_dicts()[-1], "action": "skipped"}
    action = "resumed" if _has_checkpoint(store, run_id) else "started"
    data = open_mixture(store, spec.mixture, spec.val_corpora, spec.val_tokens, progress=progress)
    cfg = run_config(store, spec, progress)
    # every phase validates on the same sets (one tokenizer and seq_len): only the train streams differ
    phase_data = {m: open_mixture(store, m, spec.val_corpora, spec.val_tokens, progress=progress).train
                  for m in phase_mixtures(cfg.phases, cfg.mixture) if m != cfg.mixture}
    if cfg.branch_from and action == "started":
        from train.checkpoint import stable_checkpoint_path
        from train.schedule import wsd_decay_start

        tokens_per_step = cfg.batch_size * cfg.grad_accum * (data.train.shape[1] - 1)
        start = wsd_decay_start(cfg, cfg.tokens // tokens_per_step)
        if stable_checkpoint_path(store, cfg.branch_from, start).exists():
            action = "branched"
        elif run_status(store, cfg.branch_from) == "done":   # the trunk is gone: the same run from scratch
            log.info("run %s: trunk %s has no checkpoint at step %d; training from scratch",
                     run_id, cfg.branch_from, start)
            cfg = dataclasses.replace(cfg, branch_from=None)
        else:
            raise SweepError(f"run {run_id} branches from run {cfg.branch_from}, which is not finished; "
                             "rerun the sweep to resume it first")
    log.info("run %s: %s", run_id, action)
    result = train_run(store, cfg, data.train, data.val_sets, data.tokenizer, data.vocab_size, phase_data)
    return {**(result or {}), "run_id": run_id, "action": action}


# ---------------------------------------------------------------------------------------- grid files
def _as_list(value, where: str) -> list:
    if isinstance(value, list):
        if not value:
            raise SweepError(f"{where} is an empty list")
        return value
    return [value]


def load_sweep(path: str | Path) -> Sweep:
    """Parse and check a grid TOML file (format in the module docstring)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"grid file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: not valid TOML: {e}") from None
    return parse_sweep(doc, str(path))


def parse_sweep(doc: dict, where: str = "<grid>") -> Sweep:
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise SweepError(f"{where}: give the sweep a name (name = \"...\" at the top)")
    grid = doc.get("grid")
    if not isinstance(grid, dict):
        raise SweepError(f"{where}: missing [grid] table with mixtures, models and tokens")
    unknown = sorted(set(grid) - _GRID_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown key(s) in [grid]: {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(_GRID_KEYS))}")
    for key in ("mixtures", "models", "tokens"):
        if key not in grid:
            raise SweepError(f"{where}: [grid] needs {key} = [...]")
    try:
        tokens = [parse_count(t) for t in _as_list(grid["tokens"], f"{where}: grid.tokens")]
        val_tokens = parse_count(doc.get("val_tokens", DEFAULT_VAL_TOKENS))
    except MixtureError as e:
        raise SweepError(f"{where}: {e}") from None
    mixtures = {}
    for mname, mdef in (doc.get("mixtures") or {}).items():
        if not isinstance(mdef, dict):
            raise SweepError(f"{where}: [mixtures.{mname}] must be a table")
        unknown = sorted(set(mdef) - _MIXTURE_KEYS)
        if unknown:
            raise SweepError(f"{where}: unknown key(s) in [mixtures.{mname}]: {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(_MIXTURE_KEYS))}")
        if "parts" not in mdef or "tokens" not in mdef:
            raise SweepError(f"{where}: [mixtures.{mname}] needs parts = {{...}} and tokens = ...")
        try:
            mixtures[mname] = MixtureConfig(name=mname, **mdef)
        except MixtureError as e:
            raise SweepError(f"{where}: [mixtures.{mname}]: {e}") from None
    options = dict(doc.get("run") or {})
    if set(options) & _BRANCH_OWNED:
        raise SweepError(f"{where}: [run] cannot set {', '.join(sorted(set(options) & _BRANCH_OWNED))}; "
                         'use schedule = "wsd-branches" and the sweep sets them')
    schedules = {doc.get("schedule"), options.get("schedule")} - {None}
    branches = BRANCHES in schedules
    if branches:
        if len(schedules) > 1:
            raise SweepError(f"{where}: schedule is set twice ({', '.join(sorted(schedules))}); keep one")
        options["schedule"] = "wsd"
    elif "schedule" in doc:
        raise SweepError(f"{where}: top-level schedule must be {BRANCHES!r}; set other schedules in [run]")
    try:
        if "phases" in options:
            options["phases"] = parse_phases(options["phases"])
    except PhaseError as e:
        raise SweepError(f"{where}: [run] phases: {e}") from None
    anneal = _as_list(grid.get("anneal", [0.0]), f"{where}: grid.anneal")
    anneal_from = doc.get("anneal_from")
    for f in anneal:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise SweepError(f"{where}: grid.anneal holds cooldown fractions in [0, 1) (0: static), not {f!r}")
    if any(anneal) and (not isinstance(anneal_from, str) or "phases" in options):
        raise SweepError(f"{where}: grid.anneal needs anneal_from = \"MIXTURE\" (the mixture before the "
                         "cooldown) and no [run] phases")
    anneal_points = doc.get("anneal_points", [])
    if not isinstance(anneal_points, list) or not all(isinstance(m, str) for m in anneal_points):
        raise SweepError(f"{where}: anneal_points must be a list of mixture names")
    val_corpora = doc.get("val_corpora")
    runs, seen = [], set()
    for m, p, t, lr, s, f in itertools.product(
            _as_list(grid["mixtures"], f"{where}: grid.mixtures"), _as_list(grid["models"], f"{where}: grid.models"),
            tokens, _as_list(grid.get("lr", [None]), f"{where}: grid.lr"),
            _as_list(grid.get("seed", [0]), f"{where}: grid.seed"), anneal):
        f = 0.0 if m == anneal_from else f   # a cooldown on the trunk's own mixture is the static run
        if (m, p, t, lr, s, f) in seen:
            continue
        seen.add((m, p, t, lr, s, f))
        run_options = {**options, "phases": anneal_phases(anneal_from, m, f)} if f else options
        runs.append(RunSpec(mixture=m, model=p, tokens=t, lr=lr, seed=int(s), options=run_options,
                            val_tokens=val_tokens, val_corpora=list(val_corpora) if val_corpora is not None else None,
                            sweep=name))
    return Sweep(name=name, runs=runs, mixtures=mixtures, path=where, branches=branches,
                 anneal_points=list(anneal_points))


def anneal_phases(trunk: str, mixture: str, cooldown: float) -> list[dict]:
    """The schedule that reads `trunk` and then, for the last `cooldown` of the steps, `mixture`."""
    return [{"until": round(1.0 - cooldown, 9), "mixture": trunk}, {"until": 1.0, "mixture": mixture}]


# ------------------------------------------------------------------------------------ budget branches
def _trunk_mixture(spec: RunSpec) -> str:
    phases = spec.options.get("phases")
    return phases[0]["mixture"] if phases else spec.mixture


def _group_key(spec: RunSpec) -> tuple:
    return _trunk_mixture(spec), spec.model, spec.lr, spec.seed


def _steps(store: Store, spec: RunSpec, options: dict) -> tuple[int, int]:
    """(optimizer steps, sequences per step) of a spec on one process."""
    fields = _run_fields()
    batch = options.get("batch_size", fields["batch_size"].default)
    accum = options.get("grad_accum", fields["grad_accum"].default)
    return spec.tokens // (batch * accum * mixture_config(store, spec.mixture).seq_len), batch * accum


def plan_branches(store: Store, specs: list[RunSpec], anneal_points: list[str] = ()) -> list[RunSpec]:
    """wsd-branches: per (trunk mixture, model, lr, seed), the largest static budget first as the trunk
    (keeping stable-phase checkpoints for the others), then the smaller budgets as branches from it, and
    the anneal runs (phases that leave the trunk's mixture exactly at their decay start) as cooldown
    branches on their own mixture, all with the trunk's warmup_steps. A trunk on a mixture in
    `anneal_points` also keeps the checkpoint at its own decay start. Anneal runs whose switch point is
    not their decay start, or that have no static trunk in the sweep, train from scratch. The mixtures
    must be built (the step count needs their seq_len)."""
    from train.config import RunConfig
    from train.schedule import wsd_decay_start

    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(_group_key(spec), []).append(spec)
    out = []
    for group in groups.values():
        static = [s for s in group if not s.options.get("phases")]
        if not static:
            out += group
            continue
        top = max(s.tokens for s in static)
        trunk_spec = next(s for s in static if s.tokens == top)
        options = dict(trunk_spec.options)
        if options.get("warmup_steps") is None:
            n_steps, _ = _steps(store, trunk_spec, options)
            options["warmup_steps"] = max(1, round(0.05 * n_steps))
        branches, scratch = [], []
        for s in sorted(group, key=lambda s: s.tokens):
            if s is trunk_spec:
                continue
            spec = dataclasses.replace(s, options={**options, **({"phases": s.options["phases"]}
                                                                  if s.options.get("phases") else {})})
            if spec.options.get("phases"):
                cfg = RunConfig(**_config_values(spec, progress=False))
                n_steps, per_step = _steps(store, spec, spec.options)
                start = wsd_decay_start(cfg, n_steps)
                plan = spans(cfg.phases, cfg.mixture, n_steps, per_step)
                if s.tokens > top or prefix(plan, start) != [(_trunk_mixture(s), 0, start, 0)]:
                    log.info("run %s: its data switch is not at its decay start; it trains from scratch",
                             format_phases(cfg.phases))
                    scratch.append(s)
                    continue
            branches.append(spec)
        budgets = sorted({b.tokens for b in branches} | ({top} if trunk_spec.mixture in anneal_points else set()))
        trunk = dataclasses.replace(trunk_spec, options={**options, "branch_tokens": ",".join(map(str, budgets))})
        trunk_id = make_run_id(store, trunk)
        out.append(trunk)
        out += [dataclasses.replace(b, options={**b.options, "branch_from": trunk_id}) for b in branches]
        out += scratch
    return out


def _drop_stable_checkpoints(store: Store, trunk: RunSpec, branches: list[RunSpec], anneal_points=()) -> None:
    """Once every branch of a trunk is done, its stable-phase checkpoints have served (keep_optimizer keeps
    them; a trunk on an `anneal_points` mixture keeps the one at its own decay start)."""
    if trunk.options.get("keep_optimizer") or any(run_status(store, make_run_id(store, b)) != "done"
                                                  for b in branches):
        return
    keep = None
    if trunk.mixture in anneal_points:
        from train.checkpoint import stable_checkpoint_path
        from train.config import RunConfig
        from train.schedule import wsd_decay_start

        n_steps, _ = _steps(store, trunk, trunk.options)
        keep = stable_checkpoint_path(store, make_run_id(store, trunk),
                                      wsd_decay_start(RunConfig(**_config_values(trunk, False)), n_steps))
    for path in store.artifact_dir("runs", make_run_id(store, trunk)).glob("stable-*.pt"):
        if path != keep:
            path.unlink()


def run_sweep(store: Store, sweep: Sweep, dry_run: bool = False, progress: bool = True) -> list[dict]:
    """Build missing mixtures, check every run, then train the runs that are not done, in grid order."""
    from train.model import UnknownPreset

    used = {m for r in sweep.runs for m in phase_mixtures(r.options.get("phases"), r.mixture)}
    needed = {name: cfg for name, cfg in sweep.mixtures.items() if name in used}
    try:  # every error a user can fix shows before the first mixture is built or run started
        for cfg in needed.values():
            check_mixture_config(store, cfg)
            meta = read_mixture_meta(store, cfg.name)
            if meta is not None and meta["config"] != json.loads(json.dumps(dataclasses.asdict(cfg))):
                raise SweepError(f"mixture {cfg.name!r} exists with another config than [mixtures.{cfg.name}]; "
                                 "rename it in the grid, or rebuild it with `python -m train mix ... --force`")
        for spec in sweep.runs:
            check_run_spec(store, spec, planned=needed)
    except (StoreError, UnknownPreset) as e:
        raise SweepError(f"{sweep.path}: {e}") from None
    if not dry_run:
        for cfg in needed.values():
            build_mixture(store, cfg, progress=progress)  # a no-op when built with this config
        for spec in sweep.runs:
            check_run_spec(store, spec)
    specs = sweep.runs
    if sweep.branches and all(read_mixture_meta(store, m) is not None for m in used):
        specs = plan_branches(store, specs, sweep.anneal_points)
    results = []
    for i, spec in enumerate(specs):
        built = read_mixture_meta(store, spec.mixture) is not None
        run_id = make_run_id(store, spec) if built else f"{spec.mixture}.{spec.model}.{format_count(spec.tokens)}"
        status = run_status(store, run_id) if built else None
        log.info("sweep %s: run %d/%d %s (%s)", sweep.name, i + 1, len(specs), run_id, status or "new")
        if dry_run:
            results.append({"run_id": run_id, "status": status, "action": "skip" if status == "done" else
                            ("resume" if built and _has_checkpoint(store, run_id) else "start")})
            continue
        try:
            results.append(execute_run(store, spec, progress=progress))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # record it and go on with the grid: one bad run must not stop a sweep
            log.error("run %s failed: %s\n%s", run_id, e, traceback.format_exc())
            results.append({"run_id": run_id, "action": "failed", "status": "failed", "error": str(e)})
    if sweep.branches and not dry_run and specs is not sweep.runs:
        for trunk in (s for s in specs if s.options.get("branch_tokens")):
            _drop_stable_checkpoints(store, trunk, [s for s in specs if _group_key(s) == _group_key(trunk)
                                                    and s is not trunk], sweep.anneal_points)
    return results
