"""A Llama-3 style decoder in one file (nanoGPT layout, torchtitan names).

Reads top to bottom: `ModelConfig`, `RMSNorm`, `precompute_freqs_cis`, `apply_rotary_emb`, `repeat_kv`,
`Attention`, `FeedForward`, `TransformerBlock`, `Transformer`, the named `PRESETS`, and `from_hf` which
loads a Hugging Face `LlamaForCausalLM` checkpoint. The model is written for a single device; data or
sharded parallelism is applied from outside (`train/parallelize.py`), so nothing here imports
`torch.distributed`.

Rotary convention: we implement RoPE in Hugging Face's "rotate_half" form (the two halves of each head
dimension form the rotated pairs), not Meta's interleaved form (adjacent dimensions form pairs, torchtitan's
complex `freqs_cis`). Both are the same model up to a fixed permutation of the rows of `wq`/`wk`; with the
rotate_half form HF checkpoints load with no permutation at all, and real-valued cos/sin tensors are cheaper
than complex multiplies on CPU and compile cleanly. (Meta's original checkpoints would need the inverse of
HF's `permute` in `convert_llama_weights_to_hf.py`; we do not load those.)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2                # grouped-query attention: n_heads / n_kv_heads query heads share a K/V head
    vocab_size: int = 8192
    ffn_hidden: int = 768              # SwiGLU hidden width (HF `intermediate_size`)
    head_dim: int | None = None        # None: d_model // n_heads (SmolLM2 and Llama-3 use exactly that)
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0       # Llama-3's base; Llama-2 used 10000, SmolLM2 uses 100000
    max_seq_len: int = 2048            # length of the precomputed rotary table
    tie_embeddings: bool = False       # output projection shares the token embedding matrix
    init_std: float = 0.02

    def __post_init__(self):
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
            self.head_dim = self.d_model // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 like HF's LlamaRMSNorm (matters under bf16 autocast)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm is one fused kernel (forward and backward), several times fewer passes over memory
        # than HF's pow/mean/rsqrt/mul chain; in float32 the results agree to rounding.
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def precompute_freqs_cis(head_dim: int, end: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (end, head_dim), in the rotate_half layout: frequencies repeat per half."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    t = torch.arange(end, dtype=torch.int64).float()
    freqs = torch.outer(t, inv_freq)                       # (end, head_dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)                # (end, head_dim)
    return emb.cos(), emb.sin()


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate heads x (B, H, T, head_dim) by position; cos/sin are (T, head_dim) from precompute_freqs_cis."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)   # HF's rotate_half
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, n_kv_heads, T, D) -> (B, n_kv_heads * n_rep, T, D), each K/V head repeated for its query group."""
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


