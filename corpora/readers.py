"""Readers: one generator per input format, yielding documents or rejects in a file's own order.

Every reader streams (bounded memory whatever the file size) and never raises on a bad record: it
yields a `Reject` with the record's location and a reason, and goes on. A file that cannot be opened
at all raises `InputError` naming it.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow is imported where it is used, so this module stays light for workers
    import pyarrow as pa

REASONS = (
    "bad_json", "bad_utf8", "bad_unicode", "missing_text_field", "empty_text", "text_not_string",
    "truncated_stream", "corrupt_parquet", "corrupt_arrow", "not_html", "bad_warc_record", "wiki_redirect",
    "wiki_not_article", "bad_xml", "read_error",
)


class InputError(Exception):
    """An input file that cannot be read at all."""


@dataclasses.dataclass
class Doc:
    text: str
    source: str  # file:line, file#record, or URL
    meta: dict
    # document columns a reader restores as they were exported (source_doc_id, generator, prompt_id)
    columns: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Reject:
    source: str
    reason: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
    text_field: str = "text"
    # plain text: one doc per "line", per blank-line-separated "block", per "file", or per
    # "wikitext" article (a new document at each level-1 heading line " = Title = ", as in WikiText-2)
    text_mode: str = "line"
    min_chars: int = 1  # shorter documents are rejected as empty_text
    html_extractor: str = "resiliparse"  # or "trafilatura"
    # hf: keep an exported `doc_id` column as the document's id (set for folders a synthmix export wrote:
    # a synthetic document's id hashes how it was made, not its text, so it cannot be recomputed)
    keep_doc_ids: bool = False


FORMATS = ("jsonl", "parquet", "text", "warc", "mediawiki", "hf")
_COMPRESSIONS = (".gz", ".bz2", ".zst", ".zstd")


def detect_format(path: Path) -> str:
    """Input format from the file name (compression suffix ignored)."""
    name = path.name.lower()
    for suffix in _COMPRESSIONS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "hf"  # an Arrow file of a Hugging Face `save_to_disk` folder
    if name.endswith((".warc", ".arc")):
        return "warc"
    if name.endswith(".xml") or ".xml-" in name:  # dump names look like pages-articles1.xml-p10p30302
        return "mediawiki"
    if name.endswith((".txt", ".cor", ".text")):
        return "text"
    raise InputError(f"{path}: cannot tell the format from the name; pass --format {'|'.join(FORMATS)}")


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


def _check_text(text, source: str, cfg: ReaderConfig) -> Reject | None:
    if not isinstance(text, str):
        return Reject(source, "text_not_string", "null" if text is None else type(text).__name__)
    if len(text.strip()) < cfg.min_chars:
        return Reject(source, "empty_text")
    return None


def _unicode_problem(doc: Doc) -> str | None:
    """Why a document's text or metadata cannot be stored as UTF-8 (a lone surrogate such as a JSON
    "\\ud800" escape or an XML &#xD800; entity), else None."""
    for where, value in (("text", doc.text), ("meta", json.dumps(doc.meta, ensure_ascii=False, default=str))):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"lone surrogate {value[e.start]!r} at character {e.start} of the {where}"
    return None


def read_jsonl(path: Path, cfg: ReaderConfig) -> Iterator[Doc | Reject]:
    for lineno, raw in _lines(path):
        if isinstance(raw, Reject):
            yield raw
            return
        source = f"{path}:{lineno}"
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Reject(source, "bad_utf8", str(e)[:200])
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as e:
            # ValueError: bad JSON, or an integer past Python's digit limit; RecursionError: nesting deeper
            # than the parser's stack. Either way one record is lost, never the rest of the file.
            yield Reject(source, "bad_json", f"{type(e).__name__}: {e}"[:200])
            continue
        if not isinstance(record, dict) or cfg.text_field not in record:
            yield Reject(source, "missing_text_field", f"no field {cfg.text_field!r}")
            continue
        text = record.pop(cfg.text_field)
        if (bad := _check_text(text, source, cfg)) is not None:
            yield bad
            continue
        yield Doc(text, source, record)


_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = \s*$")
TEXT_MODES = ("line", "block", "file", "wikitext")


