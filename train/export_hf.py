"""A finished run as a Hugging Face `LlamaForCausalLM` directory: config.json, model.safetensors, tokenizer.

    python -m train export RUN --format hf --out DIR

so lm-evaluation-harness, vLLM and the rest of the HF ecosystem can load any run. The weights are the run's
`model.safetensors` renamed to HF's keys (the inverse of `train.model.convert_hf_state_dict`: our fused
`wqkv` and `w13` split into q/k/v and gate/up; no rotary permutation, both use rotate_half RoPE), in the
dtype the run saved them (fp32 or bf16). The tokenizer is the run's: a store tokenizer or any
`tokenizer.json` (a tiktoken encoding such as cl100k_base has none and is refused). The directory is
written under a temporary name and renamed, outside the store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from corpora.store import Store, StoreError
from train.model import ModelConfig

log = logging.getLogger(__name__)


class HFExportError(StoreError):
    """An HF export that cannot be done as asked; the message says what to change."""


def hf_config(cfg: ModelConfig, eos_token_id: int, dtype: torch.dtype):
    """The transformers `LlamaConfig` of our ModelConfig (the inverse of `train.model.config_from_hf`)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, hidden_act="silu", max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False,
        initializer_range=cfg.init_std, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
        dtype=str(dtype).removeprefix("torch."), architectures=["LlamaForCausalLM"])


def to_hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under HF `LlamaForCausalLM` keys."""
    from train.model import _HF_LAYER_KEYS

    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    out = {"model.embed_tokens.weight": state["tok_embeddings.weight"], "model.norm.weight": state["norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["output.weight"]
    for i in range(cfg.n_layers):
        for hf_key, key in _HF_LAYER_KEYS.items():
            out[f"model.layers.{i}.{hf_key}"] = state[f"layers.{i}.{key}"]
        wq, wk, wv = state[f"layers.{i}.attention.wqkv.weight"].split([q, kv, kv], dim=0)
        gate, up = state[f"layers.{i}.feed_forward.w13.weight"].split([cfg.ffn_hidden, cfg.ffn_hidden], dim=0)
        hf = f"model.layers.{i}."
        out.update({hf + "self_attn.q_proj.weight": wq, hf + "self_attn.k_proj.weight": wk,
                    hf + "self_attn.v_proj.weight": wv, hf + "mlp.gate_proj.weight": gate,
                    hf + "mlp.up_proj.weight": up})
    return {k: v.contiguous() for k, v in out.items()}


def _tokenizer_json(store: Store, name: str) -> Path:
    """The tokenizer.json behind a run's tokenizer name (store tokenizer, smollm2's converted one, a path)."""
    registered = store.artifact_dir("tokenizers", name, create=False) / "tokenizer.json" \
        if "/" not in name and not name.startswith(".") else None
    if registered is not None and registered.exists():
        return registered
    path = Path(name).expanduser()
    if path.is_dir() and (path / "tokenizer.json").exists():
        return path / "tokenizer.json"
    if path.name == "tokenizer.json" and path.exists():
        return path
    raise HFExportError(f"the run's tokenizer {name!r} has no tokenizer.json (tiktoken encodings and GGUF files "
                        "cannot be exported); train the run with a store tokenizer (python -m train tokenizer)")


def export_run_hf(store: Store, run_id: str, out: str | Path, overwrite: bool = False) -> dict:
    """Write run `run_id` as a LlamaForCausalLM directory at `out`; returns a summary."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from transformers import PreTrainedTokenizerFast

    from corpora.store import atomic_path
    from corpora.tokenizers import load_tokenizer
    from train.checkpoint import final_weights_path

    out = Path(out).resolve()
    if out == store.root or store.root in out.parents:
        raise HFExportError(f"--out {out} is inside the store {store.root}; pick a directory outside it")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HFExportError(f"{out} exists and is not empty; remove it, choose another --out, or pass --overwrite")
    runs = store.read_result("runs", run_id) if run_id in store.result_parts("runs") else None
    weights = final_weights_path(store, run_id)
    if runs is None or not weights.exists():
        raise HFExportError(f"run {run_id!r} has no finished weights ({weights}); `python -m corpora sql "
                            "\"select run_id, status from runs\"` lists the runs")
    tok_name = runs["tokenizer"][-1]
    tok_file = _tokenizer_json(store, tok_name)
    tokenizer = load_tokenizer(tok_name, store)
    with safe_open(str(weights), "pt") as f:
        cfg = ModelConfig(**json.loads(f.metadata()["model_config"]))
    state = load_file(str(weights))
    dtype = state["tok_embeddings.weight"].dtype
    eot = tokenizer.eot_id
    eot_text = tokenizer.token_str(eot)

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hf_config(cfg, eot, dtype).save_pretrained(tmp)
    with atomic_path(tmp / "model.safetensors") as t:
        save_file(to_hf_state_dict(state, cfg), str(t), metadata={"format": "pt", "synthmix_run_id": run_id})
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_file), eos_token=eot_text, bos_token=eot_text,
                                     unk_token=None, model_max_length=cfg.max_seq_len)
    hf_tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.rename(tmp, out)
    log.info("run %s -> %s (LlamaForCausalLM, %s)", run_id, out, dtype)
    return {"format": "hf", "run_id": run_id, "out": str(out), "files": sorted(p.name for p in out.iterdir()),
            "dtype": str(dtype).removeprefix("torch."), "tokenizer": tok_name, "n_params": sum(
                v.numel() for v in state.values()), "architecture": "LlamaForCausalLM"}
