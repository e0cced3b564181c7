"""Clean generator outputs: strip chatty preambles, flag truncation, drop empty outputs."""

from __future__ import annotations

import dataclasses
import re

# Small instruction models often open with a line such as "Sure! Here is the rephrased text:" or end
# with an offer of more help. These patterns match such lines only at the very start or end.
_PREAMBLE = re.compile(
    r"""^\s*(?:
        (?:sure|certainly|of\ course|okay|ok|absolutely|great)[!,.]?\s*
        (?:here(?:'s|\ is|\ are)\b[^\n:]{0,80}:)?
      | here(?:'s|\ is|\ are)\b[^\n:]{0,80}:
      | (?:below\ is|the\ following\ is)\b[^\n:]{0,80}:
      | (?:rephrased|rewritten|paraphrased)(?:\ text|\ version|\ passage)?\s*:
      | (?:textbook\ section|section)\s*:
    )[ \t]*\n*""",
    re.IGNORECASE | re.VERBOSE,
)
_POSTAMBLE = re.compile(
    r"\n+[^\n]{0,40}\b(?:let me know|i hope this helps|feel free to ask)\b[^\n]{0,120}\s*$", re.IGNORECASE
)


@dataclasses.dataclass
class CleanedOutput:
    text: str
    preamble_stripped: bool
    truncated: bool  # the generator hit max_new_tokens: the text may end mid-sentence
    empty: bool  # nothing left: the output is dropped


def clean_output(text: str, finish_reason: str) -> CleanedOutput:
    """One output's cleaned text and its flags."""
    cleaned = text.strip()
    stripped = False
    m = _PREAMBLE.match(cleaned)
    if m and m.end() > 0:
        cleaned, stripped = cleaned[m.end():].strip(), True
    m = _POSTAMBLE.search(cleaned)
    if m:
        cleaned, stripped = cleaned[:m.start()].strip(), True
    # a reply wrapped in one pair of quotes or a code fence is unwrapped
    if len(cleaned) >= 2 and cleaned[0] == cleaned[-1] == '"' and cleaned.count('"') == 2:
        cleaned = cleaned[1:-1].strip()
    if cleaned.startswith("```") and cleaned.endswith("```") and len(cleaned) >= 6:
        cleaned = re.sub(r"^```[a-z]*\n?", "", cleaned[:-3]).strip()
    return CleanedOutput(cleaned, stripped, finish_reason == "length", not cleaned)
