"""Property-based fuzzing of every reader (issue 24): random mutations (bytes replaced, a span deleted,
junk inserted, the file cut) of a valid file never raise out of the reader (every problem is a Reject),
and for line- and record-oriented formats (JSONL, WARC) every record outside the damaged span is ingested.
Compressed and columnar files: a mutation can damage everything after it, so there the property is no
exception, and a cut compressed file yields a prefix of the records."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from corpora.readers import Doc, InputError, ReaderConfig, Reject, read_file  # noqa: E402

# bounded and reproducible: the same examples on every run (no flaky deadlines on a loaded CI machine);
# SYNTHMIX_FUZZ_EXAMPLES=500 for a deeper local run
FUZZ = settings(max_examples=int(os.environ.get("SYNTHMIX_FUZZ_EXAMPLES", "20")), deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXTS = [f"Record {i}: the quick brown fox jumps over the lazy dog near the river bank, number {i}." for i in range(12)]

mutations = st.tuples(st.sampled_from(["replace", "delete", "insert", "cut"]), st.floats(0, 1),
                      st.integers(1, 40), st.binary(min_size=1, max_size=40))


def _mutate(data: bytes, mutation) -> tuple[bytes, tuple[int, int]]:
    """The mutated bytes and the damaged span [a, b) in the original's offsets (b = len for a cut)."""
    kind, where, n, junk = mutation
    pos = min(int(where * len(data)), len(data) - 1)
    if kind == "replace":
        return data[:pos] + junk[:n] + data[pos + n:], (pos, pos + n)
    if kind == "delete":
        return data[:pos] + data[pos + n:], (pos, pos + n)
    if kind == "insert":
        return data[:pos] + junk + data[pos:], (pos, pos + 1)
    return data[:pos], (pos, len(data))


def _read(path: Path, fmt: str) -> list[Doc | Reject]:
    try:
        items = list(read_file(path, fmt, ReaderConfig()))
    except InputError:
        return []  # a file that cannot be opened at all is one clear error, not a traceback
    assert all(isinstance(i, (Doc, Reject)) for i in items)
    return items


def _spans(records: list[bytes]) -> list[tuple[int, int]]:
    spans, at = [], 0
    for r in records:
        spans.append((at, at + len(r)))
        at += len(r)
    return spans


def _outside(spans, damaged) -> list[int]:
    """Records whose bytes (with one byte of margin each side) do not touch the damaged span."""
    a, b = damaged
    return [i for i, (s, e) in enumerate(spans) if e < a - 1 or s > b]


JSONL = [(json.dumps({"text": t, "i": i}) + "\n").encode() for i, t in enumerate(TEXTS)]


def _records_outside_the_damage_are_read(folder: Path, records: list[bytes], name: str, fmt: str, key, mutation):
    """Mutate the concatenated records, read the file, and check every record the damage did not touch
    came out (`key(doc)` is the record's index)."""
    data, damaged = _mutate(b"".join(records), mutation)
    path = folder / name
    path.write_bytes(data)
    found = {key(d) for d in _read(path, fmt) if isinstance(d, Doc)}
    for i in _outside(_spans(records), damaged):
        assert i in found or f"http://example.com/{i}" in found, (i, mutation)


@FUZZ
@given(mutation=mutations)
def test_jsonl(tmp_path_factory, mutation):
    _records_outside_the_damage_are_read(tmp_path_factory.mktemp("fuzz"), JSONL, "in.jsonl", "jsonl",
                                         lambda d: TEXTS.index(d.text) if d.text in TEXTS else None, mutation)


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


