"""Build the study report: one self-contained HTML file from what the store holds.

The report reads result tables through the store and draws them; it computes nothing of its own (the
fitted curves it draws are evaluated from the `fits` table's parameters, the findings are the `findings`
table that `python -m stats.findings` writes). Every section is always present: with no data it says what
is missing and which command makes it; a section that fails to render shows its error instead of vanishing.
The sections live in reports/sections.py, reports/sections_training.py and reports/section_*.py.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import traceback
from pathlib import Path

import jinja2

from corpora.store import Store, atomic_path
from reports.page import Figure, Section, Table, format_cell, result_table
from reports.section_evals import section_evals
from reports.section_mixopt import section_mixopt
from reports.section_schedules import section_schedules
from reports.sections import section_collapse, section_dedup, section_inventory, section_unigram
from reports.sections_training import (section_decisions, section_learning, section_ratios, section_scaling,
                                       section_speedups, section_training)
from stats import evidence
from stats.findings import compute_findings as findings

# the names code imported from here before the sections and the findings moved out stay importable
__all__ = ["Figure", "Section", "Table", "SECTIONS", "build_sections", "build_report", "read_findings", "findings",
           "section_inventory", "section_unigram", "section_dedup", "section_training", "section_learning",
           "section_scaling", "section_speedups", "section_ratios", "section_decisions", "section_evals",
           "section_collapse", "section_schedules", "section_mixopt"]

log = logging.getLogger(__name__)

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
)

SECTIONS = (section_inventory, section_unigram, section_dedup, section_training, section_learning, section_scaling,
            section_speedups, section_ratios, section_decisions, section_evals, section_collapse, section_schedules,
            section_mixopt)

FINDINGS_MISSING = ("No findings yet: `python -m stats.findings --store STORE` judges the claims against the "
                    "result tables (the study runs it right before the report).")


def build_sections(store: Store) -> list[Section]:
    out = []
    for fn in SECTIONS:
        try:
            out.append(fn(store))
        except Exception as e:  # one broken section must not hide the others
            log.exception("section %s failed", fn.__name__)
            name = fn.__name__.removeprefix("section_")
            out.append(Section(name, name.title(), "", error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
    return out


def _css(verdict: str) -> str:
    """The row class of a verdict: its first word ('inconclusive (within noise)' -> 'inconclusive')."""
    return "not-enough-data" if verdict == evidence.NO_DATA else verdict.split(" ")[0]


def read_findings(store: Store) -> tuple[list[dict] | None, str]:
    """The rows of table `findings` in claim order, each with its row class, and a line on when and with
    what bootstrap they were computed; (None, why) when the table is absent."""
    df = result_table(store, "findings")
    if df is None:
        return None, FINDINGS_MISSING
    df = df.sort("position")
    rows = [{**r, "css": _css(r["verdict"])} for r in df.select("claim", "verdict", "counts", "measured").to_dicts()]
    return rows, (f"Computed by `python -m stats.findings` at {format_cell(df['created_at'].max())} UTC with "
                  f"{df['n_boot'][0]} bootstrap replicates (seed {df['seed'][0]}); rerun it after new results.")


def build_report(store: Store, out: str | Path, title: str = "synthmix study report",
                 study: dict | None = None) -> Path:
    """Render the report to `out` (atomically) and return its path."""
    store.check_outside(out)  # a report path inside the store could replace a shard or a result part
    out = Path(out)
    sections = build_sections(store)
    try:
        claims, findings_note = read_findings(store)
    except Exception as e:  # like a section: show the error, keep the rest of the page
        log.exception("findings could not be read")
        claims, findings_note = None, f"The findings table could not be read: {type(e).__name__}: {e}"
    page = _TEMPLATES.get_template("report.html.j2").render(
        title=title, generated_at=dt.datetime.now().isoformat(timespec="seconds"), store=str(store.root),
        sections=sections, findings=claims, findings_note=findings_note, verdict_rule=evidence.VERDICT_RULE,
        study_json=json.dumps(study, indent=2) if study else None,
        escape=html.escape)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
