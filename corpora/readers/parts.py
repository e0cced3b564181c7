"""The map step of ingest: one input file into Parquet parts of documents, plus its rejects."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from corpora.readers.base import InputError, ReaderConfig, Reject, _unicode_problem
from corpora.readers.formats import read_file

if TYPE_CHECKING:  # pyarrow is imported where it is used, so the readers stay light for workers
    import pyarrow as pa


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
    """read_to_parts over one argument tuple (for Pool.imap; lives here so workers import only the readers)."""
    return read_to_parts(*job)
