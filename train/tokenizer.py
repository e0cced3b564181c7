"""Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) on store corpora and register it.

A small vocabulary matters on CPU: with cl100k's 100k vocabulary the output projection dominates a tiny
model's cost, so the CPU presets and the demo train on a tokenizer like this one (vocab ~8k).

The result lives at `store.artifact_dir("tokenizers", NAME)/tokenizer.json` (plus a
`tokenizer_config.json` so `transformers.AutoTokenizer` reads it too), is listed in the `tokenizers`
result table (one part per name), and `corpora.tokenizers.load_tokenizer(NAME, store)` resolves it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator

import polars as pl

from corpora.store import Store, StoreError, atomic_path

log = logging.getLogger(__name__)

EOT_TOKEN = "<|endoftext|>"  # the same spelling as tiktoken's GPT encodings, id 0 here
MIN_VOCAB = 257  # 256 byte symbols + the end-of-text token


@dataclasses.dataclass
class TokenizerConfig:
    name: str
    corpora: list[str]
    vocab_size: int = 8192
    min_frequency: int = 2  # pairs seen once are noise on small corpora
    batch_size: int = 1024  # documents per batch streamed to the trainer


def _iter_texts(store: Store, corpora: list[str], batch_size: int) -> Iterator[list[str]]:
    for corpus in corpora:
        for batch in store.iter_batches(corpus, ["text"], batch_size=batch_size):
            yield batch.column(0).to_pylist()


def check_tokenizer_config(store: Store, cfg: TokenizerConfig) -> list:
    """Validate before any work; returns the CorpusInfo of each corpus."""
    store.artifact_dir("tokenizers", cfg.name, create=False)  # raises on a name the store cannot hold
    if not cfg.corpora:
        raise StoreError("give at least one corpus to train the tokenizer on (--corpora cc,wiki)")
    if cfg.vocab_size < MIN_VOCAB:
        raise StoreError(f"vocab size {cfg.vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB}")
    if cfg.vocab_size > 1 << 20:
        raise StoreError(f"vocab size {cfg.vocab_size} is unreasonably large (max {1 << 20})")
    infos = [store.corpus(c) for c in cfg.corpora]  # UnknownCorpus lists the store's corpora
    for info in infos:
        if info.n_docs == 0:
            raise StoreError(f"corpus {info.name!r} is empty; ingest documents into it first")
    return infos


def train_tokenizer(store: Store, name: str, corpora: list[str], vocab_size: int = 8192,
                    min_frequency: int = 2, batch_size: int = 1024) -> dict:
    """Train byte-level BPE on `corpora`, save it under the store, record it; returns the table row."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    cfg = TokenizerConfig(name, list(corpora), vocab_size, min_frequency, batch_size)
    infos = check_tokenizer_config(store, cfg)
    t0 = time.perf_counter()
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
    n_docs = sum(i.n_docs for i in infos)
    tok.train_from_iterator(_iter_texts(store, cfg.corpora, cfg.batch_size), trainer,
                            length=-(-n_docs // cfg.batch_size))
    elapsed_s = time.perf_counter() - t0

    out = store.artifact_dir("tokenizers", cfg.name)
    with atomic_path(out / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    # Lets transformers' AutoTokenizer.from_pretrained(out) load it with the right end-of-text token.
    with atomic_path(out / "tokenizer_config.json") as tmp:
        tmp.write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOT_TOKEN,
            "bos_token": EOT_TOKEN, "unk_token": None, "model_max_length": 1 << 30,
        }, indent=1))
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
        "n_docs": n_docs,
        "n_bytes": sum(i.n_bytes for i in infos),
        "path": str(out / "tokenizer.json"),
        "elapsed_s": elapsed_s,
        "config": json.dumps(dataclasses.asdict(cfg)),
        "created_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
    }
    store.put_result("tokenizers", cfg.name, pl.DataFrame([row]))
    log.info("trained tokenizer %s: %d tokens from %d docs in %.1fs", cfg.name, row["n_vocab"], n_docs, elapsed_s)
    return row
