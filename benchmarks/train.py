"""Training throughput: our Llama (train/model.py) against HF `LlamaForCausalLM` with the same config.

Both models get the same shapes, batch, thread count, optimizer (AdamW) and data, and are timed in one
process, interleaved step by step so that load from other processes hits both alike. We report medians of
repeats, the ratio of medians and the median of per-repeat ratios, model FLOPs per token (6N + attention,
`Transformer.flops_per_token`) and achieved FLOP/s. `--compile` adds our model under torch.compile to answer
"does compile pay on CPU?". When CUDA is present, a GPU section measures MFU of a ~100M preset in bf16 with
torch.compile (a GPU is rarely lent on this project's machines; without one the section says so).

    python benchmarks/train.py                        # cpu-4m, vocab 8192, 4 x 256 tokens, 2 threads
    python benchmarks/train.py --compile --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.model import PRESETS, Transformer, build_model_config  # noqa: E402

# Dense bf16 peak FLOP/s (no sparsity) for the MFU denominator.
GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def build_hf(cfg):
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings, attn_implementation="sdpa",
    )
    return LlamaForCausalLM(hf_cfg)


def make_step(name, model, batch, optimizer, autocast_dtype=None):
    inputs, targets = batch[:, :-1], batch[:, 1:]
    device_type = batch.device.type

    def loss_fn():
        if name.startswith("hf"):
            # HF shifts labels itself, so the inputs are the labels (T-1 targets against our T: 0.4% less
            # loss work for HF, which only favours the baseline).
            return model(input_ids=inputs, labels=batch[:, :-1]).loss
        return model(inputs, targets)

    def step():
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def time_steps(step, n_steps, sync=lambda: None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for n_steps steps."""
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n_steps):
        step()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


def bench_cpu(args) -> dict:
    torch.set_num_threads(args.threads)
    cfg = build_model_config(args.preset, args.vocab, max_seq_len=args.seq_len)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, cfg.vocab_size, (args.batch_size, args.seq_len + 1), generator=gen)
    tokens_per_step = args.batch_size * args.seq_len

    torch.manual_seed(0)
    models = {"ours": Transformer(cfg), "hf": build_hf(cfg)}
    if args.compile:
        torch.manual_seed(0)
        models["ours_compiled"] = Transformer(cfg)
        for block in models["ours_compiled"].layers:   # as train.loop.parallelize does
            block.compile()
    steps, compile_s = {}, {}
    for name, model in models.items():
        # The trainer's optimizer (fused AdamW) for both models, so the step differs only in the model.
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
        steps[name] = make_step(name, model, batch, opt)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            steps[name]()
        compile_s[name] = time.perf_counter() - t0   # warmup time; includes compilation when compiled

    tok_s = {name: [] for name in models}
    tok_cpu_s = {name: [] for name in models}
    for _ in range(args.repeats):
        for name in models:   # interleaved: a burst of load from other processes hits every model
            wall_s, cpu_s = time_steps(steps[name], args.steps)
            tok_s[name].append(args.steps * tokens_per_step / wall_s)
            tok_cpu_s[name].append(args.steps * tokens_per_step / cpu_s)

    flops_per_token = models["ours"].flops_per_token(args.seq_len)
    med = {name: statistics.median(v) for name, v in tok_s.items()}
    out = {
        "preset": args.preset, "vocab_size": cfg.vocab_size, "seq_len": args.seq_len,
        "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "n_params_non_embedding": models["ours"].num_params(), "n_params_total": models["ours"].num_params(False),
        "flops_per_token": flops_per_token,
        "tokens_per_s_median": med,
        "tokens_per_s_all": tok_s,
        # Tokens per CPU-second of this process: on a shared machine, time spent waiting for a core is not
        # counted, so this is the steadier measure of work (with 1 thread it has no spin-wait either).
        "tokens_per_cpu_s_median": {name: statistics.median(v) for name, v in tok_cpu_s.items()},
        "speedup_ours_vs_hf_cpu_time": statistics.median(tok_cpu_s["ours"]) / statistics.median(tok_cpu_s["hf"]),
        "achieved_flops_per_s": {name: med[name] * flops_per_token for name in med},
        "speedup_ours_vs_hf": med["ours"] / med["hf"],
        "speedup_median_of_ratios": statistics.median(a / b for a, b in zip(tok_s["ours"], tok_s["hf"])),
        "warmup_s": compile_s,
    }
    if args.compile:
        out["speedup_compiled_vs_eager"] = med["ours_compiled"] / med["ours"]
    return out


