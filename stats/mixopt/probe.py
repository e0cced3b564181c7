"""Anneal probes: value candidate corpora by a short cooldown on each, branched off one trunk per seed.

    python -m stats.mixopt probe --trunk cc --candidates hq,qa,txbk --share 0.3 --cooldown 0.2 --seeds 0,1,2

The Llama 3 report's cheap test of a dataset: anneal on a little of it and see what moves. Per seed, one
warmup-stable-decay trunk on the trunk mixture (`--trunk`: a built mixture, or a corpus alone) trains (or
is reused) with `decay_frac = --cooldown`; for each candidate corpus a cooldown branch starts from the
trunk's checkpoint at its decay start and reads, for the last `--cooldown` of the steps, the trunk mixture
with `--share` of its tokens replaced by the candidate (phases [trunk until 1 - cooldown, candidate mixture
until 1], a `train.sweep` anneal run). The reference is the trunk's own cooldown: the trunk run itself.
A candidate's value is its branch's final validation loss minus the reference's (negative: it helps);
each costs about `--cooldown` of a run. Mixtures are reused when the store has one with the same config
(the demo's mix_hq33 is the 33% cooldown mixture of hq on mix_base), and so are finished runs.

The probe can be trusted at this scale only if it orders the candidates as full runs on the same
mixtures do: unless --no-full, the probe trains (or reuses) a static run on each candidate mixture at the
same budget and seeds, and compares the two orders with `stats.evidence.decision_table` (pairwise
decision accuracy, seed mean and per seed). Results: table `probes` (one row per domain, seed and
candidate, linked to its trunk and branch runs) and table `probe_decisions`. No downstream metrics exist
in synthmix yet, so the probe values candidates by validation loss only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

import polars as pl

from corpora.cli_common import add_common_args, setup_logging, show_progress
from corpora.results import declare
from corpora.store import Store, StoreError

log = logging.getLogger(__name__)

declare("probes", {
    "probe": "str", "domain": "str", "trunk_run": "str", "trunk_mixture": "str", "candidate": "str", "mixture": "str",
    "share": "float", "cooldown": "float", "seed": "int", "model": "str", "tokens": "int", "run_id": "str",
    "branch_step": "int", "probe_loss": "float", "reference_loss": "float", "delta": "float", "full_run": "str",
    "full_loss": "float", "probe_rank": "int", "full_rank": "int"},
    "One row per (probe, domain, candidate, seed): the loss of a short cooldown branch beside the full run's.")
declare("probe_decisions", {
    "model": "str probe|full", "n_params": "float", "tokens": "int", "target_model": "str", "target_tokens": "int",
    "n_seeds": "int", "n_pairs": "int", "seed": "str", "n_agree": "int", "accuracy": "float", "n_flip": "int",
    "flip_share": "float", "probe": "str", "domain": "str"},
    "One row per (probe, domain, seed): share of candidate pairs the probes order as the full runs do.")

REFERENCE = "(trunk)"   # the candidate label of the trunk's own cooldown
EXAMPLE = "python -m stats.mixopt probe --trunk cc --candidates hq,qa,txbk --share 0.3 --cooldown 0.2 --seeds 0,1,2"


class ProbeError(StoreError, ValueError):
    """A probe that cannot run as asked; the message names the flag to change."""


@dataclasses.dataclass
class ProbeConfig:
    trunk: str                                    # a built mixture, or a corpus (its mixture: the corpus alone)
    candidates: list[str]                         # candidate corpora
    share: float = 0.3                            # the candidate's share of the cooldown mixture, in (0, 1)
    cooldown: float = 0.2                         # the cooldown's fraction of the steps (the wsd decay_frac)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    model: str = "debugmodel"
    tokens: int = 128_000                         # the budget of the trunk and of every branch
    lr: float | None = None
    options: dict = dataclasses.field(default_factory=dict)  # RunConfig fields for every run (batch_size, ...)
    full: bool = True                             # also full static runs on each candidate mixture
    mixture_tokens: int | None = None             # a corpus trunk: its mixtures' budget (default: tokens)
    tokenizer: str = "cl100k_base"                # a corpus trunk: its mixtures' tokenizer
    seq_len: int = 512                            # a corpus trunk: its mixtures' sequence length
    val_tokens: int = 200_000
    val_corpora: list[str] | None = None
    name: str = ""                                # "": probe_{trunk}; the sweep name of its runs

    def __post_init__(self):
        self.name = self.name or f"probe_{self.trunk}"


# ------------------------------------------------------------------------------------------------ planning
def _same_config(a: dict, b: dict) -> bool:
    def norm(c):
        return {**{k: v for k, v in c.items() if k != "name"},
                "parts": {k: round(float(v), 6) for k, v in c["parts"].items()}}
    return norm(a) == norm(b)


def _built_equal(store: Store, want):
    """A built mixture's config equal to `want` up to its name (reused), else `want`."""
    from train.data import MixtureConfig, read_mixture_meta

    for name in store.result_parts("mixtures"):
        meta = read_mixture_meta(store, name)
        if meta is not None and _same_config(meta["config"], dataclasses.asdict(want)):
            return MixtureConfig(**meta["config"])
    return want


