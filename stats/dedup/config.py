"""The one config every stage of the near-duplicate analysis shares (datatrove's `MinhashConfig`), the
document statuses, and the CLI flags that map 1:1 to its fields."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re

from corpora.executor import RunsOnExecutor, add_engine_args


# Bump when the shingle hash or the signature layout changes: it is part of every cache key.
SIGNATURE_VERSION = 1
SCHEME = "affine32"

STATUS_OK, STATUS_EMPTY, STATUS_TOO_SHORT = 0, 1, 2
SKIP_REASONS = {STATUS_EMPTY: "empty", STATUS_TOO_SHORT: "too_short"}


_MEMORY_RE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")


@dataclasses.dataclass(frozen=True)
class DedupConfig(RunsOnExecutor):
    """Parameters of one near-duplicate analysis; CLI flags map 1:1 to fields."""

    threshold: float = 0.8  # Jaccard similarity of shingle sets at or above which two docs are duplicates
    num_perm: int = 128  # MinHash permutations (signature length); estimate std ~ sqrt(J(1-J)/num_perm)
    ngram: int = 5  # words per shingle
    seed: int = 1  # seeds the MinHash permutations (datasketch's default seed)
    # MinHashLSH weights = (1 - w, w) on (false positive, false negative) area when datasketch picks the
    # band/row split. Candidates are verified, so a missed pair costs more than an extra candidate:
    # at 0.95 (16 bands x 8 rows for 128 permutations) a pair at J=0.8 becomes a candidate with
    # probability 0.95, against 0.40 with datasketch's default (0.5, 0.5).
    lsh_fn_weight: float = 0.95
    # band split of the signature: `bands` bands of `rows` values each (0, 0: datasketch's optimal split for
    # threshold, num_perm and lsh_fn_weight, as MinHashLSH picks it)
    bands: int = 0
    rows: int = 0
    # an LSH bucket (documents sharing one band) with more members than this is not expanded into all its
    # pairs: every member is compared with the bucket's first document only (boilerplate shared by
    # thousands of documents would otherwise give n^2 candidates); the summary counts such buckets
    max_bucket: int = 256
    memory_limit: str = "256MB"  # DuckDB memory for the candidate grouping; beyond it, it spills to disk
    threads: int = 0  # DuckDB threads; 0 = one per core
    workers: int = 0  # signature worker processes; 0 = auto (cores, in-process for small jobs)
    engine: str | None = None  # where shards are hashed: local | ray (None: $SYNTHMIX_ENGINE, else local)
    ray_address: str | None = None  # join this Ray cluster (None: $RAY_ADDRESS, else a local Ray)
    batch_docs: int = 2048  # documents hashed per numpy batch inside a shard
    recompute: bool = False  # hash every shard again, ignoring cached signatures (--overwrite)

    def __post_init__(self):
        if not (0.0 < float(self.threshold) < 1.0):
            raise ValueError(f"threshold must be strictly between 0 and 1 (a Jaccard similarity), "
                             f"got {self.threshold}")
        if self.num_perm < 2:
            raise ValueError(f"num_perm must be >= 2, got {self.num_perm}")
        if self.ngram < 1:
            raise ValueError(f"ngram must be >= 1 (words per shingle), got {self.ngram}")
        if not (0.0 < self.lsh_fn_weight < 1.0):
            raise ValueError(f"lsh_fn_weight must be strictly between 0 and 1, got {self.lsh_fn_weight}")
        if (self.bands == 0) != (self.rows == 0) or self.bands < 0 or self.rows < 0 \
                or self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands and rows must both be 0 (automatic) or positive with bands x rows <= "
                             f"num_perm ({self.num_perm}), got {self.bands} x {self.rows}")
        if self.max_bucket < 2:
            raise ValueError(f"max_bucket must be >= 2, got {self.max_bucket}")
        if not _MEMORY_RE.match(self.memory_limit):
            raise ValueError(f"memory_limit must look like 256MB or 2GB, got {self.memory_limit!r}")
        if self.batch_docs < 1 or self.threads < 0:
            raise ValueError("threads must be >= 0 and batch_docs >= 1")
        self.execution  # checks engine and workers

    @property
    def bands_rows(self) -> tuple[int, int]:
        """(bands, rows): the fields if set, else datasketch's choice for this threshold and weight."""
        if self.bands:
            return self.bands, self.rows
        return _optimal_bands(self.threshold, self.num_perm, round(self.lsh_fn_weight, 6))

    def with_bands(self) -> "DedupConfig":
        """This config with the band split resolved (so map workers never import datasketch)."""
        bands, rows = self.bands_rows
        return dataclasses.replace(self, bands=bands, rows=rows)

    @property
    def signature_key(self) -> str:
        """Cache key of the signatures (the threshold does not change them)."""
        return f"v{SIGNATURE_VERSION}_p{self.num_perm}_n{self.ngram}_s{self.seed}"

    @property
    def band_key(self) -> str:
        bands, rows = self.bands_rows
        return f"{self.signature_key}_b{bands}r{rows}"

    @property
    def result_key(self) -> str:
        return f"t{self.threshold:g}_p{self.num_perm}_n{self.ngram}_s{self.seed}_w{self.lsh_fn_weight:g}"

    def build_lsh(self):
        """The datasketch `MinHashLSH` with this band split (the in-memory reference the tests compare with)."""
        from datasketch import MinHashLSH

        w = round(self.lsh_fn_weight, 6)
        return MinHashLSH(threshold=self.threshold, num_perm=self.num_perm, weights=(round(1.0 - w, 6), w),
                          params=self.bands_rows)

    def as_json(self) -> str:
        d = dataclasses.asdict(self)
        for k in ("workers", "batch_docs", "memory_limit", "threads", "engine", "ray_address", "recompute"):  # not results
            d.pop(k)
        d["bands"], d["rows"] = self.bands_rows
        return json.dumps(d, sort_keys=True)


