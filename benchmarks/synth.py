"""Generation speed: fp32 against bf16, batched (length-sorted) against one document at a time, shared prompt
prefix prefilled once against every prompt prefilled whole; same documents.

    python benchmarks/synth.py                 # SmolLM2-135M-Instruct on CPU, 32 docs, 64 new tokens
    python benchmarks/synth.py --num-threads 1 --repeats 1 --json   # on a busy shared machine
    python benchmarks/synth.py --batch-sizes 16,48 --no-single --n-docs 48 --max-new-tokens 128
    python benchmarks/synth.py --dtypes fp32 --batch-sizes 32 --no-single --n-docs 96 --max-new-tokens 96 --compare-prefix

Each dtype (`--dtypes`, default fp32,bf16) loads the model once (bf16: weights and activations, what
`TransformersBackend(dtype="auto")` picks on CPUs with AMX / AVX512-BF16); repeats alternate dtypes and
modes; the ratios are against fp32 at the first batch size, all measured in this one process, and
`bf16_vs_fp32` puts the two side by side per mode. The CPU's model and flags (lscpu) are printed. On a CPU without bf16
hardware (e.g. AMD Zen 3, AVX2 only) bf16 is emulated and slower: the report says which this CPU is.

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

from machine import cpu_info, describe  # noqa: E402  (benchmarks/machine.py: lscpu model and flags)
from synth.backends import (SamplingParams, TransformersBackend, default_cache_dir, default_generator,  # noqa: E402
                            generator_name)
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


def run(backend, prompts, params, seeds, batch_size: int, reuse_prefix: bool = True) -> dict:
    backend.batch_size, backend.reuse_prefix = batch_size, reuse_prefix
    t0, c0 = time.perf_counter(), time.process_time()
    results = backend.generate(prompts, params, seeds)
    elapsed_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    n_tokens = sum(r.n_completion_tokens for r in results)
    n_all = n_tokens + sum(r.n_prompt_tokens for r in results)
    # tokens per CPU-second of this process: steadier than wall time on a shared machine (waiting for a
    # core is not counted)
    return {"elapsed_s": elapsed_s, "n_completion_tokens": n_tokens, "tokens_per_s": n_tokens / elapsed_s,
            "tokens_per_cpu_s": n_tokens / max(cpu_s, 1e-9),
            "prompt_and_completion_tokens_per_s": n_all / elapsed_s,
            "texts": [r.text for r in results]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-docs", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-chunk-tokens", type=int, default=96,
                    help="source chunk size; 320 makes prefill dominate at few new tokens")
    ap.add_argument("--batch-sizes", default="16", help="batched mode(s) (length-sorted batches), e.g. 16,64")
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    ap.add_argument("--no-single", action="store_true", help="skip the one-document-at-a-time mode (slow)")
    ap.add_argument("--compare-prefix", action="store_true",
                    help="also run each batch size with every prompt prefilled whole (no shared-prefix reuse)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--generator", default=None, help="default: SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--num-threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from train.model import cpu_has_bf16

    texts, source = load_texts(args.n_docs)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    dtypes = args.dtypes.split(",")
    modes = [f"batch{b}" for b in batch_sizes] + ([] if args.no_single else ["one_at_a_time"])
    if args.compare_prefix:
        modes += [f"batch{b}_whole_prompts" for b in batch_sizes]
    params = SamplingParams(args.max_new_tokens, temperature=0.7, top_p=0.95)
    runs, load_s, backends = {}, {}, {}
    for dtype in dtypes:  # every dtype loaded up front, so that repeats can alternate dtypes too
        t0 = time.perf_counter()
        backends[dtype] = TransformersBackend(args.generator or default_generator(), device=args.device,
                                              cache_dir=default_cache_dir(), num_threads=args.num_threads,
                                              dtype=dtype)
        load_s[dtype] = round(time.perf_counter() - t0, 2)
    backend = backends[dtypes[0]]
    chunks = chunk_documents(texts, HFEncoder(backend.tokenizer), args.max_chunk_tokens)
    template = load_prompt("hq")
    prompts = [template.render(text=c[0]) for c in chunks if c]
    seeds = list(range(len(prompts)))
    n_prompt_tokens = [len(backend.encode_chat(p)) for p in prompts]
    for _ in range(args.repeats):   # repeats alternate dtypes and modes so machine noise hits all alike
        for dtype in dtypes:
            for mode in modes:
                b = 1 if mode == "one_at_a_time" else int(mode[5:].split("_")[0])
                runs.setdefault((dtype, mode), []).append(run(backends[dtype], prompts, params, seeds, b,
                                                              reuse_prefix=not mode.endswith("_whole_prompts")))
    del backends, backend
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    base = med[(dtypes[0], modes[0])]
    first = {k: v[0]["texts"] for k, v in runs.items()}
    report = {
        "source": source, "n_prompts": len(prompts), "generator": generator_name(args.generator or
                                                                                   default_generator()),
        "device": args.device, "cpu": describe(cpu_info()), "cpu_flags": cpu_info()["flags"],
        "torch": torch.__version__, "cpu_has_bf16": cpu_has_bf16(), "torch_threads": torch.get_num_threads(),
        "max_new_tokens": args.max_new_tokens, "max_chunk_tokens": args.max_chunk_tokens, "repeats": args.repeats,
        "prompt_tokens_min_median_max": [min(n_prompt_tokens), int(statistics.median(n_prompt_tokens)),
                                         max(n_prompt_tokens)],
        "load_s": load_s,
        "tokens_per_s": {f"{d}/{m}": round(v, 2) for (d, m), v in med.items()},
        f"ratio_vs_{dtypes[0]}/{modes[0]}": {f"{d}/{m}": round(v / base, 2) for (d, m), v in med.items()},
        # prefill counted too: with long prompts and few new tokens, prefill dominates and batching
        # (which mostly speeds up decoding) gains little
        # fp32 and bf16 side by side per mode (bf16 / fp32 tokens/s; > 1: bf16 faster)
        "bf16_vs_fp32": {m: round(med[("bf16", m)] / med[("fp32", m)], 2) for m in modes
                         if ("bf16", m) in med and ("fp32", m) in med},
        "tokens_per_cpu_s": {f"{d}/{m}": round(statistics.median(r["tokens_per_cpu_s"] for r in v), 2)
                             for (d, m), v in runs.items()},
        "prompt_and_completion_tokens_per_s": {f"{d}/{m}": round(statistics.median(
            r["prompt_and_completion_tokens_per_s"] for r in v), 1) for (d, m), v in runs.items()},
        "elapsed_s": {f"{d}/{m}": [round(r["elapsed_s"], 2) for r in v] for (d, m), v in runs.items()},
        # the same seeds give the same texts across batch sizes in fp32; bf16 rounds differently
        "identical_outputs_vs_first": {f"{d}/{m}": f"{sum(a == b for a, b in zip(t, first[(dtypes[0], modes[0])]))}"
                                       f"/{len(prompts)}" for (d, m), t in first.items()},
        "vllm": vllm_section(prompts, params, seeds),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:>36}: {v}")
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
