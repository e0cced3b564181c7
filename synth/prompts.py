"""Prompt templates as data: one text file per synthetic type, versioned by a hash of its text.

HQ and QA follow the rephrasing recipe of WRAP (Maini et al. 2024): a web chunk is rewritten in a
target style ("like Wikipedia", "as questions and answers"). TXBK follows Cosmopedia: a textbook
section written for a given audience and style about a topic seeded by key terms and an extract of a
web document. The text of each template is ours.

A template is a user message with `str.format` fields (literal braces are written `{{` and `}}`):
- rephrasing templates use `{text}` (one chunk of a source document);
- topic templates use `{key_terms}`, `{extract}`, `{audience}` and `{style}`.
"""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

from corpora.templates import read_template, template_id

BUILTIN_TYPES = ("hq", "qa", "txbk")
PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
REPHRASE_FIELDS = frozenset({"text"})
TOPIC_FIELDS = frozenset({"key_terms", "extract", "audience", "style"})

# Cosmopedia varies audience and style so that prompts on one topic do not yield near-duplicate text.
AUDIENCES = (
    "high school students",
    "first-year college students",
    "young children",
    "general adult readers",
    "professionals new to the field",
    "graduate students",
)
STYLES = (
    "an academic textbook",
    "a friendly tutorial with everyday examples",
    "a story that teaches through a narrative",
    "a concise reference manual",
    "a lecture transcript",
)


class PromptError(ValueError):
    """A prompt template the user can fix; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    type: str  # synthetic type written on the corpus (hq, qa, txbk or the user's own)
    text: str
    path: str

    @property
    def prompt_id(self) -> str:
        """`type-` + 8 hex digits of BLAKE2b over the template text: changes whenever the text does."""
        return template_id(self.type, self.text)

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(name for _, name, _, _ in string.Formatter().parse(self.text) if name)

    @property
    def mode(self) -> str:
        """'rephrase' (one prompt per source chunk) or 'topic' (one prompt per clustered source doc)."""
        return "topic" if self.fields & TOPIC_FIELDS else "rephrase"

    def render(self, **values: str) -> list[dict]:
        """Chat messages for one request."""
        return [{"role": "user", "content": self.text.format(**values)}]


def load_prompt(type_: str, path: str | Path | None = None) -> PromptTemplate:
    """The built-in template of `type_`, or the user's template file `path` (which defines the type)."""
    if path is None:
        if type_ not in BUILTIN_TYPES:
            raise PromptError(
                f"unknown synthetic type {type_!r}: built-in types are {', '.join(BUILTIN_TYPES)}; "
                "pass --prompt FILE to add your own"
            )
        path = PROMPT_DIR / f"{type_}.txt"
    path = Path(path)
    try:
        text = read_template(path)
    except OSError as e:
        raise PromptError(f"cannot read prompt file {path}: {e.strerror}") from None
    try:
        fields = frozenset(name for _, name, _, _ in string.Formatter().parse(text) if name)
    except ValueError as e:
        raise PromptError(f"{path}: bad template ({e}); write literal braces as {{{{ and }}}}") from None
    if fields not in (REPHRASE_FIELDS, TOPIC_FIELDS):
        raise PromptError(
            f"{path}: template fields are {sorted(fields) or 'none'}; use exactly {{text}} (rephrasing) "
            f"or {{key_terms}}, {{extract}}, {{audience}}, {{style}} (textbook topics)"
        )
    return PromptTemplate(type=type_, text=text, path=str(path))
