"""Every result table declared with its columns, and checked on write.

The module that writes a table declares it at import time, next to the writer (`declare("runs", {...}, doc)`
in train.loop, the dedup tables in stats.dedup.analyze, ...): the ground layer holds the registry and never
imports the writers. `Store.put_result` calls `check` before it writes anything, so an undeclared table, a
missing column or an unexpected one fails loudly at the writer instead of blanking a report section later.
Readers name columns through `COLUMNS` / `table(name)` instead of spelling them again.

`created_at` is never declared as an input: `Store.put_result` stamps it (UTC, naive timestamp) on every
row it writes, so every table has it and readers order rows by it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable

CREATED_AT = "created_at"  # stamped by Store.put_result on every result row


@dataclasses.dataclass(frozen=True)
class ResultTable:
    """A result table: its required columns (column -> short type or meaning) and what one row is.

    `optional` columns are declared but may be absent: a writer whose columns legitimately vary (dedup's
    within and across modes, a sweep simulated without training) names them there. `extra=True` lets a
    writer add columns nobody declared; only where the set is open by design (the doc says why)."""

    name: str
    columns: dict[str, str]
    doc: str
    optional: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: bool = False
    owner: str = ""  # the module that declared it (for messages and docs)


_TABLES: dict[str, ResultTable] = {}
# name -> required column names, in order: what readers name columns through (kept in step with _TABLES)
COLUMNS: dict[str, tuple[str, ...]] = {}


def declare(name: str, columns: dict[str, str], doc: str, optional: dict[str, str] | None = None,
            extra: bool = False) -> ResultTable:
    """Declare result table `name` (idempotent for an identical declaration; a conflicting one is an error)."""
    optional = dict(optional or {})
    if CREATED_AT in columns or CREATED_AT in optional:
        raise ValueError(f"result table {name!r}: do not declare {CREATED_AT!r}; Store.put_result stamps it")
    if set(columns) & set(optional):
        raise ValueError(f"result table {name!r}: {', '.join(sorted(set(columns) & set(optional)))} both "
                         "required and optional")
    owner = sys._getframe(1).f_globals.get("__name__", "")  # as collections.namedtuple finds its caller
    new = ResultTable(name, dict(columns), doc, optional, extra, owner)
    old = _TABLES.get(name)
    if old is not None:
        if (old.columns, old.doc, old.optional, old.extra) != (new.columns, new.doc, new.optional, new.extra):
            raise ValueError(f"result table {name!r} is already declared differently by {old.owner}; "
                             "one module owns a table, change its declaration there")
        return old
    _TABLES[name] = new
    COLUMNS[name] = tuple(new.columns)
    return new


def declared() -> dict[str, ResultTable]:
    """Every table declared so far (by the modules imported so far), by name."""
    return dict(_TABLES)


def table(name: str) -> ResultTable:
    """The declaration of `name`; KeyError if no imported module declares it."""
    return _TABLES[name]


def check(name: str, column_names: Iterable[str]) -> None:
    """Refuse a write of `column_names` to table `name` that its declaration does not allow (a StoreError)."""
    from corpora.store import StoreError  # not at the top: corpora.store imports this module

    decl = _TABLES.get(name)
    if decl is None:
        raise StoreError(f"result table {name!r} is not declared; declare it with corpora.results.declare(name, "
                         "columns, doc) in the module that writes it")
    have = set(column_names) - {CREATED_AT}
    missing = [c for c in decl.columns if c not in have]
    if missing:
        raise StoreError(f"result table {name!r} misses declared column(s) {', '.join(missing)}; write them or "
                         f"change the declaration in {decl.owner or 'its module'}")
    extra = sorted(have - set(decl.columns) - set(decl.optional))
    if extra and not decl.extra:
        raise StoreError(f"result table {name!r} got undeclared column(s) {', '.join(extra)}; add them to its "
                         f"declaration in {decl.owner or 'its module'}")


def missing_columns(name: str, columns: Iterable[str]) -> list[str]:
    """Declared columns of table `name` that `columns` lacks (none for an undeclared table)."""
    have = set(columns)
    return [c for c in COLUMNS.get(name, ()) if c not in have]


def markdown(tables: Iterable[ResultTable] | None = None) -> str:
    """The result tables as a Markdown list (docs/store.md holds it; a test keeps the two in step)."""
    out = []
    for t in sorted(tables if tables is not None else _TABLES.values(), key=lambda t: t.name):
        cols = ", ".join(f"`{c}` ({kind})" for c, kind in t.columns.items())
        opt = ", ".join(f"`{c}` ({kind})" for c, kind in t.optional.items())
        out.append(f"- **`{t.name}`** (`{t.owner}`): {t.doc} Columns: {cols}, `{CREATED_AT}`"
                   + (f"; optional: {opt}" if opt else "") + ("; more columns allowed" if t.extra else "") + ".")
    return "\n".join(out) + "\n"
