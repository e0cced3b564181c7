"""One CLI grammar for every synthmix tool: the shared flags, spelled and meaning the same everywhere.

    --store PATH     the store (default: $SYNTHMIX_STORE, else ./store); before or after the command word
    --json           machine-readable output on stdout (no progress bars)
    -v / -q          more logging (INFO) / only errors, and no progress bars
    --no-progress    no progress bars
    --overwrite      replace what the command would otherwise keep or refuse to touch (commands that have
                     something to replace; older spellings such as --force stay as deprecated aliases)
    --engine, --workers, --ray-address
                     where a per-shard step runs (commands that run one; corpora.executor.ExecutorConfig)

A single-command tool calls `add_common_args(parser, ...)`; a tool with subcommands builds its parser with
`build_command_parser` and adds each command with `add(name, help, ...)`. Either calls `setup_logging(args)`
once and reads progress with `show_progress(args)`; errors leave through `corpora.exits.run_command`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

STORE_HELP = "store directory (default: $SYNTHMIX_STORE, else ./store)"


def add_common_args(parser: argparse.ArgumentParser, *, store: bool = True, json: bool = True,
                    verbosity: bool = True, progress: bool = True, overwrite: str | None = None,
                    overwrite_aliases: tuple[str, ...] = (), command: bool = False) -> None:
    """Add the shared flags; `overwrite` is the help text of --overwrite (None: the command has nothing to
    replace), `overwrite_aliases` older spellings of it kept for one release (e.g. "--recount").
    `command`: a subcommand whose root parser has the same flags (their defaults come from the root, so
    `--store X` works before and after the command word)."""
    g = parser.add_argument_group("common options")
    kw = {"default": argparse.SUPPRESS} if command else {}
    if store:
        g.add_argument("--store", metavar="PATH", help=STORE_HELP, **kw)
    if json:
        g.add_argument("--json", action="store_true", help="print the result as JSON", **kw)
    if verbosity:
        v = g.add_mutually_exclusive_group()
        v.add_argument("-v", "--verbose", action="store_true", help="log progress details (INFO)", **kw)
        v.add_argument("-q", "--quiet", action="store_true", help="log only errors; no progress bars", **kw)
    if progress:
        g.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars", **kw)
    if overwrite is not None:
        g.add_argument("--overwrite", *overwrite_aliases, dest="overwrite", action=_Overwrite, help=overwrite)


class _Overwrite(argparse.Action):
    """--overwrite (store_true); an older spelling still works for one release, with a warning."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string != "--overwrite":
            print(f"warning: {option_string} is deprecated and goes in the next release; use --overwrite",
                  file=sys.stderr)
        setattr(namespace, self.dest, True)


def build_command_parser(prog: str, description: str, examples: dict[str, str | Sequence[str]]
                         ) -> tuple[argparse.ArgumentParser, Callable[..., argparse.ArgumentParser]]:
    """(root parser, add): `add(name, help, description=None, overwrite=None, engine=False, workers=0,
    workers_help=None)` makes subcommand `name` with the shared flags, --overwrite when the command has
    something to replace, the execution flags when it runs a per-shard step, and examples[name] in its --help."""
    from corpora.executor import add_engine_args

    def lines(v):
        return [v] if isinstance(v, str) else list(v)

    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples:\n  " + "\n  ".join(x for v in examples.values() for x in lines(v)))
    add_common_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, *, description: str | None = None, overwrite: str | None = None,
            overwrite_aliases: tuple[str, ...] = (), engine: bool = False, workers: int | None = 0,
            workers_help: str | None = None) -> argparse.ArgumentParser:
        ex = lines(examples.get(name, ()))
        p = sub.add_parser(name, help=help, description=description or help,
                           epilog=("example" + ("s" if len(ex) > 1 else "") + ":\n  " + "\n  ".join(ex)) if ex else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common_args(p, overwrite=overwrite, overwrite_aliases=overwrite_aliases, command=True)
        if engine:
            add_engine_args(p, workers=workers, **({"workers_help": workers_help} if workers_help else {}))
        return p

    return parser, add


def setup_logging(args: argparse.Namespace, default: int = logging.WARNING) -> None:
    """Logging for a CLI run: `default` (WARNING), INFO with -v, ERROR with -q."""
    level = (logging.INFO if getattr(args, "verbose", False) else
             logging.ERROR if getattr(args, "quiet", False) else default)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars unless --no-progress, -q or --json (whose stdout a script reads)."""
    return (getattr(args, "progress", True) and not getattr(args, "json", False)
            and not getattr(args, "quiet", False))
