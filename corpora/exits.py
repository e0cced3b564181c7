"""How every synthmix CLI ends: one line on stderr and an exit status, never a traceback for what the
user can fix.

    exit 0    done
    exit 1    the command ran but did not finish its work (e.g. generation left documents incomplete)
    exit 2    bad input, a refused request or a store/file problem; the line says what to do
    exit 130  interrupted (Ctrl-C); re-running the same command resumes

Every `__main__` calls its command through `run_command`; anything not listed here is a bug and keeps
its traceback.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
from collections.abc import Callable

# Only the standard library at import time: a CLI imports this module first and calls
# `exit_on_early_interrupt` before its heavy imports (torch, DuckDB, Polars), so that a Ctrl-C during those
# imports is one line as well.


class CommandError(Exception):
    """A user error a CLI raises itself (bad flag values found after parsing); exit 2 with its message."""


def _os_error_line(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"{where}no space left on the device; free some space and re-run (finished work is kept)"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}{e.strerror or 'permission denied'}; check the permissions (or pick another --store/--out)"
    return f"{where}{e.strerror or e}; check the path and re-run"


def _interrupted_line(prog: str) -> str:
    return f"{prog}interrupted; re-run the same command to resume"


def exit_on_early_interrupt(prog: str) -> None:
    """Until `run_command` starts, Ctrl-C exits at once with the one interrupted line and status 130 (it
    would otherwise print a traceback from whatever module was being imported)."""
    if threading.current_thread() is not threading.main_thread():
        return
    prefix = f"{prog}: " if prog else ""

    def handler(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(_interrupted_line(prefix), file=sys.stderr)
        raise SystemExit(130)

    signal.signal(signal.SIGINT, handler)


def is_interrupt(e: BaseException) -> bool:
    """Whether `e` is a Ctrl-C: KeyboardInterrupt itself, or what DuckDB raises instead when the signal lands
    while it runs a statement (`InterruptException`, or a plain `RuntimeError: Query interrupted` from a
    statement run inside a `with` block's exit)."""
    if isinstance(e, KeyboardInterrupt):
        return True
    if isinstance(e, RuntimeError) and str(e) == "Query interrupted":
        return True
    duckdb = sys.modules.get("duckdb")
    return duckdb is not None and isinstance(e, duckdb.InterruptException)


def run_command(prog: str, command: Callable[[], int], user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run a CLI command and map what can go wrong to one stderr line and an exit status.

    `prog` starts each line ("python -m train run: error: ..."); "" prints just "error: ..."."""
    prog = f"{prog}: " if prog else ""
    try:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, KeyboardInterrupt
        return _run(prog, command, user_errors)
    except KeyboardInterrupt:
        # a second Ctrl-C while we print must not add a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(_interrupted_line(prog), file=sys.stderr)
        return 130


def _run(prog: str, command: Callable[[], int], user_errors: tuple[type[BaseException], ...]) -> int:
    import duckdb

    from corpora.executor import EngineError
    from corpora.readers import InputError
    from corpora.store import StoreError

    try:
        return command()
    except (StoreError, InputError, EngineError, CommandError, *user_errors) as e:
        print(f"{prog}error: {e}", file=sys.stderr)
        return 2
    except (duckdb.InterruptException, RuntimeError) as e:  # Ctrl-C while DuckDB ran: DuckDB raises these
        if is_interrupt(e):
            raise KeyboardInterrupt from None
        raise
    except OSError as e:  # permissions, disk full, a path that is not what it should be
        print(f"{prog}error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    except duckdb.Error as e:  # e.g. a shard file damaged outside synthmix
        print(f"{prog}error: DuckDB: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
