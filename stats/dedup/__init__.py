"""Near-duplicate analysis with MinHash LSH, within one corpus and across two, out of core.

Pipeline (the shape of datatrove's MinHash stages and text-dedup, sharing one `DedupConfig`):

1. *map, per shard* (`band_shard`, in worker processes): text -> normalised words -> word n-gram
   shingles -> one 32-bit hash per shingle -> MinHash signature of `num_perm` values, for a whole batch
   of documents at once with numpy -> band keys: the signature cut into `bands` bands of `rows` values
   (datasketch `MinHashLSH`'s split for the threshold), each band hashed to 64 bits. Written per shard
   under `store.artifact_dir("dedup_bands", corpus)`: signatures (`.sig.npy`, memory-mappable),
   document columns (`.docs.parquet`) and band keys (`.bands.parquet`: band, key, row), keyed by (shard
   content hash, parameters), so a rerun, a grown corpus or an interrupted run only maps the shards not
   yet done.
2. *candidates, one query* (`find_candidates`): DuckDB groups equal (band, key) over every band file
   (`GROUP BY`, join, `DISTINCT`; beyond `memory_limit` it spills to a temporary folder of the store),
   and each bucket gives its pairs. A bucket of more than `max_bucket` documents pairs every member with
   its first document only (no n^2 blow-up); the summary counts such buckets.
3. *verification* (`verify_candidates`): a candidate is kept if its signature Jaccard estimate (share
   of equal signature values) is >= threshold; signatures are read from the memory-mapped shard files
   in batches of pairs.
4. *clusters*: connected components (scipy.sparse.csgraph) over the verified pairs, on the documents that
   have one. The representative of a cluster is its first document in corpus order.

Memory is flat in the corpus size apart from 1 byte per document (its status) and what grows with the
pairs found; disk holds the per-shard files (about num_perm x 4 + bands x 14 bytes per document) and the
grouping's spill. Before any work, the analysis refuses with a one-line error when the store's disk lacks
room for them. `--against` (synthetic vs source, train vs test) runs the same banded join between two
corpora's band files.

Text normalisation (what "the same text" means here): Unicode NFKC, lower case, then words are the
maximal runs of Unicode word characters (letters, digits, underscore, regex ``\\w+``); punctuation and
whitespace only separate words, so case, punctuation and spacing changes do not count as edits. A
shingle is `ngram` consecutive words. A document with no words is skipped as ``empty``; one with fewer
than `ngram` words is skipped as ``too_short``; both are counted and listed in result table `dup_skipped`.

datasketch compatibility: a signature equals, value for value,
``datasketch.MinHash(num_perm, seed, hashfunc=int, scheme="affine32").update_batch(shingle_hashes)``:
the permutations are datasketch's own seeded draws and the "affine32" formula (MurmurHash3 fmix32, then
``a * h + b mod 2**32``) is applied in numpy. `to_lean_minhash` wraps a row as a `LeanMinHash`, which is
what `MinHashLSH` indexes. The shingle hash is our own: BLAKE2b-64 of each distinct word, combined over
the n words of a shingle with a 64-bit multiply-and-fmix chain, top 32 bits (tests/stats/test_dedup.py
checks the equality with datasketch).

Result tables (parts keyed by corpus, other corpus and parameters, so reruns replace them):
`dup_summary` (one row per analysis), `dup_clusters` (one row per document in a cluster of >= 2),
`dup_pairs` (verified pairs with their Jaccard estimate), `dup_source` (synthetic documents: estimated
Jaccard to their own source document), `dup_skipped` (empty/too short documents), `dedup_dropped`
(documents `curate` left out of a curated corpus, and why).

Package layout (datatrove's four-stage shape, one `DedupConfig` shared by every stage):
`config` (DedupConfig, statuses, CLI flags), `minhash` (shingles and signatures), `bands` (per-shard map
and its driver), `candidates` (grouping, verification, clusters), `analyze` (the analyses and their result
tables), `curate` (a deduplicated corpus), `cli` (`python -m stats.dedup`).
"""

from stats.dedup.analyze import (DedupReport, _capped_note, analyze_against, analyze_corpus,
                                  compute_source_similarity, find_source_corpora, read_snippets)
from stats.dedup.bands import (BandedCorpus, CorpusSignatures, band_keys, band_shard, build_bands,
                               build_signatures, estimate_disk_bytes, shard_file_names)
from stats.dedup.candidates import build_clusters, find_candidates, verify_candidates
from stats.dedup.cli import build_parser, main
from stats.dedup.config import (SCHEME, SIGNATURE_VERSION, SKIP_REASONS, STATUS_EMPTY, STATUS_OK, STATUS_TOO_SHORT,
                                DedupConfig, add_config_arguments, config_from_args)
from stats.dedup.curate import CurateResult, add_curate_arguments, curate, run_curate_cli
from stats.dedup.minhash import (Signatures, build_permutations, compute_shard_signatures, compute_shingle_hashes,
                                 compute_signatures, concat_signatures, shingle_hashes, split_words, to_lean_minhash)
