"""A run killed midway resumes without loss or duplicates; the OpenAI-compatible backend against a live
local server; the vLLM backend's shared path; the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth.backends import OpenAIBackend, SamplingParams, VLLMBackend, default_cache_dir
from synth.__main__ import main as cli_main
from synth.generate import GenerateConfig, generate, read_source
from synth.prompts import load_prompt
from synth.serve import build_server, start_server_thread

REPO = Path(__file__).resolve().parents[2]


def test_killed_run_resumes_without_loss_or_duplicates(cc_store, cpu_dtype, smollm2_of):
    """Whatever the dtype: bf16 texts depend on the batch, but resume keys on the request, not the text."""
    smollm2 = smollm2_of(cpu_dtype)   # the killed process resolves 'auto' under the same SYNTHMIX_CPU_BF16
    args = ["generate", "--type", "hq", "--source", "cc", "--out", "hq", "--store", str(cc_store.root),
            "--limit", "4", "--max-new-tokens", "10", "--batch-size", "1", "--shard-docs", "1", "--no-progress",
            "--cache-dir", str(default_cache_dir()), "--num-threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "synth", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if cc_store.has_corpus("hq") and cc_store.corpus("hq").n_shards >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-500:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {r["doc_id"]: r["text"] for r in cc_store.sql(
        "SELECT doc_id, text FROM documents WHERE corpus = 'hq'").to_pylist()}
    assert 1 <= len(before) < 4, "killed midway: some documents written, not all"
    assert cc_store.read_result("synth_runs") is None  # SIGKILL: the run never finished

    cfg = GenerateConfig(type="hq", source="cc", out="hq", limit=4, max_new_tokens=10, batch_size=1,
                         shard_docs=1, progress=False)
    summary = generate(cc_store, cfg, backend=smollm2)
    assert summary["status"] == "done"
    assert summary["n_docs_done_before"] == len(before)
    after = cc_store.sql("SELECT doc_id, source_doc_id, text FROM documents WHERE corpus = 'hq'").to_pylist()
    sources = {doc_id for doc_id, _ in read_source(cc_store, cfg)}
    assert len(after) == 4 and {r["source_doc_id"] for r in after} == sources  # no loss, no duplicate
    assert all(before[r["doc_id"]] == r["text"] for r in after if r["doc_id"] in before)
    # requests done before the kill were not run again
    assert summary["n_requests_run"] == summary["n_requests"] - len(before) - summary["n_requests_staged_before"]


@pytest.fixture(scope="module")
def server(smollm2):
    srv = build_server(smollm2, port=0, batch_size=8)
    start_server_thread(srv)
    host, port = srv.server_address[:2]
    yield srv, f"http://{host}:{port}/v1"
    srv.shutdown()
    srv.batcher.close()


def test_openai_backend_against_a_live_local_server(cc_store, smollm2, server):
    _, base_url = server
    client = OpenAIBackend(base_url, smollm2.generator, concurrency=4, timeout_s=120)
    cfg = GenerateConfig(type="qa", source="cc", out="qa_http", backend="openai", limit=2, max_new_tokens=10,
                         batch_size=4, chunk_tokenizer="smollm2", progress=False)
    summary = generate(cc_store, cfg, backend=client)
    assert summary["status"] == "done" and summary["n_docs_written"] == 2
    docs = cc_store.sql("SELECT * FROM documents WHERE corpus = 'qa_http'").to_pylist()
    assert {d["generator"] for d in docs} == {"SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert {json.loads(d["meta"])["backend"] for d in docs} == {"openai"}
    assert all(json.loads(d["meta"])["n_prompt_tokens"] > 20 for d in docs)
    # the server forwards per-request seeds: the same prompt and seed give the in-process result
    prompt = load_prompt("qa").render(text="The Eiffel Tower is in Paris. It was finished in 1889.")
    params = SamplingParams(max_new_tokens=10, temperature=0.7, top_p=0.95)
    (over_http,) = client.generate([prompt], params, seeds=[11])
    (local,) = smollm2.generate([prompt], params, seeds=[11])
    assert (over_http.text, over_http.finish_reason, over_http.n_completion_tokens) == (
        local.text, local.finish_reason, local.n_completion_tokens)


def test_openai_backend_retries_a_failed_request(smollm2):
    srv = build_server(smollm2, port=0, fail_requests=1)
    start_server_thread(srv)
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    try:
        prompt = [{"role": "user", "content": "Say hi."}]
        params = SamplingParams(max_new_tokens=4, temperature=0.0)
        (ok,) = OpenAIBackend(url, "m", max_retries=2, backoff_s=0.01).generate([prompt], params)
        assert ok.finish_reason in ("stop", "length") and ok.text and ok.error is None
        srv_fail = build_server(smollm2, port=0, fail_requests=5)
        start_server_thread(srv_fail)
        url_fail = f"http://127.0.0.1:{srv_fail.server_address[1]}/v1"
        (failed,) = OpenAIBackend(url_fail, "m", max_retries=1, backoff_s=0.01).generate([prompt], params)
        assert failed.finish_reason == "error" and "HTTP 503" in failed.error
        srv_fail.shutdown()
    finally:
        srv.shutdown()
    # nothing listening: a clear error result, not an exception
    (down,) = OpenAIBackend(url, "m", max_retries=0, timeout_s=5).generate([prompt], params)
    assert down.finish_reason == "error" and "failed" in down.error


class FakeVLLMEngine:
    """A MOCK of vLLM's GPU engine (`vllm.LLM`): vLLM cannot run on this CPU-only machine. It records
    the calls and answers in vLLM's RequestOutput shape, to test the code our backend shares."""

    def __init__(self):
        self.calls = []

    def get_tokenizer(self):
        return None

    def chat(self, messages, sampling_params, use_tqdm):
        from types import SimpleNamespace as NS

        self.calls.append((messages, sampling_params))
        return [NS(prompt_token_ids=list(range(len(m[-1]["content"].split()))),
                   outputs=[NS(text=f"Answer {sp.seed}", token_ids=[1, 2, 3],
                               finish_reason="length" if sp.max_tokens < 3 else "stop")])
                for m, sp in zip(messages, sampling_params)]


