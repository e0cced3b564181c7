"""Token unigram statistics of corpora: counts, coverage, KL/JS divergence, entropy and shrinkage.

    python -m stats.unigram --train cc --test wiki
    python -m stats.unigram --train cc --train hq --train cc=0.67,hq=0.33 --test wiki --json

Definitions (P = test unigram distribution, Q = train distribution, both over the tokenizer's vocabulary
of V ids; logs are natural, so every divergence and entropy is in nats; bits = nats / ln 2):

- type coverage  = |{v : P(v) > 0, Q(v) > 0}| / |{v : P(v) > 0}|
- token coverage = sum of P(v) over v with Q(v) > 0 (share of test tokens whose type occurs in train)
- KL(P || Q)     = sum_v P(v) ln(P(v) / Q_alpha(v)), Q_alpha(v) = (c_Q(v) + alpha) / (N_Q + alpha V):
                   additive smoothing of the train counts, so a test type missing from train costs a
                   large but finite amount. A mixture's Q_alpha is the weighted mix of its components'
                   Q_alpha (each smoothed with its own counts).
- JS(P, Q)       = KL(P || M) / 2 + KL(Q || M) / 2 with M = (P + Q) / 2, on unsmoothed Q (0 <= JS <= ln 2)
- entropy H      = -sum_v P(v) ln P(v), unsmoothed
- shrinkage      = distinct types and entropy of a synthetic corpus and its source at an equal token budget
                   n = the smaller corpus's tokens: types are the exact rarefaction expectation
                   sum_v 1 - C(N - c_v, n) / C(N, n); entropy is the mean over seeded subsamples of n
                   tokens drawn without replacement (multivariate hypergeometric).

Counting is a pure map (`count_cached_shard(CountJob, tokenizer) -> UnigramCounts`: np.bincount over the
shard's tokens in the token cache that mixtures share, `corpora.tokens`, tokenizing first the documents
not cached yet) and an associative reduce (`reduce_counts`); `build_unigram_counts` is the driver: it maps
shards in worker processes, adopts the new token pieces, caches each shard's counts by content hash, and
stores the corpus's counts in the result table `unigram_counts` keyed by (corpus content hash,
tokenizer), so an unchanged corpus is never counted twice, and a corpus a mixture has tokenized is not
tokenized again. `count_unigrams(shard_path, cfg)` counts one shard straight from its text, without the
cache.

Package layout: `counts` (config, map, reduce, driver and caches), `metrics` (distributions and the
statistics between them), `analyze` (the step: comparisons and shrinkage into result tables), `cli`
(`python -m stats.unigram`).
"""

from stats.unigram.analyze import UnigramReport, run_unigram
from stats.unigram.cli import build_parser, format_report, main
from stats.unigram.counts import (COMPARISONS_TABLE, COUNTS_TABLE, DEFAULT_ALPHA, MIN_BYTES_FOR_WORKERS,
                                  SHRINKAGE_TABLE, CountJob, UnigramConfig, UnigramCounts, UnigramError,
                                  build_unigram_counts, count_cached_shard, count_job, count_unigrams, counts_part,
                                  reduce_counts)
from stats.unigram.metrics import (UnigramDistribution, build_distribution, compare_unigrams, compute_shrinkage,
                                   entropy_nats, find_source_corpus, parse_mixture, rarefied_types,
                                   subsampled_entropy_nats)
