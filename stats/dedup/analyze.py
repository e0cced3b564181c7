"""The analyses: near-duplicate clusters inside a corpus (`analyze_corpus`), matches against another corpus
(`analyze_against`) and, for a synthetic corpus, each document's similarity to its own source document.
Each writes its result tables through the store."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from corpora.results import declare
from corpora.store import CorpusInfo, Store
from stats.dedup.bands import BandedCorpus, build_bands
from stats.dedup.candidates import _duckdb, build_clusters, find_candidates, verify_candidates
from stats.dedup.config import SKIP_REASONS, STATUS_EMPTY, STATUS_TOO_SHORT, DedupConfig


log = logging.getLogger(__name__)

_PARAMS = {"threshold": "float", "num_perm": "int", "ngram": "int", "seed": "int", "config": "json DedupConfig"}
declare("dup_clusters", {
    "corpus": "str", "cluster_id": "str 'shard:row' of the representative", "representative_doc_id": "str",
    "doc_id": "str", "shard": "int", "row": "int", "cluster_size": "int", "is_representative": "bool",
    "jaccard_to_representative": "float, signature estimate", "n_shingles": "int", **_PARAMS},
    "One row per document in a near-duplicate cluster of one corpus; part <corpus>__<result key>.")
declare("dup_pairs", {
    "corpus": "str", "doc_id": "str", "shard": "int", "row": "int", "against": "str", "against_doc_id": "str",
    "against_shard": "int", "against_row": "int", "mode": "str within|across", "jaccard_est": "float",
    **_PARAMS},
    "One row per verified near-duplicate pair, within a corpus or across two.")
_SUMMARY_WITHIN = {"n_clusters": "int", "n_docs_in_clusters": "int", "n_duplicates": "int", "dup_rate": "float",
                   "largest_cluster": "int", "map_s": "float", "candidates_s": "float", "verify_s": "float"}
_SUMMARY_ACROSS = {"n_against_docs": "int", "n_against_hashed": "int", "n_with_match": "int",
                   "share_with_match": "float", "against_content_hash": "str"}
_SUMMARY_SOURCE = {"n_source_found": "int", "n_source_missing": "int", "source_jaccard_mean": "float",
                   "source_jaccard_p10": "float", "source_jaccard_median": "float", "source_jaccard_p90": "float",
                   "source_share_near_dup": "float"}
declare("dup_summary", {
    "corpus": "str", "against": "str, null within", "mode": "str within|across", "n_docs": "int",
    "n_docs_hashed": "int", "n_empty": "int", "n_too_short": "int", "n_pairs": "int", "content_hash": "str",
    "bands": "int", "rows_per_band": "int", "max_bucket": "int", "n_candidates": "int", "n_capped_buckets": "int",
    "n_docs_in_capped_buckets": "int", **_PARAMS, "elapsed_s": "float"},
    "One row per analysis. Its columns vary by design: the cluster counts only within one corpus, the match "
    "counts only across two, the source similarity only for a synthetic corpus.",
    optional={**_SUMMARY_WITHIN, **_SUMMARY_ACROSS, **_SUMMARY_SOURCE})
declare("dup_skipped", {"corpus": "str", "doc_id": "str", "shard": "int", "row": "int",
                        "reason": "str empty|too_short", "ngram": "int"},
        "One row per document the analysis could not hash (too few words for one shingle).")
declare("dup_source", {"corpus": "str", "doc_id": "str", "source_doc_id": "str", "source_corpus": "str",
                       "jaccard_est": "float, null when the source document is missing", "num_perm": "int",
                       "ngram": "int", "seed": "int"},
        "One row per synthetic document: its estimated Jaccard similarity to the source document it came from.")

# ---------------------------------------------------------------------------------------------- analyses
def _work_dir(store: Store, corpus: str, cfg: DedupConfig, against: str | None = None) -> Path:
    return store.artifact_dir("dedup_work", corpus) / f"{against or corpus}__{cfg.result_key}"


@dataclasses.dataclass
class DedupReport:
    summary: dict
    clusters: pl.DataFrame  # dup_clusters rows (within) or empty
    pairs: pl.DataFrame  # dup_pairs rows
    source: pl.DataFrame | None  # dup_source rows for synthetic corpora
    examples: list[dict]  # largest clusters (within) or matches (across), with snippets
    candidates_path: Path | None = None  # the unverified candidate pairs (global indices), kept for inspection

    def as_dict(self) -> dict:
        return {"summary": self.summary, "examples": self.examples}


def _params(cfg: DedupConfig) -> dict:
    return {"threshold": cfg.threshold, "num_perm": cfg.num_perm, "ngram": cfg.ngram, "seed": cfg.seed,
            "config": cfg.as_json()}


def _skip_counts(bc: BandedCorpus) -> dict:
    return {"n_docs": bc.n_docs, "n_docs_hashed": int(bc.ok.sum()),
            "n_empty": int((bc.status == STATUS_EMPTY).sum()),
            "n_too_short": int((bc.status == STATUS_TOO_SHORT).sum())}


def _shard_row(bc: BandedCorpus, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos, row = bc.locate(docs)
    shard_no = np.array([s.shard for s in bc.shards], dtype=np.int32)
    return (shard_no[pos] if len(docs) else np.zeros(0, np.int32)), row.astype(np.int32)


def _write_skipped(store: Store, bc: BandedCorpus, cfg: DedupConfig) -> None:
    bad = np.flatnonzero(~bc.ok)
    doc_id = bc.columns(bad, ["doc_id"])["doc_id"] if len(bad) else np.zeros(0, dtype=object)
    shard, row = _shard_row(bc, bad)
    df = pl.DataFrame({"corpus": [bc.corpus] * len(bad), "doc_id": list(doc_id), "shard": shard, "row": row,
                       "reason": [SKIP_REASONS[int(x)] for x in bc.status[bad]],
                       "ngram": [cfg.ngram] * len(bad)},
                      schema={"corpus": pl.String, "doc_id": pl.String, "shard": pl.Int32, "row": pl.Int32,
                              "reason": pl.String, "ngram": pl.Int64})
    store.put_result("dup_skipped", f"{bc.corpus}__n{cfg.ngram}", df)


def read_snippets(store: Store, corpus: str, shard: np.ndarray, row: np.ndarray, n_chars: int = 160) -> list[str]:
    """The first characters of a few documents, addressed by (shard, row); each shard is read once."""
    paths = {s.shard: s.path for s in store.shards(corpus)}
    texts: dict[tuple[int, int], str] = {}
    for sh in sorted(set(shard.tolist())):
        wanted = sorted({int(r) for s_, r in zip(shard.tolist(), row.tolist()) if s_ == sh})
        column = pq.read_table(paths[sh], columns=["text"]).column("text").take(pa.array(wanted))
        texts.update({(sh, r): t or "" for r, t in zip(wanted, column.to_pylist())})
    return [" ".join(texts[(int(sh), int(r))].split())[:n_chars] for sh, r in zip(shard.tolist(), row.tolist())]


def _band_summary(cfg: DedupConfig, cand: dict) -> dict:
    bands, rows = cfg.bands_rows
    return {"bands": bands, "rows_per_band": rows, "max_bucket": cfg.max_bucket, **cand}


def _capped_note(summary: dict) -> str:
    if not summary.get("n_capped_buckets"):
        return ""
    return (f"; {summary['n_capped_buckets']} LSH buckets had more than {summary['max_bucket']} documents "
            f"({summary['n_docs_in_capped_buckets']} in all): their members were compared with one "
            "representative each, not with each other")


def analyze_corpus(store: Store, corpus: str, cfg: DedupConfig, progress: bool = True,
                   n_examples: int = 5) -> DedupReport:
    """Near-duplicate clusters inside one corpus; writes dup_clusters, dup_pairs, dup_summary."""
    t0 = time.perf_counter()
    bc = build_bands(store, corpus, cfg, progress)
    t_map = time.perf_counter()
    work = _work_dir(store, corpus, cfg)
    cand = find_candidates(bc.band_files(), work / "candidates.parquet", cfg, store.tmp_dir("dedup_spill"))
    t_cand = time.perf_counter()
    i, j, est = verify_candidates(work / "candidates.parquet", bc, bc, cfg, progress)
    t_verify = time.perf_counter()
    # clusters over the documents that have a verified pair; memory grows with the pairs, not the corpus
    nodes, inv = np.unique(np.concatenate([i, j]), return_inverse=True)
    labels = build_clusters(len(nodes), inv[:len(i)], inv[len(i):])
    sizes = np.bincount(labels, minlength=len(nodes)) if len(nodes) else np.zeros(0, np.int64)
    # representative = first member in corpus order (smallest global index; nodes ascend)
    uniq, first = np.unique(labels, return_index=True)
    rep = nodes[first[np.searchsorted(uniq, labels)]] if len(nodes) else np.zeros(0, np.int64)
    cols = bc.columns(nodes, ["doc_id", "n_shingles"]) if len(nodes) else {"doc_id": [], "n_shingles": []}
    rep_doc_id = dict(zip(nodes.tolist(), list(cols["doc_id"])))
    shard, row = _shard_row(bc, nodes)
    rep_shard, rep_row = _shard_row(bc, rep)
    est_to_rep = (np.count_nonzero(bc.signatures(nodes) == bc.signatures(rep), axis=1) / cfg.num_perm
                  if len(nodes) else np.zeros(0))
    params = _params(cfg)
    # cluster_id names the representative by position ("shard:row"): doc_ids of exact copies coincide
    clusters = pl.DataFrame({
        "corpus": [corpus] * len(nodes),
        "cluster_id": [f"{a}:{b}" for a, b in zip(rep_shard.tolist(), rep_row.tolist())],
        "representative_doc_id": [rep_doc_id[r] for r in rep.tolist()], "doc_id": list(cols["doc_id"]),
        "shard": shard, "row": row, "cluster_size": sizes[labels].astype(np.int64),
        "is_representative": nodes == rep, "jaccard_to_representative": est_to_rep,
        "n_shingles": np.asarray(cols["n_shingles"], dtype=np.int64),
    }, schema_overrides={"cluster_id": pl.String, "representative_doc_id": pl.String, "doc_id": pl.String}
    ).with_columns(**{k: pl.lit(v) for k, v in params.items()})
    pairs = _pairs_frame(corpus, corpus, "within", bc, i, bc, j, est, params)
    n_clusters = len(uniq)
    n_in = len(nodes)
    counts = _skip_counts(bc)
    summary = {
        "corpus": corpus, "against": None, "mode": "within", **counts,
        "n_clusters": n_clusters, "n_docs_in_clusters": n_in,
        "n_duplicates": n_in - n_clusters,
        "dup_rate": (n_in - n_clusters) / counts["n_docs"] if counts["n_docs"] else 0.0,
        "n_pairs": int(len(est)), "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "content_hash": bc.content_hash, **_band_summary(cfg, cand),
        "map_s": t_map - t0, "candidates_s": t_cand - t_map, "verify_s": t_verify - t_cand,
    }
    source = _source_if_synthetic(store, bc, cfg, progress, summary)
    summary.update(params, elapsed_s=time.perf_counter() - t0, created_at=datetime.now(timezone.utc).isoformat())
    part = f"{corpus}__{cfg.result_key}"
    store.put_result("dup_clusters", part, clusters)
    store.put_result("dup_pairs", f"{corpus}__vs__{corpus}__{cfg.result_key}", pairs)
    store.put_result("dup_summary", f"{corpus}__vs__{corpus}__{cfg.result_key}", pl.DataFrame([summary]))
    _write_skipped(store, bc, cfg)
    examples = []
    if n_clusters:
        top = (clusters.filter(pl.col("is_representative")).sort(["cluster_size", "shard", "row"],
                                                                  descending=[True, False, False]).head(n_examples))
        snippets = read_snippets(store, corpus, top["shard"].to_numpy(), top["row"].to_numpy())
        examples = [{"cluster_id": c, "cluster_size": int(n), "snippet": t}
                    for c, n, t in zip(top["cluster_id"], top["cluster_size"], snippets)]
    return DedupReport(summary, clusters, pairs, source, examples, work / "candidates.parquet")


def analyze_against(store: Store, corpus: str, against: str, cfg: DedupConfig, progress: bool = True,
                    n_examples: int = 5) -> DedupReport:
    """Share of `corpus` documents with a near-duplicate in `against`; writes dup_pairs, dup_summary."""
    t0 = time.perf_counter()
    if against == corpus:
        raise ValueError(f"--against {against} is the corpus itself; leave out --against for the "
                         "near-duplicates inside one corpus")
    store.corpus(against)  # fail before hashing anything
    a = build_bands(store, corpus, cfg, progress)
    b = build_bands(store, against, cfg, progress)
    work = _work_dir(store, corpus, cfg, against)
    cand = find_candidates(a.band_files(), work / "candidates.parquet", cfg, store.tmp_dir("dedup_spill"),
                           against_files=b.band_files())
    i, j, est = verify_candidates(work / "candidates.parquet", a, b, cfg, progress)
    params = _params(cfg)
    pairs = _pairs_frame(corpus, against, "across", a, i, b, j, est, params)
    n_with = int(len(np.unique(i)))
    counts = _skip_counts(a)
    summary = {
        "corpus": corpus, "against": against, "mode": "across", **counts,
        "n_against_docs": b.n_docs, "n_against_hashed": int(b.ok.sum()),
        "n_with_match": n_with,
        "share_with_match": n_with / counts["n_docs_hashed"] if counts["n_docs_hashed"] else 0.0,
        "n_pairs": int(len(est)), "content_hash": a.content_hash, "against_content_hash": b.content_hash,
        **_band_summary(cfg, cand),
    }
    source = _source_if_synthetic(store, a, cfg, progress, summary)
    summary.update(params, elapsed_s=time.perf_counter() - t0, created_at=datetime.now(timezone.utc).isoformat())
    part = f"{corpus}__vs__{against}__{cfg.result_key}"
    store.put_result("dup_pairs", part, pairs)
    store.put_result("dup_summary", part, pl.DataFrame([summary]))
    _write_skipped(store, a, cfg)
    examples = []
    if len(est):
        # the best match of each matched document, highest estimates first
        best = pairs.sort("jaccard_est", descending=True).unique("doc_id", keep="first", maintain_order=True)
        best = best.head(n_examples)
        sa = read_snippets(store, corpus, best["shard"].to_numpy(), best["row"].to_numpy())
        sb = read_snippets(store, against, best["against_shard"].to_numpy(), best["against_row"].to_numpy())
        examples = [{"doc_id": d, "against_doc_id": o, "jaccard_est": float(e), "snippet": x, "against_snippet": y}
                    for d, o, e, x, y in zip(best["doc_id"], best["against_doc_id"], best["jaccard_est"], sa, sb)]
    return DedupReport(summary, pl.DataFrame(), pairs, source, examples, work / "candidates.parquet")


def _pairs_frame(corpus, against, mode, a: BandedCorpus, i, b: BandedCorpus, j, est, params) -> pl.DataFrame:
    ida = a.columns(i, ["doc_id"])["doc_id"] if len(i) else []
    idb = b.columns(j, ["doc_id"])["doc_id"] if len(j) else []
    sa, ra = _shard_row(a, i)
    sb, rb = _shard_row(b, j)
    return pl.DataFrame({
        "corpus": [corpus] * len(i), "doc_id": list(ida), "shard": sa, "row": ra,
        "against": [against] * len(i), "against_doc_id": list(idb),
        "against_shard": sb, "against_row": rb, "mode": [mode] * len(i),
        "jaccard_est": np.asarray(est, dtype=np.float64),
    }, schema_overrides={"corpus": pl.String, "doc_id": pl.String, "against": pl.String,
                         "against_doc_id": pl.String, "mode": pl.String}).with_columns(
        **{k: pl.lit(v) for k, v in params.items()})


# ---------------------------------------------------------------------------------------------- source similarity
def find_source_corpora(store: Store, info: CorpusInfo) -> list[str]:
    """The corpus a synthetic corpus was generated from (meta['source']), else every natural corpus."""
    src = (info.meta or {}).get("source")
    if isinstance(src, str) and store.has_corpus(src):
        return [src]
    if src:
        log.warning("source corpus %r of %s is not in the store; searching all natural corpora", src, info.name)
    return [c.name for c in store.corpora() if c.kind == "natural" and c.name != info.name]


def _docs_view(con, name: str, files: list[tuple[str, int]]) -> None:
    con.register(f"{name}_bases", pa.table({"filename": [p for p, _ in files],
                                            "base": pa.array([b for _, b in files], pa.int64())}))
    con.read_parquet(sorted({p for p, _ in files}), filename=True).create_view(f"{name}_raw")
    con.execute(f"CREATE TEMP VIEW {name} AS SELECT r.* EXCLUDE (filename), r.row + f.base AS doc "
                f"FROM {name}_raw r JOIN {name}_bases f USING (filename)")


def compute_source_similarity(store: Store, bc: BandedCorpus, cfg: DedupConfig,
                              progress: bool = True) -> pl.DataFrame:
    """Estimated Jaccard between each synthetic document and its own `source_doc_id` document.

    The doc_id match is one DuckDB join over the document files (out of core); the estimates read the
    two signatures of each match from the memory-mapped shard files, in batches."""
    frames = []
    pending_files = bc.docs_files()
    found = np.zeros(0, np.int64)
    if not bc.shards:
        return _source_frame(bc.corpus, [], cfg)
    for name in find_source_corpora(store, store.corpus(bc.corpus)):
        src = build_bands(store, name, cfg, progress)
        if not src.shards:
            continue
        spill = store.tmp_dir("dedup_spill")
        con = _duckdb(cfg, spill)
        try:
            _docs_view(con, "s", pending_files)
            _docs_view(con, "t", src.docs_files())
            con.register("done", pa.table({"doc": pa.array(found, pa.int64())}))
            # first occurrence of each source doc_id (doc_ids are content hashes, exact copies share one)
            reader = con.sql("""
                WITH t1 AS (SELECT doc_id, min(doc) AS j FROM t WHERE status = 0 GROUP BY doc_id)
                SELECT s.doc AS i, t1.j FROM s JOIN t1 ON s.source_doc_id = t1.doc_id
                WHERE s.status = 0 AND s.source_doc_id <> '' AND s.doc NOT IN (SELECT doc FROM done)
                ORDER BY s.doc""").to_arrow_reader(1 << 16)
            for batch in reader:
                i, j = batch.column("i").to_numpy(), batch.column("j").to_numpy()
                est = np.count_nonzero(bc.signatures(i) == src.signatures(j), axis=1) / cfg.num_perm
                frames.append(pl.DataFrame({"doc": i, "source_corpus": [name] * len(i), "jaccard_est": est},
                                           schema_overrides={"source_corpus": pl.String}))
                found = np.concatenate([found, i])
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)
    return _source_frame(bc.corpus, frames, cfg, bc)


def _source_frame(corpus: str, frames: list[pl.DataFrame], cfg: DedupConfig, bc: BandedCorpus | None = None
                  ) -> pl.DataFrame:
    rows = []
    if bc is not None:  # every document that names a source, matched or not
        for k, (path, base) in enumerate(bc.docs_files()):
            t = pl.read_parquet(path, columns=["row", "doc_id", "source_doc_id"]).filter(
                pl.col("source_doc_id") != "")
            rows.append(t.select(pl.lit(corpus).alias("corpus"), "doc_id", "source_doc_id",
                                 (pl.col("row").cast(pl.Int64) + base).alias("doc")))
    base = (pl.concat(rows) if rows else pl.DataFrame(schema={"corpus": pl.String, "doc_id": pl.String,
                                                              "source_doc_id": pl.String, "doc": pl.Int64}))
    match = (pl.concat(frames) if frames else
             pl.DataFrame(schema={"doc": pl.Int64, "source_corpus": pl.String, "jaccard_est": pl.Float64}))
    return (base.join(match, on="doc", how="left").sort("doc").drop("doc")
            .with_columns(num_perm=pl.lit(cfg.num_perm), ngram=pl.lit(cfg.ngram), seed=pl.lit(cfg.seed)))


def _source_if_synthetic(store: Store, bc: BandedCorpus, cfg: DedupConfig, progress: bool,
                         summary: dict) -> pl.DataFrame | None:
    info = store.corpus(bc.corpus)
    if info.kind != "synthetic":
        return None
    df = compute_source_similarity(store, bc, cfg, progress)
    j = df["jaccard_est"].drop_nulls()
    summary.update({
        "n_source_found": len(j), "n_source_missing": len(df) - len(j),
        "source_jaccard_mean": float(j.mean()) if len(j) else None,
        "source_jaccard_p10": float(j.quantile(0.1)) if len(j) else None,
        "source_jaccard_median": float(j.median()) if len(j) else None,
        "source_jaccard_p90": float(j.quantile(0.9)) if len(j) else None,
        "source_share_near_dup": float((j >= cfg.threshold).mean()) if len(j) else None,
    })
    store.put_result("dup_source", f"{bc.corpus}__{cfg.signature_key}", df)
    return df