def read_text(path: Path, cfg: ReaderConfig) -> Iterator[Doc | Reject]:
    """Plain text: a document per line, per blank-line-separated block, or the whole file."""
    block: list[str] = []
    start = lineno = 1

    def flush(end_line: int) -> Iterator[Doc | Reject]:
        text = "".join(block).strip()
        source = f"{path}:{start}" if cfg.text_mode == "line" else f"{path}:{start}-{end_line}"
        if text:
            yield Doc(text, source, {})
        block.clear()

    for lineno, raw in _lines(path):
        if isinstance(raw, Reject):
            yield from flush(lineno - 1)
            yield raw
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield Reject(f"{path}:{lineno}", "bad_utf8", str(e)[:200])
            continue
        if cfg.text_mode == "line":
            if line.strip():
                block.append(line)
                start = lineno
                yield from flush(lineno)
            continue
        if cfg.text_mode == "block" and not line.strip():
            yield from flush(lineno - 1)
            start = lineno + 1
            continue
        if cfg.text_mode == "wikitext" and _WIKITEXT_TITLE.match(line):
            yield from flush(lineno - 1)
        if not block:
            start = lineno
        block.append(line)
    yield from flush(lineno)


def read_parquet(path: Path, cfg: ReaderConfig) -> Iterator[Doc | Reject]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (pa.ArrowException, OSError, ValueError) as e:
        yield Reject(str(path), "corrupt_parquet", f"{type(e).__name__}: {e}"[:200])
        return
    if cfg.text_field not in pf.schema_arrow.names:
        yield Reject(str(path), "missing_text_field",
                     f"no column {cfg.text_field!r} (columns: {', '.join(pf.schema_arrow.names)})")
        return
    # row group by row group: a corrupt group costs its own rows only
    first = 0
    for group in range(pf.metadata.num_row_groups):
        n_rows = pf.metadata.row_group(group).num_rows
        try:
            records = pf.read_row_group(group).to_pylist()
        except (pa.ArrowException, OSError, ValueError) as e:  # ValueError: e.g. a string that is not UTF-8
            yield Reject(f"{path}#{first}-{first + n_rows - 1}", "corrupt_parquet",
                         f"row group {group}: {e}"[:200])
            first += n_rows
            continue
        for row, record in enumerate(records, first):
            source = f"{path}#{row}"
            text = record.pop(cfg.text_field)
            if (bad := _check_text(text, source, cfg)) is not None:
                yield bad
                continue
            yield Doc(text, source, {k: v for k, v in record.items() if _jsonable(v)})
        first += n_rows


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


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


# File/image links and categories carry no prose; templates and tables are dropped by strip_code.
_LEFTOVER_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_LEFTOVER_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>")
_WIKI_DROP_LINK = re.compile(r"^\s*:?\s*(file|image|category|media)\s*:", re.I)


def wikitext_to_text(wikitext: str) -> str:
    """Wiki markup to plain prose with mwparserfromhell: headings kept as lines, links as their text."""
    import mwparserfromhell

    from mwparserfromhell.nodes import Tag, Wikilink

    def keep(node) -> bool:
        if isinstance(node, Wikilink):
            return not _WIKI_DROP_LINK.match(str(node.title))
        if isinstance(node, Tag):
            return str(node.tag).lower() not in ("ref", "gallery", "table", "math", "references")
        return True

    def prune(code) -> None:
        # Rebuild node lists instead of Wikicode.remove(), which searches the whole tree on every call.
        code.nodes = [n for n in code.nodes if keep(n)]
        for node in code.nodes:
            for child in node.__children__():
                prune(child)

    code = mwparserfromhell.parse(wikitext)
    prune(code)
    text = code.strip_code(normalize=True, collapse=True)
    # markup mwparserfromhell leaves as text (e.g. a <ref> it could not pair inside other markup)
    text = _LEFTOVER_REF.sub("", text)
    text = _LEFTOVER_TAG.sub("", text)
    lines = [re.sub(r"[ \t]+", " ", ln).strip() for ln in text.splitlines()]
    text = "\n".join(ln for ln in lines if ln)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def read_mediawiki(path: Path, cfg: ReaderConfig) -> Iterator[Doc | Reject]:
    """Articles (namespace 0) of a MediaWiki XML dump; redirects and other namespaces skipped."""
    import xml.etree.ElementTree as ET

    stream = open_binary(path)
    n = 0
    try:
        for _, elem in ET.iterparse(stream, events=("end",)):
            if _local(elem.tag) != "page":
                continue
            n += 1
            fields = {_local(c.tag): c for c in elem}
            title = (fields["title"].text or "") if "title" in fields else ""
            source = f"{path}#{title or n}"
            ns = fields["ns"].text if "ns" in fields else "0"
            revision = fields.get("revision")
            text_el = next((c for c in revision if _local(c.tag) == "text"), None) if revision is not None else None
            wikitext = (text_el.text or "") if text_el is not None else ""
            elem.clear()
            if ns != "0":
                yield Reject(source, "wiki_not_article", f"namespace {ns}")
                continue
            if "redirect" in fields or wikitext.lstrip().lower().startswith("#redirect"):
                yield Reject(source, "wiki_redirect")
                continue
            text = wikitext_to_text(wikitext)
            if title:
                text = f"{title}\n\n{text}" if text else ""
            if (bad := _check_text(text, source, cfg)) is not None:
                yield bad
                continue
            page_id = fields["id"].text if "id" in fields else None
            yield Doc(text, source, {"title": title, "page_id": page_id})
    except ET.ParseError as e:
        yield Reject(f"{path}#{n + 1}", "bad_xml", str(e)[:200])
    except _STREAM_ERRORS as e:
        yield Reject(f"{path}#{n + 1}", "truncated_stream", f"{type(e).__name__}: {e}"[:200])
    finally:
        stream.close()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# ------------------------------------------------------------------ Hugging Face datasets folders