class Attention(nn.Module):
    """Causal grouped-query self-attention through `F.scaled_dot_product_attention`.

    Q, K and V come from one fused projection `wqkv` (rows: n_heads q heads, then n_kv_heads k heads, then
    n_kv_heads v heads), as nanoGPT's `c_attn`: one large matmul instead of three small ones is measurably
    faster on CPU, forward and backward. `from_hf` concatenates HF's q_proj/k_proj/v_proj into it.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.d_model, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h, hkv = self.n_heads, self.n_kv_heads
        qkv = self.wqkv(x).view(b, t, h + 2 * hkv, self.head_dim).transpose(1, 2)  # (B, H+2Hkv, T, D)
        qk = apply_rotary_emb(qkv[:, : h + hkv], cos, sin)       # q and k heads rotated in one pass
        q, k, v = qk[:, :h], qk[:, h:], qkv[:, h + hkv:]
        # Repeating K/V explicitly keeps SDPA on its fused (flash) kernels on CPU and GPU alike;
        # `enable_gqa=True` falls back to the unfused math path on some backends.
        n_rep = h // hkv
        y = F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), is_causal=True)
        y = y.transpose(1, 2).reshape(b, t, h * self.head_dim)                     # (B, T, H*D)
        return self.wo(y)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(x W1) * (x W3)), with W1 and W3 fused into one matmul `w13` (HF: gate_proj rows
    first, then up_proj rows) for the same reason as `wqkv`; w2 is HF's down_proj."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w13 = nn.Linear(cfg.d_model, 2 * cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `h @ weight.T` against targets, in chunks of rows, with the gradients
    computed during the forward pass (the fused linear cross-entropy of Liger-Kernel and of Wijmans et al.
    2024, "Cut your losses").

    A chunk's logits are computed and turned in place into exp(logits - max), whose row sums give the
    log-sum-exp, then into d loss / d logits = (softmax - onehot) / n, which is multiplied straight into
    d h and d weight. The
    (B*T, vocab) logits tensor never exists, nor does log_softmax's output or its backward pass: one pass
    over each chunk's logits instead of five over the whole tensor. The matmuls are the same three a plain
    linear + cross-entropy does. Same loss and gradients as `F.cross_entropy(h @ weight.T, targets)` up to
    float rounding (tests/train/test_model.py). Logits are reduced in float32 even under bf16 autocast.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk_size):
        n = h.shape[0]
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        weight_h = weight.to(h.dtype)                            # once, not per chunk (no-op when equal)
        for start in range(0, n, chunk_size):
            hc, tc = h[start:start + chunk_size], targets[start:start + chunk_size]
            logits = (hc @ weight.t()).float()
            target_logit = logits.gather(1, tc[:, None])
            row_max = logits.amax(dim=-1, keepdim=True)
            exp = logits.sub_(row_max).exp_()                    # in place: the chunk's only big buffer
            sum_exp = exp.sum(dim=-1, keepdim=True)
            loss += (row_max + sum_exp.log() - target_logit).sum()   # log-sum-exp minus the target logit
            dlogits = exp.mul_((1.0 / n) / sum_exp)              # softmax / n
            dlogits[torch.arange(len(tc), device=tc.device), tc] -= 1.0 / n
            dlogits = dlogits.to(hc.dtype)
            grad_h[start:start + chunk_size] = dlogits @ weight_h
            grad_w += (dlogits.t() @ hc).float()
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss, grad_w * grad_loss, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_size: int = 1024) -> torch.Tensor:
    """Mean over rows of cross_entropy(h @ weight.T, targets): h (N, d), weight (vocab, d), targets (N,)
    of valid class indices. Fused and chunked when a gradient is needed, chunked log-sum-exp otherwise."""
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, targets, chunk_size)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for start in range(0, h.shape[0], chunk_size):
        logits = (h[start:start + chunk_size] @ weight.t()).float()
        total += F.cross_entropy(logits, targets[start:start + chunk_size], reduction="sum")
    return total / h.shape[0]


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then h + ffn(norm(h))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        # Not persistent: the tables are a pure function of the config, so checkpoints stay small and
        # a config change (longer max_seq_len) never meets a stale table.
        cos, sin = precompute_freqs_cis(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    def init_weights(self):
        """Initialise all weights (a method of its own, not `reset_parameters`, so it can run once over the
        whole model after it is built or materialised from the meta device, as torchtitan does).

        Normal(0, init_std) everywhere; the two projections that write into the residual stream (`wo`, `w2`)
        get std / sqrt(2 * n_layers) so the residual variance stays O(1) with depth (GPT-2, nanoGPT).
        """
        std = self.cfg.init_std   # draws from torch's global RNG: seed it (torch.manual_seed) before building
        for name, p in self.named_parameters():
            if p.ndim == 1:            # RMSNorm weights
                nn.init.ones_(p)
            elif name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> the final-norm hidden states (B, T, d_model) that the output layer reads
        (an evaluator passes only the positions it scores through `output`)."""
        t = tokens.shape[1]
        if t > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len={self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin)
        return self.norm(h)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None):
        """tokens (B, T) -> logits (B, T, vocab); with targets (B, T), the mean cross-entropy instead
        (computed by `linear_cross_entropy`, which never materialises the whole logits tensor)."""
        h = self.hidden(tokens)
        if targets is None:
            return self.output(h)
        return linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.output.weight, targets.reshape(-1))

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non_embedding drops the vocab-sized matrices (token embedding and output
        projection), so a preset's size does not depend on the tokenizer (Kaplan et al. 2020's N)."""
        n = sum(p.numel() for p in self.parameters())   # parameters() yields a tied matrix once
        if non_embedding:
            n -= self.tok_embeddings.weight.numel()
            if not self.cfg.tie_embeddings:
                n -= self.output.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token: 6 * N_matmul + 12 * n_layers * n_heads * head_dim * seq_len.

        Every weight in a matmul costs 2 FLOPs per token forward (multiply + add) and 4 backward (grads
        w.r.t. input and weight): 6 per weight. N_matmul is every weight used in a matmul: the
        non-embedding weights plus the output projection (d_model * vocab, counted even when tied, since
        the matmul still runs); the embedding lookup is a gather, not a matmul, and norms are O(d).
        Attention adds, per layer and token, q.k^T and att.v, each 2 * n_heads * head_dim * seq_len FLOPs
        forward, times 3 for forward + backward: 12 * L * H * D * T (PaLM appendix B; torchtitan's
        `get_nparams_and_flops`). We count the full T x T score matrix, as they do, though a causal kernel
        skips about half of it, so MFU is comparable with published numbers.
        """
        c = self.cfg
        n_matmul = self.num_params(non_embedding=True) + c.vocab_size * c.d_model
        n_matmul -= sum(p.numel() for n, p in self.named_parameters() if p.ndim == 1)  # norms: not matmuls
        return 6 * n_matmul + 12 * c.n_layers * c.n_heads * c.head_dim * seq_len


