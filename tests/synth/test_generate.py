"""HQ, QA and TXBK corpora from real news text with the real SmolLM2-135M-Instruct (tiny budgets)."""

from __future__ import annotations

import json

import pytest
import torch

from corpora.store import StoreError
from synth.backends import GenerationResult, SamplingParams
from synth.generate import GenerateConfig, generate
from synth.prompts import load_prompt

TINY = dict(max_new_tokens=12, batch_size=8, progress=False)


def _docs(store, corpus):
    return store.sql(f"SELECT * FROM documents WHERE corpus = '{corpus}' ORDER BY doc_id").to_pylist()


def test_hq_with_full_provenance_and_chunks_joined_in_order(cc_store, smollm2):
    source_ids = {r["doc_id"] for r in _docs(cc_store, "cc")}
    cfg = GenerateConfig(type="hq", source="cc", out="hq", limit=3, max_chunk_tokens=48, **TINY)
    summary = generate(cc_store, cfg, backend=smollm2)
    assert summary["status"] == "done" and summary["n_docs_written"] == 3
    info = cc_store.corpus("hq")
    assert (info.kind, info.synthetic_type, info.role) == ("synthetic", "hq", "train")
    assert info.meta["source"] == "cc" and info.meta["prompt_id"] == load_prompt("hq").prompt_id
    docs = _docs(cc_store, "hq")
    assert len(docs) == 3 and len({d["source_doc_id"] for d in docs}) == 3
    n_chunks = 0
    for d in docs:
        assert d["source_doc_id"] in source_ids
        assert d["generator"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert d["prompt_id"] == load_prompt("hq").prompt_id
        meta = json.loads(d["meta"])
        assert meta["sampling"] == {"max_new_tokens": 12, "temperature": 0.7, "top_p": 0.95}
        assert meta["seed"] == 0 and meta["n_chunks"] == len(meta["chunks"]) == len(meta["finish_reasons"])
        assert [c["index"] for c in meta["chunks"]] == list(range(meta["n_chunks"]))
        assert all(r in ("stop", "length") for r in meta["finish_reasons"])
        assert meta["n_completion_tokens"] == sum(c["n_completion_tokens"] for c in meta["chunks"]) > 0
        assert all(0 < c["n_completion_tokens"] <= 12 for c in meta["chunks"])
        assert meta["truncated"] == ("length" in meta["finish_reasons"])
        assert d["text"].strip()
        n_chunks += meta["n_chunks"]
    # 300-600 character articles at 48 tokens per chunk: every document was split
    assert n_chunks == summary["n_requests"] > 3
    runs = cc_store.read_result("synth_runs")
    assert runs.height == 1 and runs["n_docs_written"][0] == 3
    assert json.loads(runs["config"][0])["max_chunk_tokens"] == 48
    flags = cc_store.read_result("synth_rejects")
    truncated = sum(c["truncated"] for d in docs for c in json.loads(d["meta"])["chunks"])
    assert flags.filter(flags["reason"] == "truncated").height == truncated
    assert json.loads(runs["counts_by_reason"][0]).get("truncated", 0) == truncated

    # rerunning the same command does nothing; other sampling params into the same corpus are refused
    again = generate(cc_store, cfg, backend=smollm2)
    assert again["n_requests_run"] == 0 and again["n_docs_done_before"] == 3
    assert cc_store.corpus("hq").n_docs == 3
    with pytest.raises(StoreError, match="not made by this recipe"):
        generate(cc_store, GenerateConfig(type="hq", source="cc", out="hq", limit=3, temperature=1.0,
                                          max_chunk_tokens=48, **{**TINY}), backend=smollm2)


def test_qa_and_txbk(cc_store, smollm2):
    qa = generate(cc_store, GenerateConfig(type="qa", source="cc", limit=2, **TINY), backend=smollm2)
    assert qa["n_docs_written"] == 2 and cc_store.corpus("qa").synthetic_type == "qa"
    assert {d["prompt_id"] for d in _docs(cc_store, "qa")} == {load_prompt("qa").prompt_id}

    cfg = GenerateConfig(type="txbk", source="cc", n_topics=2, max_chunk_tokens=64, **TINY)
    txbk = generate(cc_store, cfg, backend=smollm2)
    assert txbk["status"] == "done" and txbk["n_docs_written"] == 6
    topics = cc_store.read_result("synth_topics", "txbk")
    assert topics.height == 2 and topics["n_docs"].sum() == 6 and all(topics["key_terms"].str.len_chars() > 0)
    metas = [json.loads(d["meta"]) for d in _docs(cc_store, "txbk")]
    assert {m["topic"] for m in metas} == {0, 1}
    for m in metas:
        assert m["key_terms"] == topics["key_terms"][m["topic"]].split(", ")
        assert m["audience"] and m["style"] and m["n_chunks"] == 1


def _tv(p, q):
    """Total variation distance between rows of log-probabilities (steps, vocab) -> (steps,)."""
    return 0.5 * (p.exp() - q.exp()).abs().sum(-1)


def _agreeing_steps(x, y) -> int:
    """Steps whose distributions are comparable: every step up to and including the first that chose
    another token (after it the two contexts differ)."""
    n = min(len(x.completion_ids), len(y.completion_ids))
    first = next((k for k in range(n) if x.completion_ids[k] != y.completion_ids[k]), n - 1)
    return first + 1


def assert_same_generation(x, y, dtype, bound=None):
    """fp32: the same tokens, and per-step log-probabilities equal to fp32 rounding (another batch shape sums
    in another order: ~1e-4 nats measured, against decision margins far above it). bf16: every comparable
    step's next-token distributions within total variation `bound` (texts may differ once a sampled token
    differs)."""
    if dtype == "fp32":
        assert x.text == y.text and x.completion_ids == y.completion_ids
        assert (x.step_logprobs - y.step_logprobs).abs().max().item() < 2e-3
    else:
        n = _agreeing_steps(x, y)
        assert _tv(x.step_logprobs[:n], y.step_logprobs[:n]).max().item() <= bound


@pytest.fixture
def gen_in(cpu_dtype, smollm2_of):
    """The generator as `dtype='auto'` resolves it under SYNTHMIX_CPU_BF16=0/1, keeping log-probabilities, and
    (for bf16) the numerics bound its promises are checked against: the bf16 path may move any next-token
    distribution by at most twice what bf16 rounding itself moves it from fp32 on the same prompts."""
    backend = smollm2_of(cpu_dtype)
    assert backend.dtype == (torch.bfloat16 if cpu_dtype == "bf16" else torch.float32)
    backend.keep_logprobs = True
    yield backend
    backend.keep_logprobs = False


def _bf16_bound(smollm2_of, prompts, params, seeds) -> float:
    """2x the largest per-step TV distance between fp32 and bf16 on each prompt alone (comparable steps).
    Measured here: ~0.02-0.04 (a wrong context, another prompt, gives ~0.43); a broken bf16 path that
    inflated it is caught by the cap."""
    runs = {}
    for dtype in ("fp32", "bf16"):
        backend = smollm2_of(dtype)   # shared by the session: its flag goes back as it was
        kept, backend.keep_logprobs = backend.keep_logprobs, True
        try:
            runs[dtype] = [backend.generate([p], params, seeds=[s])[0] for p, s in zip(prompts, seeds)]
        finally:
            backend.keep_logprobs = kept
    worst = max(_tv(f.step_logprobs[:n], b.step_logprobs[:n]).max().item()
                for f, b in zip(runs["fp32"], runs["bf16"]) for n in [_agreeing_steps(f, b)])
    assert worst < 0.1, f"bf16 moves next-token distributions by {worst:.3f} TV from fp32: bf16 path broken"
    return 2 * worst


def test_same_seed_same_output_and_batch_independent(gen_in, cpu_dtype, smollm2_of, short_lee_texts):
    prompts = [load_prompt("hq").render(text=t[:200]) for t in short_lee_texts[:3]]
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.95)
    bound = _bf16_bound(smollm2_of, prompts[1:2], params, [2]) if cpu_dtype == "bf16" else None
    a = gen_in.generate(prompts, params, seeds=[1, 2, 3])
    # same seed, same output, even when the prompt's batch differs: it depends on its own seed only
    # (in bf16: the same distributions within bf16 rounding; a sampled token may then differ)
    alone = gen_in.generate(prompts[1:2], params, seeds=[2])
    assert_same_generation(alone[0], a[1], cpu_dtype, bound)
    other = gen_in.generate(prompts, params, seeds=[7, 8, 9])
    assert [r.text for r in other] != [r.text for r in a]