@FUZZ
@given(codec=st.sampled_from(["gz", "zst"]), mutation=mutations)
@example(codec="gz", mutation=("replace", 0.5, 1, b"\x00"))  # damaged deflate data: zlib.error
def test_compressed_jsonl(tmp_path_factory, codec, mutation):
    raw = b"".join(JSONL)
    packed = gzip.compress(raw, mtime=0) if codec == "gz" else _zstd(raw)
    data, _ = _mutate(packed, mutation)
    path = tmp_path_factory.mktemp("fuzz") / f"in.jsonl.{codec}"
    path.write_bytes(data)
    docs = [d.text for d in _read(path, "jsonl") if isinstance(d, Doc)]
    if mutation[0] == "cut":  # a cut stream: what comes out is a prefix of the records, and the cut is a reject
        assert docs == TEXTS[:len(docs)]


def _warc_record(i: int, text: str) -> bytes:
    body = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><title>t{i}</title>"
            f"</head><body><article><p>{text}</p><p>{text}</p></article></body></html>").encode()
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: http://example.com/{i}\r\n"
            f"WARC-Date: 2024-01-01T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:{i:08d}>\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body + b"\r\n\r\n"


WARC = [_warc_record(i, t) for i, t in enumerate(TEXTS)]


_WARC_BYTES = b"".join(WARC)
_FIRST_LENGTH = (_WARC_BYTES.index(b"Content-Length") + 0.5) / len(_WARC_BYTES)


@FUZZ
@given(mutation=mutations)
@example(mutation=("replace", _FIRST_LENGTH, 5, b"XXXXX"))  # the first record loses its Content-Length: an endless loop
def test_warc(tmp_path_factory, mutation):
    _records_outside_the_damage_are_read(tmp_path_factory.mktemp("fuzz"), WARC, "in.warc", "warc",
                                         lambda d: d.meta["url"], mutation)


def test_warc_fixture_reads_whole(tmp_path):
    path = tmp_path / "in.warc"
    path.write_bytes(b"".join(WARC))
    assert len([d for d in _read(path, "warc") if isinstance(d, Doc)]) == len(TEXTS)


def _columnar(tmp_path: Path, kind: str) -> bytes:
    table = pa.table({"text": TEXTS, "i": list(range(len(TEXTS)))})
    path = tmp_path / f"whole.{kind}"
    if kind == "parquet":
        pq.write_table(table, path, row_group_size=3)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            for batch in table.to_batches(max_chunksize=3):
                w.write_batch(batch)
    return path.read_bytes()


@FUZZ
@given(kind=st.sampled_from(["parquet", "arrow"]), mutation=mutations)
@example(kind="arrow", mutation=("replace", 0.5, 1, b"\x80"))  # a string that is no longer UTF-8
@example(kind="parquet", mutation=("replace", 0.3, 1, b"\x80"))
def test_columnar(tmp_path_factory, kind, mutation):
    folder = tmp_path_factory.mktemp("fuzz")
    data, _ = _mutate(_columnar(folder, kind), mutation)
    path = folder / f"data-00000-of-00001.{kind}"
    path.write_bytes(data)
    items = _read(path, "parquet" if kind == "parquet" else "hf")
    if mutation[0] == "cut":  # never a silent half: a cut file ends in a reject
        assert any(isinstance(i, Reject) for i in items)


WIKI_PAGES = [(f"<page><title>Page {i}</title><ns>0</ns><id>{i}</id><revision><text>'''{t}''' "
               f"[[link|with a link]].</text></revision></page>\n").encode() for i, t in enumerate(TEXTS)]
WIKI = b"<mediawiki>\n" + b"".join(WIKI_PAGES) + b"</mediawiki>\n"


@FUZZ
@given(mutation=mutations)
def test_mediawiki(tmp_path_factory, mutation):
    data, _ = _mutate(WIKI, mutation)
    path = tmp_path_factory.mktemp("fuzz") / "pages.xml"
    path.write_bytes(data)
    items = _read(path, "mediawiki")
    if mutation[0] == "cut":
        titles = [d.meta["title"] for d in items if isinstance(d, Doc)]
        assert titles == [f"Page {i}" for i in range(len(titles))]  # a prefix of the pages
