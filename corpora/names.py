"""Names the store derives from user input: result-part keys and file-system-safe names (one rule each)."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]")


def part_key(*keys: str) -> str:
    """The result part of these keys, e.g. part_key("demo_sweep", "wiki") -> "demo_sweep__wiki": each key with
    every character outside [A-Za-z0-9_.=-] replaced by '-', joined by '__' (Store checks the result)."""
    return "__".join(_UNSAFE.sub("-", str(k)) for k in keys)


def safe_name(name: str, fallback: str = "tok") -> str:
    """A name safe in a file or folder name (artifact keys): unsafe characters as '_', no leading or
    trailing '.' or '_', `fallback` when nothing is left."""
    return _UNSAFE.sub("_", name).strip("._") or fallback
