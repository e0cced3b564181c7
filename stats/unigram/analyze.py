"""The step: every (train, test) comparison of a `UnigramConfig`, plus shrinkage rows, into result tables."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time

import pyarrow as pa

from corpora.store import Store
from corpora.tokenizers import load_tokenizer
from stats.unigram.counts import (COMPARISONS_TABLE, SHRINKAGE_TABLE, UnigramConfig, UnigramError, _slug,
                                  build_unigram_counts)
from stats.unigram.metrics import (build_distribution, compare_unigrams, compute_shrinkage,
                                   find_source_corpus, parse_mixture)


log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- the step
@dataclasses.dataclass
class UnigramReport:
    comparisons: list[dict]
    shrinkage: list[dict]
    elapsed_s: float


def _comparison_part(row: dict) -> str:
    key = json.dumps([row["train"], row["test"], row["tokenizer"], row["alpha"]])
    return "cmp-" + hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def run_unigram(store: Store, cfg: UnigramConfig) -> UnigramReport:
    """Compare every (train, test) pair of cfg, store each comparison, and return them."""
    t0 = time.perf_counter()
    if not cfg.train or not cfg.test:
        raise UnigramError("give at least one --train and one --test corpus (or mixture)")
    if not cfg.alpha > 0:
        raise UnigramError(f"alpha must be > 0 (got {cfg.alpha}); a zero in Q would make KL infinite")
    specs = {s: parse_mixture(s) for s in [*cfg.train, *cfg.test]}  # all spec errors before any counting
    infos = {c.name: c for c in store.corpora()}
    for parts in specs.values():
        for name, _ in parts:
            if name not in infos:
                store.corpus(name)  # raises UnknownCorpus with the list
            if infos[name].n_docs == 0:
                raise UnigramError(f"corpus {name!r} is empty (no documents); ingest documents into it first")
    tok = load_tokenizer(cfg.tokenizer, store)
    dists = {s: build_distribution(store, s, cfg, tok, infos) for s in specs}
    now = dt.datetime.now(dt.timezone.utc)
    config_json = json.dumps(dataclasses.asdict(cfg))
    comparisons = []
    for train in cfg.train:
        for test in cfg.test:
            row = compare_unigrams(dists[test], dists[train], tok, cfg.alpha, cfg.top)
            row.update(
                train_content_hash=",".join(infos[n].content_hash for n, _ in specs[train]),
                test_content_hash=",".join(infos[n].content_hash for n, _ in specs[test]),
                tokenizer_fingerprint=tok.fingerprint, config=config_json, created_at=now,
            )
            store.put_result(COMPARISONS_TABLE, _comparison_part(row), pa.Table.from_pylist([row]))
            comparisons.append(row)

    shrinkage = []
    if cfg.shrinkage:
        named = dict.fromkeys(n for parts in specs.values() for n, _ in parts)
        for name in named:
            if infos[name].kind != "synthetic":
                continue
            source = find_source_corpus(store, infos[name])
            if source is None:
                log.info("no source corpus found for synthetic corpus %s; no shrinkage row", name)
                continue
            row = compute_shrinkage(
                name, source, build_unigram_counts(store, infos[name], cfg, tok),
                build_unigram_counts(store, infos[source], cfg, tok), tok, cfg.n_subsamples, cfg.seed)
            row.update(created_at=now)
            store.put_result(SHRINKAGE_TABLE, f"{name}__{source}__{_slug(tok.name)}", pa.Table.from_pylist([row]))
            shrinkage.append(row)
    return UnigramReport(comparisons, shrinkage, time.perf_counter() - t0)
