"""Which reader reads a file: the format from its name, and one entry per format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from corpora.readers.base import Doc, InputError, ReaderConfig, Reject
from corpora.readers.hf import read_hf_file
from corpora.readers.jsonl import read_jsonl
from corpora.readers.mediawiki import read_mediawiki
from corpora.readers.parquet import read_parquet
from corpora.readers.text import read_text
from corpora.readers.warc import read_warc

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
