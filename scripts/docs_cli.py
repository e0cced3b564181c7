"""The CLI reference page, generated from the argparse parsers themselves (so it never goes stale).

mkdocs runs it as a hook (mkdocs.yml `hooks:`): the page `cli.md` is added to every build. Run directly,
it prints the page: `python scripts/docs_cli.py > cli.md`.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # mkdocs loads hooks by path; the packages live next to this folder
    sys.path.insert(0, str(REPO))


def render() -> str:
    """Markdown: one section per command of every tool, with its --help text."""
    from reports import cli

    parsers = cli.every_parser()
    lines = ["# CLI reference", "",
             "Every command, as `synthmix WORDS` (the console script) and as its `python -m` form; the text "
             "below is each command's `--help`, generated from the parsers at build time "
             "(`scripts/docs_cli.py`).", ""]
    lines += [f"- [`synthmix {' '.join(words)}`](#{_anchor(words)})" for words, _ in parsers]
    for words, parser in parsers:
        lines += ["", f"## synthmix {' '.join(words)} {{#{_anchor(words)}}}", "", "```text",
                  parser.format_help().rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _anchor(words: tuple[str, ...]) -> str:
    return "-".join(words)


def on_files(files, config):
    """mkdocs hook: add the generated page to the build."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "cli.md", content=render()))
    return files


if __name__ == "__main__":
    sys.stdout.write(render())
