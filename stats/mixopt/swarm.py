"""Swarm design: many small proxy runs whose mixtures cover the simplex around a prior.

Mixtures are drawn as in RegMix (Liu et al. 2024): per mixture a concentration c, log-uniform in
`concentration`, and w ~ Dirichlet(c * k * prior), so small c gives sparse mixtures near the corners and
large c mixtures near the prior. Weights below `min_weight` are dropped (RegMix's sparsity), and each
source is capped by its repetition limit at the budget (`max_epochs` passes over its tokens), by projecting
onto the capped simplex. The corners that matter are always in: the natural source alone and the uniform
mixture (each capped too). The prior defaults to the sources' token counts.

The swarm is a sweep (train.sweep): its mixtures are defined inline and built when missing, finished runs
are skipped and interrupted ones resume, and the design is stored in the `mixopt_swarms` table.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import numpy as np
import polars as pl

from corpora.names import part_key
from corpora.cli_common import show_progress
from corpora.results import declare
from corpora.store import Store
from stats.mixopt.io import MixoptError
from stats.mixopt.propose import effective_caps, project
from train.__main__ import _count, _names  # noqa: F401 (the flag parsers of every synthmix CLI; fit.py uses them)
from train.data import DEFAULT_TOKENIZER, format_count, parse_count
from train.sweep import DEFAULT_VAL_TOKENS

log = logging.getLogger(__name__)

SWARMS_TABLE = "mixopt_swarms"
declare(SWARMS_TABLE, {
    "sweep": "str", "mixture": "str", "kind": "str", "source": "str", "weight": "float", "prior": "float",
    "cap": "float", "model": "str", "tokens": "int"},
    "One row per (swarm mixture, source): the designed weight, its prior and cap; part <swarm>.")
NATURAL, UNIFORM, SAMPLED = "natural", "uniform", "dirichlet"


@dataclasses.dataclass
class SwarmConfig:
    """`python -m stats.mixopt swarm` flags, one to one."""

    name: str
    sources: list[str]
    n: int = 32  # mixtures, corners included
    model: str = "debugmodel"
    tokens: int = 48_000  # training tokens per run
    seed: int = 0  # design seed (and the mixtures' shuffle seed)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])  # training seeds per mixture
    natural: str | None = None  # the natural source (a corner); default: the first source
    prior: dict[str, float] | None = None  # None: the sources' token counts
    concentration: tuple[float, float] = (0.1, 5.0)  # RegMix's range
    min_weight: float = 0.02
    max_epochs: float = 16.0
    tokenizer: str = DEFAULT_TOKENIZER
    seq_len: int = 512
    lr: float | None = None
    run: dict = dataclasses.field(default_factory=dict)  # trainer options for every run (train.config.RunConfig)
    val_corpora: list[str] | None = None
    val_tokens: int = DEFAULT_VAL_TOKENS

    def __post_init__(self):
        self.tokens, self.val_tokens = parse_count(self.tokens), parse_count(self.val_tokens)
        if len(set(self.sources)) != len(self.sources) or len(self.sources) < 2:
            raise MixoptError(f"--sources {','.join(self.sources)}: name at least two distinct sources")
        if self.n < 2:
            raise MixoptError(f"--n {self.n}: a swarm needs at least the two corners")
        if self.natural is None:
            self.natural = self.sources[0]
        if self.natural not in self.sources:
            raise MixoptError(f"--natural {self.natural} is not one of --sources {','.join(self.sources)}")
        lo, hi = self.concentration
        if not 0 < lo <= hi:
            raise MixoptError(f"--concentration {lo:g},{hi:g}: need 0 < low <= high")


def source_tokens(store: Store, sources: list[str], tokenizer: str = DEFAULT_TOKENIZER) -> dict[str, float]:
    """Tokens per source: the stored unigram count under `tokenizer` when there is one, else the corpus's
    bytes over train.data.BYTES_PER_TOKEN_GUESS (an overestimate of tokens, so caps err on the loose side;
    train mix still refuses a mixture over its max_epochs)."""
    from stats.unigram import COUNTS_TABLE
    from train.data import BYTES_PER_TOKEN_GUESS

    counted = {}
    df = store.read_result(COUNTS_TABLE)
    if df is not None and df.height:
        for corpus, n in df.filter(pl.col("tokenizer") == tokenizer).group_by("corpus").agg(
                pl.col("n_tokens").last()).iter_rows():
            counted[corpus] = float(n)
    out = {}
    for s in sources:
        info = store.corpus(s)  # an unknown corpus is a one-line error naming the store's corpora
        out[s] = counted.get(s) or (info.n_bytes + info.n_docs) / BYTES_PER_TOKEN_GUESS
    return out


def repetition_caps(n_tokens: dict[str, float], sources: list[str], budget: int, max_epochs: float) -> np.ndarray:
    """Largest share of a `budget`-token mixture each source can fill with at most `max_epochs` passes."""
    return np.array([min(1.0, max_epochs * n_tokens[s] / budget) for s in sources])


def round_weights(W: np.ndarray, digits: int = 4) -> np.ndarray:
    """Rows rounded to `digits` decimals, still summing to 1 (the remainder goes to the largest weight)."""
    step = 10.0 ** -digits
    R = np.round(W / step)
    R[np.arange(len(R)), R.argmax(axis=1)] += round(1 / step) - R.sum(axis=1)
    return R * step


def design_swarm(cfg: SwarmConfig, prior: np.ndarray, caps: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(n, k) mixture weights and each one's kind (natural, uniform, dirichlet); caps hold on every row."""
    k = len(cfg.sources)
    lower, upper = np.zeros(k), effective_caps(caps)
    if upper.sum() < 1:
        raise MixoptError(f"the repetition caps at {format_count(cfg.tokens)} tokens ({', '.join(f'{s}<={c:.3g}' for s, c in zip(cfg.sources, caps))}) "
                          "sum to less than 1; raise --max-epochs or lower --tokens")
    rows, kinds = [], []
    nat = cfg.sources.index(cfg.natural)
    if caps[nat] >= 1:
        rows.append(np.eye(k)[nat])
        kinds.append(NATURAL)
    else:
        log.warning("swarm %s: %s alone would repeat it beyond %g epochs; that corner is left out",
                    cfg.name, cfg.natural, cfg.max_epochs)
    rows.append(project(np.full(k, 1 / k), lower, upper)[0])
    kinds.append(UNIFORM)
    rng = np.random.default_rng(cfg.seed)
    lo, hi = np.log(cfg.concentration[0]), np.log(cfg.concentration[1])
    seen = {tuple(np.round(r, 4)) for r in rows}
    for _ in range(1000 * cfg.n):  # distinct rows only; a tiny simplex may hold fewer than n of them
        if len(rows) >= cfg.n:
            break
        c = np.exp(rng.uniform(lo, hi))
        w = rng.dirichlet(np.maximum(c * k * prior, 1e-3))
        w = np.where(w < cfg.min_weight, 0.0, w)
        if w.sum() == 0:
            continue
        w = project(w / w.sum(), lower, upper)[0]
        key = tuple(np.round(w, 4))
        if key not in seen:
            seen.add(key)
            rows.append(w)
            kinds.append(SAMPLED)
    return round_weights(np.array(rows)), kinds


