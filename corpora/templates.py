"""Prompt template ids: a template's text names itself by a hash (`prompt_id`), stamped on every synthetic
document. In the ground layer because the generator (synth) writes the ids and the export (corpora) reads
a template's text back from the file a corpus's meta names (`prompt_path`)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def normalize_template(text: str) -> str:
    """A template's text as it is hashed and used: no leading/trailing blank space, one final newline."""
    return text.strip() + "\n"


def template_id(type_: str, text: str) -> str:
    """`type-` + 8 hex digits of BLAKE2b over the template text: changes whenever the text does."""
    return f"{type_}-{hashlib.blake2b(text.encode('utf-8'), digest_size=4).hexdigest()}"


def read_template(path: str | Path) -> str:
    """The normalised text of a template file (OSError when it cannot be read)."""
    return normalize_template(Path(path).read_text(encoding="utf-8"))
