"""Per-shard map to signature, document and band files, cached by shard content, and the driver that runs
it over a corpus through the project's executor (`build_bands`)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpora.store import ShardInfo, Store, StoreError
from stats.dedup.config import STATUS_OK, DedupConfig
from stats.dedup.minhash import _CHAIN_MUL, _U32, _U64, Signatures, _fmix64, compute_shard_signatures


log = logging.getLogger(__name__)

# Below this many documents to hash, auto mode (workers=0) stays in-process: a spawned worker needs ~1-2 s
# to import numpy/polars/pyarrow/duckdb, about the time one process takes to hash this many documents.
_MIN_DOCS_FOR_POOL = 8000


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) int64: a 64-bit hash of each band's `rows` signature values.

    Band b holds signature columns b*rows .. (b+1)*rows - 1, as in datasketch's `MinHashLSH`; two
    documents share a bucket when their band values are equal (up to a 2**-64 hash collision, which the
    verification step would drop anyway)."""
    n = len(sig)
    s = sig[:, :bands * rows].reshape(n, bands, rows).astype(_U64)
    h = np.broadcast_to((np.arange(bands, dtype=_U64) + _U64(1)) * _CHAIN_MUL, (n, bands)).copy()
    for k in range(rows):
        h = _fmix64(h * _CHAIN_MUL + s[:, :, k])
    return h.view(np.int64)


def shard_file_names(content_hash: str, cfg: DedupConfig) -> dict[str, str]:
    """File names of one shard's map outputs (keyed by shard content and the parameters they depend on)."""
    return {"sig": f"{content_hash}__{cfg.signature_key}.sig.npy",
            "docs": f"{content_hash}__{cfg.signature_key}.docs.parquet",
            "bands": f"{content_hash}__{cfg.band_key}.bands.parquet"}


def band_shard(job: tuple[str, str, str, str], cfg: DedupConfig) -> tuple[str, int]:
    """Map: one shard -> its signatures (.npy, memory-mappable), document columns and band keys (Parquet).

    `job` = (shard path, shard content hash, cache folder, temporary folder). Pure: reads the shard (or
    its cached signatures, when only the band split changed) and writes only under the temporary folder;
    the driver moves the files into the cache. Returns (content hash, number of documents)."""
    shard_path, content_hash, cache_dir, tmp_dir = job
    names = shard_file_names(content_hash, cfg)
    cached_sig, cached_docs = Path(cache_dir) / names["sig"], Path(cache_dir) / names["docs"]
    tmp = Path(tmp_dir)
    if cached_sig.exists() and cached_docs.exists() and not cfg.recompute:
        sig = np.load(cached_sig)
        status = pq.read_table(cached_docs, columns=["status"]).column("status").to_numpy()
    else:
        s = compute_shard_signatures(Path(shard_path), cfg)
        sig, status = s.signatures, s.status
        np.save(tmp / names["sig"], sig)
        pq.write_table(pa.table({
            "row": pa.array(s.row, pa.int32()), "doc_id": pa.array(s.doc_id.tolist(), pa.string()),
            "source_doc_id": pa.array(s.source_doc_id.tolist(), pa.string()),
            "status": pa.array(s.status, pa.uint8()), "n_shingles": pa.array(s.n_shingles, pa.int64()),
        }), tmp / names["docs"], compression="zstd")
    bands, rows = cfg.bands_rows
    ok_rows = np.flatnonzero(status == STATUS_OK).astype(np.int32)
    keys = band_keys(sig[ok_rows], bands, rows)  # (n_ok, bands)
    pq.write_table(pa.table({
        "band": pa.array(np.repeat(np.arange(bands, dtype=np.int16), len(ok_rows))),
        "key": pa.array(keys.T.ravel()),
        "row": pa.array(np.tile(ok_rows, bands)),
    }), tmp / names["bands"], compression="zstd")
    return content_hash, len(status)


def _run_map(fn, jobs: list, sizes: list[int], cfg: DedupConfig, desc: str, progress: bool):
    """Run the per-shard map through the project's executor (local processes or Ray: $SYNTHMIX_ENGINE),
    yielding results as they finish. Auto mode stays in-process for small jobs, where starting a worker
    (~1-2 s of imports) costs more than it saves."""
    auto = 1 if sum(sizes) < _MIN_DOCS_FOR_POOL else None
    with cfg.execution.executor(len(jobs), auto) as ex:
        for _, result in ex.map(fn, jobs, desc=desc, sizes=sizes, progress=progress):
            yield result