def plan_mixtures(store: Store, cfg: ProbeConfig):
    """(trunk MixtureConfig, {candidate: its cooldown MixtureConfig}), named after built equals where any."""
    from train.data import MixtureConfig, mixture_config, read_mixture_meta

    if read_mixture_meta(store, cfg.trunk) is not None:
        trunk = mixture_config(store, cfg.trunk)
    else:
        store.corpus(cfg.trunk)   # UnknownCorpus names the store's corpora
        trunk = _built_equal(store, MixtureConfig(f"probe_{cfg.trunk}", {cfg.trunk: 1.0},
                                                  cfg.mixture_tokens or cfg.tokens, tokenizer=cfg.tokenizer,
                                                  seq_len=cfg.seq_len))
    cooldowns = {}
    for cand in cfg.candidates:
        parts = {cand: round(cfg.share, 6), **{c: round(s * (1 - cfg.share), 6) for c, s in trunk.parts.items()}}
        cooldowns[cand] = _built_equal(store, dataclasses.replace(
            trunk, name=f"{trunk.name}_{cand}{round(cfg.share * 100)}", parts=parts))
    return trunk, cooldowns


def check_numbers(cfg: ProbeConfig) -> None:
    """The checks that need no store; a ProbeError names the flag."""
    if not 0 < cfg.share < 1:
        raise ProbeError(f"--share {cfg.share:g} is outside (0, 1): the candidate's share of the cooldown mixture, "
                         "e.g. 0.3")
    if not 0 < cfg.cooldown < 1:
        raise ProbeError(f"--cooldown {cfg.cooldown:g} is outside (0, 1): the cooldown's fraction of the steps, "
                         "e.g. 0.2")
    if not cfg.candidates:
        raise ProbeError("--candidates is empty: name candidate corpora, e.g. hq,qa,txbk")
    if not cfg.seeds:
        raise ProbeError("--seeds is empty: give seeds, e.g. 0,1,2")


def check_probe(store: Store, cfg: ProbeConfig) -> None:
    """Every check before any work; a ProbeError names the flag."""
    check_numbers(cfg)
    trunk, _ = plan_mixtures(store, cfg)
    for cand in cfg.candidates:
        store.corpus(cand)
        if cand in trunk.parts:
            raise ProbeError(f"candidate {cand!r} is already part of the trunk mixture {trunk.name!r} "
                             f"({', '.join(trunk.parts)}); probe corpora the trunk does not read")
    if len(set(cfg.candidates)) != len(cfg.candidates):
        raise ProbeError(f"--candidates names a corpus twice: {','.join(cfg.candidates)}")


def probe_sweep(store: Store, cfg: ProbeConfig):
    """The probe as a `train.sweep` grid (wsd-branches with anneal runs) and its mixtures."""
    from train.sweep import parse_sweep

    trunk, cooldowns = plan_mixtures(store, cfg)
    mixtures = {m.name: {k: v for k, v in dataclasses.asdict(m).items() if k != "name"}
                for m in (trunk, *cooldowns.values())}
    options = {k: v for k, v in cfg.options.items() if k != "schedule"}
    grid = {"mixtures": list(mixtures), "models": [cfg.model], "tokens": [cfg.tokens], "seed": list(cfg.seeds),
            "anneal": [0.0, cfg.cooldown] if cfg.full else [cfg.cooldown]}
    if cfg.lr is not None:
        grid["lr"] = [cfg.lr]
    # the trunks keep their anneal point, so a later probe of other candidates is cooldowns only again
    doc = {"name": cfg.name, "schedule": "wsd-branches", "anneal_from": trunk.name, "anneal_points": [trunk.name],
           "grid": grid,
           "run": {**options, "decay_frac": cfg.cooldown}, "mixtures": mixtures, "val_tokens": cfg.val_tokens}
    if cfg.val_corpora is not None:
        doc["val_corpora"] = list(cfg.val_corpora)
    return parse_sweep(doc, where=f"probe {cfg.name}"), trunk, cooldowns