# Exported document columns that come back as columns; doc_id and n_bytes are recomputed from the text.
_HF_COLUMNS = ("source_doc_id", "generator", "prompt_id")


def _hf_batches(path: Path) -> Iterator["pa.RecordBatch"]:
    """Record batches of a .parquet file, or of a save_to_disk .arrow file (the Arrow IPC stream format)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.name.lower().endswith(".parquet"):
        yield from pq.ParquetFile(path).iter_batches(batch_size=4096)
        return
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid as stream_error:  # datasets writes streams; an Arrow IPC *file* reads too
            try:
                file_reader = pa.ipc.open_file(source)
            except pa.ArrowInvalid:
                raise stream_error from None
            yield from (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
            return
        end = source.tell()
        for batch in reader:
            yield batch
            end = source.tell()
        # A stream cut exactly between two messages reads as a shorter, complete-looking stream; only the
        # end-of-stream marker after the last message proves that nothing is missing.
        size = source.size()
        source.seek(end)
        if source.read(size - end) not in _ARROW_EOS:
            raise EOFError(f"the Arrow stream ends after byte {end} without its end-of-stream marker "
                           "(the file is truncated); later rows are missing")


_ARROW_EOS = (b"\xff\xff\xff\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00")  # since Arrow 0.15; before


_DOC_ID_RE = re.compile(r"[0-9a-f]{16}")
_SPLIT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def _hf_doc(text: str, source: str, record: dict, keep_doc_id: bool) -> Doc:
    """A document from one row; a row exported by synthmix comes back with its columns and meta."""
    columns = {}
    doc_id = record.pop("doc_id", None)
    # A folder is hostile input: its ids are recomputed from the text. Only a synthetic row of a synthmix
    # export keeps its id (a synthetic id hashes how the text was made, so it cannot be recomputed), and
    # only when it has the shape of one (16 hex digits).
    if keep_doc_id and isinstance(record.get("generator"), str) and isinstance(doc_id, str) and \
            _DOC_ID_RE.fullmatch(doc_id):
        columns["doc_id"] = doc_id
    for key in _HF_COLUMNS:
        value = record.pop(key, None)
        if isinstance(value, str):
            columns[key] = value
    meta: dict = {}
    raw = record.pop("meta", None)
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
            meta = parsed if isinstance(parsed, dict) else {"meta": parsed}
        except json.JSONDecodeError:
            meta = {"meta": raw}
    elif isinstance(raw, dict):
        meta = raw
    elif raw is not None:
        meta = {"meta": raw}
    record.pop("n_bytes", None)
    meta.update({k: v for k, v in record.items() if v is not None and _jsonable(v)})
    return Doc(text, source, meta, columns)


def read_hf_file(path: Path, cfg: ReaderConfig) -> Iterator[Doc | Reject]:
    """Rows of one data file of a Hugging Face datasets folder (.parquet, or a save_to_disk .arrow file).

    Columns other than the text go into meta (the exported `source` too); source_doc_id, generator and
    prompt_id come back as document columns, an exported `meta` (JSON) as the document's meta, and with
    cfg.keep_doc_ids an exported doc_id as the id (else ids are recomputed from the text)."""
    import pyarrow as pa

    reason = "corrupt_parquet" if path.name.lower().endswith(".parquet") else "corrupt_arrow"
    row = 0
    try:
        for batch in _hf_batches(path):
            if cfg.text_field not in batch.schema.names:
                yield Reject(str(path), "missing_text_field",
                             f"no column {cfg.text_field!r} (columns: {', '.join(batch.schema.names)}); "
                             "pass --text-field")
                return
            # IPC reads do not check buffers against offsets; a damaged batch must fail here, not crash
            # the process in to_pylist (a segfault, found by the fuzz test)
            batch.validate(full=True)
            for record in batch.to_pylist():
                source = f"{path}#{row}"
                row += 1
                text = record.pop(cfg.text_field)
                if (bad := _check_text(text, source, cfg)) is not None:
                    yield bad
                    continue
                yield _hf_doc(text, source, record, cfg.keep_doc_ids)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except EOFError as e:
        yield Reject(f"{path}#{row}", "truncated_stream", str(e)[:200])
    except (pa.ArrowException, OSError, ValueError) as e:  # ValueError: e.g. a string that is not UTF-8
        yield Reject(f"{path}#{row}", reason, f"{type(e).__name__}: {e}"[:200])


@dataclasses.dataclass
class HFFolder:
    """A Hugging Face datasets folder: its data files by split, and its metadata."""
    path: Path
    layout: str  # "save_to_disk" (Arrow files) or "parquet" (data files named by the card, or data/*.parquet)
    splits: dict[str, list[Path]]
    card: dict  # the YAML header of README.md ({} without one)
    info: dict  # dataset_info.json of a save_to_disk folder ({} without one)

    @property
    def files(self) -> list[Path]:
        return [f for files in self.splits.values() for f in files]


MAX_CARD_HEADER_BYTES = 1 << 20  # a real card header is a few KB; more is an attack or a mistake


def read_card_header(readme: Path) -> dict:
    """The YAML header of a dataset card (README.md between `---` lines); {} when there is none.

    The card is hostile input: the header is capped at MAX_CARD_HEADER_BYTES, parsed without aliases
    (an alias bomb of a few hundred bytes would expand to gigabytes) and kept only as JSON values
    (dates become ISO strings, sets lists; binary values, NaN and infinities are dropped)."""
    import yaml

    try:
        with open(readme, "rb") as f:
            raw = f.read(MAX_CARD_HEADER_BYTES + 8)
    except OSError as e:
        raise InputError(f"{readme}: cannot read the dataset card ({e.strerror or e})") from None
    text = raw.decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        if len(raw) > MAX_CARD_HEADER_BYTES:
            raise InputError(f"{readme}: the YAML header is larger than {MAX_CARD_HEADER_BYTES >> 20} MiB; "
                             "shorten the dataset card")
        raise InputError(f"{readme}: the YAML header opened by '---' is never closed; add a '---' line after it")
    try:
        header = yaml.load(text[3:end], Loader=_card_loader())  # noqa: S506 (a SafeLoader without aliases)
    except (yaml.YAMLError, RecursionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{readme}: bad YAML header ({first}); fix the dataset card") from None
    header = _json_safe(header) if header is not None else {}
    if not isinstance(header, dict):
        raise InputError(f"{readme}: the YAML header is not a mapping of keys to values")
    return header


def _card_loader():
    import yaml

    class CardLoader(yaml.SafeLoader):
        """SafeLoader that refuses aliases (`*name`): they are how a small card expands exponentially."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a dataset card",
                                                  event.start_mark)
            return super().compose_node(parent, index)

    return CardLoader