# ---------------------------------------------------------------------------------------------- driver
@dataclasses.dataclass
class BandedCorpus:
    """A corpus after the map: per-shard signature, document and band files, addressed by a global index.

    A document's global index is its position in corpus order (shard after shard, row by row), so
    `bases[k] + row` addresses row `row` of the k-th shard; the first document of a cluster in corpus
    order is the one with the smallest index."""

    corpus: str
    content_hash: str
    shards: list[ShardInfo]
    bases: np.ndarray  # (n_shards + 1,) int64
    sig_paths: list[Path]
    docs_paths: list[Path]
    band_paths: list[Path]
    status: np.ndarray  # (n_docs,) uint8
    num_perm: int
    n_shards_cached: int
    n_shards_computed: int

    @property
    def n_docs(self) -> int:
        return int(self.bases[-1])

    @property
    def ok(self) -> np.ndarray:
        return self.status == STATUS_OK

    def band_files(self) -> list[tuple[str, int]]:
        return [(str(p), int(b)) for p, b in zip(self.band_paths, self.bases[:-1])]

    def docs_files(self) -> list[tuple[str, int]]:
        return [(str(p), int(b)) for p, b in zip(self.docs_paths, self.bases[:-1])]

    def locate(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position of the shard in `shards`, row inside it) of global indices."""
        pos = np.searchsorted(self.bases, docs, side="right") - 1
        return pos, docs - self.bases[pos]

    def _by_shard(self, docs: np.ndarray):
        pos, row = self.locate(np.asarray(docs, dtype=np.int64))
        order = np.argsort(pos, kind="stable")
        cuts = np.flatnonzero(np.diff(pos[order])) + 1
        for sel in np.split(order, cuts) if len(order) else []:
            yield int(pos[sel[0]]), sel, row[sel]

    def signatures(self, docs: np.ndarray) -> np.ndarray:
        """Signature rows of global indices, read from the memory-mapped shard files (not all in RAM)."""
        out = np.empty((len(docs), self.num_perm), dtype=_U32)
        for k, sel, rows in self._by_shard(docs):
            out[sel] = np.load(self.sig_paths[k], mmap_mode="r")[rows]
        return out

    def columns(self, docs: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """Document columns (doc_id, source_doc_id, n_shingles, ...) of global indices, shard by shard."""
        out: dict[str, list] = {n: [None] * len(docs) for n in names}
        for k, sel, rows in self._by_shard(docs):
            t = pq.read_table(self.docs_paths[k], columns=names).take(pa.array(rows))
            for n in names:
                vals = t.column(n).to_pylist()
                for s, v in zip(sel.tolist(), vals):
                    out[n][s] = v
        return {n: np.asarray(v, dtype=object if v and isinstance(v[0], str) else None) if v else np.zeros(0)
                for n, v in out.items()}


def estimate_disk_bytes(n_docs_to_hash: int, n_docs: int, cfg: DedupConfig) -> int:
    """Disk the analysis needs beyond what is cached: map outputs of the shards still to do, plus the
    grouping's worst-case spill (every band row of the corpus, as DuckDB holds it) and its output."""
    bands, _ = cfg.bands_rows
    map_bytes = n_docs_to_hash * (cfg.num_perm * 4 + 80 + bands * 14)
    spill_bytes = n_docs * bands * 32
    return int(map_bytes + spill_bytes)


def _check_disk(store: Store, corpus: str, need: int) -> None:
    folder = store.artifact_dir("dedup_bands", corpus)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise StoreError(
            f"not enough disk for the near-duplicate analysis of corpus {corpus!r}: about {need / 1e9:.1f} GB "
            f"needed under {folder.parent.parent}, {free / 1e9:.1f} GB free; free space there or use a smaller "
            f"--num-perm (signatures take num_perm x 4 bytes per document)")