def test_shared_prompt_prefix_is_prefilled_once_with_the_same_outputs(gen_in, cpu_dtype, smollm2_of,
                                                                      short_lee_texts):
    prompts = [load_prompt("hq").render(text=t[:200]) for t in short_lee_texts[:4]]
    encoded = [gen_in.encode_chat(m) for m in prompts]
    n_prefix = gen_in.shared_prefix(encoded)
    # the system prompt and the template's instructions: everything before the web text
    assert n_prefix >= 100 and all(e[:n_prefix] == encoded[0][:n_prefix] for e in encoded)
    assert gen_in.shared_prefix(encoded[:1]) == 0  # one prompt has nothing to share
    seeds = [5, 6, 7, 8]
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0)
    bound = _bf16_bound(smollm2_of, prompts[:2], greedy, seeds) if cpu_dtype == "bf16" else None
    for params in (greedy, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9)):
        reused = gen_in.generate(prompts, params, seeds=seeds)
        gen_in.reuse_prefix = False
        try:
            whole = gen_in.generate(prompts, params, seeds=seeds)
        finally:
            gen_in.reuse_prefix = True
        for r, w in zip(reused, whole):
            assert_same_generation(r, w, cpu_dtype, bound)
        assert [r.n_prompt_tokens for r in reused] == [len(e) for e in encoded]
        assert all(r.n_completion_tokens > 0 and r.text for r in reused)


