"""WARC files: HTTP responses framed record by record, their HTML turned into main text."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

from corpora.readers.base import Doc, ReaderConfig, Reject, _check_text
from corpora.readers.compression import _STREAM_ERRORS, open_binary


def read_warc(path: Path, cfg: ReaderConfig) -> Iterator[Doc | Reject]:
    """HTTP response records of a WARC file; HTML turned into main text (URL and date kept).

    Records are framed here (`_warc_records`), so junk between records or a wrong Content-Length costs
    only the damaged record: reading resumes at the next `WARC/1.x` header. fastwarc parses each record."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    extract = _html_extractor(cfg.html_extractor)
    stream = open_binary(path)
    n = 0
    try:
        for offset, item in _warc_records(stream):
            if isinstance(item, str):  # damaged bytes, already skipped
                yield Reject(f"{path}@{offset}", "bad_warc_record", item)
                continue
            for record in ArchiveIterator(io.BytesIO(item), record_types=WarcRecordType.response, parse_http=True):
                n += 1
                url = record.headers.get("WARC-Target-URI", "").strip("<>")  # WARC 1.0 writers may bracket it
                source = f"{path}#{n}"
                try:
                    ctype = (record.http_headers.get("Content-Type", "") if record.http_headers else "").lower()
                    if "html" not in ctype:
                        yield Reject(source, "not_html", ctype or "no content type")
                        continue
                    body = record.reader.read()
                    text = extract(body)
                except Exception as e:  # a malformed record must not end the file
                    yield Reject(source, "bad_warc_record", f"{type(e).__name__}: {e}"[:200])
                    continue
                if (bad := _check_text(text, source, cfg)) is not None:
                    yield bad
                    continue
                yield Doc(text, source, {"url": url, "date": record.headers.get("WARC-Date", ""),
                                         "warc_record_id": record.headers.get("WARC-Record-ID", ""),
                                         "file": str(path)})
    except _STREAM_ERRORS as e:
        yield Reject(f"{path}#{n + 1}", "truncated_stream", f"{type(e).__name__}: {e}"[:200])
    finally:
        stream.close()


_WARC_HEADER = re.compile(rb"(?:^|\n)WARC/1\.[01]\r?\n")
_NEXT_WARC_HEADER = re.compile(rb"\nWARC/1\.[01]\r?\n")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")
_MAX_WARC_HEADER = 1 << 20
_MAX_WARC_RECORD = 1 << 30


def _warc_records(stream: io.BufferedIOBase, chunk: int = 1 << 20) -> Iterator[tuple[int, bytes | str]]:
    """(byte offset, record bytes) for each well-framed WARC record, or (offset, reason) for bytes
    skipped: junk between records, or a record whose Content-Length does not end at `\\r\\n\\r\\n`
    (reading resumes at the next `WARC/1.x` header line). Raises EOFError on a record cut short."""
    buf, base, eof = b"", 0, False  # base: offset of buf[0] in the decompressed stream

    def fill(n: int) -> bool:
        nonlocal buf, eof
        while len(buf) < n and not eof:
            data = stream.read(max(chunk, n - len(buf)))
            eof = not data
            buf += data
        return len(buf) >= n

    def skip_to_header(start: int, why: str) -> Iterator[tuple[int, str]]:
        """Drop bytes up to the next header at or after `start`, reporting them as `why`."""
        nonlocal buf, base
        lost = 0
        while True:
            # from `start` on, a header needs its newline before it: "^" would match the damaged record's own
            # header at byte 0 again, and the reader would never move on (found by the fuzz test)
            m = _WARC_HEADER.search(buf, 0) if start == 0 else _NEXT_WARC_HEADER.search(buf, start - 1)
            if m is not None:
                at = m.start() + (buf[m.start():m.start() + 1] == b"\n")
                lost += at
                yield base, f"{why} ({lost} bytes skipped)"
                base += at
                buf = buf[at:]
                return
            keep = min(len(buf), 16)  # a header may straddle the chunk boundary
            lost += len(buf) - keep
            base += len(buf) - keep
            buf, start = buf[len(buf) - keep:], 0
            if eof or not fill(len(buf) + chunk):
                lost += len(buf)
                yield base, f"{why} ({lost} bytes skipped, no record after them)"
                buf = b""
                return

    while fill(1):
        if _WARC_HEADER.match(buf) is None:
            if not buf.strip():  # trailing newlines
                return
            yield from skip_to_header(0, "junk between records")
            continue
        end = buf.find(b"\r\n\r\n")
        while end < 0 and len(buf) < _MAX_WARC_HEADER and fill(len(buf) + chunk):
            end = buf.find(b"\r\n\r\n")
        if end < 0:
            if eof:
                raise EOFError("WARC record headers cut short (the file is truncated)")
            yield from skip_to_header(1, "WARC headers without an end")
            continue
        m = _CONTENT_LENGTH.search(buf, 0, end + 2)
        length = int(m.group(1)) if m else -1
        if length < 0 or length > _MAX_WARC_RECORD:
            yield from skip_to_header(1, "WARC record without a usable Content-Length")
            continue
        total = end + 4 + length
        if not fill(total + 4) and len(buf) < total:
            nxt = _WARC_HEADER.search(buf, end)
            if nxt is None:
                raise EOFError(f"WARC record at byte {base} cut short (the file is truncated)")
        if buf[total:total + 4] == b"\r\n\r\n" or (eof and len(buf) == total + 2 and buf[total:] == b"\r\n"):
            yield base, buf[:total + 4]
            base += total + 4
            buf = buf[total + 4:]
            continue
        # the block does not end where Content-Length says: the record is damaged
        yield from skip_to_header(end, f"Content-Length {length} does not end the record")


def _html_extractor(name: str):
    if name == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.encoding import bytes_to_str, detect_encoding

        def extract(body: bytes) -> str:
            html = bytes_to_str(body, detect_encoding(body))
            return extract_plain_text(html, main_content=True)

        return extract
    if name == "trafilatura":
        import trafilatura

        return lambda body: trafilatura.extract(body) or ""
    raise ValueError(f"unknown HTML extractor {name!r}: use resiliparse or trafilatura")