def build_bands(store: Store, corpus: str, cfg: DedupConfig, progress: bool = True) -> BandedCorpus:
    """Map every shard not yet done to its signature, document and band files (cached by shard content).

    An interrupted run resumes here: shards whose files are complete are not read again."""
    info = store.corpus(corpus)  # raises UnknownCorpus listing the store's corpora
    cfg = cfg.with_bands()
    shards = store.shards(corpus)
    cache_dir = store.artifact_dir("dedup_bands", corpus)
    names = {s.shard: shard_file_names(s.content_hash, cfg) for s in shards}
    done = {h for h in {s.content_hash for s in shards}
            if all((cache_dir / n).exists() for n in shard_file_names(h, cfg).values())} if not cfg.recompute else set()
    todo = {}
    for s in shards:
        if s.content_hash not in done:
            todo.setdefault(s.content_hash, s)  # byte-identical shards share their files
    n_todo_docs = sum(s.n_docs for s in todo.values())
    _check_disk(store, corpus, estimate_disk_bytes(n_todo_docs, info.n_docs, cfg))
    for legacy in cache_dir.glob(".tmp-*"):  # map folders of runs killed before they moved under the store's tmp
        shutil.rmtree(legacy, ignore_errors=True)
    if todo:
        # map outputs wait in the store's temporary area until moved into the cache: a run killed with -9
        # leaves its folder there (removed by the next tmp_dir call or Store.recover), not in the cache folder
        tmp = store.tmp_dir("dedup_bands")
        jobs = [(str(s.path), h, str(cache_dir), str(tmp)) for h, s in todo.items()]
        try:
            for h, _ in _run_map(partial(band_shard, cfg=cfg), jobs, [s.n_docs for s in todo.values()], cfg,
                                 f"minhash {corpus}", progress):
                # adopt: signatures and documents first, bands last (their presence marks the shard done)
                for kind in ("sig", "docs", "bands"):
                    src = tmp / shard_file_names(h, cfg)[kind]
                    if src.exists():
                        os.replace(src, cache_dir / src.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    current = {n for s in shards for n in names[s.shard].values()}
    for kind, key in (("sig.npy", cfg.signature_key), ("docs.parquet", cfg.signature_key),
                      ("bands.parquet", cfg.band_key)):
        for stale in cache_dir.glob(f"*__{key}.{kind}"):  # shards since rewritten or removed
            if stale.name not in current:
                stale.unlink(missing_ok=True)
    counts = np.array([s.n_docs for s in shards], dtype=np.int64)
    bases = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    status = (np.concatenate([pq.read_table(cache_dir / names[s.shard]["docs"], columns=["status"])
                              .column("status").to_numpy() for s in shards])
              if shards else np.zeros(0, np.uint8))
    bc = BandedCorpus(corpus, info.content_hash, shards, bases,
                      [cache_dir / names[s.shard]["sig"] for s in shards],
                      [cache_dir / names[s.shard]["docs"] for s in shards],
                      [cache_dir / names[s.shard]["bands"] for s in shards],
                      status, cfg.num_perm, n_shards_cached=len(shards) - sum(s.content_hash in todo for s in shards),
                      n_shards_computed=len(todo))
    log.info("bands of %s: %d shards computed, %d from cache", corpus, bc.n_shards_computed, bc.n_shards_cached)
    return bc


@dataclasses.dataclass
class CorpusSignatures:
    corpus: str
    content_hash: str
    sigs: Signatures
    n_shards_cached: int
    n_shards_computed: int


def build_signatures(store: Store, corpus: str, cfg: DedupConfig, progress: bool = True) -> CorpusSignatures:
    """All signatures of a corpus in memory (small corpora, tests, notebooks); the analyses do not use it."""
    bc = build_bands(store, corpus, cfg, progress)
    docs = np.arange(bc.n_docs, dtype=np.int64)
    cols = bc.columns(docs, ["doc_id", "source_doc_id", "n_shingles"]) if bc.n_docs else {}
    pos, row = bc.locate(docs)
    shard_no = np.array([s.shard for s in bc.shards], dtype=np.int32)
    sigs = Signatures(doc_id=np.asarray(cols.get("doc_id", []), dtype=str),
                      source_doc_id=np.asarray(cols.get("source_doc_id", []), dtype=str),
                      shard=shard_no[pos] if len(docs) else np.zeros(0, np.int32), row=row.astype(np.int32),
                      status=bc.status, n_shingles=np.asarray(cols.get("n_shingles", []), dtype=np.int64),
                      signatures=bc.signatures(docs))
    return CorpusSignatures(corpus, bc.content_hash, sigs, bc.n_shards_cached, bc.n_shards_computed)

