"""Corpus export: a Hugging Face datasets folder with a dataset card, JSONL.gz, or one Parquet file.

`hf` writes the layout the Hub uses, so `datasets.load_dataset(OUT)` (or `load_dataset("parquet",
data_files=...)`) loads it offline, and `python -m corpora ingest NAME OUT` brings it back::

    OUT/README.md                              dataset card: YAML header (configs -> data_files, features,
                                               split sizes, and a `synthmix` block) + how the corpus was made
    OUT/data/train-00000-of-0000N.parquet      one file per store shard, the document columns

The card is the corpus's provenance in plain words. Every corpus: documents, bytes, tokens, exact
duplicates dropped and ingest rejects by reason. A synthetic corpus also: generator, backend, prompt
templates (text and prompt_id), sampling parameters, seed, source corpus and its content hash,
generation round, post-processing counts (preambles stripped, truncated, empty), the near-duplicate rate
against the source and the unigram shrinkage figures when the store has them (`stats.dedup`,
`stats.unigram`). The same facts are in the header's `synthmix` block, machine-readable.

hf: each shard is a map (`export_shard_parquet`: one store shard -> one data file and its counts), run by
the executor (`--workers`, `--engine local|ray`); counts are added up (`ExportStats.__add__`), in any
order. JSONL and single-file Parquet stream the shards in order into one file. Shards are read in
record batches, so memory stays flat. The output appears whole or not at all: it is
written under a temporary name and renamed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from corpora.documents import DOC_SCHEMA
from corpora.executor import RunsOnExecutor, Stateful
from corpora.store import Store, StoreError, atomic_path, read_shard_batches, remove_stale_temps

log = logging.getLogger(__name__)

FORMATS = ("hf", "jsonl", "parquet")
# Hugging Face's convention is `string` (int32 offsets) for text; a record batch stays far below 2 GB.
HF_SCHEMA = DOC_SCHEMA.set(DOC_SCHEMA.get_field_index("text"), pa.field("text", pa.string()))


class ExportError(StoreError):
    """An export that cannot be done as asked; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class ExportConfig(RunsOnExecutor):
    corpus: str
    format: str = "hf"  # hf | jsonl | parquet
    out: str | None = None  # default: NAME_hf/, NAME.jsonl.gz, NAME.parquet
    tokenizer: str | None = "cl100k_base"  # counts the card's tokens; None: no token count
    split: str = "train"  # the split name of an hf folder
    license: str | None = None  # card header fields the store does not know
    language: tuple[str, ...] = ()
    overwrite: bool = False
    workers: int = 1  # hf: shards exported in parallel (tiktoken already encodes on every core)
    engine: str | None = None  # local or ray (corpora.executor; default $SYNTHMIX_ENGINE, else local)
    ray_address: str | None = None  # join this Ray cluster (None: $RAY_ADDRESS, else a local Ray)

    @property
    def out_path(self) -> Path:
        default = {"hf": f"{self.corpus}_hf", "jsonl": f"{self.corpus}.jsonl.gz", "parquet": f"{self.corpus}.parquet"}
        return Path(self.out or default[self.format])


@dataclasses.dataclass
class ExportStats:
    """Counts over exported documents; partial counts add up (batch, shard, corpus)."""
    n_docs: int = 0
    n_bytes: int = 0
    n_tokens: int = 0
    n_arrow_bytes: int = 0  # in-memory Arrow size: the card's `num_bytes`, as `datasets` reports it
    n_truncated_docs: int = 0  # synthetic documents with an output cut at max_new_tokens
    generators: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    prompt_ids: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    rounds: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def __add__(self, other: ExportStats) -> ExportStats:
        return ExportStats(
            self.n_docs + other.n_docs, self.n_bytes + other.n_bytes, self.n_tokens + other.n_tokens,
            self.n_arrow_bytes + other.n_arrow_bytes, self.n_truncated_docs + other.n_truncated_docs,
            self.generators + other.generators, self.prompt_ids + other.prompt_ids, self.rounds + other.rounds)


@dataclasses.dataclass
class ExportReport:
    corpus: str
    format: str
    path: str
    files: list[str]
    stats: ExportStats
    tokenizer: str | None
    elapsed_s: float

    def as_dict(self) -> dict:
        s = self.stats
        return {"corpus": self.corpus, "format": self.format, "path": self.path, "files": self.files,
                "docs": s.n_docs, "bytes": s.n_bytes, "tokens": s.n_tokens if self.tokenizer else None,
                "tokenizer": self.tokenizer, "elapsed_s": round(self.elapsed_s, 3)}


# ---------------------------------------------------------------------------------------- map
def batch_stats(batch: pa.RecordBatch, tokenizer=None) -> ExportStats:
    """Counts of one record batch of documents (DOC_SCHEMA columns)."""
    stats = ExportStats(n_docs=batch.num_rows, n_bytes=int(pc.sum(batch.column("n_bytes")).as_py() or 0),
                        n_arrow_bytes=batch.nbytes)
    if tokenizer is not None and batch.num_rows:
        stats.n_tokens = int(tokenizer.encode_batch_flat(batch.column("text").to_pylist())[1].sum())
    generators = batch.column("generator")
    if generators.null_count == batch.num_rows:
        return stats  # natural text: no generation details to count
    for generator, prompt_id, meta in zip(generators.to_pylist(), batch.column("prompt_id").to_pylist(),
                                          batch.column("meta").to_pylist()):
        if generator is None:
            continue
        stats.generators[generator] += 1
        stats.prompt_ids[prompt_id] += 1
        m = _json_dict(meta)
        stats.n_truncated_docs += bool(m.get("truncated"))
        if m.get("round") is not None:
            stats.rounds[m["round"]] += 1
    return stats


