"""python -m reports: build the HTML report, or run the whole study that ends in it.

Examples:
    python -m reports build --out report.html
    python -m reports study                         # the demo study (reports/studies/demo.toml)
    python -m reports study --config my_study.toml --out my_report.html
"""

from __future__ import annotations

import argparse
import json
import sys

from corpora.cli_common import build_command_parser, setup_logging, show_progress
from corpora.store import Store, resolve_store_path


def cmd_build(args) -> int:
    from reports.build import build_report

    path = build_report(Store(resolve_store_path(args.store)), args.out, title=args.title)
    print(json.dumps({"report": str(path.resolve())}) if args.json else f"report: {path.resolve()}")
    return 0


def cmd_study(args) -> int:
    from reports.study import load_study, run_study

    study = load_study(args.config)
    if args.store:
        study.store = args.store
    if args.out:
        study.report = args.out
    result = run_study(study, progress=show_progress(args))
    print(json.dumps(result, indent=2, default=str) if args.json else f"report: {result['report']}")
    return 0


EXAMPLES = {
    "build": "python -m reports build --store store --out report.html",
    "study": ["python -m reports study", "python -m reports study --config my_study.toml --out my_report.html"],
}


def build_parser() -> argparse.ArgumentParser:
    p, add = build_command_parser("python -m reports", __doc__.splitlines()[0], EXAMPLES)
    sp = add("build", "render the self-contained HTML report from the store",
             description="Render the self-contained HTML report from what the store holds.")
    sp.add_argument("--out", default="report.html", help="output HTML file")
    sp.add_argument("--title", default="synthmix study report")
    sp.set_defaults(func=cmd_build)
    sp = add("study", "run the whole study from a TOML file, ending in the report",
             description="Run the whole study (generate, analyse, mix, train, fit, report) from a study TOML file; "
                         "steps already done are reused (--store overrides the study file's store).")
    sp.add_argument("--config", help="study TOML (default: the demo study shipped in reports/studies/demo.toml)")
    sp.add_argument("--out", help="report path (overrides the study file)")
    sp.set_defaults(func=cmd_study)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    from corpora.exits import run_command

    return run_command("", lambda: args.func(args), user_errors=(ValueError,))


if __name__ == "__main__":
    sys.exit(main())