# --------------------------------------------------------------------------------------------- presets
# Named flavors. Vocabulary size comes from the tokenizer at run time (`build_model_config`); the
# non-embedding size of each flavor does not depend on it. The study's sizes follow Llama-3 shapes
# (GQA with 8 KV heads where there are enough heads, SwiGLU width ~3-4x d_model, head_dim 64-128);
# llama-1b and llama-3b are exactly Llama-3.2-1B/3B. The CPU flavors keep head_dim 64 (efficient SDPA
# kernels) and trade width for depth to stay small.
PRESETS: dict[str, ModelConfig] = {
    # For tests and smoke runs only (torchtitan's "debugmodel"): ~0.1M non-embedding parameters.
    "debugmodel": ModelConfig(d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, ffn_hidden=192, max_seq_len=512),
    # The demo's second size: cpu-1m's width at two layers and a narrower MLP, 3x debugmodel.
    "cpu-300k": ModelConfig(d_model=128, n_layers=2, n_heads=2, n_kv_heads=1, ffn_hidden=256, max_seq_len=1024),
    "cpu-1m": ModelConfig(d_model=128, n_layers=5, n_heads=2, n_kv_heads=1, ffn_hidden=384, max_seq_len=1024),
    "cpu-4m": ModelConfig(d_model=256, n_layers=5, n_heads=4, n_kv_heads=2, ffn_hidden=768, max_seq_len=1024),
    "cpu-16m": ModelConfig(d_model=384, n_layers=10, n_heads=6, n_kv_heads=2, ffn_hidden=1024, max_seq_len=1024),
    "llama-100m": ModelConfig(d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, ffn_hidden=3072),
    "llama-300m": ModelConfig(d_model=1024, n_layers=24, n_heads=16, n_kv_heads=8, ffn_hidden=3072),
    "llama-1b": ModelConfig(d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_hidden=8192,
                            tie_embeddings=True, max_seq_len=8192),
    "llama-3b": ModelConfig(d_model=3072, n_layers=28, n_heads=24, n_kv_heads=8, ffn_hidden=8192,
                            tie_embeddings=True, max_seq_len=8192),
}