def mixture_names(cfg: SwarmConfig, kinds: list[str]) -> list[str]:
    return [f"{cfg.name}_{i:03d}" if kind == SAMPLED else f"{cfg.name}_{kind}" for i, kind in enumerate(kinds)]


def swarm_document(cfg: SwarmConfig, W: np.ndarray, names: list[str]) -> dict:
    """The train.sweep grid of the swarm: its mixtures inline, one model, one budget, the seeds."""
    mixtures = {name: {"parts": {s: float(w) for s, w in zip(cfg.sources, row) if w > 0}, "tokens": cfg.tokens,
                       "tokenizer": cfg.tokenizer, "seq_len": cfg.seq_len, "seed": cfg.seed,
                       "max_epochs": cfg.max_epochs}
                for name, row in zip(names, W)}
    grid = {"mixtures": names, "models": [cfg.model], "tokens": [cfg.tokens], "seed": list(cfg.seeds)}
    if cfg.lr is not None:
        grid["lr"] = [cfg.lr]
    doc = {"name": cfg.name, "grid": grid, "mixtures": mixtures, "val_tokens": cfg.val_tokens}
    if cfg.val_corpora is not None:
        doc["val_corpora"] = list(cfg.val_corpora)
    if cfg.run:
        doc["run"] = dict(cfg.run)
    return doc