# ------------------------------------------------------------------------------------------------ running
def run_probe(store: Store, cfg: ProbeConfig, progress: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train (or reuse) the trunks, cooldown branches and full runs; write and return (probes, probe_decisions)."""
    from train.sweep import make_run_id, plan_branches, run_sweep

    check_probe(store, cfg)
    sweep, trunk, cooldowns = probe_sweep(store, cfg)
    results = run_sweep(store, sweep, progress=progress)
    failed = [r for r in results if r.get("status") == "failed"]
    if failed:
        raise ProbeError(f"probe {cfg.name}: {len(failed)} run(s) failed, first {failed[0]['run_id']}: "
                         f"{failed[0].get('error')}; fix it and re-run (finished runs are reused)")
    ids = {}
    for spec in plan_branches(store, sweep.runs):
        kind = "branch" if spec.options.get("phases") else "static"
        ids[(kind, spec.mixture, spec.seed)] = make_run_id(store, spec)
    return summarize(store, cfg, trunk.name, {c: m.name for c, m in cooldowns.items()}, ids)


def summarize(store: Store, cfg: ProbeConfig, trunk: str, cooldowns: dict[str, str], ids: dict):
    """The `probes` and `probe_decisions` tables from the finished runs (`ids`: (kind, mixture, seed) -> run)."""
    from stats.evidence import _part, decision_table, final_points

    pts = final_points(store)
    runs = store.read_result("runs").sort("created_at").unique("run_id", keep="last")
    branch_step = dict(zip(runs["run_id"], runs["branch_step"])) if "branch_step" in runs.columns else {}
    loss = {(r["run_id"], r["domain"]): r["loss"] for r in pts.iter_rows(named=True)} if pts is not None else {}
    domains = sorted({d for _, d in loss})
    rows = []
    for domain in domains:
        for seed in cfg.seeds:
            trunk_run = ids[("static", trunk, seed)]
            ref = loss.get((trunk_run, domain))
            for cand, mix in [(REFERENCE, trunk), *cooldowns.items()]:
                run_id = trunk_run if cand == REFERENCE else ids[("branch", mix, seed)]
                full_run = ids.get(("static", mix, seed))
                probe_loss = loss.get((run_id, domain))
                rows.append({"probe": cfg.name, "domain": domain, "trunk_run": trunk_run, "trunk_mixture": trunk,
                             "candidate": cand, "mixture": mix, "share": 0.0 if cand == REFERENCE else cfg.share,
                             "cooldown": cfg.cooldown, "seed": seed, "model": cfg.model, "tokens": cfg.tokens,
                             "run_id": run_id, "branch_step": branch_step.get(run_id),
                             "probe_loss": probe_loss, "reference_loss": ref,
                             "delta": None if probe_loss is None or ref is None else probe_loss - ref,
                             "full_run": full_run, "full_loss": loss.get((full_run, domain))})
    probes = pl.DataFrame(rows, schema_overrides={"branch_step": pl.Int64, "full_run": pl.Utf8,
                                                  "full_loss": pl.Float64, "probe_loss": pl.Float64,
                                                  "reference_loss": pl.Float64, "delta": pl.Float64})
    decisions = []
    if probes.height:
        ranks = (probes.group_by("domain", "candidate").agg(pl.col("delta").mean(), pl.col("full_loss").mean())
                 .with_columns(pl.col("delta").rank("min").over("domain").cast(pl.Int64).alias("probe_rank"),
                               pl.col("full_loss").rank("min").over("domain").cast(pl.Int64).alias("full_rank"))
                 .select("domain", "candidate", "probe_rank", "full_rank"))
        probes = probes.join(ranks, on=["domain", "candidate"], how="left")
        for (domain,), g in probes.partition_by("domain", as_dict=True, maintain_order=True).items():
            # the probe as the smaller "scale", the full runs as the target: decision_table's accuracy is the
            # share of candidate pairs the probe orders as the full runs do (seed mean, and per seed)
            scales = [g.select(pl.col("candidate").alias("mixture"), pl.lit("probe").alias("model"),
                               pl.lit(0.0).alias("n_params"), pl.lit(round(cfg.tokens * cfg.cooldown)).alias("tokens"),
                               "seed", pl.col("probe_loss").alias("loss"))]
            if g["full_loss"].is_not_null().all():
                scales.append(g.select(pl.col("candidate").alias("mixture"), pl.lit("full").alias("model"),
                                       pl.lit(1.0).alias("n_params"), pl.lit(cfg.tokens).alias("tokens"),
                                       "seed", pl.col("full_loss").alias("loss")))
            pts_g = pl.concat(scales).drop_nulls("loss").with_columns(pl.col("tokens").cast(pl.Int64))
            if len(scales) > 1 and pts_g.height:
                decisions.append(decision_table(pts_g).with_columns(pl.lit(cfg.name).alias("probe"),
                                                                    pl.lit(domain).alias("domain")))
    decisions = pl.concat(decisions) if decisions else pl.DataFrame()
    if probes.height:
        store.put_result("probes", _part(cfg.name), probes)
    if decisions.height:
        store.put_result("probe_decisions", _part(cfg.name), decisions)
    return probes, decisions


def ranking(probes: pl.DataFrame, domain: str | None = None) -> dict:
    """{'domain', 'probe': candidates best first, 'full': the same by full runs} for one domain ('avg' if any)."""
    if not probes.height:
        return {}
    domains = probes["domain"].unique().to_list()
    domain = domain or ("avg" if "avg" in domains else sorted(domains)[0])
    g = probes.filter(pl.col("domain") == domain).unique("candidate")
    order = lambda col: g.sort(col, "candidate")["candidate"].to_list()  # noqa: E731
    return {"domain": domain, "probe": order("probe_rank"),
            "full": order("full_rank") if g["full_rank"].is_not_null().all() else None}


# ------------------------------------------------------------------------------------------------ CLI
def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read {text!r} as comma-separated seeds, e.g. 0,1,2") from None


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _count(text: str) -> int:
    from train.__main__ import _count as count

    return count(text)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trunk", required=True, help="the trunk's mixture (a built one) or corpus (alone)")
    p.add_argument("--candidates", type=_names, required=True, help="candidate corpora, e.g. hq,qa,txbk")
    p.add_argument("--share", type=float, default=0.3, help="candidate share of the cooldown mixture, in (0, 1) "
                                                            "(default 0.3)")
    p.add_argument("--cooldown", type=float, default=0.2, help="cooldown fraction of the steps, in (0, 1) "
                                                               "(default 0.2)")
    p.add_argument("--seeds", type=_ints, default=[0], help="seeds: one trunk each (default 0)")
    p.add_argument("--model", default="debugmodel", help="model preset (default debugmodel)")
    p.add_argument("--tokens", type=_count, default=128_000, help="budget of the trunk and each branch (default 128k)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the trainer's)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the trainer's)")
    p.add_argument("--mixture-tokens", type=_count, default=None,
                   help="a corpus trunk: token budget of the mixtures to build (default --tokens)")
    p.add_argument("--tokenizer", default="cl100k_base", help="a corpus trunk: the mixtures' tokenizer")
    p.add_argument("--seq-len", type=int, default=512, help="a corpus trunk: the mixtures' sequence length")
    p.add_argument("--val-tokens", type=_count, default=200_000, help="tokens per validation set (default 200k)")
    p.add_argument("--val-corpora", type=_names, default=None, help="validation corpora (default: test-role ones)")
    p.add_argument("--no-full", dest="full", action="store_false",
                   help="skip the full runs on each candidate mixture (then no ranking check)")
    p.add_argument("--name", default="", help="probe name (default probe_TRUNK)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    from stats.mixopt.cli import add_command

    p = add_command(subparsers, "probe", "Value candidate corpora by cooldown branches off one trunk per seed.",
                    __doc__.splitlines()[0], [EXAMPLE])
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def config_from_args(args) -> ProbeConfig:
    options = {"batch_size": args.batch_size} if args.batch_size else {}
    return ProbeConfig(trunk=args.trunk, candidates=args.candidates, share=args.share, cooldown=args.cooldown,
                       seeds=args.seeds, model=args.model, tokens=args.tokens, lr=args.lr, options=options,
                       full=args.full, mixture_tokens=args.mixture_tokens, tokenizer=args.tokenizer,
                       seq_len=args.seq_len, val_tokens=args.val_tokens, val_corpora=args.val_corpora,
                       name=args.name)


def run(args) -> int:
    from corpora.store import resolve_store_path

    cfg = config_from_args(args)
    check_numbers(cfg)
    store = Store(resolve_store_path(args.store))
    check_probe(store, cfg)   # before the lock and before any work
    with store.writer(f"python -m stats.mixopt probe --trunk {cfg.trunk}"):
        probes, decisions = run_probe(store, cfg, progress=show_progress(args))
    if args.json:
        print(json.dumps({"probes": probes.to_dicts(), "decisions": decisions.to_dicts(),
                          "ranking": ranking(probes)}, indent=1, default=str))
        return 0
    r = ranking(probes)
    print(f"probe {cfg.name} ({r.get('domain')}): probe ranking {' > '.join(r.get('probe') or [])}; "
          f"full-run ranking {' > '.join(r.get('full') or ['(no full runs)'])}")
    if decisions.height:
        for row in decisions.filter(pl.col("domain") == r["domain"]).iter_rows(named=True):
            print(f"  decision accuracy, seed {row['seed']}: {row['n_agree']}/{row['n_pairs']} pairs "
                  f"({row['accuracy']:.2f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from corpora.exits import run_command

    parser = argparse.ArgumentParser(prog="python -m stats.mixopt probe", description=__doc__.splitlines()[0],
                                     epilog=f"example:\n  {EXAMPLE}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    setup_logging(args)
    return run_command("python -m stats.mixopt probe", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