# ------------------------------------------------------------------------------------------- hardware
def cpu_has_bf16() -> bool:
    """True when bf16 is the CPU default: $SYNTHMIX_CPU_BF16=0/1 when set (read at every call, so a test or a
    benchmark can switch it), else whether this CPU multiplies bf16 in hardware (`cpu_bf16_hardware`)."""
    forced = os.environ.get("SYNTHMIX_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return cpu_bf16_hardware()


@functools.cache
def cpu_bf16_hardware() -> bool:
    """Whether this CPU has Intel AMX-BF16 or AVX512-BF16, where bf16 autocast trains faster than fp32
    (1.5-2x on a Sapphire Rapids Xeon for cpu-4m/cpu-16m; 1.2-1.5x on AMD Zen 4/5, docs/dtype.md). Elsewhere
    oneDNN emulates bf16 matmuls with fp32 instructions, which is slower than fp32 itself."""
    if hasattr(torch.cpu, "_is_amx_tile_supported"):   # torch's own cpuinfo-based checks (torch >= 2.3)
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def dtype_name(dtype: torch.dtype) -> str:
    """'bf16' or 'fp32': how runs, metrics and documents record the dtype they were computed in."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """'auto' -> bf16 on CUDA and on CPUs with bf16 hardware, else fp32; 'bf16' / 'fp32' as given."""
    if dtype not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'bf16' or 'fp32'")
    if dtype == "auto":
        on_cuda = torch.device(device).type == "cuda"
        return torch.bfloat16 if on_cuda or cpu_has_bf16() else torch.float32
    return torch.bfloat16 if dtype == "bf16" else torch.float32


class UnknownPreset(ValueError):
    pass


def build_model_config(preset: str, vocab_size: int, **overrides) -> ModelConfig:
    """The named flavor with the tokenizer's vocabulary (and any field overrides, e.g. max_seq_len)."""
    if preset not in PRESETS:
        raise UnknownPreset(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[preset], vocab_size=vocab_size, **overrides)


def count_preset_params(preset: str, vocab_size: int = 0) -> tuple[int, int]:
    """(non-embedding, total) parameters of a preset without allocating it (meta device)."""
    with torch.device("meta"):
        model = Transformer(build_model_config(preset, max(vocab_size, 1)))
    return model.num_params(non_embedding=True), model.num_params(non_embedding=False)


# ------------------------------------------------------------------------------ Hugging Face checkpoints
_HF_LAYER_KEYS = {
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def config_from_hf(hf_config) -> ModelConfig:
    """ModelConfig equal to a transformers `LlamaConfig` (default RoPE only: no Llama-3.1 rope scaling)."""
    rope = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"HF config uses rope_type={rope_type!r}; only default RoPE is implemented")
    theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", None))
    if getattr(hf_config, "attention_bias", False) or getattr(hf_config, "mlp_bias", False):
        raise ValueError("HF config has attention or MLP biases; this Llama has none")
    return ModelConfig(
        d_model=hf_config.hidden_size, n_layers=hf_config.num_hidden_layers,
        n_heads=hf_config.num_attention_heads,
        n_kv_heads=hf_config.num_key_value_heads or hf_config.num_attention_heads,
        vocab_size=hf_config.vocab_size, ffn_hidden=hf_config.intermediate_size,
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads,
        norm_eps=hf_config.rms_norm_eps, rope_theta=float(theta),
        max_seq_len=hf_config.max_position_embeddings,
        tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        init_std=getattr(hf_config, "initializer_range", 0.02),
    )


def convert_hf_state_dict(hf_state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rename a `LlamaForCausalLM` state dict to ours. No q/k permutation: both use rotate_half RoPE."""
    out = {
        "tok_embeddings.weight": hf_state["model.embed_tokens.weight"],
        "norm.weight": hf_state["model.norm.weight"],
        "output.weight": hf_state.get("lm_head.weight", hf_state["model.embed_tokens.weight"]),
    }
    for i in range(cfg.n_layers):
        for hf_key, key in _HF_LAYER_KEYS.items():
            out[f"layers.{i}.{key}"] = hf_state[f"model.layers.{i}.{hf_key}"]
        hf = f"model.layers.{i}."
        out[f"layers.{i}.attention.wqkv.weight"] = torch.cat(
            [hf_state[hf + f"self_attn.{n}_proj.weight"] for n in "qkv"], dim=0)
        out[f"layers.{i}.feed_forward.w13.weight"] = torch.cat(
            [hf_state[hf + "mlp.gate_proj.weight"], hf_state[hf + "mlp.up_proj.weight"]], dim=0)
    return out


def from_hf(model_or_path, **from_pretrained_kwargs) -> Transformer:
    """Our Transformer with the weights of a HF `LlamaForCausalLM` (a model object, or a path/name that
    `AutoModelForCausalLM.from_pretrained` accepts, e.g. a directory plus gguf_file=...)."""
    if isinstance(model_or_path, nn.Module):
        hf_model = model_or_path
    else:
        from transformers import AutoModelForCausalLM  # heavy import, only when loading from disk

        hf_model = AutoModelForCausalLM.from_pretrained(model_or_path, **from_pretrained_kwargs)
    cfg = config_from_hf(hf_model.config)
    state = convert_hf_state_dict(hf_model.state_dict(), cfg)
    dtype = next(hf_model.parameters()).dtype
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    # Buffers are not in the state dict: recompute the rotary tables after leaving the meta device.
    model.rope_cos, model.rope_sin = precompute_freqs_cis(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
    if cfg.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
        state.pop("output.weight")
        model.load_state_dict(state, strict=False)
        missing = set(model.state_dict()) - set(state) - {"output.weight"}
        if missing:
            raise KeyError(f"HF checkpoint lacks {sorted(missing)[:5]}")
    else:
        model.load_state_dict(state, strict=True)
    return model.to(dtype)


load_hf_llama = from_hf
