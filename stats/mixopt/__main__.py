"""python -m stats.mixopt {swarm,fit,validate,probe}: choose a mixture from a swarm of proxy runs.

Each command is a module of this package with `add_parser(subparsers)` and `run(args) -> exit status`;
COMMANDS lists them in help order (probe: anneal probes, docs/schedules.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from corpora.cli_common import add_common_args, setup_logging

COMMANDS = ("swarm", "fit", "validate", "probe")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stats.mixopt", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m stats.mixopt swarm demo_swarm --sources cc,hq,qa,txbk --n 32\n"
               "  python -m stats.mixopt fit --sweep demo_swarm --objective wiki --validate --json")
    add_common_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"stats.mixopt.{name}")
        module.add_parser(sub)
        sub.choices[name].set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    return args.run(args)


if __name__ == "__main__":
    from corpora.exits import run_command

    sys.exit(run_command("python -m stats.mixopt", main))
