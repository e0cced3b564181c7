"""Plain text: a document per line, per block, per file, or per WikiText article."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from corpora.readers.base import Doc, ReaderConfig, Reject
from corpora.readers.compression import _lines

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
