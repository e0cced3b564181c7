"""Bad input never blocks or loses good input: each damaged record is a reject with its location and a
reason of its own, the rest of the file and the later files go in, and a rerun does not get stuck."""

from __future__ import annotations

import json
import struct
from xml.sax.saxutils import escape

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpora.ingest import IngestConfig, ingest
from corpora.readers import InputError, ReaderConfig, read_to_parts
from corpora.store import Store
from tests.reliability.conftest import one_line_error, run_cli


def _ingest(store: Store, paths, corpus: str = "c", **kw):
    return ingest(store, paths, IngestConfig(corpus=corpus, workers=1, **kw), progress=False)


def _rejects(store: Store, corpus: str = "c") -> list[tuple[str, str]]:
    return sorted((r["source"], r["reason"]) for r in
                  store.sql("SELECT source, reason FROM rejects WHERE corpus = ?", [corpus]).to_pylist())


def _texts(store: Store, corpus: str = "c") -> list[str]:
    return store.scan(corpus).select("text").collect()["text"].to_list()


def _read(path, fmt=None, tmp=None):
    """Documents and rejects of one file through the ingest map (no store)."""
    res = read_to_parts(str(path), fmt, ReaderConfig(), str(tmp), 1 << 30, 1 << 20)
    n = sum(pq.read_metadata(p).num_rows for p in res.parts)
    return n, list(zip(res.rejects.column("source").to_pylist(), res.rejects.column("reason").to_pylist()))


def test_lone_surrogates_are_rejects_and_later_files_go_in(tmp_path, lee_texts):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([
        json.dumps({"text": lee_texts[0]}),
        '{"text": "bad \\ud800 text"}',                       # valid JSON, not valid Unicode text
        '{"text": "fine text", "title": "meta \\udfff"}',     # the surrogate is in a metadata field
        json.dumps({"text": lee_texts[1]}),
    ]) + "\n")
    wiki = tmp_path / "w.xml"
    page = "<page><title>{t}</title><ns>0</ns><id>{i}</id><revision><text>{x}</text></revision></page>"
    # the wiki text holds the entity (escaped once for XML); turning markup into text decodes it
    wiki.write_text("<mediawiki>" + page.format(t="Bad", i=1, x="An entity &amp;#xD800; here. " * 5)
                    + page.format(t="Good", i=2, x=escape(lee_texts[2])) + "</mediawiki>")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": lee_texts[3]}) + "\n")
    store = Store(tmp_path / "store", create=True)
    report = _ingest(store, [bad, wiki, good])
    assert report.n_docs == 4 and report.rejects_by_reason == {"bad_unicode": 3}
    assert _rejects(store) == sorted([(f"{bad}:2", "bad_unicode"), (f"{bad}:3", "bad_unicode"),
                                      (f"{wiki}#Bad", "bad_unicode")])
    assert sorted(_texts(store)) == sorted(lee_texts[:2] + [lee_texts[3]] + [_texts(store)[2]])
    again = _ingest(store, [bad, wiki, good])  # not stuck: every file is done
    assert again.n_files_skipped == 3 and again.n_docs == 0


def _zstd_blocks(frame: bytes) -> list[int]:
    """Offsets where each block of a single zstd frame ends (RFC 8878 frame and block headers)."""
    assert frame[:4] == b"\x28\xb5\x2f\xfd"
    fhd = frame[4]
    single, fcs_flag, did_flag = (fhd >> 5) & 1, fhd >> 6, fhd & 3
    pos = 5 + (0 if single else 1) + [0, 1, 2, 4][did_flag] + [1 if single else 0, 2, 4, 8][fcs_flag]
    ends = []
    while True:
        (header,) = struct.unpack("<I", frame[pos:pos + 3] + b"\0")
        last, btype, size = header & 1, (header >> 1) & 3, header >> 3
        pos += 3 + (1 if btype == 1 else size)
        ends.append(pos)
        if last:
            return ends


