"""The catalog: `catalog.duckdb`'s tables, the connections that read and write it, and the views over shards
and result parts.

A writer (holding the writer lock) opens the file for one short transaction at a time and waits while a
reader has it open for a moment. A reader copies the catalog tables into an in-memory DuckDB and closes the
file before its query runs, so a long query never blocks a writer."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from corpora.documents import DOC_SCHEMA
from corpora.errors import StoreError
from corpora.lock import _held

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.duckdb"

# fullmatch, not match with "$": "$" also matches before a final newline, so "g\n" would pass as a name
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")

_CATALOG_DDL = """
CREATE TABLE IF NOT EXISTS store_info (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS corpora (
    corpus VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, synthetic_type VARCHAR, role VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL, meta VARCHAR);
CREATE TABLE IF NOT EXISTS shards (
    corpus VARCHAR NOT NULL, shard INTEGER NOT NULL, file VARCHAR NOT NULL, n_docs BIGINT NOT NULL,
    n_bytes BIGINT NOT NULL, content_hash VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (corpus, shard));
CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id VARCHAR PRIMARY KEY, corpus VARCHAR NOT NULL, started_at TIMESTAMP, finished_at TIMESTAMP,
    inputs VARCHAR, n_docs BIGINT, n_duplicates BIGINT, n_rejects BIGINT, rejects_by_reason VARCHAR,
    status VARCHAR);
CREATE TABLE IF NOT EXISTS ingest_files (
    corpus VARCHAR NOT NULL, file VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL, run_id VARCHAR,
    n_docs BIGINT, n_duplicates BIGINT, n_rejects BIGINT, finished_at TIMESTAMP,
    PRIMARY KEY (corpus, file, fingerprint));
CREATE TABLE IF NOT EXISTS rejects (
    run_id VARCHAR, corpus VARCHAR, source VARCHAR, reason VARCHAR, detail VARCHAR);
"""


def _is_lock_conflict(e: Exception) -> bool:
    """DuckDB's error when another process has the catalog file open in a conflicting mode."""
    msg = str(e)
    return "Conflicting lock" in msg or "Could not set lock" in msg


def _catalog_error(path: Path, e: Exception) -> StoreError:
    """A one-line StoreError for a catalog that cannot be opened, read or written for a reason other than
    a lock; the cause decides the advice (moving a catalog away is only right when it is damaged)."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, PermissionError) or any(m in first for m in ("Permission denied", "Operation not permitted",
                                                                  "Read-only file system")):
        return StoreError(f"cannot write {path} ({first}); check the permissions and attributes of the store "
                          "directory and its files (`ls -l`, `lsattr`: an immutable or read-only file); the "
                          "store is left as it was before this write")
    if "No space left" in first or "out of disk space" in first.lower():
        return StoreError(f"cannot write {path}: no space left on the device; free some space and re-run "
                          "(the store is left as it was before this write)")
    return StoreError(f"cannot open {path} ({first}); the catalog is damaged (cut short or not a DuckDB file): "
                      "restore it from a backup, or move it away and re-ingest")


@dataclasses.dataclass(frozen=True)
class CorpusInfo:
    name: str
    kind: str
    synthetic_type: str | None
    role: str
    created_at: Any
    meta: dict
    n_shards: int
    n_docs: int
    n_bytes: int
    content_hash: str  # changes whenever any shard changes; the key for cached analyses

    @property
    def is_train(self) -> bool:
        return self.role in ("train", "both")

    @property
    def is_test(self) -> bool:
        return self.role in ("test", "both")


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    corpus: str
    shard: int
    path: Path
    n_docs: int
    n_bytes: int
    content_hash: str


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _read_part(path: Path) -> pl.DataFrame:
    """A result part read through one open file: a writer may atomically replace the path meanwhile, and a
    reader that opened the path twice (footer, then data) could mix the old file with the new one."""
    with open(path, "rb") as f:
        return pl.read_parquet(f)


_REPORTED: set[str] = set()  # damaged result parts already reported by this process


def _report_damaged(path: Path, why: str) -> None:
    if str(path) not in _REPORTED:
        _REPORTED.add(str(path))
        log.warning("skipping damaged result part %s (%s); delete it or re-run the step that wrote it", path, why)


def _usable_parts(paths: list[Path], deep: bool = False) -> list[Path]:
    """The result parts that look like whole Parquet files (size and the PAR1 magic at both ends; with
    `deep`, a footer pyarrow can read); each other one is reported once and left out, so one damaged
    part (a 0-byte file, a file cut short) does not stop every query."""
    usable = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                head = f.read(4)
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(size - 4, 0))
                tail = f.read(4)
            if size < 12 or head != b"PAR1" or tail != b"PAR1":
                _report_damaged(p, f"{size} bytes, not a whole Parquet file")
                continue
            if deep:
                pq.read_metadata(p)
        except (OSError, pa.ArrowException) as e:
            _report_damaged(p, str(e).splitlines()[0] if str(e) else type(e).__name__)
            continue
        usable.append(p)
    return usable


def _create_result_view(con: duckdb.DuckDBPyConnection, create: str, table: str, parts: list[Path]) -> None:
    lst = "[" + ", ".join(_sql_str(p) for p in parts) + "]"
    con.execute(f"{create} {table} AS SELECT * FROM read_parquet({lst}, union_by_name=true)")


@contextlib.contextmanager
def connect(root: Path, write: bool = False,
            views: tuple[str, ...] | None = ()) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection for one short transaction (write) or over a snapshot of the catalog (read).

    `views`: which views to (re)create: () none, None all, else the named ones ('documents' or result
    tables). A writer persists them in the catalog; a reader makes temporary ones with this store's
    paths (so a moved store still reads)."""
    if not write:
        with snapshot(root, skip=("rejects",)) as con:  # library reads never need the rejects
            refresh_views(con, root, temp=True, only=views)
            yield con
        return
    assert _held(root), "catalog writes need the writer lock"
    con = open_catalog(root, write=True)
    try:
        con.execute(_CATALOG_DDL)
        con.execute("BEGIN")
        try:
            yield con
            refresh_views(con, root, temp=False, only=views)
            con.execute("COMMIT")
        except BaseException:
            # a failed COMMIT (disk full, an immutable file) has already ended the transaction: a second
            # error from ROLLBACK ("no transaction is active") must not hide the first
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
    except (duckdb.IOException, duckdb.FatalException, duckdb.TransactionException) as e:
        raise _catalog_error(root / CATALOG_FILE, e) from None
    finally:
        with contextlib.suppress(duckdb.Error):
            con.close()


