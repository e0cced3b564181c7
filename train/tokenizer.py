"""Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) on store corpora and register it.

A small vocabulary matters on CPU: with cl100k's 100k vocabulary the output projection dominates a tiny
model's cost, so the CPU presets and the demo train on a tokenizer like this one (vocab ~8k).

The trainer sees a bounded, seeded sample of the corpora, not all of them: documents ordered by a seeded
key per document (`corpora.tokens.seeded_keys` over doc_ids, one order across all the corpora, so each
contributes about its share of the bytes), taken until `sample_bytes` (default 100 MB: BPE merges of an
8k-32k vocabulary are stable well before that), and streamed to the trainer batch by batch. Choosing the
sample reads only the shards' doc lists; only the sampled documents' text is read. Training time thus stops
growing with the corpus past the sample; the same corpora, seed and size give the same sample.

The result lives at `store.artifact_dir("tokenizers", NAME)/tokenizer.json` (plus a
`tokenizer_config.json` so `transformers.AutoTokenizer` reads it too, and `sample.parquet`: the corpus and
doc_id of every sampled document), is listed in the `tokenizers` result table (one part per name; the
sample's size, seed and a hash of its doc_ids are columns), and `corpora.tokenizers.load_tokenizer(NAME,
store)` resolves it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from corpora.results import declare
from corpora.store import ShardInfo, Store, StoreError, atomic_path
from corpora.tokens import iter_shard_texts, read_doc_list, seeded_keys

log = logging.getLogger(__name__)

declare("tokenizers", {
    "tokenizer": "str", "kind": "str", "corpora": "str, comma-separated", "corpus_hashes": "json", "vocab_size": "int",
    "n_vocab": "int", "eot_token": "str", "eot_id": "int", "n_docs": "int", "n_bytes": "int", "sample_docs": "int",
    "sample_bytes": "int", "sample_limit_bytes": "int", "sample_seed": "int", "sample_whole": "bool",
    "sample_hash": "str", "sample_path": "str", "path": "str", "elapsed_s": "float", "config": "json"},
    "One row per trained tokenizer: what it was trained on and where it lies; part <name>.")

EOT_TOKEN = "<|endoftext|>"  # the same spelling as tiktoken's GPT encodings, id 0 here
MIN_VOCAB = 257  # 256 byte symbols + the end-of-text token
DEFAULT_SAMPLE_BYTES = 100_000_000
_SAMPLE_SALT = "tokenizer-sample"  # the sample's key stream, apart from the mixtures' orders
_SAMPLE_MARGIN = 1.05  # the key threshold aims 5% past the sample, so one pass over the doc lists suffices


@dataclasses.dataclass
class TokenizerConfig:
    name: str
    corpora: list[str]
    vocab_size: int = 8192
    min_frequency: int = 2  # pairs seen once are noise on small corpora
    batch_size: int = 1024  # documents per batch streamed to the trainer
    sample_bytes: int = DEFAULT_SAMPLE_BYTES  # UTF-8 bytes of text the trainer sees at most
    seed: int = 0  # which sample


@dataclasses.dataclass
class Sample:
    """The documents a tokenizer is trained on: per shard, sorted rows (None: every row)."""

    shards: list[tuple[ShardInfo, np.ndarray | None]]
    n_docs: int
    n_bytes: int
    whole: bool  # every document of the corpora


def select_sample(shards: list[ShardInfo], sample_bytes: int, seed: int) -> Sample:
    """Documents in seeded key order until the next one would pass `sample_bytes` (at least one).

    Only documents whose key is below a threshold are kept while the doc lists are read, so memory
    follows the sample, not the corpus; the threshold is raised if the first pass falls short."""
    total = sum(s.n_bytes for s in shards)
    if total <= sample_bytes:
        return Sample([(s, None) for s in shards], sum(s.n_docs for s in shards), total, True)
    hi = 0
    while True:
        hi = min(1 << 64, max(hi * 2, math.ceil(sample_bytes * _SAMPLE_MARGIN / total * 2.0**64)))
        found = []
        for i, shard in enumerate(shards):
            hashes, n_bytes = read_doc_list(shard.path)
            keys = seeded_keys(hashes, seed, _SAMPLE_SALT)
            sel = np.flatnonzero(keys < np.uint64(hi)) if hi < 1 << 64 else np.arange(len(keys))
            found.append((keys[sel], np.full(len(sel), i), sel, n_bytes[sel]))
        keys, shard_idx, rows, n_bytes = (np.concatenate(x) for x in zip(*found))
        if n_bytes.sum() >= sample_bytes or hi >= 1 << 64:
            break
    order = np.lexsort((rows, shard_idx, keys))
    n = max(1, int(np.searchsorted(np.cumsum(n_bytes[order]), sample_bytes, side="right")))
    shard_idx, rows = shard_idx[order[:n]], rows[order[:n]]
    picked = [(shards[i], np.sort(rows[shard_idx == i])) for i in np.unique(shard_idx)]
    return Sample(picked, n, int(n_bytes[order[:n]].sum()), False)


def _iter_texts(sample: Sample, batch_size: int, corpora: list[str], doc_ids: list) -> Iterator[list[str]]:
    """The sample's texts, shard by shard; records each document's (corpus, doc_id) on the way."""
    for shard, rows in sample.shards:
        for _, texts, table in iter_shard_texts(shard.path, rows, batch_bytes=1 << 22, columns=("doc_id",)):
            corpora.extend([shard.corpus] * len(texts))
            doc_ids.extend(table.column("doc_id").to_pylist())
            for i in range(0, len(texts), batch_size):
                yield texts[i:i + batch_size]


def check_tokenizer_config(store: Store, cfg: TokenizerConfig) -> list:
    """Validate before any work; returns the CorpusInfo of each corpus."""
    store.artifact_dir("tokenizers", cfg.name, create=False)  # raises on a name the store cannot hold
    if not cfg.corpora:
        raise StoreError("give at least one corpus to train the tokenizer on (--corpora cc,wiki)")
    if cfg.vocab_size < MIN_VOCAB:
        raise StoreError(f"vocab size {cfg.vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB}")
    if cfg.vocab_size > 1 << 20:
        raise StoreError(f"vocab size {cfg.vocab_size} is unreasonably large (max {1 << 20})")
    if cfg.sample_bytes < 1:
        raise StoreError(f"sample size {cfg.sample_bytes} bytes is not positive; give e.g. --sample-bytes 100M")
    infos = [store.corpus(c) for c in cfg.corpora]  # UnknownCorpus lists the store's corpora
    for info in infos:
        if info.n_docs == 0:
            raise StoreError(f"corpus {info.name!r} is empty; ingest documents into it first")
    return infos


def train_tokenizer(store: Store, name: str, corpora: list[str], vocab_size: int = 8192,
                    min_frequency: int = 2, batch_size: int = 1024, sample_bytes: int = DEFAULT_SAMPLE_BYTES,
                    seed: int = 0) -> dict:
    """Train byte-level BPE on a seeded sample of `corpora`, save it under the store, record it;
    returns the table row."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    cfg = TokenizerConfig(name, list(corpora), vocab_size, min_frequency, batch_size, int(sample_bytes), seed)
    infos = check_tokenizer_config(store, cfg)
    t0 = time.perf_counter()
    sample = select_sample([s for c in cfg.corpora for s in store.shards(c)], cfg.sample_bytes, cfg.seed)
    tok = Tokenizer(models.BPE())
    # GPT-2's regex split and byte alphabet: every string is encodable, no unknown tokens.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=log.isEnabledFor(logging.INFO),
    )
    sample_corpora: list[str] = []
    sample_ids: list[str] = []
    tok.train_from_iterator(_iter_texts(sample, cfg.batch_size, sample_corpora, sample_ids), trainer,
                            length=-(-sample.n_docs // cfg.batch_size))
    elapsed_s = time.perf_counter() - t0
    sample_hash = hashlib.blake2b("\n".join(sorted(f"{c}/{d}" for c, d in zip(sample_corpora, sample_ids)))
                                  .encode(), digest_size=8).hexdigest()

    out = store.artifact_dir("tokenizers", cfg.name)
    with atomic_path(out / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    # Lets transformers' AutoTokenizer.from_pretrained(out) load it with the right end-of-text token.
    with atomic_path(out / "tokenizer_config.json") as tmp:
        tmp.write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOT_TOKEN,
            "bos_token": EOT_TOKEN, "unk_token": None, "model_max_length": 1 << 30,
        }, indent=1))
    with atomic_path(out / "sample.parquet") as tmp:
        pq.write_table(pa.table({"corpus": pa.array(sample_corpora, pa.string()),
                                 "doc_id": pa.array(sample_ids, pa.string())}), tmp, compression="zstd")
    eot_id = tok.token_to_id(EOT_TOKEN)
    row = {
        "tokenizer": cfg.name,
        "kind": "bpe_bytelevel",
        "corpora": ",".join(cfg.corpora),
        "corpus_hashes": json.dumps({i.name: i.content_hash for i in infos}),
        "vocab_size": cfg.vocab_size,
        "n_vocab": tok.get_vocab_size(),
        "eot_token": EOT_TOKEN,
        "eot_id": eot_id,
        "n_docs": sum(i.n_docs for i in infos),  # of the corpora
        "n_bytes": sum(i.n_bytes for i in infos),
        "sample_docs": sample.n_docs,  # what the trainer saw
        "sample_bytes": sample.n_bytes,
        "sample_limit_bytes": cfg.sample_bytes,
        "sample_seed": cfg.seed,
        "sample_whole": sample.whole,
        "sample_hash": sample_hash,
        "sample_path": str(out / "sample.parquet"),
        "path": str(out / "tokenizer.json"),
        "elapsed_s": elapsed_s,
        "config": json.dumps(dataclasses.asdict(cfg)),
        "created_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
    }
    store.put_result("tokenizers", cfg.name, pl.DataFrame([row]))
    log.info("trained tokenizer %s: %d tokens from a sample of %d docs (%.1f MB) in %.1fs", cfg.name,
             row["n_vocab"], sample.n_docs, sample.n_bytes / 1e6, elapsed_s)
    return row