def plan_swarm(store: Store, cfg: SwarmConfig) -> tuple[pl.DataFrame, dict]:
    """The design table and the sweep document, checked (no mixture built, no run started)."""
    from train.sweep import parse_sweep

    n_tokens = source_tokens(store, cfg.sources, cfg.tokenizer)
    if cfg.prior is None:
        prior = np.array([n_tokens[s] for s in cfg.sources])
    else:
        unknown = sorted(set(cfg.prior) - set(cfg.sources))
        if unknown:
            raise MixoptError(f"--prior names {', '.join(unknown)}, not in --sources {','.join(cfg.sources)}")
        prior = np.array([float(cfg.prior.get(s, 0.0)) for s in cfg.sources])
        if (prior < 0).any() or prior.sum() <= 0:
            raise MixoptError("--prior: weights must be >= 0 and not all 0")
    prior = prior / prior.sum()
    caps = repetition_caps(n_tokens, cfg.sources, cfg.tokens, cfg.max_epochs)
    W, kinds = design_swarm(cfg, prior, caps)
    names = mixture_names(cfg, kinds)
    doc = swarm_document(cfg, W, names)
    parse_sweep(doc, where=f"swarm {cfg.name}")  # the grid checks, before anything is built
    design = pl.DataFrame([{"sweep": cfg.name, "mixture": name, "kind": kind, "source": s, "weight": float(w),
                            "prior": float(p), "cap": float(c), "model": cfg.model, "tokens": cfg.tokens}
                           for name, kind, row in zip(names, kinds, W)
                           for s, w, p, c in zip(cfg.sources, row, prior, caps)])
    return design, doc


def run_swarm(store: Store, cfg: SwarmConfig, dry_run: bool = False, progress: bool = True) -> dict:
    """Design the swarm, store the design, and run it as a sweep (resumable; finished runs are skipped)."""
    from train.sweep import parse_sweep, run_sweep

    design, doc = plan_swarm(store, cfg)
    sweep = parse_sweep(doc, where=f"swarm {cfg.name}")
    if not dry_run:
        store.put_result(SWARMS_TABLE, _part(cfg.name), design)
    results = run_sweep(store, sweep, dry_run=dry_run, progress=progress)
    status = [r.get("status") or r.get("action") for r in results]
    return {"swarm": cfg.name, "mixtures": design["mixture"].n_unique(), "runs": len(results),
            "done": status.count("done"), "failed": status.count("failed"),
            "design": design.pivot(on="source", index=["mixture", "kind"], values="weight").to_dicts()}


def stored_prior(store: Store, sweep: str, sources: list[str]) -> np.ndarray | None:
    """The prior a stored swarm design used, in `sources` order (None when the sweep is no stored swarm)."""
    df = store.read_result(SWARMS_TABLE)
    if df is None or not df.height:
        return None
    df = df.filter(pl.col("sweep") == sweep)
    p = dict(df.group_by("source").agg(pl.col("prior").last()).iter_rows())
    if not df.height or set(p) != set(sources):
        return None
    return np.array([p[s] for s in sources])


_part = part_key


