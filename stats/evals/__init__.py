"""Downstream evaluation of every run: cloze-form (ranked classification) tasks with continuous metrics.

    python -m stats.evals tasks
    python -m stats.evals run --runs demo --tasks arc_easy:rc_0shot,sciq:rc_0shot --limit 200 --json
    python -m stats.evals run --model HF_DIR --tasks hellaswag:rc_0shot,my_task.yaml --limit 500

Driver: per model, load the tasks (`tasks.py`), score every request not already cached (`scoring.py`:
batched, length-sorted, through the executor), compute the metrics and write one row per (run or model,
task, metric) to result table `evals` (part per model). The log-likelihoods are cached per (checkpoint
content hash, task, variant, task file hash, dtype) under the store's artifacts `evals/<content hash>`, by
item index, so a rerun (or a smaller --limit) runs no forward pass and a larger --limit scores only the
new items.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import polars as pl

from corpora.results import declare
from corpora.store import Store, StoreError, atomic_path, file_hash
from stats.evals.scoring import (LoadedModel, ModelSpec, dumps_cache, encode_requests, length_batches,
                                 loads_cache, task_metrics)
from stats.evals.tasks import Task, TaskError, load_task

log = logging.getLogger(__name__)

TABLE = "evals"
declare(TABLE, {
    "run_id": "str", "sweep": "str", "mixture": "str", "model": "str", "tokens": "int", "seed": "int",
    "content_hash": "str of the weights", "task": "str", "variant": "str", "metric": "str", "value": "float",
    "n": "int items", "stderr": "float", "chance": "float", "higher_is_better": "bool"},
    "One row per (model, task, variant, metric); part <run_id> or model-<content hash>. evaluate_model writes "
    "the optional columns too; evals planted for a decision test need not.",
    optional={"model_path": "str", "dtype": "str", "limit": "int", "source": "str"})


@dataclasses.dataclass
class EvalConfig:
    """The [evals] section of a study file and the flags of `python -m stats.evals run`."""

    tasks: list[str] = dataclasses.field(default_factory=lambda: ["arc_easy:rc_0shot"])
    limit: int | None = 200  # items per task (None: all)
    batch_tokens: int = 4096  # padded tokens per forward batch
    max_batch: int = 64  # requests per batch
    dtype: str = "auto"  # auto (the project's choice: bf16 on CPUs with bf16 hardware), bf16, fp32


# The study file's [evals] section: its keys and their types (EvalConfig fields), in one place.
STUDY_SECTION: dict[str, type | tuple[type, ...]] = {"tasks": list, "limit": int, "batch_tokens": int,
                                                     "max_batch": int, "dtype": str}


def evals_config(section: dict, where: str = "[evals]") -> EvalConfig:
    """EvalConfig from a study's [evals] section; an unknown key or a wrong type is a one-line error."""
    for key, value in section.items():
        if key not in STUDY_SECTION:
            raise ValueError(f"{where}: unknown key {key!r}; known: {', '.join(STUDY_SECTION)}")
        if not isinstance(value, STUDY_SECTION[key]) or isinstance(value, bool):
            raise ValueError(f"{where}: {key} must be {STUDY_SECTION[key].__name__}, not {value!r}")
    return EvalConfig(**section)


