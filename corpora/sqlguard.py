"""The guard around user SQL (`Store.sql`): SQL text is hostile. Only one SELECT (or EXPLAIN of a SELECT)
passes, checked by DuckDB's own parser, and the query runs in a helper thread with caps on rows, time and
memory that Ctrl-C and the time limit can interrupt."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
import time
import warnings

import duckdb
import pyarrow as pa

from corpora.errors import StoreError


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
