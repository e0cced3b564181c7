"""Parquet files: a document per row, read a row group at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from corpora.readers.base import Doc, InputError, ReaderConfig, Reject, _check_text, _jsonable


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