def model_hash(spec: ModelSpec) -> str:
    """Content hash of the weights (and config) a model loads from."""
    if spec.run_id is not None:
        from train.loop import final_weights_path

        path = final_weights_path(Store(spec.store), spec.run_id)
        if not path.exists():
            raise StoreError(f"run {spec.run_id!r} has no final weights at {path}; is it finished?")
        return file_hash(path)
    root = Path(spec.path)
    files = sorted(p for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    if not (root / "config.json").exists():
        raise StoreError(f"--model {root}: no config.json; give a Hugging Face model directory")
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for p in files:
        h.update(p.name.encode() + file_hash(p).encode())
    return h.hexdigest()


def _cache_path(store: Store, content_hash: str, task: Task, dtype: str) -> Path:
    name = f"{task.name}__{task.variant}__{task.fingerprint}__{dtype}.json".replace("/", "-")
    return store.artifact_dir("evals", content_hash) / name


def score_tasks(store: Store, spec: ModelSpec, tasks: list[Task], cfg: EvalConfig, executor=None,
                progress: bool = True, encodings: dict | None = None,
                run: dict | None = None) -> tuple[dict[str, list[list[float]]], dict]:
    """Per task key, the items' per-choice log-likelihoods; cached requests are not scored again. `run`: the
    run's row of table `runs` when the caller has it (else it is read).

    Returns (log-likelihoods, info) with info = content hash, dtype, requests and batches scored."""
    from corpora.tokenizers import load_tokenizer

    if spec.run_id is not None and run is None:
        run = _run_row(store, spec.run_id)
    dtype_name = eval_dtype(spec, cfg.dtype, run)
    content = model_hash(spec)
    cached = {}
    for t in tasks:
        path = _cache_path(store, content, t, dtype_name)
        cached[t.key] = loads_cache(path.read_text()) if path.exists() else {}
    todo = [(t, i) for t in tasks for i in range(len(t.items)) if i not in cached[t.key]]
    info = {"content_hash": content, "dtype": dtype_name, "n_requests": 0, "n_batches": 0}
    if todo:
        from corpora.executor import Stateful, get_executor

        tok_name = spec.path if spec.run_id is None else run["tokenizer"]
        by_key = {t.key: t for t in tasks}
        requests = [(t.key, i, j) for t, i in todo for j in range(len(t.items[i].continuations))]
        # the runs of a sweep share a tokenizer and window: encode each request once for all of them
        encodings = {} if encodings is None else encodings
        window = model_window(spec)
        new = [r for r in requests if (tok_name, window, *r) not in encodings]
        if new:
            tokenizer = load_tokenizer(tok_name, store)
            pairs = [(by_key[k].items[i].contexts[j], by_key[k].items[i].continuations[j]) for k, i, j in new]
            encodings.update(zip([(tok_name, window, *r) for r in new], encode_requests(tokenizer, pairs, window)))
        encoded = [encodings[(tok_name, window, *r)] for r in requests]
        batches = length_batches(encoded, cfg.batch_tokens, cfg.max_batch)
        scores: dict[int, float] = {}
        # one worker by default: the model loads once, in this process, and torch uses the cores itself
        ex = executor or get_executor("local", workers=1)
        for b, result in ex.map(Stateful(LoadedModel, spec, dtype_name), [[encoded[i] for i in batch] for batch in batches],
                                desc=f"eval {spec.label}", sizes=[len(batch) for batch in batches],
                                progress=progress, max_workers=1):
            scores.update(zip(batches[b], result))
        for n, (k, i, j) in enumerate(requests):
            cached[k].setdefault(i, [None] * len(by_key[k].items[i].continuations))[j] = scores[n]
        for t in tasks:
            with atomic_path(_cache_path(store, content, t, dtype_name)) as tmp:
                tmp.write_text(dumps_cache(cached[t.key]))
        info.update(n_requests=len(requests), n_batches=len(batches))
    return {t.key: [cached[t.key][i] for i in range(len(t.items))] for t in tasks}, info


def _run_row(store: Store, run_id: str) -> dict:
    runs = store.read_result("runs")
    row = runs.filter(pl.col("run_id") == run_id) if runs is not None else None
    if row is None or not row.height:
        raise StoreError(f"run {run_id!r} is not in the runs table")
    return row.to_dicts()[-1]


def eval_dtype(spec: ModelSpec, dtype: str, run: dict | None = None) -> str:
    """'bf16' / 'fp32'. 'auto': a run's own dtype (`runs.dtype`, what it trained and validated in, as
    docs/dtype.md has a resumed run keep it), else the project's choice for this CPU (train.model.resolve_dtype)."""
    import torch

    from train.model import resolve_dtype

    if dtype == "auto" and run is not None:
        recorded = run.get("dtype")
        if recorded in ("bf16", "fp32"):
            return recorded
    return "bf16" if resolve_dtype(dtype, "cpu") == torch.bfloat16 else "fp32"


def model_window(spec: ModelSpec) -> int:
    """The model's context window (max_seq_len), read from its config without loading the weights."""
    import json

    if spec.run_id is not None:
        from safetensors import safe_open

        from train.loop import final_weights_path

        with safe_open(str(final_weights_path(Store(spec.store), spec.run_id)), "pt") as f:
            return int(json.loads(f.metadata()["model_config"])["max_seq_len"])
    config = json.loads((Path(spec.path) / "config.json").read_text())
    return int(config.get("max_position_embeddings") or 2048)


def load_tasks(specs: list[str], limit: int | None) -> list[Task]:
    tasks = [load_task(s, limit) for s in specs]
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise TaskError(f"tasks {', '.join(specs)} name the same task twice")
    return tasks


def evaluate_model(store: Store, spec: ModelSpec, tasks: list[Task], cfg: EvalConfig, run: dict | None = None,
                   write: bool = True, progress: bool = True, encodings: dict | None = None) -> pl.DataFrame:
    """Metrics of one model on `tasks`: one row per (task, metric); written to table `evals` (its part holds
    this model's rows of every task evaluated so far, the ones given here replaced)."""
    logprobs, info = score_tasks(store, spec, tasks, cfg, progress=progress, encodings=encodings,
                                 run=run if spec.run_id is not None else None)
    run = run or {}
    rows = []
    for t in tasks:
        for r in task_metrics(t.items, logprobs[t.key]):
            rows.append({"run_id": run.get("run_id"), "sweep": run.get("sweep"), "mixture": run.get("mixture"),
                         "model": run.get("model") or spec.label, "tokens": run.get("tokens"), "seed": run.get("seed"),
                         "model_path": spec.path, "content_hash": info["content_hash"], "task": t.name,
                         "variant": t.variant, **r, "dtype": info["dtype"], "limit": cfg.limit,
                         "source": t.source})
    df = pl.DataFrame(rows, schema_overrides={"tokens": pl.Int64, "seed": pl.Int64, "limit": pl.Int64,
                                              "stderr": pl.Float64, "chance": pl.Float64}, infer_schema_length=None)
    log.info("%s: %d requests in %d batches scored (%s), the rest cached", spec.label, info["n_requests"],
             info["n_batches"], info["dtype"])
    if write and df.height:
        from stats.evidence import _part

        part = _part(spec.run_id or f"model-{info['content_hash']}")
        old = store.read_result(TABLE, part)
        if old is not None:
            keep = old.join(df.select("task", "variant").unique(), on=["task", "variant"], how="anti")
            df_all = pl.concat([keep.drop("created_at", strict=False), df], how="diagonal_relaxed")
        else:
            df_all = df
        store.put_result(TABLE, part, df_all)
    return df.with_columns(pl.lit(info["n_requests"]).alias("n_requests_scored"))


def evaluate_sweep(store: Store, sweep: str, cfg: EvalConfig, progress: bool = True) -> pl.DataFrame:
    """Every finished run of `sweep` on cfg.tasks (cfg.limit items each)."""
    runs = store.read_result("runs")
    if runs is None or "sweep" not in runs.columns:
        raise StoreError(f"no runs in the store; train sweep {sweep!r} first (python -m train sweep)")
    runs = runs.sort("created_at").unique("run_id", keep="last").filter(
        (pl.col("sweep") == sweep) & (pl.col("status") == "done")).sort("run_id")
    if not runs.height:
        raise StoreError(f"sweep {sweep!r} has no finished runs; train it first (python -m train sweep)")
    tasks = load_tasks(cfg.tasks, cfg.limit)
    out, encodings = [], {}
    from tqdm.auto import tqdm

    for run in tqdm(runs.to_dicts(), desc=f"evals {sweep}", unit="run", disable=not progress):
        spec = ModelSpec(store=str(store.root), run_id=run["run_id"])
        out.append(evaluate_model(store, spec, tasks, cfg, run=run, progress=False, encodings=encodings))
    return pl.concat(out, how="diagonal_relaxed")
