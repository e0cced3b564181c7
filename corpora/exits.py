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
from collections.abc import Callable

from corpora.executor import EngineError
from corpora.readers import InputError
from corpora.store import StoreError


def _os_error_line(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"{where}no space left on the device; free some space and re-run (finished work is kept)"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}{e.strerror or 'permission denied'}; check the permissions (or pick another --store/--out)"
    return f"{where}{e.strerror or e}; check the path and re-run"


def run_command(prog: str, command: Callable[[], int], user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run a CLI command and map what can go wrong to one stderr line and an exit status.

    `prog` starts each line ("python -m train run: error: ..."); "" prints just "error: ..."."""
    prog = f"{prog}: " if prog else ""
    try:
        return command()
    except (StoreError, InputError, EngineError, *user_errors) as e:
        print(f"{prog}error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # a second Ctrl-C while we print must not add a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"{prog}interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # permissions, disk full, a path that is not what it should be
        print(f"{prog}error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        import duckdb

        if isinstance(e, duckdb.Error):  # e.g. a shard file damaged outside synthmix
            print(f"{prog}error: DuckDB: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
        raise
