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
from corpora.store import CorpusInfo, Store, StoreError, atomic_path, read_shard_batches, remove_stale_temps
from corpora.templates import read_template, template_id

log = logging.getLogger(__name__)

FORMATS = ("hf", "jsonl", "parquet")
# Hugging Face's convention is `string` (int32 offsets) for text; a record batch stays far below 2 GB.
HF_SCHEMA = DOC_SCHEMA.set(DOC_SCHEMA.get_field_index("text"), pa.field("text", pa.string()))
CARD_VERSION = 1
_COLUMN_DOCS = {
    "doc_id": "16 hex digits of BLAKE2b: over the normalised text (NFKC, case-folded, whitespace collapsed) for "
              "natural text, over the generation requests for synthetic text",
    "text": "the document",
    "n_bytes": "UTF-8 bytes of `text`",
    "source": "where the text came from (file:line, file#record, URL; for synthetic text source_corpus/doc_id)",
    "source_doc_id": "doc_id of the source document a synthetic document was generated from (null for natural text)",
    "generator": "model that generated the text (null for natural text)",
    "prompt_id": "prompt template: type + hash of the template text (null for natural text)",
    "meta": "JSON object: reader fields (url, title, ...) or generation details (sampling, seed, finish reasons, chunks)",
}


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


# ---------------------------------------------------------------------------------------- provenance
def collect_provenance(store: Store, info: CorpusInfo, stats: ExportStats) -> dict:
    """What the store knows about how a corpus was made: ingest counts and, for synthetic text, the recipe
    and the analyses of it. Keys are absent where the store has nothing to say."""
    facts: dict = {}
    runs = store.catalog_rows(
        "SELECT count(*), coalesce(sum(n_duplicates), 0) FROM ingest_runs WHERE corpus = ?", [info.name])[0]
    rejects = store.catalog_rows(
        "SELECT reason, count(*) FROM rejects WHERE corpus = ? GROUP BY reason ORDER BY 2 DESC, 1", [info.name])
    facts["ingest"] = {"n_runs": int(runs[0]), "n_exact_duplicates_dropped": int(runs[1]),
                       "rejects_by_reason": {r: int(n) for r, n in rejects}}
    if info.kind != "synthetic":
        return facts
    m = info.meta
    generation = {k: m[k] for k in ("generator", "backend", "sampling", "seed", "max_chunk_tokens", "max_chunks")
                  if m.get(k) is not None}
    if stats.generators and set(stats.generators) != {m.get("generator")}:
        generation["generators_in_documents"] = dict(stats.generators.most_common())
    if m.get("round") is not None:
        generation["round"] = m["round"]
    elif stats.rounds:
        generation["round"] = sorted(stats.rounds)[-1] if len(stats.rounds) == 1 else dict(stats.rounds)
    if m.get("root_corpus"):
        generation["root_corpus"] = m["root_corpus"]
    facts["generation"] = generation
    source = m.get("source") or m.get("source_corpus")
    if source:
        src = {"corpus": source}
        if store.has_corpus(source):
            s = store.corpus(source)
            src.update(kind=s.kind, n_docs=s.n_docs, n_bytes=s.n_bytes, content_hash=s.content_hash)
        else:
            src["in_store"] = False
        facts["source"] = src
    facts["prompts"] = _prompts(m, stats)
    post = _postprocessing(store, info.name)
    post["n_truncated_docs"] = stats.n_truncated_docs
    facts["postprocessing"] = post
    near = _near_duplicates(store, info, source)
    if near:
        facts["near_duplicates"] = near
    shrink = store.read_result("unigram_shrinkage")
    if shrink is not None and "synthetic" in shrink.columns:
        rows = shrink.filter(shrink["synthetic"] == info.name).to_dicts()
        keep = ("source", "tokenizer", "budget_tokens", "types_at_budget_synthetic", "types_at_budget_source",
                "types_ratio", "entropy_at_budget_synthetic_nats", "entropy_at_budget_source_nats",
                "entropy_diff_nats")
        if rows:
            facts["unigram_shrinkage"] = [{k: r[k] for k in keep if k in r} for r in rows]
    return facts