@pytest.mark.parametrize("where", ["block_boundary", "mid_block"])
def test_truncated_zstd_is_a_truncated_stream(tmp_path, lee_texts, where):
    import zstandard

    lines = [json.dumps({"text": f"{i} {lee_texts[i % len(lee_texts)]}"}) + "\n" for i in range(3000)]
    frame = zstandard.ZstdCompressor(level=1).compress("".join(lines).encode())
    ends = _zstd_blocks(frame)
    assert len(ends) >= 3
    cut = ends[0] if where == "block_boundary" else ends[0] + (ends[1] - ends[0]) // 2
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(frame[:cut])
    n, rejects = _read(path, tmp=tmp_path)
    assert 0 < n < len(lines)
    assert [r for _, r in rejects] == ["truncated_stream"]
    whole = tmp_path / "whole.jsonl.zst"
    whole.write_bytes(frame + zstandard.ZstdCompressor().compress(lines[0].encode()))  # two frames, complete
    assert _read(whole, tmp=tmp_path) == (len(lines) + 1, [])


def _warc_record(url: str, html: str, length_delta: int = 0) -> bytes:
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}").encode()
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
            f"WARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\nContent-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(http) + length_delta}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


def _page(text: str) -> str:
    return f"<html><head><title>t</title></head><body><article><p>{text}</p></article></body></html>"


@pytest.mark.parametrize("damage", ["junk_between_records", "content_length_too_long", "content_length_too_short"])
def test_warc_resynchronises_on_the_next_record(tmp_path, lee_texts, damage):
    recs = [_warc_record(f"http://x.org/{i}", _page(lee_texts[i])) for i in range(4)]
    if damage == "junk_between_records":
        data = recs[0] + b"\x00garbage that is not a record\r\n" * 3 + recs[1] + recs[2] + recs[3]
        kept = 4
    else:
        delta = 200 if damage == "content_length_too_long" else -40
        recs[1] = _warc_record("http://x.org/1", _page(lee_texts[1]), length_delta=delta)
        data = b"".join(recs)
        kept = 3
    path = tmp_path / "x.warc"
    path.write_bytes(data)
    store = Store(tmp_path / "store", create=True)
    report = _ingest(store, [path])
    assert report.n_docs == kept and report.rejects_by_reason == {"bad_warc_record": 1}
    texts = _texts(store)
    assert not any("WARC/1.0" in t or "WARC-Type" in t for t in texts)
    assert any(lee_texts[3][:60] in t for t in texts)


def test_parquet_with_a_corrupt_row_group_keeps_the_others(tmp_path, lee_texts):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"text": lee_texts[:30]}), path, row_group_size=10, compression="zstd")
    meta = pq.read_metadata(path)
    col = meta.row_group(1).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(start + 20, start + col.total_compressed_size - 20):
        data[i] = (data[i] * 7 + 13) % 256
    path.write_bytes(bytes(data))
    n, rejects = _read(path, tmp=tmp_path)
    assert n == 20
    assert rejects == [(f"{path}#10-19", "corrupt_parquet")]


def test_text_that_is_not_a_string_has_its_own_reason(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": 5}\n{"text": ["a", "b"]}\n{"text": null}\n{"text": "   "}\n{"text": "ok"}\n')
    n, rejects = _read(path, tmp=tmp_path)
    assert n == 1
    assert [r for _, r in rejects] == ["text_not_string"] * 3 + ["empty_text"]


def test_empty_or_all_bad_input_fails_the_same_way_every_time(tmp_path):
    empty, bad = tmp_path / "empty.jsonl", tmp_path / "bad.jsonl"
    empty.write_bytes(b"")
    bad.write_text("not json\n{\"no_text\": 1}\n")
    store = tmp_path / "store"
    for path in (empty, bad):
        first = run_cli("corpora", "ingest", "c", str(path), "--workers", "1", store=store)
        second = run_cli("corpora", "ingest", "c", str(path), "--workers", "1", store=store)
        assert first.returncode == second.returncode == 2, (first.stderr, second.stderr)
        assert str(path) in one_line_error(first) and str(path) in one_line_error(second)


def test_ingest_of_a_directory_says_so(tmp_path):
    """A folder is read as a Hugging Face datasets folder on its own; among files it is named as a folder."""
    (tmp_path / "in").mkdir()
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    proc = run_cli("corpora", "ingest", "c", str(tmp_path / "a.jsonl"), str(tmp_path / "in"), store=tmp_path / "s")
    line = one_line_error(proc, 2)
    assert str(tmp_path / "in") in line and "folder" in line
    proc = run_cli("corpora", "ingest", "c", str(tmp_path / "in"), store=tmp_path / "s")
    assert str(tmp_path / "in") in one_line_error(proc, 2)
    with pytest.raises(InputError, match="is a directory"):
        ingest(Store(tmp_path / "s2", create=True), [tmp_path / "in"], IngestConfig(corpus="c"), progress=False)