# ---------------------------------------------------------------------------------------- CLI
EXAMPLE = ("python -m stats.mixopt swarm demo_swarm --sources cc,hq,qa,txbk --n 32 --model debugmodel "
           "--tokens 48k --seed 0 --tokenizer demo_bpe --seq-len 128")


def add_parser(sub) -> None:
    from stats.mixopt.cli import add_command

    p = add_command(sub, "swarm", "design a swarm of proxy mixtures and train it as a sweep",
                    "Design a swarm of proxy mixtures (Dirichlet around a prior, repetition caps, the natural-only "
                    "and uniform corners) and train it with the sweep machinery (resumable: finished runs are "
                    "skipped).", [EXAMPLE])
    p.add_argument("name", help="swarm (sweep) name; mixtures are NAME_000, NAME_natural, NAME_uniform, ...")
    p.add_argument("--sources", type=_names, required=True, help="training corpora to mix, e.g. cc,hq,qa,txbk")
    p.add_argument("--n", type=int, default=32, help="mixtures, corners included (default 32)")
    p.add_argument("--model", default="debugmodel", help="model preset of every proxy run (default debugmodel)")
    p.add_argument("--tokens", type=_count, default=48_000, help="training tokens per run (default 48k)")
    p.add_argument("--seed", type=int, default=0, help="design seed (default 0)")
    p.add_argument("--seeds", type=_ints, default=[0], help="training seeds per mixture, e.g. 0,1 (default 0)")
    p.add_argument("--natural", help="the natural source (always in alone); default: the first of --sources")
    p.add_argument("--prior", type=_weights, help="prior weights s=w,... (default: the sources' token counts)")
    p.add_argument("--concentration", type=_pair, default=(0.1, 5.0),
                   help="Dirichlet concentration range LOW,HIGH (default 0.1,5)")
    p.add_argument("--min-weight", type=float, default=0.02, help="drop smaller weights (default 0.02)")
    p.add_argument("--max-epochs", type=float, default=16.0, help="repetition cap per source (default 16)")
    p.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help=f"mixture tokenizer (default {DEFAULT_TOKENIZER})")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per sequence (default 512)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the trainer's)")
    p.add_argument("--batch-size", type=int, help="trainer batch size (default: the trainer's)")
    p.add_argument("--val-corpora", type=_names, help="validation corpora (default: every test-role corpus)")
    p.add_argument("--val-tokens", type=_count, default=DEFAULT_VAL_TOKENS, help="tokens per validation set")
    p.add_argument("--dry-run", action="store_true", help="show the design and the runs, train nothing")


def run(args) -> int:
    from stats.mixopt.cli import emit, open_store

    cfg = SwarmConfig(name=args.name, sources=args.sources, n=args.n, model=args.model, tokens=args.tokens,
                      seed=args.seed, seeds=args.seeds, natural=args.natural, prior=args.prior,
                      concentration=args.concentration, min_weight=args.min_weight, max_epochs=args.max_epochs,
                      tokenizer=args.tokenizer, seq_len=args.seq_len, lr=args.lr,
                      run={"batch_size": args.batch_size} if args.batch_size else {},
                      val_corpora=args.val_corpora, val_tokens=args.val_tokens)
    store = open_store(args)
    with store.writer("python -m stats.mixopt swarm"):
        result = run_swarm(store, cfg, dry_run=args.dry_run, progress=show_progress(args))
    text = "\n".join([f"swarm {result['swarm']}: {result['mixtures']} mixtures, {result['runs']} runs "
                      f"({result['done']} done, {result['failed']} failed)"]
                     + [f"  {row['mixture']:<24} " + " ".join(f"{s}={row[s]:.3f}" for s in cfg.sources)
                        for row in result["design"]])
    return emit(args, result, text)


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers separated by commas, e.g. 0,1,2") from None


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give LOW,HIGH, e.g. 0.1,5") from None
    return lo, hi


def _weights(text: str) -> dict[str, float]:
    out = {}
    for item in _names(text):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: write source=number pairs, e.g. cc=0.5,hq=0.2") from None
    return out