def _prompts(meta: dict, stats: ExportStats) -> list[dict]:
    """Each prompt_id used, with the template text when the template file the corpus names still hashes to it."""
    ids = {pid: n for pid, n in stats.prompt_ids.most_common() if pid} or \
        ({meta["prompt_id"]: 0} if meta.get("prompt_id") else {})
    try:
        text = read_template(meta["prompt_path"]) if meta.get("prompt_path") else None
    except OSError:  # moved or deleted since generation: the card lists the ids without their text
        text = None
    texts = {template_id(type_, text): text for type_ in {pid.rsplit("-", 1)[0] for pid in ids}} if text else {}
    return [{"prompt_id": pid, "n_docs": n, "text": texts.get(pid)} for pid, n in ids.items()]


def _postprocessing(store: Store, corpus: str) -> dict:
    """Counts by reason summed over the corpus's generation runs (synth_runs)."""
    runs = store.read_result("synth_runs")
    counts: collections.Counter = collections.Counter()
    n_runs = 0
    if runs is not None and "corpus" in runs.columns:
        for row in runs.filter(runs["corpus"] == corpus).iter_rows(named=True):
            n_runs += 1
            counts.update(json.loads(row.get("counts_by_reason") or "{}"))
    return {"n_runs": n_runs, "counts_by_reason": dict(counts.most_common())}


def _near_duplicates(store: Store, info: CorpusInfo, source: str | None) -> dict:
    """The latest `stats.dedup` figures of this corpus: against its source, and similarity to own source doc."""
    df = store.read_result("dup_summary")
    if df is None or "corpus" not in df.columns:
        return {}
    rows = sorted(df.filter(df["corpus"] == info.name).to_dicts(), key=lambda r: str(r.get("created_at")))
    out = {}
    against = [r for r in rows if r.get("mode") == "across" and r.get("against") == source]
    if against:
        r = against[-1]
        out["against_source"] = {
            "against": source, "share_with_near_duplicate": r.get("share_with_match"),
            "n_with_match": r.get("n_with_match"), "n_docs_hashed": r.get("n_docs_hashed"),
            "threshold": r.get("threshold"), "ngram": r.get("ngram"), "num_perm": r.get("num_perm"),
            "current": r.get("content_hash") == info.content_hash}
    own = [r for r in rows if r.get("source_jaccard_mean") is not None]
    if own:
        r = own[-1]
        out["own_source_document"] = {
            k: r.get(k) for k in ("n_source_found", "source_jaccard_mean", "source_jaccard_median",
                                  "source_share_near_dup", "threshold")}
        out["own_source_document"]["current"] = r.get("content_hash") == info.content_hash
    within = [r for r in rows if r.get("mode") == "within"]
    if within:
        out["within_corpus_dup_rate"] = within[-1].get("dup_rate")
    return out


# ---------------------------------------------------------------------------------------- the card
def _size_category(n: int) -> str:
    bounds = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
              (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B")]
    return next((label for bound, label in bounds if n < bound), "n>1B")


def build_card(store: Store, info: CorpusInfo, stats: ExportStats, cfg: ExportConfig, tokenizer,
               download_size: int) -> tuple[dict, str]:
    """(YAML header, Markdown body) of a corpus's dataset card."""
    facts = collect_provenance(store, info, stats)
    tags = ["synthmix", info.kind] + ([info.synthetic_type] if info.synthetic_type else [])
    header: dict = {"pretty_name": f"synthmix corpus {info.name}"}
    if cfg.license:
        header["license"] = cfg.license
    if cfg.language:
        header["language"] = list(cfg.language)
    header.update({
        "tags": tags,
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(stats.n_docs)],
        "configs": [{"config_name": "default", "data_files": [{"split": cfg.split, "path": f"data/{cfg.split}-*"}]}],
        "dataset_info": {
            "features": [{"name": f.name, "dtype": "int64" if f.type == pa.int64() else "string"} for f in HF_SCHEMA],
            "splits": [{"name": cfg.split, "num_bytes": stats.n_arrow_bytes, "num_examples": stats.n_docs}],
            "download_size": download_size, "dataset_size": stats.n_arrow_bytes},
        "synthmix": {
            "card_version": CARD_VERSION, "corpus": info.name, "kind": info.kind,
            "synthetic_type": info.synthetic_type, "role": info.role, "content_hash": info.content_hash,
            "n_docs": stats.n_docs, "n_bytes": stats.n_bytes,
            "n_tokens": stats.n_tokens if tokenizer else None, "tokenizer": tokenizer.name if tokenizer else None,
            "meta": info.meta, "provenance": facts},
    })
    return header, _card_body(info, stats, cfg, tokenizer, facts)


