"""The corpus store: a DuckDB catalog over zstd Parquet shards, and result tables beside them.

`Store` is the one API every step uses; it and the modules behind it (`catalog`: the catalog's tables,
connections and views; `lock`: the writer lock; `atomic`: whole-or-nothing files; `sqlguard`: the guard on
user SQL) are the only code that knows the store's layout::

    STORE/
      catalog.duckdb                 catalog tables + views (documents, one view per result table)
      shards/<corpus>/<n>.parquet    one document per row (DOC_SCHEMA)
      results/<table>/<part>.parquet one Parquet file per result part (a view <table> unions them)
      artifacts/<kind>/<name>/       files a step owns (token streams, checkpoints, tokenizers, caches)
      tmp/<kind>/<pid>-<random>/     scratch folders of running steps (Store.tmp_dir)
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
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpora import catalog
from corpora import results as result_tables
from corpora.atomic import _pid_alive, atomic_path, file_hash, remove_stale_temps, write_parquet_atomic  # noqa: F401
from corpora.catalog import (
    CATALOG_FILE, _NAME_RE, CorpusInfo, ShardInfo, _read_part, _report_damaged, _sql_str, _usable_parts,
)
from corpora.documents import DOC_SCHEMA, compute_doc_id, make_documents, normalize_text  # noqa: F401 (API)
from corpora.errors import StoreError
from corpora.lock import StoreLocked, _held, writer_lock  # noqa: F401 (API)
from corpora.sqlguard import NO_LIMITS, SqlLimits, _check_read_only, _run_guarded

log = logging.getLogger(__name__)

KINDS = ("natural", "synthetic")
ROLES = ("train", "test", "both")
# Text per Parquet row group of a shard (append_shard, ingest): the unit a mixture's draw reads, so its I/O
# follows its token budget rather than the corpus size (train.data); small enough that a 5M-token mixture
# spreads over dozens of row groups.
ROW_GROUP_BYTES = 1 << 20

_PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]{0,199}")


class UnknownCorpus(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise StoreError(
            f"invalid {what} name {name!r}: use lowercase letters, digits and '_', starting with a letter"
        )
    return name


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


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
        with writer_lock(self.root, wait_s, purpose) as dead:
            if dead:
                log.warning("store %s: the last writer (PID %s) died; cleaning up after it", self.root, dead)
                self.recover()
            yield

    def recover(self) -> None:
        """Clean up after writers that died (kill -9): mark their ingest runs `interrupted` and delete
        their temporary files. Needs the lock, which proves that no other writer is running."""
        assert self._lock_depth, "recover needs the writer lock"
        shutil.rmtree(self.root / "artifacts" / "ingest_tmp", ignore_errors=True)  # older versions' scratch area
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

    def _connect(self, write: bool = False,
                 views: tuple[str, ...] | None = ()) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A catalog connection for one short transaction (write, under the lock) or over a snapshot (read)."""
        return catalog.connect(self.root, write, views)

    def _snapshot(self, skip: tuple[str, ...] = ()) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """An in-memory copy of the catalog tables (catalog.snapshot)."""
        return catalog.snapshot(self.root, skip)

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
            catalog.refresh_views(con, self.root, temp=True, only=None)
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
            catalog.refresh_views(con, self.root, temp=True, only=("documents",))
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
        result_tables.check(table, data.column_names)
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


def read_shard_batches(path: Path, columns: list[str] | None = None,
                       batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
    """Record batches of one shard file (a pure function of the path, for map workers)."""
    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)


def resolve_store_path(cli_value: str | None) -> Path:
    """--store PATH, else $SYNTHMIX_STORE, else ./store (only CLIs call this)."""
    return Path(cli_value or os.environ.get("SYNTHMIX_STORE") or "store")