def _json_safe(value, depth: int = 0):
    """A YAML value as JSON: dates as ISO strings, sets as sorted lists, keys as strings; bytes, NaN,
    infinities and integers past 64 bits dropped (None), nesting cut at 100 levels."""
    import datetime
    import math

    if depth > 100:
        return None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, (str, int, float, bool)) or k is None:
                out[str(k)] = _json_safe(v, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_json_safe(v, depth + 1) for v in value), key=str)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 63) else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None  # bytes (!!binary) and anything else JSON cannot hold


def _card_data_files(folder: Path, card: dict) -> dict[str, list[Path]]:
    """Split -> files named by the card's `configs` (the default config, else the first)."""
    configs = card.get("configs") or []
    if not isinstance(configs, list) or not configs:
        return {}
    config = next((c for c in configs if isinstance(c, dict) and (c.get("default") or
                                                                    c.get("config_name") == "default")), configs[0])
    spec = config.get("data_files") if isinstance(config, dict) else None
    if isinstance(spec, (str, dict)):
        spec = [spec]
    patterns: dict[str, list[str]] = {}
    for item in spec or []:
        if isinstance(item, str):
            patterns.setdefault("train", []).append(item)
        elif isinstance(item, dict) and "path" in item:
            paths = item["path"] if isinstance(item["path"], list) else [item["path"]]
            patterns.setdefault(str(item.get("split", "train")), []).extend(map(str, paths))
    splits = {}
    for split, globs in patterns.items():
        for g in globs:
            _relative_inside(folder, g, f"{folder / 'README.md'}: data_files path {g!r}")
        files = sorted({p for g in globs for p in folder.glob(g) if p.is_file()})
        files = [_inside(folder, p, f"{folder / 'README.md'}: data_files {p}") for p in files]
        if not files:
            raise InputError(f"{folder}: the card's data_files {globs} for split {split!r} match no file")
        splits[split] = files
    return splits


