"""Training throughput: our Llama (train/model.py) against HF `LlamaForCausalLM` with the same config.

For each preset, both models get the same shapes, batch, thread count, optimizer (fused AdamW) and data,
and are timed in one process, interleaved repeat by repeat so that load from other processes hits all
alike. Variants: `hf` (eager; the baseline of every ratio), `ours` (eager), `ours_compiled` (the trainer's
`--compile`: the whole model, fused loss included, under torch.compile) and `hf_compiled` (HF under
torch.compile, so the compiled comparison is like for like; `--no-hf-compile` skips it), and `ours_bf16` /
`ours_compiled_bf16`: the same under bf16 CPU autocast, which the trainer picks by default on CPUs with AMX
or AVX512-BF16 (`train.model.cpu_has_bf16`; the report says whether this CPU has it: without it bf16 is
emulated and slower, with it 1.5-2x faster than fp32 on cpu-4m/cpu-16m). We report medians
of repeats, ratios of medians, the median of per-repeat ratios, tokens per CPU-second, model FLOPs per
token (6N + attention, `Transformer.flops_per_token`) and achieved FLOP/s. When CUDA is present, a GPU
section measures MFU of a ~100M preset in bf16 with torch.compile (a GPU is rarely lent on this project's
machines; without one the section says so).

Defaults are the demo study's training setup: a 4096-token BPE, 16 sequences of 128 tokens, 2 threads.

    python benchmarks/train.py                                    # debugmodel, cpu-1m, cpu-4m
    python benchmarks/train.py --presets cpu-4m --vocab 8192 --seq-len 256 --batch-size 4 --json
    python benchmarks/train.py --variants ours,ours_bf16 --presets debugmodel,cpu-1m   # fp32 vs bf16 only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_info, describe  # noqa: E402  (benchmarks/machine.py: lscpu model and flags)
from train.model import PRESETS, Transformer, build_model_config, cpu_has_bf16  # noqa: E402

VARIANTS = ["hf", "ours", "ours_compiled", "hf_compiled", "ours_bf16", "ours_compiled_bf16"]
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
            # HF shifts labels itself, so the inputs are the labels (T-1 targets against our T: 0.8% less
            # loss work for HF at T=128, which only favours the baseline).
            return model(input_ids=inputs, labels=inputs).loss
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


def build_variant(name: str, cfg):
    torch.manual_seed(0)   # same initial weights for both of ours; HF draws its own
    name = name.removesuffix("_bf16")
    if name.startswith("hf"):
        model = build_hf(cfg)
        return model, (torch.compile(model) if name == "hf_compiled" else model)
    model = Transformer(cfg)
    if name == "ours_compiled":
        model.compile()    # what train.loop.parallelize does without FSDP
    return model, model


def bench_preset(preset: str, args) -> dict:
    cfg = build_model_config(preset, args.vocab, max_seq_len=args.seq_len)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, cfg.vocab_size, (args.batch_size, args.seq_len + 1), generator=gen)
    tokens_per_step = args.batch_size * args.seq_len
    names = [n for n in args.variants if not (args.no_hf_compile and n == "hf_compiled")]
    steps, warmup_s, models = {}, {}, {}
    for name in names:
        params, models[name] = build_variant(name, cfg)
        opt = torch.optim.AdamW(params.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
        steps[name] = make_step(name, models[name], batch, opt,
                                autocast_dtype=torch.bfloat16 if name.endswith("_bf16") else None)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            steps[name]()
        warmup_s[name] = time.perf_counter() - t0   # includes compilation for the compiled variants

    tok_s = {name: [] for name in names}
    tok_cpu_s = {name: [] for name in names}
    for _ in tqdm(range(args.repeats), desc=preset, unit="repeat", leave=False, disable=args.json):
        for name in names:   # interleaved: a burst of load from other processes hits every variant
            wall_s, cpu_s = time_steps(steps[name], args.steps)
            tok_s[name].append(args.steps * tokens_per_step / wall_s)
            tok_cpu_s[name].append(args.steps * tokens_per_step / cpu_s)

    ours = next(m for n, m in models.items() if n.startswith("ours"))
    flops_per_token = ours.flops_per_token(args.seq_len)
    med = {name: statistics.median(v) for name, v in tok_s.items()}
    med_cpu = {name: statistics.median(v) for name, v in tok_cpu_s.items()}
    ratio = lambda a, b: {"of_medians": med[a] / med[b], "median_of_ratios": statistics.median(
        x / y for x, y in zip(tok_s[a], tok_s[b])), "cpu_time": med_cpu[a] / med_cpu[b]}
    out = {
        "preset": preset, "vocab_size": cfg.vocab_size, "seq_len": args.seq_len,
        "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
        "steps_per_repeat": args.steps,
        "n_params_non_embedding": ours.num_params(), "n_params_total": ours.num_params(False),
        "flops_per_token": flops_per_token,
        "tokens_per_s_median": med,
        "tokens_per_s_all": tok_s,
        # Tokens per CPU-second of this process: on a shared machine, time spent waiting for a core is not
        # counted, so this is the steadier measure of work (with 1 thread it has no spin-wait either).
        "tokens_per_cpu_s_median": med_cpu,
        "achieved_flops_per_s": {name: med[name] * flops_per_token for name in med},
        "speedup": {f"{a}_vs_{b}": ratio(a, b) for a, b in (
            ("ours", "hf"), ("ours_compiled", "hf"), ("ours_compiled", "ours"), ("ours_compiled", "hf_compiled"),
            ("ours_bf16", "ours"), ("ours_compiled_bf16", "ours_compiled"), ("ours_compiled_bf16", "ours"))
            if a in names and b in names},
        "warmup_s": warmup_s,
    }
    return out


def bench_cpu(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    return [bench_preset(preset, args) for preset in args.presets]


def bench_gpu(args) -> dict | list[dict]:
    """MFU of ~100M+ presets (`--gpu-preset a,b`), bf16 autocast, torch.compile, on the first CUDA device."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device here (this project's machines rarely lend a GPU)"}
    return [bench_gpu_preset(preset, args) for preset in args.gpu_preset.split(",")]


