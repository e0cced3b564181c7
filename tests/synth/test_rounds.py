"""Generation rounds: rephrasing a synthetic corpus again records round = source round + 1 and the root
natural document; the collapse analysis reads them (real SmolLM2, tiny budgets)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from stats.dedup import DedupConfig, build_signatures
from stats.evidence import collapse_rounds, corpus_rounds
from stats.unigram import UnigramConfig, build_unigram_counts, rarefied_types
from synth.generate import GenerateConfig, generate
from tests.conftest import add_corpus

TINY = dict(max_new_tokens=10, batch_size=8, progress=False, max_chunk_tokens=512, limit=3)


def _docs(store, corpus):
    return {r["doc_id"]: {**r, "meta": json.loads(r["meta"] or "{}")} for r in
            store.sql("SELECT doc_id, source_doc_id, meta FROM documents WHERE corpus = ?", [corpus]).to_pylist()}


def test_two_rounds_record_round_and_root(cc_store, smollm2, lee_texts):
    store = cc_store
    add_corpus(store, "wiki", lee_texts[-20:], role="test")
    generate(store, GenerateConfig(type="hq", source="cc", out="hq", **TINY), backend=smollm2)
    generate(store, GenerateConfig(type="hq", source="hq", out="hq2", **TINY), backend=smollm2)
    assert {k: store.corpus("hq").meta[k] for k in ("round", "root_corpus")} == {"round": 1, "root_corpus": "cc"}
    assert {k: store.corpus("hq2").meta[k] for k in ("round", "root_corpus")} == {"round": 2, "root_corpus": "cc"}
    cc, hq, hq2 = _docs(store, "cc"), _docs(store, "hq"), _docs(store, "hq2")
    assert hq and hq2
    for d in hq.values():  # round 1: the root is the source document itself
        assert d["meta"]["round"] == 1 and d["meta"]["root_doc_id"] == d["source_doc_id"] in cc
    for d in hq2.values():  # round 2: the source is an hq document, the root is that document's cc source
        parent = hq[d["source_doc_id"]]
        assert d["meta"]["round"] == 2 and d["meta"]["root_corpus"] == "cc"
        assert d["meta"]["root_doc_id"] == parent["source_doc_id"] in cc

    rounds = corpus_rounds(store).sort("round")
    assert rounds.select("corpus", "round", "root_corpus").rows() == [("hq", 1, "cc"), ("hq2", 2, "cc")]
    cr = collapse_rounds(store, ["wiki"], tokenizer="cl100k_base")
    assert cr.sort("round")["round"].to_list() == [0, 1, 2]
    ucfg = UnigramConfig(tokenizer="cl100k_base", progress=False)
    n = {c: build_unigram_counts(store, c, ucfg).counts for c in ("cc", "hq", "hq2")}
    budget = min(int(v.sum()) for v in n.values())
    assert set(cr["budget_tokens"]) == {budget}
    for row in cr.iter_rows(named=True):
        assert row["types_at_budget"] == rarefied_types(n[row["corpus"]], budget)
        assert row["kl_nats"] > 0 and row["test"] == "wiki"
    root = cr.filter(pl.col("round") == 0).row(0, named=True)
    assert root["corpus"] == "cc" and root["root_jaccard_mean"] is None
    later = cr.filter(pl.col("round") > 0)
    # every synthetic document found its root document; Jaccard estimates are shares of equal hash values
    assert (later["n_root_matched"] == later["n_docs"]).all()
    # the mean estimate equals one recomputed from the signatures: each document against its root document
    dcfg = DedupConfig()
    root_sigs = build_signatures(store, "cc", dcfg, progress=False).sigs
    by_id = {d: i for i, d in enumerate(root_sigs.doc_id.tolist()) if root_sigs.ok[i]}
    for row in later.iter_rows(named=True):
        sigs = build_signatures(store, row["corpus"], dcfg, progress=False).sigs
        roots = {d: json.loads(m or "{}").get("root_doc_id") or sd for d, sd, m in
                 store.scan(row["corpus"]).select("doc_id", "source_doc_id", "meta").collect().iter_rows()}
        est = [np.mean(sigs.signatures[i] == root_sigs.signatures[by_id[roots[d]]])
               for i, d in enumerate(sigs.doc_id.tolist()) if sigs.ok[i]]
        assert row["n_root_matched"] == len(est)
        assert row["root_jaccard_mean"] == pytest.approx(float(np.mean(est)), abs=1e-12)
    assert store.read_result("collapse_rounds").height == cr.height
