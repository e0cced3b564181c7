"""Every command of every tool has --help with a description and an example (the sqlite-utils habit), reached
through the `synthmix` entry point; the console script in pyproject.toml points at it."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
import tomllib

import pytest

from reports import cli
from tests.conftest import REPO


COMMANDS = [words for words, _ in cli.every_parser()]


def test_the_walk_sees_every_tool_and_the_new_commands():
    assert ("corpora", "export") in COMMANDS and ("corpora", "ingest") in COMMANDS
    assert ("train", "export") in COMMANDS and ("stats", "unigram") in COMMANDS
    assert ("synth", "generate") in COMMANDS and ("reports", "study") in COMMANDS
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_help_has_a_description_and_an_example(words):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        cli.main([*words, "--help"])
    text = out.getvalue()
    assert exit_.value.code == 0 and text.startswith("usage:"), f"synthmix {' '.join(words)} --help failed"
    body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    assert len(body.strip()) > 40, f"synthmix {' '.join(words)} --help has no description"
    assert "example" in text.lower(), f"synthmix {' '.join(words)} --help shows no example"
    # the example shows this very command (its tool and, for a subcommand, its name)
    tool_words = max((w for w in cli.TOOLS if words[:len(w)] == w), key=len)
    module, _, *before = cli.TOOLS[tool_words]
    assert " ".join(["python -m", module.removesuffix(".__main__"), *(before[0] if before else ())]) in text
    if len(words) > len(tool_words):
        assert words[-1] in text.split("xample", 1)[1]


# commands that run a per-shard step through the executor, and commands with something to replace
ENGINE_COMMANDS = {("corpora", "ingest"), ("corpora", "export"), ("corpora", "dedup"), ("synth", "generate"),
                   ("stats", "unigram"), ("stats", "dedup"), ("train", "mix")}
OVERWRITE_COMMANDS = {("corpora", "export"), ("corpora", "dedup"), ("stats", "unigram"), ("stats", "dedup"),
                      ("train", "mix"), ("train", "export")}
LEAVES = [(words, parser) for words, parser in cli.every_parser() if not cli.subparsers(parser)]


@pytest.mark.parametrize("words,parser", LEAVES, ids=[" ".join(w) for w, _ in LEAVES])
def test_every_command_takes_the_shared_flags(words, parser):
    """One grammar (corpora/cli_common.py): the same spelling of --store, --json, -v/-q and --no-progress on every
    command; the execution flags on every per-shard step; --overwrite where there is something to replace."""
    options = set(parser._option_string_actions)
    assert {"--store", "--json", "-v", "--verbose", "-q", "--quiet", "--no-progress"} <= options
    assert ({"--engine", "--workers", "--ray-address"} <= options) == (words in ENGINE_COMMANDS)
    assert ("--overwrite" in options) == (words in OVERWRITE_COMMANDS)


def test_store_goes_before_or_after_the_command_word_and_old_spellings_warn(capsys):
    from train.__main__ import build_parser

    mix = ["mix", "m", "--parts", "cc=1", "--tokens", "1k"]
    assert build_parser().parse_args(["--store", "S", *mix]).store == "S"
    assert build_parser().parse_args([*mix, "--store", "T", "-q"]).store == "T"
    args = build_parser().parse_args([*mix, "--force"])
    assert args.overwrite and "--force is deprecated" in capsys.readouterr().err
    assert not build_parser().parse_args(mix).overwrite


def test_synthmix_usage_and_unknown_commands(capsys):
    assert cli.main([]) == 0 and "stats unigram" in capsys.readouterr().out
    assert cli.main(["stats"]) == 0 and "stats dedup" in capsys.readouterr().out
    assert cli.main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    assert cli.main(["stats", "nope"]) == 2 and "unknown command 'stats nope'" in capsys.readouterr().err


def test_every_tool_runs_as_a_module():
    """Each tool's `python -m X --help` (its __main__.py, as a user runs it), all in one fresh process."""
    modules = sorted({spec[0].removesuffix(".__main__") for spec in cli.TOOLS.values()})
    script = ("import contextlib, io, runpy, sys\n"
              f"for m in {modules!r}:\n"
              "    sys.argv = [m, '--help']\n"
              "    out = io.StringIO()\n"
              "    try:\n"
              "        with contextlib.redirect_stdout(out):\n"
              "            runpy.run_module(m, run_name='__main__', alter_sys=True)\n"
              "    except SystemExit as e:\n"
              "        print(m, e.code, out.getvalue().startswith('usage:'))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:-1] == [f"{m} 0 True" for m in modules]


def test_console_script_entry_point_runs_a_command(tmp_path):
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["synthmix"].split(":")
    assert getattr(importlib.import_module(module), func) is cli.main
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", module, "corpora", "--store", str(tmp_path / "s"), "list"],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no store at")  # a one-line, fixable error
