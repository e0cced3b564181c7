"""The flags every synthmix CLI shares, spelled and meaning the same everywhere:

    --store PATH     the store (default: $SYNTHMIX_STORE, else ./store)
    --json           machine-readable output on stdout
    -v / -q          more logging (INFO) / only errors
    --no-progress    no progress bars (also implied by --json)
    --overwrite      replace what the command would otherwise keep or refuse to touch

A tool adds the ones it needs with `add_common_args(parser, ...)` and calls `setup_logging(args)` once.
"""

from __future__ import annotations

import argparse
import logging


def add_common_args(parser: argparse.ArgumentParser, *, store: bool = True, json: bool = True,
                    verbosity: bool = True, progress: bool = True, overwrite: str | None = None,
                    overwrite_aliases: tuple[str, ...] = ()) -> None:
    """Add the shared flags; `overwrite` is the help text of --overwrite (None: the tool has no such flag),
    `overwrite_aliases` older spellings of it kept for one release (e.g. "--recount")."""
    g = parser.add_argument_group("common options")
    if store:
        g.add_argument("--store", help="store directory (default: $SYNTHMIX_STORE, else ./store)")
    if json:
        g.add_argument("--json", action="store_true", help="print the result as JSON")
    if verbosity:
        v = g.add_mutually_exclusive_group()
        v.add_argument("-v", "--verbose", action="store_true", help="log progress details (INFO)")
        v.add_argument("-q", "--quiet", action="store_true", help="log only errors")
    if progress:
        g.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    if overwrite is not None:
        g.add_argument("--overwrite", *overwrite_aliases, dest="overwrite", action="store_true", help=overwrite)


def setup_logging(args: argparse.Namespace) -> None:
    """Logging for a CLI run: WARNING by default, INFO with -v, ERROR with -q."""
    level = (logging.INFO if getattr(args, "verbose", False) else
             logging.ERROR if getattr(args, "quiet", False) else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars unless --no-progress or --json (whose stdout a script reads)."""
    return getattr(args, "progress", True) and not getattr(args, "json", False)
