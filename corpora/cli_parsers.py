"""The parser shape every subcommand CLI shares: a root parser listing the examples, and `add(name, help)`
for a subcommand with the common flags (--store, --json, -q) and its own example in its --help."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def build_command_parser(prog: str, description: str, examples: dict[str, str]
                         ) -> tuple[argparse.ArgumentParser, Callable[[str, str], argparse.ArgumentParser]]:
    """(root parser, add): `add(name, help)` makes subcommand `name` whose --help ends with examples[name]."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="PATH", help="store directory (default: $SYNTHMIX_STORE, else ./store)")
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")

    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples:\n  " + "\n  ".join(examples.values()))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help, description=help,
                              epilog=f"example:\n  {examples[name]}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    return parser, add
