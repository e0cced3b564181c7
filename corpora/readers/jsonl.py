"""JSON Lines: a document per line, its text in `cfg.text_field`, the other fields as meta."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from corpora.readers.base import Doc, ReaderConfig, Reject, _check_text
from corpora.readers.compression import _lines


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
