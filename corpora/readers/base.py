"""What every reader shares: the document and reject records, the config, and the checks on a text."""

from __future__ import annotations

import dataclasses
import json

REASONS = (
    "bad_json", "bad_utf8", "bad_unicode", "missing_text_field", "empty_text", "text_not_string",
    "truncated_stream", "corrupt_parquet", "corrupt_arrow", "not_html", "bad_warc_record", "wiki_redirect",
    "wiki_not_article", "bad_xml", "read_error",
)


class InputError(Exception):
    """An input file that cannot be read at all."""


@dataclasses.dataclass
class Doc:
    text: str
    source: str  # file:line, file#record, or URL
    meta: dict
    # document columns a reader restores as they were exported (source_doc_id, generator, prompt_id)
    columns: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Reject:
    source: str
    reason: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
    text_field: str = "text"
    # plain text: one doc per "line", per blank-line-separated "block", per "file", or per
    # "wikitext" article (a new document at each level-1 heading line " = Title = ", as in WikiText-2)
    text_mode: str = "line"
    min_chars: int = 1  # shorter documents are rejected as empty_text
    html_extractor: str = "resiliparse"  # or "trafilatura"
    # hf: keep an exported `doc_id` column as the document's id (set for folders a synthmix export wrote:
    # a synthetic document's id hashes how it was made, not its text, so it cannot be recomputed)
    keep_doc_ids: bool = False


def _check_text(text, source: str, cfg: ReaderConfig) -> Reject | None:
    if not isinstance(text, str):
        return Reject(source, "text_not_string", "null" if text is None else type(text).__name__)
    if len(text.strip()) < cfg.min_chars:
        return Reject(source, "empty_text")
    return None


def _unicode_problem(doc: Doc) -> str | None:
    """Why a document's text or metadata cannot be stored as UTF-8 (a lone surrogate such as a JSON
    "\\ud800" escape or an XML &#xD800; entity), else None."""
    for where, value in (("text", doc.text), ("meta", json.dumps(doc.meta, ensure_ascii=False, default=str))):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"lone surrogate {value[e.start]!r} at character {e.start} of the {where}"
    return None


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
