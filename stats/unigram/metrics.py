"""Distributions (corpora and mixtures) and the statistics between them: coverage, KL, JS, entropy and
shrinkage at an equal token budget."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np

from corpora.store import CorpusInfo, Store
from corpora.tokenizers import Tokenizer
from stats.unigram.counts import (DEFAULT_ALPHA, UnigramConfig, UnigramCounts, UnigramError,
                                  build_unigram_counts)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- distributions
@dataclasses.dataclass
class UnigramDistribution:
    """One side of a comparison: a corpus or a weighted mixture of corpora."""

    spec: str  # as written: 'cc' or 'cc=0.67,hq=0.33'
    components: list[tuple[str, float, UnigramCounts]]

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for _, w, c in self.components if w > 0)

    @property
    def present(self) -> np.ndarray:
        """Ids that occur in some component with a positive weight."""
        mask = np.zeros(len(self.components[0][2].counts), dtype=bool)
        for _, w, c in self.components:
            if w > 0:
                mask |= c.counts > 0
        return mask

    @property
    def n_types(self) -> int:
        return int(np.count_nonzero(self.present))

    def probs(self, alpha: float = 0.0) -> np.ndarray:
        """Mixture of the components' (additively smoothed) relative frequencies."""
        out = np.zeros(len(self.components[0][2].counts), dtype=np.float64)
        for _, w, c in self.components:
            if w > 0:
                out += w * (c.counts + alpha) / (c.n_tokens + alpha * len(c.counts))
        return out


