"""Generate a synthetic corpus (HQ, QA, TXBK or the user's type) from a natural corpus in the store.

The unit of work is a *chunk request*: one prompt for one chunk of one source document. Its key is a
hash of (source doc, chunk index, prompt text, prompt_id, generator, sampling params, seed), so a
rerun of the same command finds the work it already did:

1. Requests run in batches (length-sorted within a window of source documents). After each batch the
   cleaned outputs are staged atomically in `artifact_dir("synth_chunks", out)`, keyed by request.
2. A source document whose chunks are all staged becomes one output document (chunks joined in
   order) with doc_id = hash of its request keys; documents are appended to the corpus as shards.
3. A rerun skips documents whose doc_id is in the corpus and requests already staged, so a run
   killed at any moment loses at most the batch in flight and never writes a document twice.

Per run, a row in result table `synth_runs` holds the config and counts, and `synth_rejects` lists
every flagged, dropped or failed output with its reason; `synth_topics` holds TXBK clusters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import Counter
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa

from corpora.executor import ExecutorConfig, RunsOnExecutor, Stateful
from corpora.results import declare
from corpora.store import Store, StoreError, make_documents, write_parquet_atomic
from synth.backends import (
    Backend,
    GenerationResult,
    SamplingParams,
    build_backend,
    default_cache_dir,
    load_driver_tokenizer,
)
from synth.chunking import HFEncoder, chunk_documents
from synth.postprocess import clean_output
from synth.prompts import AUDIENCES, STYLES, PromptTemplate, load_prompt
from synth.topics import fit_topics

log = logging.getLogger(__name__)

declare("synth_runs", {
    "run_id": "str", "corpus": "str", "source": "str", "type": "str", "prompt_id": "str", "generator": "str",
    "backend": "str", "n_source_docs": "int", "n_requests": "int", "n_docs_done_before": "int",
    "n_requests_staged_before": "int", "n_requests_run": "int", "n_requests_failed": "int", "n_docs_written": "int",
    "n_docs_incomplete": "int", "n_prompt_tokens": "int", "n_completion_tokens": "int",
    "status": "str done|partial|failed", "counts_by_reason": "json", "elapsed_s": "float",
    "completion_tokens_per_s": "float", "config": "json", "started_at": "time", "finished_at": "time"},
    "One row per generation run; part <run_id>.")
declare("synth_rejects", {
    "source_doc_id": "str", "chunk_index": "int", "reason": "str", "action": "str", "detail": "str", "run_id": "str",
    "corpus": "str"},
    "One row per chunk or document a generation run did not write as asked, with the reason.")
declare("synth_topics", {"corpus": "str", "source": "str", "topic": "int", "key_terms": "str", "n_docs": "int",
                         "seed": "int"},
        "One row per topic fitted for topic-mode prompts; part <corpus>.")

WINDOW_BATCHES = 8  # length-sort requests within windows of this many batches (bounded reordering)
STAGE_COLUMNS = ("key", "source_doc_id", "chunk_index", "text", "finish_reason", "n_prompt_tokens",
                 "n_completion_tokens", "seed", "preamble_stripped", "truncated", "empty", "run_id")


@dataclasses.dataclass
class GenerateConfig(RunsOnExecutor):
    type: str = "hq"  # hq, qa, txbk, or the name of the user's type given with `prompt`
    source: str = "cc"  # natural corpus to rephrase / draw topics from
    out: str = ""  # output corpus (default: the type)
    generator: str | None = None  # model dir / .gguf / model id (default: SmolLM2-135M-Instruct GGUF)
    backend: str = "transformers"  # transformers | openai | vllm
    limit: int | None = None  # first N source documents
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 16  # requests per batch: the unit flushed to disk (and the model batch)
    prompt: str | None = None  # a template file for the user's own type
    max_chunk_tokens: int = 320  # chunk size for rephrasing (WRAP uses ~300 tokens)
    max_chunks: int | None = None  # rephrase only the first N chunks of each source document (None: all)
    chunk_tokenizer: str | None = None  # None: the generator's tokenizer, else corpora.tokenizers name
    n_topics: int = 0  # TXBK clusters (0: about sqrt(number of source documents))
    shard_docs: int = 256  # output documents per appended shard
    max_retries: int = 2  # retries of a failed batch / request before it is recorded as failed
    base_url: str | None = None  # openai backend
    api_key_env: str = "OPENAI_API_KEY"  # openai backend: environment variable holding the key
    concurrency: int = 8  # openai backend: requests in flight
    timeout_s: float = 120.0  # openai backend: per request
    tensor_parallel_size: int = 1  # vllm backend
    device: str = "cpu"  # transformers backend: cpu, cuda, auto
    num_threads: int = 0  # transformers backend: torch intra-op threads (0: torch's default, the cores)
    # transformers backend: 'auto' (bf16 on GPUs and CPUs with bf16 hardware, else fp32), 'bf16' or 'fp32'.
    # Texts are batch-independent and prefix-reuse-exact in fp32 only (docs/dtype.md); not part of the recipe
    dtype: str = "auto"
    cache_dir: str | None = dataclasses.field(default_factory=lambda: str(default_cache_dir()))
    workers: int = 1  # generator workers (processes / Ray actors), each with its own copy of the model
    engine: str | None = None  # local | ray (None: $SYNTHMIX_ENGINE, else local)
    ray_address: str | None = None  # join this Ray cluster (None: $RAY_ADDRESS, else a local Ray)
    progress: bool = True

    @property
    def out_corpus(self) -> str:
        return self.out or self.type

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(self.max_new_tokens, self.temperature, self.top_p)


@dataclasses.dataclass
class ChunkRequest:
    source_doc_id: str
    chunk_index: int
    n_chunks: int
    messages: list[dict]
    n_source_chars: int
    extra: dict  # goes into the document's meta (TXBK topic, audience, style)
    key: str = ""
    seed: int = 0


def _hash(obj) -> str:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True).encode("utf-8"), digest_size=8).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------- requests
def build_encoder(tokenizer, cfg: GenerateConfig, store: Store):
    """The tokenizer that measures chunks: the generator's own (a Hugging Face tokenizer) when it has one."""
    if cfg.chunk_tokenizer is None and tokenizer is not None:
        return HFEncoder(tokenizer)
    from corpora.tokenizers import load_tokenizer

    return load_tokenizer(cfg.chunk_tokenizer or "cl100k_base", store=store)