def test_vllm_backend_shared_path_with_a_mock_gpu_engine(cc_store):
    from types import SimpleNamespace

    engine = FakeVLLMEngine()
    backend = VLLMBackend("meta-llama/Llama-3.1-8B-Instruct", engine=engine,
                          sampling_params_cls=lambda **kw: SimpleNamespace(**kw))
    cfg = GenerateConfig(type="hq", source="cc", backend="vllm", limit=2, max_new_tokens=8,
                         chunk_tokenizer="cl100k_base", progress=False)
    summary = generate(cc_store, cfg, backend=backend)
    assert summary["n_docs_written"] == 2
    (messages, sampling), = engine.calls
    assert {(s.max_tokens, s.temperature, s.top_p) for s in sampling} == {(8, 0.7, 0.95)}
    assert len({s.seed for s in sampling}) == len(sampling)  # one seed per request
    docs = cc_store.sql("SELECT generator, text, meta FROM documents WHERE corpus = 'hq'").to_pylist()
    assert {d["generator"] for d in docs} == {"meta-llama/Llama-3.1-8B-Instruct"}
    seeds = {json.loads(d["meta"])["chunks"][0]["seed"] for d in docs}
    assert {d["text"] for d in docs} == {f"Answer {s}" for s in seeds}


def test_cli_help_models_and_errors(cc_store, capsys):
    for cmd in ([], ["generate"], ["models"], ["serve"]):
        with pytest.raises(SystemExit) as exit_:
            cli_main([*cmd, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and "usage:" in out and "example" in out.lower()
    assert cli_main(["models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert any(m["name"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and m["format"] == "gguf" for m in models)
    assert cli_main(["generate", "--source", "nope", "--store", str(cc_store.root)]) == 2
    err = capsys.readouterr().err
    assert "unknown corpus 'nope'" in err and "cc" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["generate", "--type", "poem", "--store", str(cc_store.root)]) == 2
    assert "--prompt FILE" in capsys.readouterr().err


def test_write_order_does_not_depend_on_the_hash_seed(cc_store, smollm2, tmp_path):
    """Documents are written in batch order, never a set's order: a later round takes the first N documents of
    a synthetic corpus in store order, so that order must be the same in every process (PYTHONHASHSEED)."""
    import os
    import shutil

    import pyarrow.parquet as pq

    from corpora.store import Store

    procs = {}
    for seed in ("1", "2"):
        root = tmp_path / f"s{seed}"
        shutil.copytree(cc_store.root, root)
        procs[seed] = subprocess.Popen(
            [sys.executable, "-m", "synth", "generate", "--store", str(root), "--type", "hq", "--source", "cc",
             "--limit", "12", "--max-new-tokens", "4", "--batch-size", "8", "--max-chunks", "1", "--dtype", "fp32",
             "--num-threads", "1", "-q"],
            cwd=REPO, env={**os.environ, "PYTHONHASHSEED": seed}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    orders = {}
    for seed, proc in procs.items():
        assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
        shards = Store(tmp_path / f"s{seed}").shards("hq")
        orders[seed] = [d for s in shards for d in pq.read_table(s.path, columns=["source_doc_id"]).column(0).to_pylist()]
    assert len(orders["1"]) >= 5 and orders["1"] == orders["2"]  # one batch: a set would order them by hash