def test_max_chunks_keeps_the_first_chunks_of_each_document(cc_store, smollm2):
    cfg = GenerateConfig(type="hq", source="cc", out="hq", limit=3, max_chunk_tokens=48, max_chunks=1, **TINY)
    summary = generate(cc_store, cfg, backend=smollm2)
    # 300-600 character articles at 48 tokens per chunk have several chunks: one request per document
    assert summary["status"] == "done" and summary["n_requests"] == summary["n_docs_written"] == 3
    assert cc_store.corpus("hq").meta["max_chunks"] == 1
    assert all(json.loads(d["meta"])["n_chunks"] == 1 for d in _docs(cc_store, "hq"))
    with pytest.raises(StoreError, match="max_chunks=1"):  # another cap is another recipe
        generate(cc_store, GenerateConfig(type="hq", source="cc", out="hq", limit=3, max_chunk_tokens=48,
                                          max_chunks=2, **TINY), backend=smollm2)


class FlakyBackend:
    """The real model behind a wrapper that raises on its first `fail_calls` calls (an engine crash)."""

    def __init__(self, real, fail_calls: int):
        self.real, self.fail_calls, self.calls = real, fail_calls, 0
        self.generator, self.tokenizer = real.generator, real.tokenizer

    def generate(self, prompts, params, seeds=None):
        self.calls += 1
        if self.calls <= self.fail_calls:
            raise RuntimeError("CUDA error: device-side assert (injected)")
        return self.real.generate(prompts, params, seeds)


def test_failed_batches_are_retried_then_recorded_and_rerun(cc_store, smollm2):
    cfg = GenerateConfig(type="hq", source="cc", limit=2, max_retries=1, **TINY)
    # fails twice: the one batch is retried once, recorded as failed, and the run goes on
    summary = generate(cc_store, cfg, backend=FlakyBackend(smollm2, fail_calls=2))
    assert summary["status"] == "partial" and summary["n_requests_failed"] == summary["n_requests"]
    assert summary["n_docs_written"] == 0 and summary["n_docs_incomplete"] == 2
    rejects = cc_store.read_result("synth_rejects", summary["run_id"])
    failed = rejects.filter(rejects["reason"] == "failed")
    assert failed.height == summary["n_requests"] and failed["detail"].str.contains("injected").all()
    # the rerun retries the failed requests; a single crash is absorbed by the retry
    rerun = generate(cc_store, cfg, backend=FlakyBackend(smollm2, fail_calls=1))
    assert rerun["status"] == "done" and rerun["n_docs_written"] == 2 and rerun["n_requests_failed"] == 0


class ScriptedOutputs:
    """Crafted replies (the real model will not produce these on demand) to test the driver's handling."""

    generator, tokenizer = "scripted", None

    def __init__(self, replies):
        self.replies = replies

    def generate(self, prompts, params, seeds=None):
        out = []
        for p in prompts:
            key = next(k for k in self.replies if k in p[-1]["content"])
            text, finish = self.replies[key]
            out.append(GenerationResult(text, finish, 50, 7))
        return out


def test_postprocessing_counts_are_stored(store):
    from tests.conftest import add_corpus

    add_corpus(store, "cc", ["Alpha is a letter.", "Beta is a letter.", "Gamma is a letter."])
    replies = {"Alpha": ("Here is the rephrased text:\nAlpha is the first letter.", "stop"),
               "Beta": ("Beta is the second", "length"),
               "Gamma": ("Sure! Here is the rephrased text:", "stop")}
    summary = generate(store, GenerateConfig(type="hq", source="cc", chunk_tokenizer="cl100k_base", **TINY),
                       backend=ScriptedOutputs(replies))
    assert summary["counts_by_reason"] == {"preamble": 2, "truncated": 1, "empty": 1, "empty_doc": 1}
    texts = sorted(d["text"] for d in _docs(store, "hq"))
    assert texts == ["Alpha is the first letter.", "Beta is the second"]
    rejects = store.read_result("synth_rejects")
    assert sorted(zip(rejects["reason"], rejects["action"])) == [
        ("empty", "dropped"), ("empty_doc", "dropped"), ("preamble", "stripped"), ("preamble", "stripped"),
        ("truncated", "flagged")]
    assert store.sql("SELECT sum(n_docs_written) n FROM synth_runs").to_pylist() == [{"n": 2}]