def render_card(header: dict, body: str) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data) -> bool:  # repeat values instead of &id001 anchors: readable by people
            return True

    def text(dumper, value: str):  # multi-line strings (prompt templates) as literal blocks
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    header_yaml = yaml.dump(header, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
    return "---\n" + header_yaml + "---\n\n" + body


def _card_body(info: CorpusInfo, stats: ExportStats, cfg: ExportConfig, tokenizer, facts: dict) -> str:
    kind = f"synthetic ({info.synthetic_type})" if info.kind == "synthetic" else "natural"
    tokens = f"{stats.n_tokens:,} tokens ({tokenizer.name}, no end-of-text tokens)" if tokenizer else "tokens not counted"
    lines = [
        f"# synthmix corpus `{info.name}`", "",
        f"A {kind} text corpus (role `{info.role}`) exported from a synthmix store: {stats.n_docs:,} documents, "
        f"{stats.n_bytes:,} bytes of UTF-8 text, {tokens}. Store content hash `{info.content_hash}`.", "",
        "## Loading", "", "```python", "from datasets import load_dataset", "",
        f'ds = load_dataset("path/to/{cfg.out_path.name}", split="{cfg.split}")  # offline: a local folder', "```", "",
        f"or `python -m corpora ingest {info.name} path/to/{cfg.out_path.name}` into another store "
        "(same documents, same doc_ids, this card's metadata kept in the corpus's meta).", "",
        "## Columns", "", "| column | type | meaning |", "| --- | --- | --- |",
    ]
    lines += [f"| `{f.name}` | {'int64' if f.type == pa.int64() else 'string'} | {_COLUMN_DOCS[f.name]} |"
              for f in HF_SCHEMA]
    ing = facts["ingest"]
    lines += ["", "## Counts", "", "| | |", "| --- | --- |",
              f"| documents | {stats.n_docs:,} |", f"| bytes | {stats.n_bytes:,} |",
              f"| tokens | {stats.n_tokens:,} ({tokenizer.name}) |" if tokenizer else "| tokens | not counted |",
              f"| mean bytes per document | {stats.n_bytes / stats.n_docs:,.0f} |" if stats.n_docs else
              "| mean bytes per document | - |",
              f"| ingest runs | {ing['n_runs']} |",
              f"| exact duplicates dropped on ingest | {ing['n_exact_duplicates_dropped']:,} |", ""]
    if ing["rejects_by_reason"]:
        lines += ["Ingest rejects by reason (each kept with its location in the store's `rejects` table):", "",
                  "| reason | records |", "| --- | --- |"]
        lines += [f"| {r} | {n:,} |" for r, n in ing["rejects_by_reason"].items()] + [""]
    else:
        lines += ["Ingest rejects: none." if ing["n_runs"] else
                  "Ingest rejects: none (written by a synthmix step, not ingested from files).", ""]
    if info.kind == "synthetic":
        lines += _synthetic_section(info, facts)
    if info.meta.get("hf"):
        hf = info.meta["hf"]
        lines += ["## Imported from", "", f"Ingested from the Hugging Face datasets folder `{hf.get('folder')}` "
                  f"({hf.get('layout')} layout); its card header is kept in this corpus's meta under `hf`.", ""]
    return "\n".join(lines)


def _synthetic_section(info: CorpusInfo, facts: dict) -> list[str]:
    g, src, post = facts.get("generation", {}), facts.get("source"), facts.get("postprocessing", {})
    sampling = g.get("sampling") or {}
    rnd = g.get("round")
    lines = ["## How it was made", "",
             "| | |", "| --- | --- |",
             f"| generator | `{g.get('generator', 'not recorded')}` |",
             f"| backend | {g.get('backend', 'not recorded')} |",
             f"| sampling | {', '.join(f'{k}={v}' for k, v in sampling.items()) or 'not recorded'} |",
             f"| seed | {g.get('seed', 'not recorded')} |",
             f"| chunk size | {g.get('max_chunk_tokens', '-')} tokens of the generator's tokenizer |",
             *([f"| chunks per source document | the first {g['max_chunks']} |"] if g.get("max_chunks") else []),
             f"| generation round | {rnd if rnd is not None else 'not recorded (round 1: generated from natural text)'} |"]
    if g.get("root_corpus"):
        lines.append(f"| root natural corpus | `{g['root_corpus']}` |")
    if src:
        where = (f"{src.get('kind')}, {src.get('n_docs', 0):,} documents, content hash `{src.get('content_hash')}` "
                 "(its state at export)") if src.get("in_store", True) else "no longer in the store"
        lines.append(f"| source corpus | `{src['corpus']}`: {where} |")
    if g.get("generators_in_documents"):
        lines.append(f"| generators in documents | {g['generators_in_documents']} |")
    lines += ["", "### Prompt templates", ""]
    for p in facts.get("prompts", []):
        lines.append(f"`{p['prompt_id']}` ({p['n_docs']:,} documents):")
        lines += ["", "```text", p["text"].rstrip(), "```", ""] if p.get("text") else \
            ["", "(template text not found: no template file hashes to this prompt_id any more)", ""]
    counts = post.get("counts_by_reason", {})
    lines += ["### Post-processing", "",
              f"Over {post.get('n_runs', 0)} generation run(s), per chunk output unless noted "
              "(from the store's `synth_runs`; each case is listed in `synth_rejects`):", "",
              "| what | count |", "| --- | --- |",
              f"| preambles stripped (\"Here is the rephrased text:\") | {counts.get('preamble', 0):,} |",
              f"| truncated at max_new_tokens (kept, flagged) | {counts.get('truncated', 0):,} |",
              f"| empty outputs dropped | {counts.get('empty', 0):,} |",
              f"| documents with every chunk empty (dropped) | {counts.get('empty_doc', 0):,} |",
              f"| failed requests | {counts.get('failed', 0):,} |",
              f"| documents in this corpus with a truncated chunk | {post.get('n_truncated_docs', 0):,} |"]
    lines += [f"| {k} | {v:,} |" for k, v in counts.items()
              if k not in ("preamble", "truncated", "empty", "empty_doc", "failed")]
    lines += ["", "### Analyses", ""]
    near = facts.get("near_duplicates", {})
    if near.get("against_source"):
        a = near["against_source"]
        lines.append(f"- Near-duplicates against the source `{a['against']}`: {a['share_with_near_duplicate']:.2%} "
                     f"of documents ({a['n_with_match']} of {a['n_docs_hashed']}) have one (MinHash LSH, Jaccard >= "
                     f"{a['threshold']}, {a['ngram']}-word shingles){'' if a['current'] else ' [computed on an earlier version of the corpus]'}.")
    if near.get("own_source_document"):
        o = near["own_source_document"]
        lines.append(f"- Similarity to its own source document ({o['n_source_found']} found): mean Jaccard "
                     f"{o['source_jaccard_mean']:.3f}, median {o['source_jaccard_median']:.3f}; "
                     f"{o['source_share_near_dup']:.2%} are near-copies of their source.")
    if near.get("within_corpus_dup_rate") is not None:
        lines.append(f"- Near-duplicate rate within the corpus: {near['within_corpus_dup_rate']:.2%}.")
    for s in facts.get("unigram_shrinkage", []):
        lines.append(f"- Unigram shrinkage against `{s['source']}` at an equal budget of {s['budget_tokens']:,} "
                     f"{s['tokenizer']} tokens: {s['types_at_budget_synthetic']:,.0f} distinct types vs "
                     f"{s['types_at_budget_source']:,.0f} (ratio {s['types_ratio']:.3f}); entropy "
                     f"{s['entropy_at_budget_synthetic_nats']:.3f} vs {s['entropy_at_budget_source_nats']:.3f} nats "
                     f"(difference {s['entropy_diff_nats']:+.3f}).")
    if not near and not facts.get("unigram_shrinkage"):
        lines.append(f"- None in the store yet: `python -m stats.dedup --corpus {info.name} --against "
                     f"{(src or {}).get('corpus', 'SOURCE')}` and `python -m stats.unigram --train {info.name} "
                     "--test TEST` compute them.")
    lines += ["", "### Risks", "",
              "Text written by a language model can carry the generator's biases and factual errors, and is less "
              "diverse than the text it was made from (see the shrinkage figures above when present). Kang et al. "
              "(2025) found rephrased text helpful as about a third of a mixture with natural web text but not on "
              "its own, and generated textbooks alone worse than web text; read the recipe above before training "
              "on it.", ""]
    return lines