@functools.lru_cache(maxsize=None)
def _optimal_bands(threshold: float, num_perm: int, fn_weight: float) -> tuple[int, int]:
    from datasketch.lsh import _optimal_param  # the split MinHashLSH(threshold, num_perm, weights) uses

    return _optimal_param(threshold, num_perm, round(1.0 - fn_weight, 6), fn_weight)



# ---------------------------------------------------------------------------------------------- CLI flags
def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=DedupConfig.threshold,
                   help="Jaccard similarity of word-shingle sets at or above which documents are duplicates "
                        "(default 0.8, must be in (0, 1))")
    p.add_argument("--num-perm", type=int, default=DedupConfig.num_perm, help="MinHash permutations (default 128)")
    p.add_argument("--ngram", type=int, default=DedupConfig.ngram, help="words per shingle (default 5)")
    p.add_argument("--seed", type=int, default=DedupConfig.seed, help="MinHash permutation seed (default 1)")
    p.add_argument("--lsh-fn-weight", type=float, default=DedupConfig.lsh_fn_weight,
                   help="weight of missed pairs vs extra candidates when datasketch picks LSH bands (default 0.95)")
    p.add_argument("--max-bucket", type=int, default=DedupConfig.max_bucket,
                   help="LSH buckets with more documents pair each member with the first one only (default 256)")
    p.add_argument("--memory-limit", default=DedupConfig.memory_limit,
                   help="DuckDB memory for grouping band keys; beyond it the grouping spills to the store's "
                        "disk (default 256MB)")
    add_engine_args(p, workers_help="signature worker processes (default 0: one per core, or in-process when "
                                    "fewer than 8000 documents need hashing)")


def config_from_args(args) -> DedupConfig:
    return DedupConfig(threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram, seed=args.seed,
                       lsh_fn_weight=args.lsh_fn_weight, max_bucket=args.max_bucket,
                       memory_limit=args.memory_limit, workers=args.workers, engine=args.engine,
                       ray_address=args.ray_address)


