"""Reduce: candidate pairs from equal (band, key) buckets in one out-of-core DuckDB query, their
verification by signature Jaccard estimate, and connected-component clusters."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from corpora.store import atomic_path
from stats.dedup.bands import BandedCorpus
from stats.dedup.config import DedupConfig


# ---------------------------------------------------------------------------------------------- candidates
def _duckdb(cfg: DedupConfig, tmp_dir: Path | None):
    """A DuckDB connection for one grouping: `memory_limit`, and spilling to `tmp_dir` (None: no spilling)."""
    import duckdb

    if tmp_dir is not None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"memory_limit": cfg.memory_limit,
                                 "temp_directory": str(tmp_dir) if tmp_dir is not None else "",
                                 "threads": cfg.threads or os.cpu_count() or 1,
                                 "preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false")
    return con


def _band_view(con, name: str, files: list[tuple[str, int]]) -> None:
    """View `name`(band, key, doc) over band files, `doc` = the file's base + row (paths never in SQL text)."""
    paths = sorted({p for p, _ in files})
    con.register(f"{name}_bases", pa.table({"filename": [p for p, _ in files],
                                            "base": pa.array([b for _, b in files], pa.int64())}))
    if paths:
        con.read_parquet(paths, filename=True).create_view(f"{name}_raw")
    else:
        con.execute(f"CREATE TEMP VIEW {name}_raw AS SELECT NULL::SMALLINT AS band, NULL::BIGINT AS key, "
                    "NULL::INTEGER AS row, NULL::VARCHAR AS filename WHERE false")
    con.execute(f"CREATE TEMP VIEW {name} AS SELECT r.band, r.key, r.row + f.base AS doc "
                f"FROM {name}_raw r JOIN {name}_bases f USING (filename)")


def find_candidates(files: list[tuple[str, int]], out_path: Path, cfg: DedupConfig, tmp_dir: Path,
                    against_files: list[tuple[str, int]] | None = None) -> dict:
    """Reduce: candidate pairs (i, j) of documents sharing a (band, key) bucket, written to `out_path`.

    One DuckDB query over every band file (`files`: (path, base) per shard), out of core: the GROUP BY,
    the join and the DISTINCT spill to `tmp_dir` beyond `cfg.memory_limit`. Within a corpus i < j;
    `against_files` given: i in `files`, j in `against_files`. A bucket of more than `cfg.max_bucket`
    documents is not expanded into all its pairs: each member is paired with the bucket's first document
    only (counted in the returned `n_capped_buckets`, `n_docs_in_capped_buckets`)."""
    con = _duckdb(cfg, tmp_dir)
    try:
        _band_view(con, "a", files)
        if against_files is None:
            con.execute("CREATE TEMP TABLE bk AS SELECT band, key, count(*) AS n, min(doc) AS rep "
                        "FROM a GROUP BY band, key HAVING count(*) > 1")
            query = """
                WITH m AS (SELECT a.band, a.key, a.doc, bk.n, bk.rep FROM a JOIN bk USING (band, key)),
                     s AS (SELECT band, key, doc FROM m WHERE n <= $cap)
                SELECT DISTINCT i, j FROM (
                    SELECT x.doc AS i, y.doc AS j FROM s x JOIN s y
                        ON x.band = y.band AND x.key = y.key AND x.doc < y.doc
                    UNION ALL
                    SELECT rep AS i, doc AS j FROM m WHERE n > $cap AND doc <> rep)"""
        else:
            _band_view(con, "b", against_files)
            con.execute("CREATE TEMP TABLE bk AS SELECT b.band, b.key, count(*) AS n, min(b.doc) AS rep "
                        "FROM b SEMI JOIN a USING (band, key) GROUP BY b.band, b.key")
            query = """
                WITH m AS (SELECT a.doc AS i, bk.band, bk.key, bk.n, bk.rep FROM a JOIN bk USING (band, key))
                SELECT DISTINCT i, j FROM (
                    SELECT m.i, b.doc AS j FROM m JOIN b USING (band, key) WHERE m.n <= $cap
                    UNION ALL
                    SELECT i, rep AS j FROM m WHERE n > $cap)"""
        [(n_capped, n_in_capped)] = con.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM bk WHERE n > $cap", {"cap": cfg.max_bucket}).fetchall()
        reader = con.sql(query, params={"cap": cfg.max_bucket}).to_arrow_reader(1 << 17)
        n = 0
        schema = pa.schema([("i", pa.int64()), ("j", pa.int64())])
        with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as w:
            for batch in reader:
                w.write_batch(batch.cast(schema) if batch.schema != schema else batch)
                n += batch.num_rows
    finally:
        con.close()
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return {"n_candidates": n, "n_capped_buckets": int(n_capped), "n_docs_in_capped_buckets": int(n_in_capped)}


def verify_candidates(cand_path: Path, left: BandedCorpus, right: BandedCorpus, cfg: DedupConfig,
                      progress: bool = False, batch_pairs: int = 1 << 16
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs whose signature Jaccard estimate is >= threshold: (i, j, estimate), sorted.

    Reads the candidates in batches and the two signatures of each pair from the memory-mapped shard
    files; memory is one batch (batch_pairs x num_perm x 8 bytes) plus the pairs kept."""
    pf = pq.ParquetFile(cand_path)
    pi, pj, pe = [], [], []
    bar = tqdm(total=pf.metadata.num_rows, desc="verify", unit="pair", disable=not progress, mininterval=1.0)
    for batch in pf.iter_batches(batch_size=batch_pairs, columns=["i", "j"]):
        i = batch.column("i").to_numpy()
        j = batch.column("j").to_numpy()
        est = np.count_nonzero(left.signatures(i) == right.signatures(j), axis=1) / cfg.num_perm
        keep = est >= cfg.threshold
        pi.append(i[keep]), pj.append(j[keep]), pe.append(est[keep])
        bar.update(len(i))
    bar.close()
    if not pi:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    i, j, e = np.concatenate(pi), np.concatenate(pj), np.concatenate(pe)
    order = np.lexsort((j, i))
    return i[order], j[order], e[order]


def build_clusters(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cluster label per item: connected components of the pair graph (scipy.sparse.csgraph)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]
