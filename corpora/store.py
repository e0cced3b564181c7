"""The corpus store: a DuckDB catalog over zstd Parquet shards, and result tables beside them.

This is the only module that knows the store's layout::

    STORE/
      catalog.duckdb                 catalog tables + views (documents, one view per result table)
      shards/<corpus>/<n>.parquet    one document per row (DOC_SCHEMA)
      results/<table>/<part>.parquet one Parquet file per result part (a view <table> unions them)
      artifacts/<kind>/<name>/       files a step owns (token streams, checkpoints, tokenizers, caches)
      .writer.lock                   held (flock) by the one writer; holds its PID

Writers take the lock; readers never do. A writer opens the catalog for one short transaction at a
time and, when a reader has the file open for a moment, waits for it (it never fails halfway). A reader
copies the catalog tables into an in-memory DuckDB (milliseconds) and closes the file before running its
query, so a long query never blocks a writer. Queries from users (`Store.sql`) run on that copy with
file access limited to the store's own shards and result parts, settings locked and only SELECT (or
EXPLAIN of a SELECT) accepted. Every file appears whole or not at all (written to a temporary name,
then renamed), and the catalog only lists files that are complete, so a killed writer leaves the store
consistent; the next writer removes what it left behind and marks its ingest run `interrupted`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpora import results
from corpora.documents import DOC_SCHEMA, compute_doc_id, make_documents, normalize_text  # noqa: F401 (API)

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.duckdb"
LOCK_FILE = ".writer.lock"
KINDS = ("natural", "synthetic")
ROLES = ("train", "test", "both")
# Text per Parquet row group of a shard (append_shard, ingest): the unit a mixture's draw reads, so its I/O
# follows its token budget rather than the corpus size (train.data); small enough that a 5M-token mixture
# spreads over dozens of row groups.
ROW_GROUP_BYTES = 1 << 20

# fullmatch, not match with "$": "$" also matches before a final newline, so "g\n" would pass as a name
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
_PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]{0,199}")

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


class StoreError(Exception):
    """A problem with the store that the user can fix; the message says how."""


class UnknownCorpus(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class StoreLocked(StoreError):
    pass


# Roots whose writer lock this process holds: [depth, pid]. The lock is re-entrant within a process, so
# library code may open its own Store on a root its caller already locked (a forked child holds nothing).
_HELD: dict[Path, list] = {}


def _held(root: Path) -> list | None:
    entry = _HELD.get(root)
    return entry if entry is not None and entry[1] == os.getpid() else None


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


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise StoreError(
            f"invalid {what} name {name!r}: use lowercase letters, digits and '_', starting with a letter"
        )
    return name


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def file_hash(path: Path, digest_size: int = 16) -> str:
    """BLAKE2b of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.blake2b(digest_size=digest_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Delete `.NAME.tmp-PID` and `.NAME.old-PID` files or folders beside `path` whose process is gone
    (a writer killed with kill -9): the next run of the same command cleans up after the dead one.
    A live PID's temporaries are left alone (another process may be writing the same output)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:tmp|old)-(\d+)")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for p in siblings:
        m = pattern.fullmatch(p.name)
        if m is None or _pid_alive(int(m[1])):
            continue
        log.warning("removing %s, left by process %s that died while writing %s", p, m[1], path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds. Temporaries
    a killed writer left for the same path are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


class Store:
    """A corpus store directory. Cheap to construct; opens DuckDB only for the duration of a call."""

    def __init__(self, root: str | os.PathLike, *, create: bool = False):
        self.root = Path(root).resolve()
        if "?" in str(self.root):  # DuckDB reads '?' in a file name as the start of connection options
            raise StoreError(f"store path {self.root} contains '?', which DuckDB cannot open; "
                             "rename the directory or pick another --store")
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"store path {self.root} is a file, not a directory; pass --store DIR")
        if not (self.root / CATALOG_FILE).exists():
            if not create:
                raise StoreError(
                    f"no store at {self.root}: run `python -m corpora demo` or `python -m corpora ingest` "
                    "to create one, or pass --store PATH"
                )
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the store directory {self.root} ({e.strerror}); "
                                 "pick a writable --store path") from None
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise StoreError(f"cannot write to the store directory {self.root}; check its permissions "
                                 "or pick another --store path")
            with self.lock(purpose="create store"), self._connect(write=True, views=None) as con:
                con.execute("INSERT OR REPLACE INTO store_info VALUES ('version', '1')")

    # ------------------------------------------------------------------ locking and connections
    @property
    def _lock_depth(self) -> int:
        entry = _held(self.root)
        return entry[0] if entry else 0

    @contextlib.contextmanager
    def writer(self, purpose: str) -> Iterator[None]:
        """Hold the writer lock for a whole command (synth generate, train run, ...): a second writer is
        refused at once with the holder's PID. Library writes inside it re-enter the lock."""
        with self.lock(wait_s=0, purpose=purpose):
            yield

    @contextlib.contextmanager
    def lock(self, wait_s: float = 0.0, purpose: str = "") -> Iterator[None]:
        """Hold the single-writer lock (re-entrant within this process)."""
        if (entry := _held(self.root)) is not None:
            entry[0] += 1
            try:
                yield
            finally:
                entry[0] -= 1
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"cannot take the writer lock {self.root / LOCK_FILE} ({e.strerror}); "
                             "check that the store directory is writable") from None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                    os.close(fd)
                    raise StoreLocked(
                        f"store {self.root} is locked by PID {holder}; wait for that writer to finish "
                        "(readers such as `sql`, `list` and `show` keep working)"
                    ) from None
                time.sleep(0.1)
        # A released lock file is empty; text left in it names a writer that died holding the lock.
        dead = os.pread(fd, 200, 0).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} ({purpose or 'writer'})".encode(), 0)
        _HELD[self.root] = [1, os.getpid()]
        try:
            if dead:
                log.warning("store %s: the last writer (PID %s) died; cleaning up after it", self.root, dead)
                self.recover()
            yield
        finally:
            del _HELD[self.root]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def recover(self) -> None:
        """Clean up after writers that died (kill -9): mark their ingest runs `interrupted` and delete
        their temporary files. Needs the lock, which proves that no other writer is running."""
        assert self._lock_depth, "recover needs the writer lock"
        shutil.rmtree(self.root / "artifacts" / "ingest_tmp", ignore_errors=True)
        self._remove_dead_tmp()
        for pattern in ("shards/*/.staging-*.parquet", "results/*/.*.tmp-*", "artifacts/*/*/.*.tmp-*"):
            for p in self.root.glob(pattern):
                p.unlink(missing_ok=True)
        with self._connect(write=True) as con:
            con.execute("UPDATE ingest_runs SET status = 'interrupted' WHERE status = 'running'")

    def tmp_dir(self, kind: str) -> Path:
        """A fresh folder `tmp/<kind>/<pid>-<random>` for a step's scratch files inside the store (same
        filesystem, so finished files can be renamed into place). Remove it when done; folders of processes
        that died are removed by the next `tmp_dir` call of any step and by `recover`."""
        _check_name(kind, "temporary folder kind")
        self._remove_dead_tmp()
        d = self.root / "tmp" / kind / f"{os.getpid()}-{os.urandom(4).hex()}"
        d.mkdir(parents=True)
        return d

    def _remove_dead_tmp(self) -> None:
        for d in self.root.glob("tmp/*/*"):
            pid = d.name.split("-", 1)[0]
            if not pid.isdigit() or not _pid_alive(int(pid)):
                shutil.rmtree(d, ignore_errors=True)

    def check_outside(self, path: str | os.PathLike, flag: str = "--out", replaces: bool = True) -> Path:
        """`path` resolved (symlinks followed); refused when it lies inside the store, or, when the output
        replaces what is at `path` (`replaces`), when the store lies inside it. Every command that writes
        outside the store calls this first: an export must never overwrite shards, results or the catalog."""
        out = Path(path).resolve()
        inside = out == self.root or self.root in out.parents
        if inside or (replaces and out in self.root.parents):
            where = "inside the store" if inside else "a folder that holds the store"
            raise StoreError(f"{flag} {path} resolves to {out}, {where} {self.root}; write it outside the store")
        return out

    def ingest_tmp_dir(self, run_id: str) -> Path:
        """A fresh folder for an ingest run's temporary parts (removed by `recover` if the run dies)."""
        return self.artifact_dir("ingest_tmp", run_id)

    @contextlib.contextmanager
    def _connect(self, write: bool = False, views: tuple[str, ...] | None = ()) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one short transaction (write) or over a snapshot of the catalog (read).

        `views`: which views to (re)create: () none, None all, else the named ones ('documents' or result
        tables). A writer persists them in the catalog; a reader makes temporary ones with this store's
        paths (so a moved store still reads)."""
        if not write:
            with self._snapshot(skip=("rejects",)) as con:  # library reads never need the rejects
                self._refresh_views(con, temp=True, only=views)
                yield con
            return
        assert self._lock_depth, "catalog writes need the writer lock"
        con = self._open_catalog(write=True)
        try:
            con.execute(_CATALOG_DDL)
            con.execute("BEGIN")
            try:
                yield con
                self._refresh_views(con, temp=False, only=views)
                con.execute("COMMIT")
            except BaseException:
                # a failed COMMIT (disk full, an immutable file) has already ended the transaction: a second
                # error from ROLLBACK ("no transaction is active") must not hide the first
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
        except (duckdb.IOException, duckdb.FatalException, duckdb.TransactionException) as e:
            raise _catalog_error(self.root / CATALOG_FILE, e) from None
        finally:
            with contextlib.suppress(duckdb.Error):
                con.close()

    def _open_catalog(self, write: bool) -> duckdb.DuckDBPyConnection:
        """Open catalog.duckdb, waiting while another process has it open for a moment.

        A writer waits without limit (it holds the writer lock, so the other side is a reader taking its
        snapshot, or a tool outside synthmix): dying halfway would be worse than waiting."""
        path = self.root / CATALOG_FILE
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
    def _snapshot(self, skip: tuple[str, ...] = ()) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB holding a copy of the catalog tables (those in `skip` left empty); the
        file is closed before use. The copy costs time in proportion to the catalog, not the corpora."""
        con = self._open_catalog(write=False)
        try:
            try:
                tables = [r[0] for r in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = 'catalog_file'").fetchall()]
                for t in tables:
                    limit = " LIMIT 0" if t in skip else ""
                    con.execute(f'CREATE TABLE memory.main."{t}" AS SELECT * FROM catalog_file.main."{t}"{limit}')
                con.execute("DETACH catalog_file")
            except duckdb.Error as e:  # e.g. a catalog cut short: its pages cannot be read
                raise _catalog_error(self.root / CATALOG_FILE, e) from None
            if not tables:  # an empty catalog file (a store created by another version): empty tables
                con.execute(_CATALOG_DDL)
            yield con
        finally:
            con.close()

    def _refresh_views(self, con: duckdb.DuckDBPyConnection, temp: bool, only: tuple[str, ...] | None) -> None:
        """(Re)create `documents` and one view per result table (all, or those in `only`)."""
        if only == ():
            return
        create = "CREATE OR REPLACE TEMP VIEW" if temp else "CREATE OR REPLACE VIEW"
        if only is None or "documents" in only:
            self._refresh_documents_view(con, create)
        results = self.root / "results"
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

    def _refresh_documents_view(self, con: duckdb.DuckDBPyConnection, create: str) -> None:
        files = [r[0] for r in con.execute("SELECT file FROM shards ORDER BY corpus, shard").fetchall()]
        if files:
            lst = "[" + ", ".join(_sql_str(self.root / f) for f in files) + "]"
            # one scan over every shard; the corpus is the shard's folder name (shards/<corpus>/<n>.parquet)
            con.execute(
                f"{create} documents AS SELECT regexp_extract(filename, '/shards/([^/]+)/[0-9]+[.]parquet$', 1)"
                f" AS corpus, * EXCLUDE (filename) FROM read_parquet({lst}, filename = true)"
            )
        else:
            cols = ", ".join(f"NULL::{'BIGINT' if f.type == pa.int64() else 'VARCHAR'} AS {f.name}"
                             for f in DOC_SCHEMA)
            con.execute(f"{create} documents AS SELECT NULL::VARCHAR AS corpus, {cols} WHERE false")

    # ------------------------------------------------------------------ reading the catalog
    def corpora(self) -> list[CorpusInfo]:
        with self._connect() as con:
            rows = con.execute(
                """SELECT c.corpus, c.kind, c.synthetic_type, c.role, c.created_at, c.meta,
                          count(s.shard), coalesce(sum(s.n_docs), 0), coalesce(sum(s.n_bytes), 0),
                          string_agg(s.content_hash, ',' ORDER BY s.shard)
                   FROM corpora c LEFT JOIN shards s USING (corpus)
                   GROUP BY ALL ORDER BY c.corpus"""
            ).fetchall()
        return [
            CorpusInfo(r[0], r[1], r[2], r[3], r[4], json.loads(r[5] or "{}"), r[6], r[7], r[8],
                       hashlib.blake2b((r[9] or "").encode(), digest_size=8).hexdigest())
            for r in rows
        ]

    def corpus_names(self) -> list[str]:
        return [c.name for c in self.corpora()]

    def corpus(self, name: str) -> CorpusInfo:
        for c in self.corpora():
            if c.name == name:
                return c
        names = ", ".join(self.corpus_names()) or "(none)"
        raise UnknownCorpus(f"unknown corpus {name!r}; the store {self.root} has: {names}")

    def has_corpus(self, name: str) -> bool:
        return name in self.corpus_names()

    def shards(self, corpus: str) -> list[ShardInfo]:
        self.corpus(corpus)  # raises with the list of corpora
        with self._connect() as con:
            rows = con.execute(
                "SELECT shard, file, n_docs, n_bytes, content_hash FROM shards WHERE corpus = ? ORDER BY shard",
                [corpus],
            ).fetchall()
        return [ShardInfo(corpus, r[0], self.root / r[1], r[2], r[3], r[4]) for r in rows]

    def scan(self, corpus: str) -> pl.LazyFrame:
        """All documents of a corpus as a Polars LazyFrame (empty frame for an empty corpus)."""
        paths = [str(s.path) for s in self.shards(corpus)]
        if not paths:
            return pl.LazyFrame(schema=pl.Schema(pl.from_arrow(DOC_SCHEMA.empty_table()).schema))
        return pl.scan_parquet(paths)

    def iter_batches(
        self, corpus: str, columns: list[str] | None = None, batch_size: int = 8192
    ) -> Iterator[pa.RecordBatch]:
        """Stream a corpus as Arrow record batches, shard after shard, in bounded memory."""
        for shard in self.shards(corpus):
            yield from read_shard_batches(shard.path, columns, batch_size)

    def sql(self, query: str, params: list | None = None, limits: SqlLimits | None = None) -> pa.Table:
        """Run one read-only query (SELECT, or EXPLAIN of a SELECT) over the catalog and every view.

        SQL text is hostile: the query runs on an in-memory copy of the catalog that can read only the
        store's shard and result files, with extensions and settings locked; what a statement does is
        checked first (by DuckDB's parser), so writes, COPY, ATTACH, SET, PRAGMA, CALL, LOAD, EXPORT and
        more than one statement are refused before anything runs. `limits` caps rows, time and memory
        (default: none, for library code; the `sql` command passes SqlLimits() unless told otherwise), and
        Ctrl-C stops the query at once."""
        limits = limits or NO_LIMITS
        with self._snapshot() as con:
            _check_read_only(con, query)
            self._refresh_views(con, temp=True, only=None)
            readable = [str(self.root / r[0]) for r in con.execute("SELECT file FROM shards").fetchall()]
            results = self.root / "results"
            readable += [str(p) for p in results.glob("*/*.parquet")] if results.exists() else []
            con.execute("SET allowed_paths = " + "[" + ", ".join(_sql_str(p) for p in readable) + "]")
            if limits.memory_mb:
                con.execute(f"SET memory_limit = '{int(limits.memory_mb)}MB'")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            return _run_guarded(con, query, params, limits)

    def catalog_rows(self, query: str, params: list | None = None) -> list[tuple]:
        """Rows of a query on catalog tables and `documents` (for library code; no statement check)."""
        with self._snapshot() as con:
            self._refresh_views(con, temp=True, only=("documents",))
            return con.execute(query, params or []).fetchall()

    # ------------------------------------------------------------------ writing corpora
    def create_corpus(
        self,
        name: str,
        kind: str,
        role: str,
        synthetic_type: str | None = None,
        meta: dict | None = None,
        exist_ok: bool = False,
    ) -> CorpusInfo:
        _check_name(name, "corpus")
        if kind not in KINDS:
            raise StoreError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if role not in ROLES:
            raise StoreError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if kind == "synthetic" and not synthetic_type:
            raise StoreError("a synthetic corpus needs a synthetic type (hq, qa, txbk or your own)")
        with self.lock(wait_s=30, purpose=f"create {name}"):
            if self.has_corpus(name):
                current = self.corpus(name)
                if not exist_ok:
                    raise StoreError(f"corpus {name!r} already exists; `python -m corpora rm {name}` first")
                if (current.kind, current.role) != (kind, role):
                    raise StoreError(
                        f"corpus {name!r} exists as kind={current.kind} role={current.role}, "
                        f"not kind={kind} role={role}"
                    )
                return current
            with self._connect(write=True) as con:
                con.execute(
                    "INSERT INTO corpora VALUES (?, ?, ?, ?, now(), ?)",
                    [name, kind, synthetic_type, role, json.dumps(meta or {})],
                )
        return self.corpus(name)

    def append_shard(self, corpus: str, table: pa.Table | pl.DataFrame) -> ShardInfo | None:
        """Write `table` (DOC_SCHEMA columns) as the corpus's next shard and register it atomically."""
        if isinstance(table, pl.DataFrame):
            table = table.to_arrow()
        table = table.select(DOC_SCHEMA.names).cast(DOC_SCHEMA)
        if table.num_rows == 0:
            return None
        staging = self.root / "shards" / corpus / f".staging-{os.getpid()}.parquet"
        staging.parent.mkdir(parents=True, exist_ok=True)
        # row groups of ~ROW_GROUP_BYTES of text (at most 16k documents): readers stream a shard a row group
        # at a time, and a mixture reads only the row groups it draws documents from (train.data)
        n_bytes = pc.sum(table.column("n_bytes")).as_py() or 0
        rows_per_group = max(1, min(16384, int(ROW_GROUP_BYTES * table.num_rows / max(n_bytes, 1))))
        pq.write_table(table, staging, compression="zstd", row_group_size=rows_per_group)
        return self.adopt_shard(corpus, staging)

    def adopt_shard(self, corpus: str, path: Path) -> ShardInfo:
        """Move a complete DOC_SCHEMA Parquet file (on the store's filesystem) in as the next shard."""
        with self.lock(wait_s=30, purpose=f"append to {corpus}"):
            self.corpus(corpus)
            meta = pq.read_metadata(path)
            if meta.schema.to_arrow_schema().names != DOC_SCHEMA.names:
                raise StoreError(f"{path}: not a document shard (columns must be {', '.join(DOC_SCHEMA.names)})")
            n_bytes = int(pc.sum(pq.read_table(path, columns=["n_bytes"])["n_bytes"]).as_py() or 0)
            with self._connect() as con:
                (n,) = con.execute("SELECT coalesce(max(shard) + 1, 0) FROM shards WHERE corpus = ?",
                                   [corpus]).fetchone()
            rel = Path("shards") / corpus / f"{n}.parquet"
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, self.root / rel)
            info = ShardInfo(corpus, n, self.root / rel, meta.num_rows, n_bytes, file_hash(self.root / rel))
            with self._connect(write=True, views=("documents",)) as con:
                con.execute(
                    "INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?, now())",
                    [corpus, n, str(rel), info.n_docs, info.n_bytes, info.content_hash],
                )
        return info

    def record_ingest_file(self, corpus: str, run_id: str, file: str, fingerprint: str, n_docs: int,
                           n_duplicates: int, rejects: pa.Table) -> None:
        """Mark an input file done and keep its rejects (columns source, reason, detail), in one transaction."""
        with self.lock(wait_s=30, purpose="ingest"), self._connect(write=True) as con:
            con.execute(
                "INSERT OR REPLACE INTO ingest_files VALUES (?, ?, ?, ?, ?, ?, ?, now())",
                [corpus, file, fingerprint, run_id, n_docs, n_duplicates, rejects.num_rows],
            )
            if rejects.num_rows:
                con.register("new_rejects", rejects)
                con.execute(
                    "INSERT INTO rejects SELECT ?, ?, source, reason, detail FROM new_rejects", [run_id, corpus]
                )
                con.unregister("new_rejects")

    def ingested_files(self, corpus: str) -> set[tuple[str, str]]:
        """(file, fingerprint) pairs already ingested into `corpus` (skipped by a re-run)."""
        rows = self.catalog_rows("SELECT file, fingerprint FROM ingest_files WHERE corpus = ?", [corpus])
        return {(f, fp) for f, fp in rows}

    def execute(self, stmt: str, params: list | None = None) -> None:
        """Run one write statement on the catalog tables, under the lock (library code only)."""
        with self.lock(wait_s=30, purpose="catalog update"), self._connect(write=True) as con:
            con.execute(stmt, params or [])

    def write_corpus(
        self, name: str, tables: Iterable[pa.Table], kind: str, role: str,
        synthetic_type: str | None = None, meta: dict | None = None,
    ) -> CorpusInfo:
        """Create a corpus from an iterable of document tables, one shard each."""
        with self.lock(wait_s=30, purpose=f"write {name}"):
            self.create_corpus(name, kind, role, synthetic_type, meta)
            for t in tables:
                self.append_shard(name, t)
        return self.corpus(name)

    def doc_ids(self, corpus: str) -> set[str]:
        """Every doc_id of a corpus (for resuming without duplicates)."""
        ids: set[str] = set()
        for batch in self.iter_batches(corpus, ["doc_id"], batch_size=65536):
            ids.update(batch.column(0).to_pylist())
        return ids

    def remove_corpus(self, name: str) -> None:
        with self.lock(purpose=f"rm {name}"):
            self.corpus(name)
            with self._connect(write=True, views=("documents",)) as con:
                for table in ("shards", "corpora", "ingest_files", "rejects", "ingest_runs"):
                    con.execute(f"DELETE FROM {table} WHERE corpus = ?", [name])
            shutil.rmtree(self.root / "shards" / name, ignore_errors=True)

    def remove_orphans(self, corpus: str) -> int:
        """Delete shard files of `corpus` the catalog does not list (left by a killed writer)."""
        listed = {s.path for s in self.shards(corpus)}
        n = 0
        for p in (self.root / "shards" / corpus).glob("*.parquet"):
            if p.is_file() and p not in listed:
                p.unlink()
                n += 1
        return n

    # ------------------------------------------------------------------ result tables
    def _result_path(self, table: str, part: str) -> Path:
        _check_name(table, "result table")
        if not isinstance(part, str) or not _PART_RE.fullmatch(part):
            raise StoreError(f"invalid result part {part!r}: letters, digits, '_', '.', '=', '-' only")
        return self.root / "results" / table / f"{part}.parquet"

    def put_result(self, table: str, part: str, data: pa.Table | pl.DataFrame) -> None:
        """Atomically write (or replace) one part of result table `table`; the view `table` unions all parts.

        Every row is stamped `created_at` (UTC, naive timestamp, the time of this write), replacing any
        value the writer gave, so every result table has one and readers can order by it."""
        if table in ("documents", "corpora", "shards", "ingest_runs", "ingest_files", "rejects", "store_info"):
            raise StoreError(f"{table!r} is a catalog table name; pick another result table name")
        if isinstance(data, pl.DataFrame):
            data = data.to_arrow()
        stamp = pa.array([_utcnow()] * data.num_rows, type=pa.timestamp("us"))
        if "created_at" not in data.column_names:
            data = data.append_column("created_at", stamp)
        else:
            # rows that already carry a timestamp keep it (a part rewritten with new rows, e.g. a resumed run's
            # metrics, must not retime its old rows); anything else (missing, a writer's string) is stamped
            i = data.column_names.index("created_at")
            old = data.column(i)
            if pa.types.is_timestamp(old.type):
                kept = pc.cast(old, pa.timestamp("us"))  # UTC, naive (a zoned value keeps its UTC instant)
                data = data.set_column(i, "created_at", pc.coalesce(kept, stamp))
            else:
                data = data.set_column(i, "created_at", stamp)
        path = self._result_path(table, part)
        results.check(table, data.column_names)
        with self.lock(wait_s=60, purpose=f"result {table}"):
            write_parquet_atomic(data, path)
            with self._connect(write=True, views=(table,)):
                pass  # refreshes the persisted view of this table

    def has_result(self, table: str, part: str) -> bool:
        path = self._result_path(table, part)
        return path.exists() and bool(_usable_parts([path]))

    def result_parts(self, table: str) -> list[str]:
        _check_name(table, "result table")
        d = self.root / "results" / table
        return sorted(p.stem for p in d.glob("*.parquet")) if d.exists() else []

    def read_result(self, table: str, part: str | None = None) -> pl.DataFrame | None:
        """One part, or all parts of a result table; None when there is none."""
        if part is not None:
            path = self._result_path(table, part)
            if not path.exists():
                return None
            try:
                return _read_part(path)
            except (OSError, pl.exceptions.PolarsError) as e:  # damaged: as if absent, so a step rewrites it
                _report_damaged(path, str(e).splitlines()[0] if str(e) else type(e).__name__)
                return None
        frames = []
        for p in _usable_parts([self._result_path(table, p) for p in self.result_parts(table)]):
            try:
                frames.append(_read_part(p))
            except (OSError, pl.exceptions.PolarsError) as e:
                _report_damaged(p, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return pl.concat(frames, how="diagonal_relaxed") if frames else None

    def delete_result(self, table: str, part: str) -> None:
        path = self._result_path(table, part)
        with self.lock(wait_s=60, purpose=f"result {table}"):
            if path.exists():
                path.unlink()
            with self._connect(write=True, views=(table,)):
                pass

    # ------------------------------------------------------------------ artifacts
    def artifact_dir(self, kind: str, name: str, create: bool = True) -> Path:
        """A directory a step owns for files that are not tables (token streams, checkpoints, caches)."""
        _check_name(kind, "artifact kind")
        if not isinstance(name, str) or not _PART_RE.fullmatch(name):
            raise StoreError(f"invalid artifact name {name!r}")
        d = self.root / "artifacts" / kind / name
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d


def _default_memory_mb() -> int:
    """Half the machine's memory, at most 4 GiB: a query that needs more is almost always a mistake (a
    cross join, a recursive CTE without an end), and it must not take the whole machine from its user."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20
    except (ValueError, OSError):
        total = 8192
    return int(max(256, min(4096, total // 2)))


@dataclasses.dataclass(frozen=True)
class SqlLimits:
    """Guards on one user query (0: no limit). The defaults protect an interactive user; scripts that
    want everything pass 0 (`sql --max-rows 0 --timeout 0 --memory-limit 0`)."""
    max_rows: int = 1_000_000  # rows in the result (more: an error, never a silent cut)
    timeout_s: float = 600.0  # wall time of the query
    memory_mb: int = dataclasses.field(default_factory=_default_memory_mb)  # DuckDB's memory and the result's


NO_LIMITS = SqlLimits(max_rows=0, timeout_s=0, memory_mb=0)


def _run_guarded(con: duckdb.DuckDBPyConnection, query: str, params: list | None, limits: SqlLimits) -> pa.Table:
    """Run a query in a helper thread while this thread waits: DuckDB does not return to Python until a
    query ends, so Ctrl-C (and the time limit) could not stop it otherwise; here they interrupt it."""
    box: dict = {}

    def work() -> None:
        reader = None
        try:
            with warnings.catch_warnings():  # DuckDB suggests con.sql, whose pending result Ctrl-C cannot free
                warnings.simplefilter("ignore", UserWarning)
                reader = con.execute(query, params or []).to_arrow_reader(8192)
            batches, n_rows, n_bytes = [], 0, 0
            for batch in reader:
                n_rows += batch.num_rows
                n_bytes += batch.nbytes
                if limits.max_rows and n_rows > limits.max_rows:
                    box["over"] = (f"the result has more than {limits.max_rows:,} rows; add a LIMIT or an "
                                   "aggregate, or pass --max-rows N (0: no cap)")
                    return
                if limits.memory_mb and n_bytes > limits.memory_mb << 20:
                    box["over"] = (f"the result is larger than {limits.memory_mb:,} MB; select fewer rows or "
                                   "columns, or pass --memory-limit MB (0: no cap)")
                    return
                batches.append(batch)
            box["table"] = pa.Table.from_batches(batches, schema=reader.schema)
        except BaseException as e:  # handed to the waiting thread, without the frames that hold the result
            box["error"] = e.with_traceback(None)
        finally:
            if reader is not None:  # a pending result keeps the connection busy: it could not be closed
                reader.close()
            del reader

    # Ctrl-C: our own handler, not KeyboardInterrupt. DuckDB notices a pending KeyboardInterrupt inside
    # the query's thread, stops the query there and leaves the connection busy (it can then not even be
    # closed, and the process aborts at exit); the handler only flags it, and this thread interrupts.
    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    if main and previous is signal.default_int_handler:
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    thread = threading.Thread(target=work, name="synthmix-sql", daemon=True)
    deadline = time.monotonic() + limits.timeout_s if limits.timeout_s else None
    try:
        thread.start()
        while thread.is_alive() and not stop.is_set():
            thread.join(0.05)
            if deadline is not None and time.monotonic() > deadline and thread.is_alive():
                con.interrupt()
                thread.join()
                raise StoreError(f"the query ran longer than {limits.timeout_s:g} s and was stopped; narrow it "
                                 "or add a LIMIT, or pass --timeout S (0: no limit)")
        if stop.is_set():
            con.interrupt()
            thread.join()
            raise KeyboardInterrupt
    finally:
        if main and previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous)
    if "over" in box:
        raise StoreError(box["over"])
    e = box.get("error")
    if isinstance(e, duckdb.OutOfMemoryException):
        raise StoreError(f"the query needs more than {limits.memory_mb:,} MB of memory and was stopped; narrow "
                         "it, or pass --memory-limit MB (0: DuckDB's default)") from None
    if isinstance(e, duckdb.Error):
        raise StoreError(f"SQL error: {str(e).splitlines()[0]}") from None
    if e is not None:
        raise e
    return box["table"]


_EXPLAIN_RE = re.compile(r"^\s*EXPLAIN\s+(?P<analyze>ANALY[SZ]E\s+)?(?P<options>\([^)]*\)\s*)?(?P<inner>.*)$",
                         re.I | re.S)


def _check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse anything but one SELECT or EXPLAIN (not ANALYZE) of a SELECT, by its parsed statement type."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise StoreError(f"SQL error: {str(e).splitlines()[0]}") from None
    if len(statements) != 1:
        raise StoreError(f"give exactly one SQL statement, not {len(statements)}")
    kind = statements[0].type
    if kind == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs the statement it explains: look inside (comments dropped by the tokenizer)
        text = "".join(query[start:end] for start, end in _tokens_without_comments(query))
        m = _EXPLAIN_RE.match(text)
        if m is None or m["analyze"] or (m["options"] and "analy" in m["options"].lower()):
            raise StoreError("refused: EXPLAIN ANALYZE runs its statement; use EXPLAIN or a SELECT")
        inner = con.extract_statements(m["inner"])
        if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
            raise StoreError("refused: only EXPLAIN of a SELECT is allowed; the store is read-only through sql")
        return
    if kind != duckdb.StatementType.SELECT:
        raise StoreError(
            f"refused: {kind.name} statements are not allowed; the store is read-only through sql "
            "(use the python -m corpora/stats/train commands to change it)"
        )


def _tokens_without_comments(query: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the query's tokens, comments left out, gaps kept as spaces."""
    toks = duckdb.tokenize(query)
    spans, prev_end = [], 0
    for i, (start, ttype) in enumerate(toks):
        end = toks[i + 1][0] if i + 1 < len(toks) else len(query)
        if ttype == duckdb.token_type.comment:
            continue
        spans.append((start, end))
    return spans


def read_shard_batches(path: Path, columns: list[str] | None = None,
                       batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
    """Record batches of one shard file (a pure function of the path, for map workers)."""
    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)


def resolve_store_path(cli_value: str | None) -> Path:
    """--store PATH, else $SYNTHMIX_STORE, else ./store (only CLIs call this)."""
    return Path(cli_value or os.environ.get("SYNTHMIX_STORE") or "store")