def bench_gpu(args) -> dict:
    """MFU of a ~100M+ preset, bf16 autocast, torch.compile, on the first CUDA device."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device here (this project's machines rarely lend a GPU)"}
    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda")
    cfg = build_model_config(args.gpu_preset, args.gpu_vocab, max_seq_len=args.gpu_seq_len)
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    compiled = torch.compile(model)
    batch = torch.randint(0, cfg.vocab_size, (args.gpu_batch_size, args.gpu_seq_len + 1), device=device)
    step = make_step("ours", compiled, batch, opt, autocast_dtype=torch.bfloat16)
    for _ in range(3):
        step()
    sync = torch.cuda.synchronize
    tokens_per_step = args.gpu_batch_size * args.gpu_seq_len
    tok_s = [10 * tokens_per_step / time_steps(step, 10, sync) for _ in range(5)]
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
    fpt = model.flops_per_token(args.gpu_seq_len)
    med = statistics.median(tok_s)
    return {"device": name, "preset": args.gpu_preset, "seq_len": args.gpu_seq_len,
            "batch_size": args.gpu_batch_size, "tokens_per_s": med, "flops_per_token": fpt,
            "achieved_flops_per_s": med * fpt, "peak_flops_per_s": peak,
            "mfu": med * fpt / peak if peak else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-4m", choices=list(PRESETS))
    p.add_argument("--vocab", type=int, default=8192, help="vocabulary size (a trained 8k BPE on CPU)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4, help="sequences per step")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--steps", type=int, default=1, help="training steps per timed repeat")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time our model under torch.compile")
    p.add_argument("--gpu-preset", default="llama-100m", choices=list(PRESETS))
    p.add_argument("--gpu-vocab", type=int, default=32768)
    p.add_argument("--gpu-seq-len", type=int, default=2048)
    p.add_argument("--gpu-batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    result = {"cpu": bench_cpu(args), "gpu": bench_gpu(args)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    c = result["cpu"]
    print(f"{c['preset']}: {c['n_params_non_embedding']:,} non-embedding params, vocab {c['vocab_size']}, "
          f"batch {c['batch_size']} x {c['seq_len']}, {c['threads']} threads, {c['repeats']} repeats")
    print(f"model FLOPs per token (6N + attention): {c['flops_per_token']:,}")
    for name, v in c["tokens_per_s_median"].items():
        print(f"  {name:14s} {v:10.0f} tokens/s   {c['achieved_flops_per_s'][name] / 1e9:7.2f} GFLOP/s   "
              f"{c['tokens_per_cpu_s_median'][name]:8.0f} tokens/CPU-s   (warmup {c['warmup_s'][name]:.1f} s)")
    print(f"ours / HF: {c['speedup_ours_vs_hf']:.2f}x (ratio of median tokens/s), "
          f"{c['speedup_median_of_ratios']:.2f}x (median of per-repeat ratios), "
          f"{c['speedup_ours_vs_hf_cpu_time']:.2f}x (tokens per CPU-second)")
    if "speedup_compiled_vs_eager" in c:
        print(f"torch.compile / eager (ours): {c['speedup_compiled_vs_eager']:.2f}x")
    g = result["gpu"]
    if "skipped" in g:
        print(f"GPU: skipped: {g['skipped']}")
    else:
        print(f"GPU {g['device']}: {g['preset']} bf16+compile {g['tokens_per_s']:.0f} tokens/s, "
              f"{g['achieved_flops_per_s'] / 1e12:.1f} TFLOP/s, MFU {g['mfu'] or float('nan'):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
