"""What every `python -m stats.mixopt` command shares: its parser's common flags, the store, the output."""

from __future__ import annotations

import argparse
import json
import math

from corpora.cli_common import add_common_args
from corpora.store import Store, resolve_store_path


def add_command(sub, name: str, help: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """A subcommand with the shared flags (corpora.cli_common) and its examples in the epilog."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example" + ("s" if len(examples) > 1 else "") + ":\n  " + "\n  ".join(examples))
    add_common_args(p, command=True)
    return p


def open_store(args) -> Store:
    return Store(resolve_store_path(args.store))


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def emit(args, result: dict, text: str) -> int:
    """Print the result as JSON (--json; NaN becomes null) or as text; exit status 0."""
    print(json.dumps(_clean(result), indent=2, default=str) if args.json else text)
    return 0