def _relative_inside(folder: Path, name: str, what: str) -> Path:
    """folder/name for a path written in a folder's metadata: refused when absolute or climbing out with
    '..' (a dataset folder may only name its own files)."""
    import os

    if not name or os.path.isabs(name) or name.startswith("~"):
        raise InputError(f"{what} is not a path inside the folder; a dataset folder may only name its own files")
    parts = Path(os.path.normpath(name)).parts
    if parts and parts[0] == "..":
        raise InputError(f"{what} climbs out of the folder with '..'; a dataset folder may only name its own files")
    return folder / name


def _inside(folder: Path, path: Path, what: str) -> Path:
    """`path` when it resolves inside `folder` (symlinks followed), else InputError."""
    root = folder.resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise InputError(f"{what} resolves to {real}, outside the folder {root}; a dataset folder may only "
                         "hold its own files (copy a linked folder with `cp -rL` first)")
    return path


def _json_file(path: Path, shape: type, what: str):
    """A folder's JSON metadata file, checked to be a `shape` (dict or list); InputError naming it."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CARD_HEADER_BYTES + 1)
        if len(raw) > MAX_CARD_HEADER_BYTES:
            raise ValueError(f"larger than {MAX_CARD_HEADER_BYTES >> 20} MiB")
        value = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"{path}: not a readable {what} ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(value, shape):
        raise InputError(f"{path}: not a {what} (a JSON {shape.__name__.replace('dict', 'object')} expected, "
                         f"found {type(value).__name__})")
    return value


def _saved_split(folder: Path, root: Path) -> tuple[list[Path], dict]:
    """The Arrow files of one `Dataset.save_to_disk` folder (state.json) and its dataset_info.json."""
    state_path = folder / "state.json"
    state = _json_file(state_path, dict, "datasets state file (re-save with save_to_disk)")
    entries = state.get("_data_files")
    if not isinstance(entries, list) or not all(isinstance(f, dict) and isinstance(f.get("filename"), str)
                                                for f in entries):
        raise InputError(f"{state_path}: not a datasets state file (`_data_files` must be a list of "
                         "{{\"filename\": ...}}); re-save with save_to_disk")
    files = [_inside(root, _relative_inside(folder, f["filename"], f"{state_path}: filename {f['filename']!r}"),
                     f"{state_path}: filename {f['filename']!r}") for f in entries]
    info_path = folder / "dataset_info.json"
    info = _json_safe(_json_file(info_path, dict, "datasets info file")) if info_path.exists() else {}
    return files, info


def read_hf_folder(folder: str | Path) -> HFFolder:
    """Find the data files of a Hugging Face datasets folder; raises InputError for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory")
    readme = folder / "README.md"
    card = read_card_header(readme) if readme.exists() else {}
    if (folder / "dataset_dict.json").exists():  # DatasetDict.save_to_disk: one folder per split
        dict_path = folder / "dataset_dict.json"
        names = _json_file(dict_path, dict, "datasets dict file").get("splits")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and _SPLIT_RE.fullmatch(n)
                                                               for n in names):
            raise InputError(f"{dict_path}: `splits` must be a list of split names (letters, digits, '_', '-', "
                             f"'.'), not {str(names)[:100]}")
        splits, info = {}, {}
        for name in names:
            splits[name], info = _saved_split(_inside(folder, folder / name, f"{dict_path}: split {name!r}"), folder)
        return _complete(HFFolder(folder, "save_to_disk", splits, card, info))
    if (folder / "state.json").exists():  # Dataset.save_to_disk
        files, info = _saved_split(folder, folder)
        split = info.get("split")
        return _complete(HFFolder(folder, "save_to_disk", {split if isinstance(split, str) and split else "train": files},
                                  card, info))
    splits = _card_data_files(folder, card)
    if not splits:  # the Hub's convention without a card: data/{split}-00000-of-00001.parquet
        for f in sorted(_inside(folder, p, str(p)) for p in (folder / "data").glob("*.parquet")):
            m = re.match(r"^([A-Za-z0-9_]+?)(?:[-_]\d+(?:-of-\d+)?)?\.parquet$", f.name)
            splits.setdefault(m.group(1) if m else "train", []).append(f)
    if not splits:
        raise InputError(f"{folder}: not a Hugging Face datasets folder (no dataset_dict.json, state.json, "
                         "README.md with data_files, or data/*.parquet); pass data files instead")
    return _complete(HFFolder(folder, "parquet", splits, card, {}))


