"""Log-likelihoods of continuations, batched and length-sorted through the executor, and the metrics.

Requests are tokenized as lm-evaluation-harness does (`HFLM._encode_pair`): trailing whitespace of the
context moves to the continuation, the continuation's tokens are those of context + continuation past the
context's own tokens, an empty context gets the end-of-text token as prefix, and a request longer than the
model's window keeps its last `max_seq_len + 1` tokens. Sorted longest first, requests go in batches of at
most `batch_tokens` padded tokens (right padding: a causal model's real tokens never see it), and only the
continuation positions pass the output layer, whose logits get log-softmax in fp32 (also under bf16
autocast: a run's own dtype, else the project's choice for this CPU, `stats.evals.eval_dtype`).

Metrics per task (OLMES, Gu et al. 2024; DataDecide, Magnusson et al. 2025): acc (argmax of the summed
log-likelihood is the gold choice), acc_per_char (of the log-likelihood per character), correct_prob (the
gold choice's probability normalised over the choices), margin (that probability minus the largest other
one), bpb (bits per UTF-8 byte of the gold continuation); each with n items and its standard error
(sample standard deviation / sqrt(n)). Single-choice tasks (LAMBADA, gold-BPB variants) have bpb only.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from stats.evals.tasks import Item, TaskError

METRICS = ("acc", "acc_per_char", "correct_prob", "margin", "bpb")
HIGHER_IS_BETTER = {"acc": True, "acc_per_char": True, "correct_prob": True, "margin": True, "bpb": False}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What to load: a finished run of a store (`store` + `run_id`) or a Hugging Face directory (`path`)."""

    store: str | None = None
    run_id: str | None = None
    path: str | None = None

    @property
    def label(self) -> str:
        return self.run_id or Path(self.path).name


class LoadedModel:
    """A causal LM split into `hidden` (B, T) -> (B, T, d) and `head` (N, d) -> (N, vocab), plus its window.

    Our runs and HF Llama directories load into train.model.Transformer (one code path, the model we train);
    other HF causal LMs run through transformers' base model and output embeddings."""

    def __init__(self, spec: ModelSpec, dtype: str):
        import torch

        from train.loop import autocast_for
        from train.model import Transformer

        self.spec, self.autocast = spec, autocast_for(dtype, "cpu")
        if spec.run_id is not None:
            from corpora.store import Store
            from train.loop import load_final_weights

            model = load_final_weights(Store(spec.store), spec.run_id)
        else:
            from transformers import AutoConfig, AutoModelForCausalLM

            config = AutoConfig.from_pretrained(spec.path)
            if config.model_type == "llama":
                from train.model import from_hf

                model = from_hf(spec.path, dtype=torch.float32)
            else:
                model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=torch.float32)
        self.model = model.eval()
        if isinstance(model, Transformer):
            self.max_seq_len = model.cfg.max_seq_len
            self.hidden, self.head = model.hidden, model.output
        else:
            self.max_seq_len = getattr(model.config, "max_position_embeddings", 2048)
            base = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
            self.hidden = lambda tokens: base(input_ids=tokens).last_hidden_state
            self.head = model.get_output_embeddings()

    def __call__(self, batch: list[tuple[list[int], int]]) -> list[float]:
        """Summed log-likelihood of the last `n_cont` tokens of each (tokens, n_cont), fed tokens[:-1]."""
        import torch

        width = max(len(t) - 1 for t, _ in batch)
        x = torch.zeros((len(batch), width), dtype=torch.long)
        rows, cols, targets = [], [], []
        for i, (tokens, n_cont) in enumerate(batch):
            n = len(tokens) - 1
            x[i, :n] = torch.tensor(tokens[:-1])
            rows += [i] * n_cont
            cols += range(n - n_cont, n)
            targets += tokens[-n_cont:]
        with torch.no_grad(), self.autocast():
            h = self.hidden(x)[rows, cols]  # (n continuation tokens, d)
            logits = self.head(h)
        logp = torch.log_softmax(logits.detach().float(), dim=-1).gather(1, torch.tensor(targets)[:, None])[:, 0]
        sums = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, torch.tensor(rows), logp.double())
        return sums.tolist()


def encode_requests(tokenizer, requests: list[tuple[str, str]], max_seq_len: int) -> list[tuple[list[int], int]]:
    """(tokens, n_continuation_tokens) per (context, continuation), as lm-eval's `_encode_pair` makes them."""
    contexts, wholes = [], []
    for context, continuation in requests:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        contexts.append(context)
        wholes.append(context + continuation)
    enc_ctx = tokenizer.encode_batch(contexts)
    enc_whole = tokenizer.encode_batch(wholes)
    enc_cont = tokenizer.encode_batch([c for _, c in requests])
    out = []
    for ctx, whole, cont, context, (_, continuation) in zip(enc_ctx, enc_whole, enc_cont, contexts, requests):
        if context:
            ctx, cont = list(ctx), list(whole[len(ctx):])
        else:
            ctx, cont = [tokenizer.eot_id], list(cont)
        if not cont:
            raise TaskError(f"the continuation {continuation!r} after {context[-40:]!r} encodes to no tokens; "
                            "give every choice some text")
        tokens = (ctx + cont)[-(max_seq_len + 1):]
        out.append((tokens, min(len(cont), len(tokens) - 1)))
    return out


def length_batches(encoded: list[tuple[list[int], int]], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Request indices, longest first, in batches of at most `batch_tokens` padded tokens / `max_batch` rows."""
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    batches, cur, width = [], [], 0
    for i in order:
        w = max(width, len(encoded[i][0]))
        if cur and (w * (len(cur) + 1) > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur, w = [], len(encoded[i][0])
        cur.append(i)
        width = w
    if cur:
        batches.append(cur)
    return batches


# ------------------------------------------------------------------------------------------------ metrics
def item_metrics(item: Item, logprobs: list[float]) -> dict[str, float]:
    """The metrics of one item from its choices' summed log-likelihoods (nats)."""
    ll = np.asarray(logprobs, dtype=np.float64)
    gold_bytes = len(item.continuations[item.gold].encode("utf-8"))
    out = {"bpb": -ll[item.gold] / (math.log(2) * max(gold_bytes, 1))}
    if len(ll) > 1:
        p = np.exp(ll - ll.max())
        p /= p.sum()
        others = np.delete(p, item.gold)
        out.update(acc=float(np.argmax(ll) == item.gold),
                   acc_per_char=float(np.argmax(ll / np.asarray(item.n_chars, dtype=np.float64)) == item.gold),
                   correct_prob=float(p[item.gold]), margin=float(p[item.gold] - others.max()))
    return out


def task_metrics(items: list[Item], logprobs: list[list[float]]) -> list[dict]:
    """One row per metric: value (mean over items), n, stderr and the chance level where one exists."""
    per_item = [item_metrics(it, lp) for it, lp in zip(items, logprobs)]
    chance = float(np.mean([1 / len(it.continuations) for it in items])) if items else None
    rows = []
    for metric in METRICS:
        v = np.array([m[metric] for m in per_item if metric in m])
        if not len(v):
            continue
        rows.append({"metric": metric, "value": float(v.mean()), "n": int(len(v)),
                     "stderr": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None,
                     "chance": chance if metric in ("acc", "acc_per_char", "correct_prob") else None,
                     "higher_is_better": HIGHER_IS_BETTER[metric]})
    return rows


def dumps_cache(logprobs: dict[int, list[float]]) -> str:
    return json.dumps({str(k): v for k, v in logprobs.items()})


def loads_cache(text: str) -> dict[int, list[float]]:
    return {int(k): v for k, v in json.loads(text).items()}