def build_requests(docs: list[tuple[str, str]], template: PromptTemplate, encoder, cfg: GenerateConfig,
                   topics=None) -> list[ChunkRequest]:
    """Requests for source documents [(doc_id, text)], in document and chunk order."""
    chunks = chunk_documents([t for _, t in docs], encoder, cfg.max_chunk_tokens)
    if cfg.max_chunks is not None:
        chunks = [c[:cfg.max_chunks] for c in chunks]
    requests = []
    for d, ((doc_id, _), doc_chunks) in enumerate(zip(docs, chunks)):
        if template.mode == "rephrase":
            requests += [ChunkRequest(doc_id, i, len(doc_chunks), template.render(text=c), len(c), {})
                         for i, c in enumerate(doc_chunks)]
        elif doc_chunks:
            # Cosmopedia-style: vary audience and style per document, reproducibly from the seed.
            pick = int(_hash([cfg.seed, doc_id]), 16)
            cluster = int(topics.labels[d])
            extra = {"topic": cluster, "key_terms": topics.key_terms[cluster],
                     "audience": AUDIENCES[pick % len(AUDIENCES)],
                     "style": STYLES[(pick // len(AUDIENCES)) % len(STYLES)]}
            messages = template.render(key_terms=", ".join(extra["key_terms"]), extract=doc_chunks[0],
                                       audience=extra["audience"], style=extra["style"])
            requests.append(ChunkRequest(doc_id, 0, 1, messages, len(doc_chunks[0]), extra))
    return requests


def assign_keys(requests: list[ChunkRequest], template: PromptTemplate, generator: str,
                cfg: GenerateConfig) -> None:
    """Resume keys and per-request seeds (derived from the key, so independent of batching)."""
    params = cfg.sampling.as_dict()
    for r in requests:
        r.key = _hash([r.source_doc_id, r.chunk_index, _hash(r.messages), template.prompt_id, generator,
                       params, cfg.seed])
        r.seed = int(r.key[:8], 16) & 0x7FFFFFFF


def output_doc_id(requests: list[ChunkRequest]) -> str:
    return _hash([requests[0].source_doc_id, [r.key for r in requests]])


def read_source(store: Store, cfg: GenerateConfig) -> list[tuple[str, str]]:
    """(doc_id, text) of the first `limit` source documents, in store order."""
    info = store.corpus(cfg.source)  # raises UnknownCorpus listing the corpora
    if info.kind != "natural":
        log.info("source corpus %r is %s text: a further generation round", cfg.source, info.kind)
    docs: dict[str, str] = {}  # by doc_id: a document stored twice is generated from once
    for batch in store.iter_batches(cfg.source, ["doc_id", "text"], batch_size=4096):
        for doc_id, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            docs.setdefault(doc_id, text)
            if cfg.limit is not None and len(docs) >= cfg.limit:
                return list(docs.items())
    return list(docs.items())


@dataclasses.dataclass
class Lineage:
    """Where a generation round sits: natural text is round 0; rephrasing a round-k corpus gives round
    k + 1. `roots` maps a source doc_id to its root natural document (absent: the doc is itself the root)."""

    round: int  # round of the corpus being generated
    root_corpus: str
    roots: dict[str, str]

    def root_of(self, source_doc_id: str) -> str:
        return self.roots.get(source_doc_id, source_doc_id)


def source_lineage(store: Store, source: str) -> Lineage:
    """Round and root documents of the corpus generated from `source` (read from the source's provenance;
    a synthetic corpus made before rounds were recorded counts as round 1 of its `source`)."""
    info = store.corpus(source)
    if info.kind == "natural":
        return Lineage(1, source, {})
    src_round = int(info.meta.get("round") or 1)
    root_corpus = info.meta.get("root_corpus") or info.meta.get("source") or source
    roots: dict[str, str] = {}
    for batch in store.iter_batches(source, ["doc_id", "source_doc_id", "meta"], batch_size=4096):
        for d, sd, m in zip(*(batch.column(i).to_pylist() for i in range(3))):
            roots[d] = json.loads(m or "{}").get("root_doc_id") or sd or d
    return Lineage(src_round + 1, root_corpus, roots)


# ---------------------------------------------------------------------------------------- staging
def read_staged(store: Store, out: str) -> dict[str, dict]:
    """Cleaned outputs already generated for `out`, by request key."""
    d = store.artifact_dir("synth_chunks", out)
    files = sorted(d.glob("*.parquet"))
    if not files:
        return {}
    frame = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    return {row["key"]: row for row in frame.iter_rows(named=True)}


def write_staged(store: Store, out: str, name: str, rows: list[dict]) -> None:
    table = pa.Table.from_pylist([{c: r[c] for c in STAGE_COLUMNS} for r in rows])
    write_parquet_atomic(table, store.artifact_dir("synth_chunks", out) / f"{name}.parquet")


def assemble_document(requests: list[ChunkRequest], staged: dict[str, dict], source: str,
                      template: PromptTemplate, generator: str, cfg: GenerateConfig, run_id: str,
                      lineage: Lineage | None = None) -> dict:
    """One output document row from a source document's staged chunks (text empty if all were empty)."""
    rows = [staged[r.key] for r in requests]
    chunks_meta = [{"index": r["chunk_index"], "n_source_chars": q.n_source_chars,
                    "finish_reason": r["finish_reason"], "n_prompt_tokens": r["n_prompt_tokens"],
                    "n_completion_tokens": r["n_completion_tokens"], "seed": r["seed"],
                    "preamble_stripped": r["preamble_stripped"], "truncated": r["truncated"],
                    "empty": r["empty"], "run_id": r["run_id"]} for q, r in zip(requests, rows)]
    meta = {"type": template.type, "source_corpus": source, "backend": cfg.backend,
            "sampling": cfg.sampling.as_dict(), "seed": cfg.seed, "max_chunk_tokens": cfg.max_chunk_tokens,
            "max_chunks": cfg.max_chunks,
            "n_chunks": len(rows), "finish_reasons": [r["finish_reason"] for r in rows],
            "truncated": any(r["truncated"] for r in rows),
            "n_prompt_tokens": sum(r["n_prompt_tokens"] for r in rows),
            "n_completion_tokens": sum(r["n_completion_tokens"] for r in rows),
            "chunks": chunks_meta, "written_by_run": run_id, **requests[0].extra}
    if lineage is not None:
        meta.update(round=lineage.round, root_corpus=lineage.root_corpus,
                    root_doc_id=lineage.root_of(requests[0].source_doc_id))
    text = "\n\n".join(r["text"] for r in rows if not r["empty"])
    return {"doc_id": output_doc_id(requests), "text": text, "source": f"{source}/{requests[0].source_doc_id}",
            "source_doc_id": requests[0].source_doc_id, "generator": generator,
            "prompt_id": template.prompt_id, "meta": meta}


# ---------------------------------------------------------------------------------------- driver
def _generate_batch(backend: Backend, batch: list[tuple[list[dict], int]], params: SamplingParams,
                    max_retries: int) -> list[GenerationResult]:
    """Results for one batch of (messages, seed); a batch that keeps raising comes back as failed results
    with the error."""
    error = ""
    for attempt in range(max_retries + 1):
        try:
            results = backend.generate([m for m, _ in batch], params, [seed for _, seed in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"backend returned {len(results)} results for {len(batch)} prompts")
            return results
        except Exception as e:  # any engine error: retry, then record it and go on
            error = f"{type(e).__name__}: {e}"
            log.warning("batch attempt %d/%d failed: %s", attempt + 1, max_retries + 1, error)
    return [GenerationResult.failed(error) for _ in batch]


class BatchGenerator:
    """The executor's map for generation: a batch of (messages, seed) -> results. Built once per worker
    (a process, or a Ray actor holding the model; `Stateful(BatchGenerator, cfg)`), or around the driver's
    own backend when it runs in-process."""

    def __init__(self, cfg: GenerateConfig, backend: Backend | None = None):
        self.params, self.max_retries = cfg.sampling, cfg.max_retries
        self.backend = backend if backend is not None else _build_backend(cfg)

    def __call__(self, batch: list[tuple[list[dict], int]]) -> list[GenerationResult]:
        return _generate_batch(self.backend, batch, self.params, self.max_retries)


def _build_backend(cfg: GenerateConfig) -> Backend:
    return build_backend(cfg.backend, cfg.generator, batch_size=cfg.batch_size, device=cfg.device,
                         cache_dir=cfg.cache_dir, num_threads=cfg.num_threads, base_url=cfg.base_url,
                         api_key=os.environ.get(cfg.api_key_env), concurrency=cfg.concurrency,
                         timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                         tensor_parallel_size=cfg.tensor_parallel_size, seed=cfg.seed, dtype=cfg.dtype)


def _worker_resources(cfg: GenerateConfig) -> dict:
    """What one generator worker asks of a Ray cluster: a GPU (vLLM: tensor_parallel_size of them) or
    its torch threads' CPUs."""
    if cfg.backend == "vllm":
        return {"num_cpus": 1, "num_gpus": cfg.tensor_parallel_size}
    if cfg.backend == "transformers" and cfg.device != "cpu":
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": max(1, cfg.num_threads)}


def _check_corpus(store: Store, out: str, meta: dict, template: PromptTemplate) -> None:
    """Create the output corpus, or check that an existing one was made by the same recipe."""
    if store.has_corpus(out):
        info = store.corpus(out)
        keys = ("source", "generator", "prompt_id", "sampling", "seed", "max_chunk_tokens", "max_chunks")
        differ = [k for k in keys if info.meta.get(k) != meta[k]]
        if info.kind != "synthetic" or differ:
            what = ", ".join(f"{k}={info.meta.get(k)!r} (now {meta[k]!r})" for k in differ) or f"kind={info.kind}"
            raise StoreError(f"corpus {out!r} exists and was not made by this recipe ({what}); "
                             "pass another --out or remove it first")
    store.create_corpus(out, "synthetic", "train", synthetic_type=template.type, meta=meta, exist_ok=True)


def generate(store: Store, cfg: GenerateConfig, backend: Backend | None = None) -> dict:
    """Generate (or resume) corpus `cfg.out_corpus`; return the run's summary (also in `synth_runs`).

    Batches run on the executor (`cfg.engine`): in-process on the driver's backend (local, one worker,
    or a `backend` object given), else in `cfg.workers` worker processes or Ray actors that each load the
    model once; the driver only chunks, stages and writes."""
    started, t0 = _now(), time.perf_counter()
    template = load_prompt(cfg.type, cfg.prompt)
    out = cfg.out_corpus
    docs = read_source(store, cfg)
    where = ExecutorConfig(cfg.engine, max(1, cfg.workers), cfg.ray_address)
    in_process = backend is not None or cfg.backend == "openai" or where.in_process()
    if backend is not None and not where.in_process():
        raise ValueError("a backend object runs in-process only: pass the engine and workers by config")
    if in_process:
        backend = backend if backend is not None else _build_backend(cfg)
        step = BatchGenerator(cfg, backend)
        generator, driver_tokenizer = backend.generator, backend.tokenizer
    else:
        step = Stateful(BatchGenerator, cfg)
        generator, driver_tokenizer = load_driver_tokenizer(cfg.backend, cfg.generator, cfg.cache_dir)
    # the openai backend keeps its own requests in flight from this process (cfg.concurrency)
    ex = (ExecutorConfig("local", 1) if in_process else where).executor()
    params = cfg.sampling
    run_id = f"{out}-{started:%Y%m%dT%H%M%S}-{os.getpid()}"
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("progress",)}
    corpus_meta = {"source": cfg.source, "generator": generator, "prompt_id": template.prompt_id,
                   "prompt_path": template.path, "backend": cfg.backend, "sampling": params.as_dict(),
                   "seed": cfg.seed, "max_chunk_tokens": cfg.max_chunk_tokens, "max_chunks": cfg.max_chunks}
    lineage = source_lineage(store, cfg.source)
    corpus_meta.update(round=lineage.round, root_corpus=lineage.root_corpus)
    _check_corpus(store, out, corpus_meta, template)

    topics = None
    if template.mode == "topic":
        topics = fit_topics([t for _, t in docs], cfg.n_topics, cfg.seed)
        store.put_result("synth_topics", out, pl.DataFrame({
            "corpus": out, "source": cfg.source, "topic": list(range(len(topics.sizes))),
            "key_terms": [", ".join(t) for t in topics.key_terms], "n_docs": topics.sizes,
            "seed": cfg.seed}))
    encoder = build_encoder(driver_tokenizer, cfg, store)
    requests = build_requests(docs, template, encoder, cfg, topics)
    assign_keys(requests, template, generator, cfg)

    by_doc: dict[str, list[ChunkRequest]] = {}
    for r in requests:
        by_doc.setdefault(r.source_doc_id, []).append(r)
    counts: Counter = Counter()
    rejects: list[dict] = []
    n_empty_sources = len(docs) - len(by_doc)
    if n_empty_sources:
        counts["empty_source"] = n_empty_sources
        rejects += [{"source_doc_id": d, "chunk_index": None, "reason": "empty_source", "action": "skipped",
                     "detail": "source document has no text"} for d, _ in docs if d not in by_doc]

    done_docs = store.doc_ids(out)
    staged = read_staged(store, out)
    open_docs = {d: rs for d, rs in by_doc.items() if output_doc_id(rs) not in done_docs}
    pending = [r for rs in open_docs.values() for r in rs if r.key not in staged]
    summary = {"run_id": run_id, "corpus": out, "source": cfg.source, "type": template.type,
               "prompt_id": template.prompt_id, "generator": generator, "backend": cfg.backend,
               "n_source_docs": len(docs), "n_requests": len(requests),
               "n_docs_done_before": len(by_doc) - len(open_docs),
               "n_requests_staged_before": sum(r.key in staged for rs in open_docs.values() for r in rs),
               "n_requests_run": 0, "n_requests_failed": 0, "n_docs_written": 0, "n_docs_incomplete": 0,
               "n_prompt_tokens": 0, "n_completion_tokens": 0}
    log.info("%s: %d source docs, %d requests, %d docs already written, %d requests to run",
             out, len(docs), len(requests), summary["n_docs_done_before"], len(pending))

    ready: list[dict] = []

    def flush(force: bool = False) -> None:
        nonlocal ready
        while ready and (force or len(ready) >= cfg.shard_docs):
            part, ready = ready[:cfg.shard_docs], ready[cfg.shard_docs:]
            store.append_shard(out, make_documents(part))
            summary["n_docs_written"] += len(part)

    def collect_finished(doc_ids) -> None:
        for d in doc_ids:
            rs = open_docs.get(d)
            if rs is None or not all(r.key in staged for r in rs):
                continue
            row = assemble_document(rs, staged, cfg.source, template, generator, cfg, run_id, lineage)
            del open_docs[d]
            if row["text"]:
                ready.append(row)
            else:
                counts["empty_doc"] += 1
                rejects.append({"source_doc_id": d, "chunk_index": None, "reason": "empty_doc",
                                "action": "dropped", "detail": "every chunk's output was empty"})
        flush()

    status = "interrupted"
    try:
        collect_finished(list(open_docs))  # documents a killed run staged completely but did not write
        window = max(1, cfg.batch_size) * WINDOW_BATCHES
        batches = []
        for w in range(0, len(pending), window):
            # Length-sorted within a window: batches of similar prompts waste little padding, and a
            # bounded window keeps documents finishing (and flushing) in roughly source order.
            in_window = sorted(pending[w:w + window], key=lambda r: len(r.messages[-1]["content"]))
            batches += [in_window[b:b + cfg.batch_size] for b in range(0, len(in_window), cfg.batch_size)]
        jobs = [[(r.messages, r.seed) for r in batch] for batch in batches]
        with ex:
            for n_batch, results in ex.map(step, jobs, desc=f"synth {out}", sizes=[len(b) for b in batches],
                                           progress=cfg.progress, resources=_worker_resources(cfg)):
                batch = batches[n_batch]
                if len(results) != len(batch):
                    results = [GenerationResult.failed(f"worker returned {len(results)} results for "
                                                       f"{len(batch)} prompts")] * len(batch)
                stage_rows = []
                for r, res in zip(batch, results):
                    summary["n_requests_run"] += 1
                    summary["n_prompt_tokens"] += res.n_prompt_tokens
                    summary["n_completion_tokens"] += res.n_completion_tokens
                    if res.finish_reason == "error":
                        summary["n_requests_failed"] += 1
                        counts["failed"] += 1
                        rejects.append({"source_doc_id": r.source_doc_id, "chunk_index": r.chunk_index,
                                        "reason": "failed", "action": "failed", "detail": res.error})
                        continue
                    cleaned = clean_output(res.text, res.finish_reason)
                    for reason, action, flag in (("preamble", "stripped", cleaned.preamble_stripped),
                                                 ("truncated", "flagged", cleaned.truncated),
                                                 ("empty", "dropped", cleaned.empty)):
                        if flag:
                            counts[reason] += 1
                            rejects.append({"source_doc_id": r.source_doc_id, "chunk_index": r.chunk_index,
                                            "reason": reason, "action": action, "detail": res.text[:200]})
                    stage_rows.append({"key": r.key, "source_doc_id": r.source_doc_id,
                                       "chunk_index": r.chunk_index, "text": cleaned.text,
                                       "finish_reason": res.finish_reason,
                                       "n_prompt_tokens": res.n_prompt_tokens,
                                       "n_completion_tokens": res.n_completion_tokens, "seed": r.seed,
                                       "preamble_stripped": cleaned.preamble_stripped,
                                       "truncated": cleaned.truncated, "empty": cleaned.empty,
                                       "run_id": run_id})
                if stage_rows:
                    write_staged(store, out, f"{run_id}-{n_batch:06d}", stage_rows)
                    staged.update((row["key"], row) for row in stage_rows)
                collect_finished(list(dict.fromkeys(r.source_doc_id for r in batch)))  # batch order: not a set's hash order
        flush(force=True)
        summary["n_docs_incomplete"] = len(open_docs)
        if open_docs:
            counts["incomplete_doc"] += len(open_docs)
            rejects += [{"source_doc_id": d, "chunk_index": None, "reason": "incomplete_doc",
                         "action": "not_written", "detail": "a chunk failed; rerun the command to retry it"}
                        for d in open_docs]
        status = "done" if not open_docs else "partial"
    except Exception:
        status = "failed"
        raise
    finally:
        elapsed_s = time.perf_counter() - t0
        summary.update(status=status, counts_by_reason=dict(counts), elapsed_s=round(elapsed_s, 3),
                       completion_tokens_per_s=round(summary["n_completion_tokens"] / max(elapsed_s, 1e-9), 2))
        _write_run_tables(store, summary, rejects, config, started)
        log.info("%s: %s", out, json.dumps(summary))
    return summary


def _write_run_tables(store: Store, summary: dict, rejects: list[dict], config: dict,
                      started: datetime) -> None:
    row = {**summary, "counts_by_reason": json.dumps(summary["counts_by_reason"], sort_keys=True),
           "config": json.dumps(config, sort_keys=True, default=str), "started_at": started,
           "finished_at": _now()}
    store.put_result("synth_runs", summary["run_id"], pl.DataFrame([row]))
    if rejects:
        frame = pl.DataFrame(rejects, schema={"source_doc_id": pl.String, "chunk_index": pl.Int64,
                                              "reason": pl.String, "action": pl.String, "detail": pl.String})
        store.put_result("synth_rejects", summary["run_id"], frame.with_columns(
            run_id=pl.lit(summary["run_id"]), corpus=pl.lit(summary["corpus"])))