def parse_mixture(spec: str) -> list[tuple[str, float]]:
    """'cc' -> [('cc', 1.0)]; 'cc=0.67,hq=0.33' -> [('cc', 0.67), ('hq', 0.33)]; weights must sum to 1.

    The mixture syntax of `python -m train mix --parts`; the older 'cc=0.67,hq=0.33' still works for one
    release, with a warning."""
    spec = spec.strip()
    if not spec:
        raise UnigramError("empty corpus or mixture name; give e.g. cc or cc=0.67,hq=0.33")
    if "=" not in spec and ":" not in spec and "," not in spec:
        return [(spec, 1.0)]
    sep = "="
    if "=" not in spec and ":" in spec:
        sep = ":"
        log.warning("mixture %r: NAME:WEIGHT is deprecated and goes in the next release; write %r", spec,
                    spec.replace(":", "="))
    out: list[tuple[str, float]] = []
    for item in spec.split(","):
        name, found, weight = item.strip().partition(sep)
        name = name.strip()
        if not name or not found:
            raise UnigramError(f"malformed mixture {spec!r}: write every component as NAME=WEIGHT, "
                               "e.g. cc=0.67,hq=0.33")
        try:
            w = float(weight)
        except ValueError:
            raise UnigramError(f"malformed mixture {spec!r}: weight {weight.strip()!r} of {name!r} "
                               "is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise UnigramError(f"malformed mixture {spec!r}: weight of {name!r} must be >= 0, not {weight.strip()}")
        if name in (n for n, _ in out):
            raise UnigramError(f"malformed mixture {spec!r}: {name!r} appears twice")
        out.append((name, w))
    total = sum(w for _, w in out)
    if abs(total - 1.0) > 1e-6:
        raise UnigramError(f"mixture {spec!r}: weights sum to {total:g}, not 1; adjust them so they do")
    return out


def build_distribution(store: Store, spec: str, cfg: UnigramConfig, tok: Tokenizer,
                       infos: dict[str, CorpusInfo] | None = None) -> UnigramDistribution:
    infos = infos if infos is not None else {c.name: c for c in store.corpora()}
    components = []
    for name, w in parse_mixture(spec):
        info = infos.get(name) or store.corpus(name)  # raises UnknownCorpus listing the store's corpora
        components.append((name, w, build_unigram_counts(store, info, cfg, tok)))
    return UnigramDistribution(spec, components)


# ---------------------------------------------------------------------------------------- metrics
def _xlogy_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p ln(p / q) with 0 ln 0 = 0."""
    out = np.zeros_like(p)
    nz = p > 0
    out[nz] = p[nz] * np.log(p[nz] / q[nz])
    return out


def entropy_nats(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def compare_unigrams(test: UnigramDistribution, train: UnigramDistribution, tok: Tokenizer,
                     alpha: float = DEFAULT_ALPHA, top: int = 10) -> dict:
    """Every metric of one (train, test) pair, as one row of `unigram_comparisons`."""
    if alpha <= 0:
        raise UnigramError(f"alpha must be > 0 (got {alpha}); a zero in Q would make KL infinite")
    p = test.probs()
    q = train.probs()
    q_smooth = train.probs(alpha)
    test_types = p > 0
    in_train = train.present
    contrib = _xlogy_ratio(p, q_smooth)
    m = (p + q) / 2
    kl_nats = float(contrib.sum())
    js_nats = float(0.5 * _xlogy_ratio(p, m).sum() + 0.5 * _xlogy_ratio(q, m).sum())

    order = np.argsort(-contrib, kind="stable")[: max(top, 0)]
    order = order[contrib[order] > 0]
    test_counts = sum(c.counts for _, w, c in test.components if w > 0)
    train_counts = sum(c.counts for _, w, c in train.components if w > 0)
    top_tokens = [
        {"token_id": int(i), "token": tok.token_str(i), "p_test": float(p[i]), "q_train": float(q[i]),
         "count_test": int(test_counts[i]), "count_train": int(train_counts[i]), "kl_nats": float(contrib[i])}
        for i in order
    ]
    return {
        "train": train.spec,
        "test": test.spec,
        "tokenizer": tok.name,
        "train_components": json.dumps({n: w for n, w, _ in train.components}),
        "test_components": json.dumps({n: w for n, w, _ in test.components}),
        "n_tokens_test": test.n_tokens,
        "n_tokens_train": train.n_tokens,
        "n_types_test": int(test_types.sum()),
        "n_types_train": train.n_types,
        "type_coverage": float((test_types & in_train).sum() / max(test_types.sum(), 1)),
        # from integer counts, so that full and zero coverage come out exactly 1 and 0
        "token_coverage": float(sum(w * c.counts[in_train].sum() / c.n_tokens for _, w, c in test.components if w > 0)),
        "kl_nats": kl_nats,
        "kl_bits": kl_nats / math.log(2),
        "js_nats": js_nats,
        "entropy_test_nats": entropy_nats(p),
        "entropy_train_nats": entropy_nats(q),
        "alpha": float(alpha),
        "units": "nats",
        "top_kl_tokens": json.dumps(top_tokens, ensure_ascii=False),
    }


def rarefied_types(counts: np.ndarray, n_tokens: int) -> float:
    """Expected distinct types in n_tokens drawn without replacement (exact rarefaction)."""
    from scipy.special import (
        gammaln,  # imported here: scipy.special alone costs ~0.5 s of CLI start-up
    )

    c = counts[counts > 0].astype(np.float64)
    total = c.sum()
    if n_tokens >= total:
        return float(len(c))
    rest = total - c
    # P(type absent) = C(N - c, n) / C(N, n); zero when fewer than n tokens are of other types
    log_absent = np.full_like(c, -np.inf)
    ok = rest >= n_tokens
    log_absent[ok] = (gammaln(rest[ok] + 1) - gammaln(rest[ok] - n_tokens + 1)
                      - gammaln(total + 1) + gammaln(total - n_tokens + 1))
    return float((1.0 - np.exp(log_absent)).sum())


def subsampled_entropy_nats(counts: np.ndarray, n_tokens: int, n_subsamples: int, seed: int) -> float:
    """Mean plug-in entropy of n_tokens drawn without replacement (seeded)."""
    c = counts[counts > 0].astype(np.int64)
    if n_tokens >= c.sum():
        return entropy_nats(c / c.sum())
    rng = np.random.default_rng(seed)
    values = [entropy_nats(rng.multivariate_hypergeometric(c, n_tokens, method="marginals") / n_tokens)
              for _ in range(n_subsamples)]
    return float(np.mean(values))


def compute_shrinkage(synthetic: str, source: str, a: UnigramCounts, b: UnigramCounts, tok: Tokenizer,
                      n_subsamples: int = 5, seed: int = 0) -> dict:
    """Types and entropy of a synthetic corpus (a) and its source (b) at the smaller one's token budget."""
    budget = min(a.n_tokens, b.n_tokens)
    types_syn, types_src = rarefied_types(a.counts, budget), rarefied_types(b.counts, budget)
    h_syn = subsampled_entropy_nats(a.counts, budget, n_subsamples, seed)
    h_src = subsampled_entropy_nats(b.counts, budget, n_subsamples, seed)
    return {
        "synthetic": synthetic, "source": source, "tokenizer": tok.name, "budget_tokens": budget,
        "n_tokens_synthetic": a.n_tokens, "n_tokens_source": b.n_tokens,
        "n_types_synthetic": a.n_types, "n_types_source": b.n_types,
        "types_at_budget_synthetic": types_syn, "types_at_budget_source": types_src,
        "types_ratio": types_syn / types_src if types_src else float("nan"),
        "entropy_at_budget_synthetic_nats": h_syn, "entropy_at_budget_source_nats": h_src,
        "entropy_diff_nats": h_syn - h_src, "n_subsamples": n_subsamples, "seed": seed,
    }


def find_source_corpus(store: Store, info: CorpusInfo) -> str | None:
    """The corpus a synthetic corpus was generated from: its meta, else where its source_doc_ids live."""
    names = set(store.corpus_names())
    for key in ("source_corpus", "source"):
        value = info.meta.get(key)
        if isinstance(value, str) and value in names and value != info.name:
            return value
    rows = store.sql(
        """SELECT n.corpus, count(*) AS n_docs
           FROM (SELECT DISTINCT source_doc_id FROM documents WHERE corpus = ? AND source_doc_id IS NOT NULL) s
           JOIN documents n ON n.doc_id = s.source_doc_id
           WHERE n.corpus <> ? GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""",
        [info.name, info.name],
    ).to_pylist()
    return rows[0]["corpus"] if rows else None