def open_catalog(root: Path, write: bool) -> duckdb.DuckDBPyConnection:
    """Open catalog.duckdb, waiting while another process has it open for a moment.

    A writer waits without limit (it holds the writer lock, so the other side is a reader taking its
    snapshot, or a tool outside synthmix): dying halfway would be worse than waiting."""
    path = root / CATALOG_FILE
    started, warned = time.monotonic(), False
    while True:
        try:
            if write:
                return duckdb.connect(str(path))
            con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                                      "autoload_known_extensions": False})
            try:
                con.execute(f"ATTACH {_sql_str(path)} AS catalog_file (READ_ONLY)")
            except BaseException:
                con.close()
                raise
            return con
        except duckdb.Error as e:
            if not _is_lock_conflict(e):
                raise _catalog_error(path, e) from None
            waited = time.monotonic() - started
            if not write and waited > 120:
                raise StoreError(f"cannot read {path}: another process has held it open for {waited:.0f}s; "
                                 "find it with `fuser` and stop it") from None
            if waited > 10 and not warned:
                log.warning("waiting for another process to close %s", path)
                warned = True
            time.sleep(min(0.01 * 2 ** min(waited, 6), 0.5))


@contextlib.contextmanager
def snapshot(root: Path, skip: tuple[str, ...] = ()) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB holding a copy of the catalog tables (those in `skip` left empty); the
    file is closed before use. The copy costs time in proportion to the catalog, not the corpora."""
    con = open_catalog(root, write=False)
    try:
        try:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'catalog_file'").fetchall()]
            for t in tables:
                limit = " LIMIT 0" if t in skip else ""
                con.execute(f'CREATE TABLE memory.main."{t}" AS SELECT * FROM catalog_file.main."{t}"{limit}')
            con.execute("DETACH catalog_file")
        except duckdb.Error as e:  # e.g. a catalog cut short: its pages cannot be read
            raise _catalog_error(root / CATALOG_FILE, e) from None
        if not tables:  # an empty catalog file (a store created by another version): empty tables
            con.execute(_CATALOG_DDL)
        yield con
    finally:
        con.close()


def refresh_views(con: duckdb.DuckDBPyConnection, root: Path, temp: bool, only: tuple[str, ...] | None) -> None:
    """(Re)create `documents` and one view per result table (all, or those in `only`)."""
    if only == ():
        return
    create = "CREATE OR REPLACE TEMP VIEW" if temp else "CREATE OR REPLACE VIEW"
    if only is None or "documents" in only:
        refresh_documents_view(con, root, create)
    results = root / "results"
    existing = {r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND temporary = ?", [temp]).fetchall()}
    tables = sorted(p.name for p in results.iterdir()) if results.exists() else []
    for table in tables if only is None else [t for t in only if t != "documents"]:
        if not _NAME_RE.fullmatch(table):  # a folder someone made by hand under results/
            continue
        # a writer (in a transaction, which one failed statement would abort) reads every footer first;
        # a reader tries the cheap check and reads footers only when DuckDB cannot open a part
        parts = _usable_parts(sorted((results / table).glob("*.parquet")), deep=not temp)
        if parts:
            try:
                _create_result_view(con, create, table, parts)
            except duckdb.Error:
                if not temp:
                    raise
                parts = _usable_parts(parts, deep=True)
                if parts:
                    _create_result_view(con, create, table, parts)
        if not parts and table in existing:
            con.execute(f"DROP VIEW IF EXISTS {table}")
    if only is None:
        for stale in existing - set(tables) - {"documents"}:
            con.execute(f"DROP VIEW IF EXISTS {stale}")


def refresh_documents_view(con: duckdb.DuckDBPyConnection, root: Path, create: str) -> None:
    files = [r[0] for r in con.execute("SELECT file FROM shards ORDER BY corpus, shard").fetchall()]
    if files:
        lst = "[" + ", ".join(_sql_str(root / f) for f in files) + "]"
        # one scan over every shard; the corpus is the shard's folder name (shards/<corpus>/<n>.parquet)
        con.execute(
            f"{create} documents AS SELECT regexp_extract(filename, '/shards/([^/]+)/[0-9]+[.]parquet$', 1)"
            f" AS corpus, * EXCLUDE (filename) FROM read_parquet({lst}, filename = true)"
        )
    else:
        cols = ", ".join(f"NULL::{'BIGINT' if f.type == pa.int64() else 'VARCHAR'} AS {f.name}"
                         for f in DOC_SCHEMA)
        con.execute(f"{create} documents AS SELECT NULL::VARCHAR AS corpus, {cols} WHERE false")
