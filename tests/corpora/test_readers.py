"""Every reader on real files, and every kind of bad input."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpora.demo import WIKI_FILE, demo_data_dir
from corpora.readers import Doc, InputError, ReaderConfig, Reject, read_file, wikitext_to_text


def _split(items):
    docs = [x for x in items if isinstance(x, Doc)]
    rejects = [x for x in items if isinstance(x, Reject)]
    return docs, rejects


def test_c4_jsonl(shared_data):
    path = shared_data / "cc" / "c4_sample.jsonl"
    docs, rejects = _split(list(read_file(path, None, ReaderConfig())))
    expected = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert [d.text for d in docs] == [t for t in expected if t.strip()]
    assert docs[0].source == f"{path}:1" and "meta" in docs[0].meta


def test_ccnet_jsonl_gz(shared_data):
    for name in ("ccnet_head-0091.jsonl.gz", "ccnet_head-0174.jsonl.gz"):
        docs, rejects = _split(list(read_file(shared_data / "cc" / name, None, ReaderConfig())))
        assert len(docs) == 10 and not rejects
        assert docs[0].meta["metadata"]["bucket"] == "head"  # CC metadata kept


def test_warc_files(shared_data):
    counts = {}
    for name in ("cc-sample-0000.warc.gz", "cc-sample-0001.warc.gz"):
        docs, rejects = _split(list(read_file(shared_data / "cc" / name, None, ReaderConfig())))
        counts[name] = len(docs) + len(rejects)
        assert docs, name
        for d in docs:
            assert d.meta["url"].startswith("http") and d.meta["date"][:2] == "20"
            assert "<html" not in d.text.lower() and "<div" not in d.text.lower()
    assert counts == {"cc-sample-0000.warc.gz": 22, "cc-sample-0001.warc.gz": 15}  # responses, per the README


def test_wikitext2_articles(shared_data):
    path = shared_data / "wiki" / "wikitext2_test.txt"
    docs, _ = _split(list(read_file(path, "text", ReaderConfig(text_mode="wikitext"))))
    lines = path.read_text(encoding="utf-8").splitlines()
    titles = [ln for ln in lines if ln.startswith(" = ") and ln.endswith(" = ") and not ln.startswith(" = =")]
    assert len(docs) == len(titles) > 60
    assert [d.text.splitlines()[0].strip() for d in docs] == [t.strip() for t in titles]
    assert all(d.text.startswith("= ") for d in docs)


def test_text_modes(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("one a\none b\n\ntwo a\n\n\nthree\n", encoding="utf-8")
    assert [d.text for d in read_file(path, None, ReaderConfig(text_mode="line"))] == ["one a", "one b", "two a", "three"]
    assert [d.text for d in read_file(path, None, ReaderConfig(text_mode="block"))] == ["one a\none b", "two a", "three"]
    assert [d.text for d in read_file(path, None, ReaderConfig(text_mode="file"))] == ["one a\none b\n\ntwo a\n\n\nthree"]


def test_mediawiki_dump_skips_redirects():
    items = list(read_file(demo_data_dir() / WIKI_FILE, None, ReaderConfig()))
    docs, rejects = _split(items)
    assert len(docs) == 106
    assert len(docs) + len(rejects) == 206  # every page accounted for
    assert sum(r.reason == "wiki_redirect" for r in rejects) >= 99
    anarchism = next(d for d in docs if d.meta["title"] == "Anarchism")
    assert "[[" not in anarchism.text and "{{" not in anarchism.text and "<ref" not in anarchism.text
    assert "political philosophy" in anarchism.text


def test_wikitext_to_text_hand_checked():
    text = wikitext_to_text("'''Bold''' [[Paris|the capital]] {{cite web|url=x}}[[File:a.jpg|thumb|cap]]<ref>r</ref>\n== H ==\nend")
    assert text == "Bold the capital\nH\nend"


def test_parquet_reader(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"content": ["alpha", "", "gamma"], "lang": ["en", "en", "fr"]}), path)
    docs, rejects = _split(list(read_file(path, None, ReaderConfig(text_field="content"))))
    assert [d.text for d in docs] == ["alpha", "gamma"] and docs[1].meta == {"lang": "fr"}
    assert [r.reason for r in rejects] == ["empty_text"]
    docs, rejects = _split(list(read_file(path, None, ReaderConfig(text_field="text"))))
    assert not docs and rejects[0].reason == "missing_text_field"


BAD_LINES = [
    (b'{"text": "fine document"}\n', None),
    (b'{"text": "broken json\n', "bad_json"),
    (b'{"text": "bad \xff\xfe utf8"}\n', "bad_utf8"),
    (b'{"body": "no text field"}\n', "missing_text_field"),
    (b'{"text": "   "}\n', "empty_text"),
    (b'[1, 2]\n', "missing_text_field"),
    (b'{"text": "second fine document"}\n', None),
]


def test_bad_jsonl_records_are_counted_with_location(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(line for line, _ in BAD_LINES))
    items = list(read_file(path, None, ReaderConfig()))
    assert [getattr(x, "reason", None) for x in items] == [r for _, r in BAD_LINES]
    assert items[2].source == f"{path}:3"


@pytest.mark.parametrize("opener,suffix", [(gzip.compress, ".jsonl.gz"), (lambda b: bz2.compress(b, 1), ".jsonl.bz2")])
def test_truncated_streams(tmp_path, opener, suffix, lee_texts):
    data = opener("".join(json.dumps({"text": t}) + "\n" for t in lee_texts).encode())
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    docs, rejects = _split(list(read_file(path, None, ReaderConfig())))
    assert 0 < len(docs) < len(lee_texts)
    assert [d.text for d in docs] == lee_texts[: len(docs)]
    assert rejects[-1].reason == "truncated_stream"


def test_zstd_jsonl(tmp_path, lee_texts):
    import zstandard

    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress("".join(json.dumps({"text": t}) + "\n" for t in lee_texts[:20]).encode()))
    assert [d.text for d in read_file(path, None, ReaderConfig())] == lee_texts[:20]


def test_corrupt_parquet_is_a_reject(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    (reject,) = list(read_file(path, None, ReaderConfig()))
    assert reject.reason == "corrupt_parquet" and str(path) in reject.source


def _warc_record(url: str, ctype: str, body: bytes) -> bytes:
    http = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
            f"WARC-Record-ID: <urn:uuid:{abs(hash(url))}>\r\nContent-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(http)}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


def test_warc_non_html_record_is_rejected(tmp_path):
    path = tmp_path / "mixed.warc.gz"
    html = b"<html><body><article><p>" + b"A real paragraph of text about rivers and lakes. " * 5 + b"</p></article></body></html>"
    path.write_bytes(gzip.compress(_warc_record("http://a.example/", "text/html", html)
                                   + _warc_record("http://b.example/x.png", "image/png", b"\x89PNG....")))
    docs, rejects = _split(list(read_file(path, None, ReaderConfig())))
    assert len(docs) == 1 and "rivers and lakes" in docs[0].text and docs[0].meta["url"] == "http://a.example/"
    assert [(r.reason, r.detail) for r in rejects] == [("not_html", "image/png")]


def test_unopenable_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_file(tmp_path / "missing.jsonl", None, ReaderConfig())
    with pytest.raises(InputError, match="--format"):
        read_file(Path(__file__), None, ReaderConfig())
