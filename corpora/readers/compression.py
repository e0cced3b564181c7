"""Compressed inputs (gzip, bz2, zstd by suffix) as binary streams and lines; a cut stream is a reject."""

from __future__ import annotations

import bz2
import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path

from corpora.readers.base import InputError, Reject


def open_binary(path: Path) -> io.BufferedIOBase:
    """Open a possibly compressed file as a binary stream (gzip, bz2, zstd by suffix)."""
    try:
        name = path.name.lower()
        if name.endswith(".gz"):
            return gzip.open(path, "rb")
        if name.endswith(".bz2"):
            return bz2.open(path, "rb")
        if name.endswith((".zst", ".zstd")):
            return io.BufferedReader(_ZstdRaw(open(path, "rb")), buffer_size=1 << 16)
        return open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror or e}); check the path and permissions") from None


class _ZstdRaw(io.RawIOBase):
    """A zstd stream (one or more frames) that raises EOFError when the input ends inside a frame.

    zstandard's stream_reader returns what it decoded so far and ends quietly on a cut file, which
    would make a truncated file look complete."""

    def __init__(self, raw: io.BufferedIOBase):
        import zstandard

        self._raw, self._zstd = raw, zstandard
        self._dobj = zstandard.ZstdDecompressor().decompressobj()
        self._in_frame = False  # bytes of the current frame seen, its end not yet
        self._out = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._out:
            chunk = self._raw.read(1 << 17)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ended inside a frame (the file is truncated)")
                return 0
            while chunk:
                try:
                    self._out += self._dobj.decompress(chunk)
                except self._zstd.ZstdError as e:
                    raise OSError(f"corrupt zstd data: {e}") from None
                self._in_frame = not self._dobj.eof
                chunk = self._dobj.unused_data if self._dobj.eof else b""
                if self._dobj.eof:
                    self._dobj = self._zstd.ZstdDecompressor().decompressobj()
        n = min(len(buf), len(self._out))
        buf[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


# what a damaged or cut compressed stream raises while it is read (zlib.error is not an OSError)
_STREAM_ERRORS = (EOFError, OSError, ValueError, zlib.error)


def _lines(path: Path) -> Iterator[tuple[int, bytes | Reject]]:
    """(line number, raw line) for a possibly compressed file; a truncated stream ends with a Reject."""
    lineno = 0
    with open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, 1):
                yield lineno, raw
        except _STREAM_ERRORS as e:
            # gzip: EOFError "Compressed file ended before the end-of-stream marker", zlib.error for damaged
            # deflate data; bz2/zstd: OSError
            yield lineno + 1, Reject(f"{path}:{lineno + 1}", "truncated_stream", str(e)[:200])
