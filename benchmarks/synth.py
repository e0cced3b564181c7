"""Generation speed: batched (length-sorted) against one document at a time, same 32 documents.

    python benchmarks/synth.py                 # SmolLM2-135M-Instruct on CPU, 32 docs, 64 new tokens
    python benchmarks/synth.py --num-threads 1 --repeats 1 --json   # on a busy shared machine

Both modes run the same `TransformersBackend` (same prompts: the HQ template on the first <=320-token
chunk (96 tokens by default) of 32 real C4 documents, or of gensim's news articles when ../shared/data is absent; same seeds,
temperature 0.7). Tokens/s counts completion tokens a caller gets (up to and including end of turn),
not padding. Repeats alternate the two modes so machine noise hits both alike; we print medians and
the ratio. A vLLM section runs the same prompts through `VLLMBackend` when vLLM and a GPU are present
(skipped otherwise).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synth.backends import SamplingParams, TransformersBackend, default_cache_dir, default_generator  # noqa: E402
from synth.chunking import HFEncoder, chunk_documents  # noqa: E402
from synth.prompts import load_prompt  # noqa: E402

C4 = REPO.parent / "shared" / "data" / "cc" / "c4_sample.jsonl"


def load_texts(n: int) -> tuple[list[str], str]:
    if C4.exists():
        with open(C4) as f:
            return [json.loads(line)["text"] for _, line in zip(range(n), f)], str(C4)
    from corpora.demo import LEE_FILE, demo_data_dir

    path = demo_data_dir() / LEE_FILE
    return [line.strip() for line in path.read_text().splitlines() if line.strip()][:n], str(path)


def run(backend, prompts, params, seeds, batch_size: int) -> dict:
    backend.batch_size = batch_size
    t0 = time.perf_counter()
    results = backend.generate(prompts, params, seeds)
    elapsed_s = time.perf_counter() - t0
    n_tokens = sum(r.n_completion_tokens for r in results)
    n_all = n_tokens + sum(r.n_prompt_tokens for r in results)
    return {"elapsed_s": elapsed_s, "n_completion_tokens": n_tokens, "tokens_per_s": n_tokens / elapsed_s,
            "prompt_and_completion_tokens_per_s": n_all / elapsed_s,
            "texts": [r.text for r in results]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-docs", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-chunk-tokens", type=int, default=96,
                    help="source chunk size; 320 makes prefill dominate at few new tokens")
    ap.add_argument("--batch-size", type=int, default=16, help="batched mode (length-sorted batches)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--generator", default=None, help="default: SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--num-threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    texts, source = load_texts(args.n_docs)
    t0 = time.perf_counter()
    backend = TransformersBackend(args.generator or default_generator(), device=args.device,
                                  cache_dir=default_cache_dir(), num_threads=args.num_threads)
    load_s = time.perf_counter() - t0
    chunks = chunk_documents(texts, HFEncoder(backend.tokenizer), args.max_chunk_tokens)
    template = load_prompt("hq")
    prompts = [template.render(text=c[0]) for c in chunks if c]
    seeds = list(range(len(prompts)))
    params = SamplingParams(args.max_new_tokens, temperature=0.7, top_p=0.95)
    n_prompt_tokens = [len(backend.encode_chat(p)) for p in prompts]

    runs = {"batched": [], "one_at_a_time": []}
    for _ in range(args.repeats):
        runs["batched"].append(run(backend, prompts, params, seeds, args.batch_size))
        runs["one_at_a_time"].append(run(backend, prompts, params, seeds, 1))
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    same = sum(a == b for a, b in zip(runs["batched"][0]["texts"], runs["one_at_a_time"][0]["texts"]))
    report = {
        "source": source, "n_prompts": len(prompts), "generator": backend.generator, "device": backend.device,
        "torch_threads": __import__("torch").get_num_threads(),
        "max_new_tokens": args.max_new_tokens, "max_chunk_tokens": args.max_chunk_tokens, "batch_size": args.batch_size, "repeats": args.repeats,
        "prompt_tokens_min_median_max": [min(n_prompt_tokens), int(statistics.median(n_prompt_tokens)),
                                         max(n_prompt_tokens)],
        "load_s": round(load_s, 2),
        "batched_tokens_per_s": round(med["batched"], 2),
        "one_at_a_time_tokens_per_s": round(med["one_at_a_time"], 2),
        "ratio": round(med["batched"] / med["one_at_a_time"], 2),
        # prefill counted too: with long prompts and few new tokens, prefill dominates and batching
        # (which mostly speeds up decoding) gains little
        "prompt_and_completion_tokens_per_s": {k: round(statistics.median(
            r["prompt_and_completion_tokens_per_s"] for r in v), 1) for k, v in runs.items()},
        "batched_elapsed_s": [round(r["elapsed_s"], 2) for r in runs["batched"]],
        "one_at_a_time_elapsed_s": [round(r["elapsed_s"], 2) for r in runs["one_at_a_time"]],
        "identical_outputs_batched_vs_single": f"{same}/{len(prompts)}",
        "vllm": vllm_section(prompts, params, seeds),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:>36}: {v}")
        print(f"batched / one-at-a-time tokens/s: {report['ratio']}x (target >= 4x)")
    return 0


def vllm_section(prompts, params, seeds) -> dict:
    try:
        import torch
        importlib.import_module("vllm")
    except ImportError:
        return {"skipped": "vLLM is not installed"}
    if not torch.cuda.is_available():
        return {"skipped": "no GPU"}
    from synth.backends import VLLMBackend

    backend = VLLMBackend("HuggingFaceTB/SmolLM2-135M-Instruct")
    out = {}
    for name, batch in (("batched", [prompts]), ("one_at_a_time", [[p] for p in prompts])):
        t0 = time.perf_counter()
        n = sum(r.n_completion_tokens for i, b in enumerate(batch)
                for r in backend.generate(b, params, seeds[i:i + len(b)] if len(b) == 1 else seeds))
        out[f"{name}_tokens_per_s"] = round(n / (time.perf_counter() - t0), 1)
    out["ratio"] = round(out["batched_tokens_per_s"] / out["one_at_a_time_tokens_per_s"], 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
