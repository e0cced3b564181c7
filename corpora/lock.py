"""The store's single-writer lock: `flock` on `.writer.lock`, which holds the writer's PID while it runs.

A released lock file is empty, so text found in it on taking the lock names a writer that died holding it
(kill -9); the caller then cleans up after that writer (`Store.recover`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from corpora.errors import StoreError

LOCK_FILE = ".writer.lock"


class StoreLocked(StoreError):
    pass


# Roots whose writer lock this process holds: [depth, pid]. The lock is re-entrant within a process, so
# library code may open its own Store on a root its caller already locked (a forked child holds nothing).
_HELD: dict[Path, list] = {}


def _held(root: Path) -> list | None:
    entry = _HELD.get(root)
    return entry if entry is not None and entry[1] == os.getpid() else None


@contextlib.contextmanager
def writer_lock(root: Path, wait_s: float = 0.0, purpose: str = "") -> Iterator[str]:
    """Hold the single-writer lock of the store at `root` (re-entrant within this process). Yields what the
    lock file named when taken: "" normally, else the PID and purpose of a writer that died holding it."""
    if (entry := _held(root)) is not None:
        entry[0] += 1
        try:
            yield ""
        finally:
            entry[0] -= 1
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(f"cannot take the writer lock {root / LOCK_FILE} ({e.strerror}); "
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
                    f"store {root} is locked by PID {holder}; wait for that writer to finish "
                    "(readers such as `sql`, `list` and `show` keep working)"
                ) from None
            time.sleep(0.1)
    # A released lock file is empty; text left in it names a writer that died holding the lock.
    dead = os.pread(fd, 200, 0).decode(errors="replace").strip()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} ({purpose or 'writer'})".encode(), 0)
    _HELD[root] = [1, os.getpid()]
    try:
        yield dead
    finally:
        del _HELD[root]
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