def _complete(hf: HFFolder) -> HFFolder:
    missing = [f for f in hf.files if not f.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: listed by {hf.path} but missing; the folder is incomplete")
    return hf


READERS = {
    "jsonl": read_jsonl,
    "parquet": read_parquet,
    "text": read_text,
    "warc": read_warc,
    "mediawiki": read_mediawiki,
    "hf": read_hf_file,
}


def read_file(path: Path, fmt: str | None, cfg: ReaderConfig) -> Iterator[Doc | Reject]:
    """Documents and rejects of one input file, in order."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise InputError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return READERS[fmt](path, cfg)


@dataclasses.dataclass
class FileResult:
    path: str
    parts: list[str]  # complete DOC_SCHEMA Parquet files, each at most ~part_bytes of text
    n_docs: int
    n_bytes_in: int
    rejects: "pa.Table"  # source, reason, detail


def read_to_parts(path: str, fmt: str | None, cfg: ReaderConfig, out_dir: str, part_bytes: int,
                  row_group_bytes: int) -> FileResult:
    """Map: one input file -> Parquet parts of documents in out_dir, plus its rejects.

    Documents are written a row group at a time, so a worker holds about row_group_bytes of text
    whatever the size of the file. Touches nothing but out_dir: a driver decides what to keep."""
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    from corpora.documents import DOC_SCHEMA, make_documents

    parts: list[str] = []
    rows: list[dict] = []
    rejects: list[Reject] = []
    writer = None
    n_docs = part_size = group_size = 0

    def write_group() -> None:
        nonlocal writer, part_size, group_size
        if not rows:
            return
        if writer is None:
            parts.append(str(Path(out_dir) / f"{uuid.uuid4().hex}.parquet"))
            writer = pq.ParquetWriter(parts[-1], DOC_SCHEMA, compression="zstd")
        writer.write_table(make_documents(rows))
        rows.clear()
        part_size += group_size
        group_size = 0
        if part_size >= part_bytes:
            writer.close()
            writer, part_size = None, 0

    items = read_file(Path(path), fmt, cfg)
    last = str(path)
    while True:
        try:
            item = next(items, None)
        except InputError:
            raise
        except Exception as e:  # a reader bug or a library error on odd input: keep what was read
            rejects.append(Reject(f"{last} (after)", "read_error", f"{type(e).__name__}: {e}"[:200]))
            break
        if item is None:
            break
        last = item.source
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        try:
            if (problem := _unicode_problem(item)) is not None:
                rejects.append(Reject(item.source, "bad_unicode", problem))
                continue
            meta = json.dumps(item.meta, ensure_ascii=False, default=str) if item.meta else None
        except (ValueError, RecursionError) as e:  # metadata JSON cannot hold (too deep, a huge integer)
            rejects.append(Reject(item.source, "bad_json", f"metadata: {type(e).__name__}: {e}"[:200]))
            continue
        rows.append({"text": item.text, "source": item.source, "meta": meta, **item.columns})
        n_docs += 1
        group_size += len(item.text)
        if group_size >= row_group_bytes:
            write_group()
    write_group()
    if writer is not None:
        writer.close()
    table = pa.table({"source": [r.source for r in rejects], "reason": [r.reason for r in rejects],
                      "detail": [r.detail for r in rejects]},
                     schema=pa.schema([("source", pa.string()), ("reason", pa.string()), ("detail", pa.string())]))
    return FileResult(path, parts, n_docs, Path(path).stat().st_size, table)


def read_to_parts_job(job: tuple) -> FileResult:
    """read_to_parts over one argument tuple (for Pool.imap; lives here so workers import only this module)."""
    return read_to_parts(*job)
