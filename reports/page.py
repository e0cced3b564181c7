"""The parts of a report page: a Section holds Figures and Tables; cells are formatted one way everywhere.

Every section module builds its Section from these and reads result tables through `result_table`, so
the page assembly (reports/build.py) and the sections share nothing else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import polars as pl

from corpora.store import Store


@dataclasses.dataclass
class Figure:
    src: str  # data URI
    caption: str


@dataclasses.dataclass
class Table:
    columns: list[str]
    rows: list[list]
    caption: str = ""

    @classmethod
    def from_df(cls, df: pl.DataFrame, caption: str = "", digits: int = 4, columns=None, sort=()) -> "Table":
        """A table of df; `columns` and `sort` name the wanted columns in order and the sort keys, and the
        ones a table lacks (older result tables, absent optional fields) are left out."""
        if columns is not None:
            df = df.select([c for c in columns if c in df.columns])
        keys = [c for c in sort if c in df.columns]
        if keys:
            df = df.sort(*keys)
        return cls(df.columns, [[format_cell(v, digits) for v in row] for row in df.iter_rows()], caption)

    def cell_class(self, value: str) -> str:
        return "long" if len(str(value)) > 60 else ""


@dataclasses.dataclass
class Section:
    id: str
    title: str
    intro: str
    figures: list[Figure] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    empty: str | None = None  # why there is nothing to show, and how to get it
    error: str | None = None


def format_cell(v, digits: int = 4) -> str:
    """A cell's text: None as a dash, floats to `digits` significant digits, times to the second."""
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        return f"{v:.{digits}g}"
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat(sep=" ", timespec="seconds") if isinstance(v, dt.datetime) else v.isoformat()
    return str(v)


def result_table(store: Store, name: str) -> pl.DataFrame | None:
    """Result table `name`, or None when it is absent or empty (a section then says how to make it)."""
    df = store.read_result(name)
    return df if df is not None and df.height else None