def _json_dict(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _batches(shard_path: Path, schema: pa.Schema = DOC_SCHEMA) -> Iterator[pa.RecordBatch]:
    for batch in read_shard_batches(shard_path, DOC_SCHEMA.names, batch_size=4096):
        yield batch.cast(schema) if schema is not DOC_SCHEMA else batch


def export_shard_parquet(shard_path: Path, out_path: Path, tokenizer=None) -> ExportStats:
    """Map: one store shard -> one Parquet file of the card's schema (the hf layout's data files)."""
    stats = ExportStats()
    with pq.ParquetWriter(out_path, HF_SCHEMA, compression="zstd") as writer:
        for batch in _batches(shard_path, HF_SCHEMA):
            writer.write_batch(batch, row_group_size=4096)
            stats += batch_stats(batch, tokenizer)
    return stats


class ShardExporter:
    """The hf map as an executor step: (shard path, out path) -> ExportStats, the tokenizer loaded once per worker."""

    def __init__(self, tokenizer: str | None, store_root: str):
        from corpora.tokenizers import load_tokenizer

        self.tokenizer = load_tokenizer(tokenizer, Store(store_root)) if tokenizer else None

    def __call__(self, job: tuple[str, str]) -> ExportStats:
        return export_shard_parquet(Path(job[0]), Path(job[1]), self.tokenizer)


# ---------------------------------------------------------------------------------------- driver
@contextlib.contextmanager
def _atomic_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary directory beside `out`, renamed onto it when the block succeeds."""
    remove_stale_temps(out)  # what an export killed with kill -9 left beside the same output
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_corpus(store: Store, cfg: ExportConfig, progress: bool = True) -> ExportReport:
    """Write corpus `cfg.corpus` in `cfg.format` (see the module docstring); returns what was written."""
    t0 = time.perf_counter()
    if cfg.format not in FORMATS:
        raise ExportError(f"unknown export format {cfg.format!r}: use one of {', '.join(FORMATS)}")
    if cfg.format == "hf":
        cfg.execution.check()
    info = store.corpus(cfg.corpus)  # UnknownCorpus lists the corpora
    out = store.check_outside(cfg.out_path)  # an --overwrite must never replace shards, results or the store
    if out.exists() and not cfg.overwrite:
        raise ExportError(f"{out} exists; remove it, choose another --out, or pass --overwrite")
    if cfg.format == "hf" and not _safe_split(cfg.split):
        raise ExportError(f"invalid split name {cfg.split!r}: use letters, digits and '_'")
    from corpora.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer, store) if cfg.tokenizer else None
    shards = store.shards(cfg.corpus)
    bar = tqdm(total=info.n_bytes, unit="B", unit_scale=True, desc=f"export {cfg.corpus}", disable=not progress)
    stats, files = ExportStats(), []
    if cfg.format == "hf":
        with _atomic_dir(out, cfg.overwrite) as tmp:
            (tmp / "data").mkdir()
            n = max(len(shards), 1)
            files = [f"data/{cfg.split}-{i:05d}-of-{n:05d}.parquet" for i in range(len(shards))]
            jobs = [(str(shard.path), str(tmp / name)) for shard, name in zip(shards, files)]
            step = Stateful(ShardExporter, cfg.tokenizer, str(store.root))
            with cfg.execution.executor(len(jobs)) as ex:  # counts add up in any order
                for i, shard_stats in ex.map(step, jobs, sizes=[s.n_bytes for s in shards], progress=False):
                    stats += shard_stats
                    bar.update(shards[i].n_bytes)
            if not shards:  # an empty corpus is still a loadable dataset (with no rows)
                files.append(f"data/{cfg.split}-00000-of-00001.parquet")
                pq.write_table(HF_SCHEMA.empty_table(), tmp / files[0])
            download_size = sum((tmp / f).stat().st_size for f in files)
            from corpora.export_card import build_card, render_card

            header, body = build_card(store, info, stats, cfg, tokenizer, download_size)
            (tmp / "README.md").write_text(render_card(header, body), encoding="utf-8")
        files.append("README.md")
    else:
        with atomic_path(out) as tmp:
            if cfg.format == "jsonl":
                opener = gzip.open if out.name.endswith(".gz") else open
                with opener(tmp, "wt", encoding="utf-8") as f:
                    for shard in shards:
                        for batch in _batches(shard.path):
                            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in batch.to_pylist())
                            stats += batch_stats(batch, tokenizer)
                        bar.update(shard.n_bytes)
            else:
                with pq.ParquetWriter(tmp, DOC_SCHEMA, compression="zstd") as writer:
                    for shard in shards:
                        for batch in _batches(shard.path):
                            writer.write_batch(batch)
                            stats += batch_stats(batch, tokenizer)
                        bar.update(shard.n_bytes)
        files.append(out.name)
    bar.close()
    return ExportReport(cfg.corpus, cfg.format, str(out), files, stats, tokenizer.name if tokenizer else None,
                        time.perf_counter() - t0)


def _safe_split(name: str) -> bool:
    return bool(name) and name.replace("_", "").isalnum() and name.isascii()
