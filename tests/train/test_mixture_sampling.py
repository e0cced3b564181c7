"""Budget-proportional mixture draws (train.sampling._order_by_row_groups): the documents a part takes are a fair
sample of its corpus (length and source distributions), the draw is deterministic, and its I/O follows the
budget, not the corpus size.

The corpus has order structure on purpose: along the corpus the share of source "b" rises from 10% to 90%
and documents grow longer, so a sampler that favours some region of the corpus (e.g. its first row groups)
gets both distributions wrong, and the same checks that pass on the real draw fail on it.
"""

from __future__ import annotations

import functools
import random
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

import corpora.store
from corpora.store import Store
from corpora.tokenizers import load_tokenizer
from corpora.tokens import TokenCache
from tests.conftest import add_corpus
from train.data import MixtureConfig, allocate_tokens, build_mixture
from train.sampling import order_part

N_DOCS = 1500
TOKENS = 15_000
SEEDS = range(8)
ALPHA = 1e-3  # the real draw must not be rejected at this level; the biased ones are, by far


def _corpus_rows(lee_texts, n_docs: int) -> list[dict]:
    sentences = [s for t in lee_texts for s in re.split(r"(?<=[.!?])\s+", t) if len(s) > 20]
    rng = random.Random(0)
    rows = []
    for i in range(n_docs):
        x = i / n_docs  # position along the corpus
        source = "b" if rng.random() < 0.1 + 0.8 * x else "a"
        k = max(1, int(rng.expovariate(1 / (2 + 6 * x))))
        rows.append({"text": " ".join(rng.choices(sentences, k=k)) + f" ({i})", "source": source})
    return rows


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, lee_texts):
    """Stores of N_DOCS and 2 * N_DOCS documents in ~8 KB row groups (about 120 and 240 of them)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(corpora.store, "ROW_GROUP_BYTES", 8_000)
    out = {}
    for n in (N_DOCS, 2 * N_DOCS):
        store = Store(tmp_path_factory.mktemp(f"sample{n}") / "store", create=True)
        add_corpus(store, "web", None, rows=_corpus_rows(lee_texts, n), shard_size=n // 2)
        out[n] = store
    mp.undo()
    return out


def _corpus(store):
    df = store.scan("web").collect()
    return df["n_bytes"].to_numpy(), np.array(df["source"].to_list())


@functools.cache
def _tokenizer():
    return load_tokenizer("cl100k_base")


def _draw(store, seed: int, n_tokens: int = TOKENS):
    """(global row ids in draw order, text row groups read) of a part's epoch 0, from a cold token cache."""
    shutil.rmtree(store.root / "artifacts" / "tokens", ignore_errors=True)
    shards = store.shards("web")
    reads = []
    real = pq.ParquetFile.read_row_group

    def counting(self, i, columns=None, **kw):
        if columns and "text" in columns:
            reads.append(i)
        return real(self, i, columns=columns, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pq.ParquetFile, "read_row_group", counting)
        order = order_part(TokenCache(store, _tokenizer()), shards, "web", n_tokens, seed,
                           progress=False)
    offsets = np.cumsum([0] + [s.n_docs for s in shards])
    assert order.lengths.sum() >= n_tokens and not order.exhausted
    return offsets[order.shard_idx] + order.rows, len(reads)


def _first_row_groups(store, seed: int, n_docs: int):
    """A biased sampler: as many documents, the first ones of the corpus, shuffled."""
    return np.random.default_rng(seed).permutation(n_docs)


def _representative(chosen: np.ndarray, n_bytes: np.ndarray, source: np.ndarray) -> tuple[float, float]:
    """(KS p-value of the chosen documents' lengths against the corpus's, chi-square p-value of their
    sources against the corpus's shares)."""
    ks = stats.ks_2samp(n_bytes[chosen], n_bytes).pvalue
    names = sorted(set(source))
    observed = np.array([(source[chosen] == s).sum() for s in names])
    expected = np.array([(source == s).mean() for s in names]) * len(chosen)
    return ks, stats.chisquare(observed, expected).pvalue


def test_draws_match_the_corpus_and_a_biased_sampler_fails_the_same_check(sampled):
    store = sampled[N_DOCS]
    n_bytes, source = _corpus(store)
    draws = [_draw(store, seed) for seed in SEEDS]
    chosen = np.concatenate([d[0] for d in draws])
    # pooled over seeds: documents are drawn from many row groups, so the pool is a fair sample
    ks, chi = _representative(chosen, n_bytes, source)
    assert ks > ALPHA and chi > ALPHA, (ks, chi)
    for ids, _ in draws:  # every draw spreads over the corpus: no region is left out
        assert np.histogram(ids, bins=4, range=(0, N_DOCS))[0].min() > 0
        assert len(set(ids)) == len(ids)
        # the stream order is shuffled: a document's place in it says nothing about its place in the corpus
        assert abs(stats.spearmanr(np.arange(len(ids)), ids).statistic) < 0.3
    biased = np.concatenate([_first_row_groups(store, seed, len(ids)) for seed, (ids, _) in zip(SEEDS, draws)])
    ks_b, chi_b = _representative(biased, n_bytes, source)
    assert ks_b < 1e-6 and chi_b < 1e-6, (ks_b, chi_b)


def test_draw_is_deterministic_and_reads_row_groups_in_proportion_to_the_budget(sampled):
    small, large = sampled[N_DOCS], sampled[2 * N_DOCS]
    a, reads_small = _draw(small, seed=1)
    b, _ = _draw(small, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, _draw(small, seed=2)[0])
    n_groups = sum(pq.ParquetFile(s.path).num_row_groups for s in large.shards("web"))
    _, reads_large = _draw(large, seed=1)
    # twice the corpus, the same budget: about as many row groups read (~45: GROUP_OVERSAMPLE times the
    # text taken, plus the rounds' margin), a sixth of the large corpus's, not twice as many
    assert reads_large < 1.2 * reads_small + 2 and reads_large < n_groups / 4, (reads_small, reads_large, n_groups)
    _, reads_double = _draw(large, seed=1, n_tokens=2 * TOKENS)
    assert reads_double > 1.5 * reads_large  # twice the budget: about twice the reads


def test_a_mixture_from_row_groups_has_exact_shares_and_is_identical_on_rebuild(sampled, tmp_path):
    store = Store(shutil.copytree(sampled[N_DOCS].root, tmp_path / "store"))
    add_corpus(store, "hq", [f"synthetic document {i}. " * 20 for i in range(200)], kind="synthetic",
               synthetic_type="hq")
    cfg = MixtureConfig("m", {"web": 0.75, "hq": 0.25}, 40_000, seed=4, seq_len=63)
    rows = build_mixture(store, cfg, progress=False)
    total = 40_000 // 64 * 64
    assert dict(zip(rows["corpus"], rows["n_tokens"])) == dict(zip(["web", "hq"], allocate_tokens([0.75, 0.25], total)))
    first = np.load(store.artifact_dir("mixtures", "m") / "train.npy")
    build_mixture(store, cfg, overwrite=True, progress=False)  # warm cache: the same array
    assert np.array_equal(np.load(store.artifact_dir("mixtures", "m") / "train.npy"), first)
    part, taken = np.load(store.artifact_dir("mixtures", "m") / "segments.npy").T
    assert taken[part == 0].sum() == rows["n_tokens"][0]
