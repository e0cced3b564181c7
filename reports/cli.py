"""synthmix: one entry point for every synthmix command (the console script pyproject installs).

It lives in `reports`, the top layer, because it dispatches to every layer below (corpora, train, stats,
synth, reports); the layers themselves never import upward (tests/test_layers.py).

    synthmix corpora ingest cc data/*.jsonl.gz        = python -m corpora ingest cc data/*.jsonl.gz
    synthmix corpora dedup cc --out cc_dedup          = python -m stats.dedup curate cc --out cc_dedup
    synthmix synth generate --type hq --source cc     = python -m synth generate ...
    synthmix stats unigram --train cc --test wiki     = python -m stats.unigram ...
    synthmix stats dedup --corpus hq --against cc     = python -m stats.dedup ...
    synthmix stats scaling --runs cpu_sweep           = python -m stats.scaling ...
    synthmix stats findings                           = python -m stats.findings ...
    synthmix stats mixopt fit --sweep demo_swarm      = python -m stats.mixopt fit ...
    synthmix stats evals run --runs demo --tasks arc_easy:rc_0shot = python -m stats.evals run ...
    synthmix train mix cc_hq --parts cc=0.67,hq=0.33 --tokens 20M
    synthmix train export cc_hq --format megatron --out megatron_data
    synthmix reports study

Each tool is the module's own `main(argv)`: the same flags, help and exit codes as its `python -m` form.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command words -> (module whose main(argv) runs them, one line of help[, words put before the user's argv])
TOOLS: dict[tuple[str, ...], tuple] = {
    ("corpora",): ("corpora.__main__", "store corpora: ingest, list, show, sql, export, rm, demo"),
    # curation writes a corpus but needs stats.dedup's clusters, so the command lives in stats (above corpora)
    ("corpora", "dedup"): ("stats.dedup", "write a near-deduplicated copy of a corpus (one document per cluster)",
                           ("curate",)),
    ("synth",): ("synth.__main__", "generate synthetic corpora (hq, qa, txbk), list models, serve a model"),
    ("stats", "unigram"): ("stats.unigram", "unigram coverage, KL and shrinkage between corpora"),
    ("stats", "dedup"): ("stats.dedup", "near-duplicates (MinHash LSH) in a corpus or against another"),
    ("stats", "scaling"): ("stats.scaling", "scaling-law fits, speed-ups and optimal ratios"),
    ("stats", "findings"): ("stats.findings", "the study's claims judged against the result tables (table findings)"),
    ("stats", "mixopt"): ("stats.mixopt.__main__", "mixture choice: swarm of proxy runs, fit, proposal, validation"),
    ("stats", "evals"): ("stats.evals.__main__", "downstream evaluation (ARC, HellaSwag, ...) of runs and HF models"),
    ("train",): ("train.__main__", "mixtures, tokenizers, presets, training runs, sweeps, mixture export"),
    ("reports",): ("reports.__main__", "the study driver and the HTML report"),
}


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def tool_parser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    """The parser the tool of `words` builds in its main(), taken at its parse_args call (nothing runs)."""
    module_name, _, *before = TOOLS[words]
    module = importlib.import_module(module_name)

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        module.main(list(before[0]) if before else [])
    except _Captured as c:
        return c.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise RuntimeError(f"{module_name}.main never parsed its arguments")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def every_parser() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(synthmix command words, parser) of every command of every tool, each tool's own parser first."""
    out = []

    def walk(words, parser):
        out.append((words, parser))
        for name, sub in subparsers(parser).items():
            walk(words + (name,), sub)

    for words in TOOLS:
        walk(words, tool_parser(words))
    return out


def usage(prefix: tuple[str, ...] = ()) -> str:
    rows = [(" ".join(words), spec[1]) for words, spec in TOOLS.items() if words[:len(prefix)] == prefix]
    width = max(len(w) for w, _ in rows)
    lines = [f"usage: synthmix {' '.join(prefix) + ' ' if prefix else ''}COMMAND [ARGS...]", "",
             "commands (each takes --help):"]
    lines += [f"  {w.ljust(width)}  {t}" for w, t in rows]
    lines += ["", "examples:", "  synthmix corpora demo", "  synthmix stats unigram --train cc --test wiki",
              "  synthmix train export cc_hq --format flat --out data/"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for n in (2, 1):
        words = tuple(argv[:n])
        if words in TOOLS:
            from corpora.exits import run_command

            module_name, _, *before = TOOLS[words]
            module = importlib.import_module(module_name)
            args = [*(before[0] if before else ()), *argv[n:]]
            return run_command("", lambda: module.main(args) or 0)  # Ctrl-C: one line, exit 130
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if any(w[0] == argv[0] and len(w) > 1 for w in TOOLS):  # a group: `synthmix stats`
        if len(argv) == 1 or argv[1] in ("-h", "--help"):
            print(usage((argv[0],)))
            return 0
        print(f"synthmix: error: unknown command {' '.join(argv[:2])!r}\n\n{usage((argv[0],))}", file=sys.stderr)
        return 2
    print(f"synthmix: error: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