def bench_gpu_preset(preset: str, args) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda")
    cfg = build_model_config(preset, args.gpu_vocab, max_seq_len=args.gpu_seq_len)
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    model.compile()
    batch = torch.randint(0, cfg.vocab_size, (args.gpu_batch_size, args.gpu_seq_len + 1), device=device)
    step = make_step("ours", model, batch, opt, autocast_dtype=torch.bfloat16)
    for _ in range(3):
        step()
    sync = torch.cuda.synchronize
    tokens_per_step = args.gpu_batch_size * args.gpu_seq_len
    tok_s = [10 * tokens_per_step / time_steps(step, 10, sync)[0] for _ in range(5)]
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
    fpt = model.flops_per_token(args.gpu_seq_len)
    med = statistics.median(tok_s)
    del model, opt
    torch.cuda.empty_cache()
    return {"device": name, "preset": preset, "seq_len": args.gpu_seq_len,
            "batch_size": args.gpu_batch_size, "tokens_per_s": med, "flops_per_token": fpt,
            "achieved_flops_per_s": med * fpt, "peak_flops_per_s": peak,
            "mfu": med * fpt / peak if peak else None}


def print_bf16_table(c: dict) -> None:
    """fp32 and bf16 side by side for each variant measured in both, and which is faster."""
    med = c["tokens_per_s_median"]
    for fp32 in [n for n in med if not n.endswith("_bf16") and f"{n}_bf16" in med]:
        bf16 = f"{fp32}_bf16"
        ratio = c["speedup"].get(f"{bf16}_vs_{fp32}", {}).get("median_of_ratios", med[bf16] / med[fp32])
        print(f"  fp32 vs bf16 {fp32:14s} {med[fp32]:9.0f} vs {med[bf16]:9.0f} tokens/s: bf16 {ratio:.2f}x "
              f"-> {'bf16' if ratio > 1 else 'fp32'} is faster")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", type=lambda v: v.split(","), default=["debugmodel", "cpu-1m", "cpu-4m"],
                   help="comma-separated presets (python -m train presets)")
    p.add_argument("--vocab", type=int, default=4096, help="vocabulary size (the demo's trained BPE: 4096)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--steps", type=int, default=2, help="training steps per timed repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variants", type=lambda v: v.split(","), default=VARIANTS,
                   help=f"comma-separated, from {','.join(VARIANTS)}")
    p.add_argument("--no-hf-compile", action="store_true", help="skip HF under torch.compile")
    p.add_argument("--gpu-preset", default="llama-100m", help="comma-separated presets for the GPU section")
    p.add_argument("--gpu-vocab", type=int, default=32768)
    p.add_argument("--gpu-seq-len", type=int, default=2048)
    p.add_argument("--gpu-batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    unknown = [name for name in args.presets if name not in PRESETS]
    if unknown:
        p.error(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")

    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    result = {"machine": cpu_info(), "torch": torch.__version__, "cpu_has_bf16": cpu_has_bf16(),
              "cpu": bench_cpu(args), "gpu": bench_gpu(args)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(describe(result["machine"]))
    print(f"flags: {result['machine']['flags']}")
    print(f"this CPU {'has' if result['cpu_has_bf16'] else 'lacks'} bf16 hardware (AMX / AVX512-BF16): the "
          f"trainer's default dtype here is {'bf16' if result['cpu_has_bf16'] else 'fp32'}")
    for c in result["cpu"]:
        print(f"{c['preset']}: {c['n_params_non_embedding']:,} non-embedding params, vocab {c['vocab_size']}, "
              f"batch {c['batch_size']} x {c['seq_len']}, {c['threads']} threads, {c['repeats']} repeats; "
              f"{c['flops_per_token']:,} FLOPs/token (6N + attention)")
        for name, v in c["tokens_per_s_median"].items():
            print(f"  {name:14s} {v:10.0f} tokens/s   {c['achieved_flops_per_s'][name] / 1e9:7.2f} GFLOP/s   "
                  f"{c['tokens_per_cpu_s_median'][name]:8.0f} tokens/CPU-s   (warmup {c['warmup_s'][name]:.1f} s)")
        print_bf16_table(c)
        for key, r in c["speedup"].items():
            print(f"  {key:30s} {r['of_medians']:.2f}x (ratio of medians)  {r['median_of_ratios']:.2f}x "
                  f"(median of per-repeat ratios)  {r['cpu_time']:.2f}x (tokens per CPU-second)")
    if "skipped" in result["gpu"]:
        print(f"GPU: skipped: {result['gpu']['skipped']}")
    for g in result["gpu"] if isinstance(result["gpu"], list) else []:
        print(f"GPU {g['device']}: {g['preset']} bf16+compile {g['tokens_per_s']:.0f} tokens/s, "
              f"{g['achieved_flops_per_s'] / 1e12:.1f} TFLOP/s, MFU {g['mfu'] or float('nan'):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
