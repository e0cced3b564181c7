"""The docs build (mkdocs --strict, with the CLI reference generated from the parsers) and every command
they show exists: each `python -m X ...` / `synthmix ...` line of a code block in README.md and docs/ names
a real command, and every --flag it uses is one that command accepts (checked on the parsers, in-process;
nothing runs); `python benchmarks/...` and `bash scripts/...` name files that exist."""

from __future__ import annotations

import importlib.util
import re
import shlex

import pytest

from reports import cli
from tests.conftest import REPO, require

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_mkdocs_build_strict(tmp_path):
    require("mkdocs", "the dev extra installs it")
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    config = load_config(str(REPO / "mkdocs.yml"), strict=True, site_dir=str(tmp_path / "site"))
    build(config)  # strict: a broken link or a warning aborts
    pages = {p.parent.name for p in (tmp_path / "site").rglob("index.html")}
    assert {"cli", "dedup", "store", "benchmarks"} <= pages
    reference = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert all(f'id="{"-".join(words)}"' in reference for words, _ in cli.every_parser())


def shown_commands() -> list[tuple[str, int, list[str]]]:
    """(page, line, tokens) of every command line in a fenced code block of the docs."""
    found = []
    for page in PAGES:
        fence = False
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("```"):
                fence = not fence
                continue
            line = re.sub(r"\s+#\s.*$", "", line).strip()  # a trailing comment
            if fence and re.match(r"(python -m |synthmix |python benchmarks/|bash (scripts|benchmarks)/)", line):
                found.append((page.name, n, shlex.split(line.replace("\\", ""))))
    return found


COMMANDS = shown_commands()


def _tool(tokens: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """The TOOLS entry a command line runs, and the tokens after the tool's own words."""
    if tokens[0] == "synthmix":
        for n in (2, 1):
            if tuple(tokens[1:1 + n]) in cli.TOOLS:
                return tuple(tokens[1:1 + n]), tokens[1 + n:]
        return None
    module, rest = tokens[2], tokens[3:]
    best = None
    for words, (mod, _, *before) in cli.TOOLS.items():
        prefix = list(before[0]) if before else []
        if mod.removesuffix(".__main__") == module and rest[:len(prefix)] == prefix:
            if best is None or len(prefix) > best[2]:
                best = (words, rest[len(prefix):], len(prefix))
    return (best[0], best[1]) if best else None


@pytest.mark.parametrize("page, line, tokens", COMMANDS, ids=[f"{p}:{n}" for p, n, _ in COMMANDS])
def test_command_in_docs_exists(page, line, tokens):
    where = f"{page}:{line}: {' '.join(tokens)}"
    if tokens[0] in ("python", "bash") and tokens[1] != "-m":
        assert (REPO / tokens[1]).is_file(), where
        return
    found = _tool(tokens)
    if found is None:  # a module outside the synthmix tools (python -m pytest, python -m train.loop, ...)
        assert tokens[0] == "python" and importlib.util.find_spec(tokens[2]) is not None, where
        return
    words, rest = found
    chain = parser_chain(words, rest, where)
    flags = {part.split("=", 1)[0] for t in rest for part in t.strip("[]").split("|") if part.startswith("--")}
    known = {option for parser in chain for option in parser._option_string_actions}
    assert flags <= known, f"{where}: unknown flags {sorted(flags - known)}"


def parser_chain(words: tuple[str, ...], rest: list[str], where: str) -> list:
    """The tool's parser and each subcommand's on the way; a word where a subcommand must come is one."""
    parser = cli.tool_parser(words)
    chain, tokens = [parser], iter(rest)
    for token in tokens:
        option = token.strip("[]").split("|")[0].split("=")[0]
        if option.startswith("-"):
            action = parser._option_string_actions.get(option)
            if action is not None and action.nargs != 0 and "=" not in token:
                next(tokens, None)  # its value
        elif cli.subparsers(parser):
            assert token in cli.subparsers(parser), f"{where}: no command {token!r}"
            parser = cli.subparsers(parser)[token]
            chain.append(parser)
    return chain


def test_the_docs_show_commands_of_every_stage():
    shown = {" ".join(t[:3]) for _, _, t in COMMANDS}
    assert {"python -m corpora", "python -m stats.dedup", "python -m synth", "python -m train",
            "python -m reports"} <= shown
