"""python -m train {mix,tokenizer,presets,run,sweep,export}: build mixtures, train tokenizers and models.

The CLI only parses arguments, calls the library (train.data, train.tokenizer, train.loop, train.sweep)
and prints a summary (or JSON with --json). Usage errors exit with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from corpora.cli_common import setup_logging, show_progress

EXAMPLES = {
    "mix": "python -m train mix cc_hq --parts cc=0.67,hq=0.33 --tokens 20M --seed 0 --tokenizer demo_bpe",
    "tokenizer": "python -m train tokenizer demo_bpe --corpora cc,wiki --vocab 8192",
    "presets": "python -m train presets --vocab 8192 --json",
    "run": "python -m train run --mixture cc_hq --model cpu-4m --tokens 5M --lr 3e-3",
    "sweep": "python -m train sweep examples/sweep_cpu.toml",
    "export": "python -m train export cc_hq --format megatron --out megatron_data   "
              "(a run: python -m train export RUN_ID --format hf --out hf_model)",
}


def _count(text: str) -> int:
    from train.data import MixtureError, parse_count

    try:
        return parse_count(text)
    except MixtureError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parts(text: str) -> dict[str, float]:
    from train.data import MixtureError, parse_parts

    try:
        return parse_parts(text)
    except MixtureError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give a comma-separated list of corpus names, e.g. cc,wiki")
    return names


def build_parser() -> argparse.ArgumentParser:
    from corpora.cli_common import build_command_parser

    parser, add = build_command_parser("python -m train", __doc__.splitlines()[0], EXAMPLES)

    p = add("mix", "Build a mixture: a packed token stream with exact per-part token shares.",
            overwrite="rebuild a mixture that exists with another config (old spelling: --force)",
            overwrite_aliases=("--force",), engine=True,
            workers_help="tokenizing processes (default: one, whose tokenizer threads use every core; on Ray: "
                         "the cluster's CPUs)")
    p.add_argument("name", help="mixture name (letters, digits, '_', '.', '-')")
    p.add_argument("--parts", type=_parts, required=True, metavar="C=S,...",
                   help="corpus=share pairs summing to 1, e.g. cc=0.67,hq=0.33")
    p.add_argument("--tokens", type=_count, required=True, help="token budget, e.g. 20M, 500k")
    p.add_argument("--seed", type=int, default=0, help="shuffle and interleaving seed (default 0)")
    p.add_argument("--tokenizer", default="cl100k_base",
                   help="tiktoken encoding, Hugging Face tokenizer path, smollm2, or a store tokenizer "
                        "(default cl100k_base)")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per training sequence (default 512)")
    p.add_argument("--max-epochs", type=float, default=16.0,
                   help="refuse to repeat any part more often than this (default 16)")

    p = add("tokenizer", "Train a byte-level BPE tokenizer on store corpora and register it in the store.")
    p.add_argument("name", help="tokenizer name (then usable as --tokenizer NAME)")
    p.add_argument("--corpora", type=_names, required=True, help="comma-separated corpus names, e.g. cc,wiki")
    p.add_argument("--vocab", type=int, default=8192, help="vocabulary size incl. <|endoftext|> (default 8192)")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge (default 2)")
    p.add_argument("--sample-bytes", type=_count, default=100_000_000,
                   help="train on a seeded sample of at most this much text, e.g. 100M, 1G (default 100M)")
    p.add_argument("--seed", type=int, default=0, help="which sample (default 0)")

    p = add("presets", "List the model presets with their parameter counts.")
    p.add_argument("--vocab", type=int, default=8192,
                   help="vocabulary size for the total parameter count (default 8192)")

    p = add("run", "Train one model on a mixture; validates on every test-role corpus.")
    p.add_argument("--mixture", help="a mixture built with `python -m train mix` (with --phases: optional, the "
                                     "last phase's)")
    p.add_argument("--model", required=True, help="model preset (see `python -m train presets`)")
    p.add_argument("--tokens", type=_count, required=True, help="training token budget, e.g. 5M")
    p.add_argument("--lr", "--lr-peak", dest="lr", type=float, default=None,
                   help="peak learning rate (default: the trainer's)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed (default 0)")
    p.add_argument("--val-tokens", type=_count, default=200_000,
                   help="tokens per validation set (default 200k)")
    p.add_argument("--val-corpora", type=_names, default=None,
                   help="validation corpora (default: every test-role corpus)")
    _add_run_options(p.add_argument_group("trainer options (train.loop.RunConfig fields)"))

    p = add("sweep", "Run a grid of mixtures x presets x token budgets, skipping done runs, resuming others.")
    p.add_argument("grid", help="grid TOML file (format: train/sweep.py's docstring; example: "
                                "examples/sweep_cpu.toml)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their status; train nothing")

    p = add("export", "Export a mixture for another trainer (Megatron-LM/NeMo indexed dataset, flat token file) "
                      "or a finished run as a Hugging Face LlamaForCausalLM directory.",
          overwrite="replace files of an earlier export")
    p.add_argument("mixture", metavar="NAME",
                   help="a mixture built with `python -m train mix` (megatron, flat) or a finished run id (hf)")
    p.add_argument("--format", choices=("megatron", "flat", "hf"), default="megatron",
                   help="megatron: NAME_text_document.bin + .idx (MMIDIDX; --data-path OUT/NAME_text_document); "
                        "flat: NAME.bin, uint16/uint32 tokens with end-of-text between documents, as nanoGPT and "
                        "OLMo-core memory-map it. Both with a JSON sidecar. hf: the run NAME as config.json + "
                        "model.safetensors + tokenizer that transformers loads (default megatron)")
    p.add_argument("--out", required=True, help="output directory")
    return parser


# RunConfig fields the run command sets itself (or that -q and the mixture decide).
_RUN_OWNED = {"run_id", "mixture", "model", "tokens", "seed", "lr_peak", "sweep", "progress", "seq_len"}


_RUN_HELP = {
    "dtype": "auto: bf16 on GPUs and on CPUs with AMX / AVX512-BF16, else fp32; or bf16, fp32",
    "keep_optimizer": "a finished run keeps checkpoint.pt (optimizer state) next to model.safetensors",
    "weights_dtype": "dtype of the finished run's model.safetensors: fp32 or bf16",
    "branch_from": "wsd: start from this run's stable-phase checkpoint at this run's decay start",
    "branch_tokens": "wsd: smaller budgets (e.g. 64k,128k) that will branch off this run",
    "phases": "a phase schedule, mixture:until pairs, e.g. cc:0.8,cc67_hq33:1 (the data switches to cc67_hq33 "
              "for the last 20%% of the steps; docs/schedules.md)",
}


def _add_run_options(group) -> None:
    """One flag per remaining RunConfig field (--batch-size, --schedule, --compile, ...); only flags
    given on the command line reach the config, the rest keep RunConfig's defaults."""
    from train.loop import RunConfig

    for f in dataclasses.fields(RunConfig):
        if f.name in _RUN_OWNED:
            continue
        flag, kind = "--" + f.name.replace("_", "-"), str(f.type)
        help = f"{_RUN_HELP[f.name]} (default: {f.default})" if f.name in _RUN_HELP else f"default: {f.default}"
        if kind == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help)
        else:
            cast = int if kind.startswith("int") else float if kind.startswith("float") else str
            group.add_argument(flag, type=_count if cast is int else cast, default=argparse.SUPPRESS,
                               metavar=f.name.upper(), help=help)


def _run_options(args) -> dict:
    from train.loop import RunConfig

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)
            if f.name not in _RUN_OWNED and hasattr(args, f.name)}


def _print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _json(obj) -> None:
    print(json.dumps(obj, indent=1, default=str))


def cmd_mix(args, store) -> int:
    from train.data import MixtureConfig, build_mixture

    cfg = MixtureConfig(name=args.name, parts=args.parts, tokens=args.tokens, seed=args.seed,
                        tokenizer=args.tokenizer, seq_len=args.seq_len, max_epochs=args.max_epochs)
    rows = build_mixture(store, cfg, overwrite=args.overwrite, progress=show_progress(args), workers=args.workers,
                         engine=args.engine, ray_address=args.ray_address).to_dicts()
    if args.json:
        _json(rows)
        return 0
    r0 = rows[0]
    print(f"mixture {cfg.name}: {r0['n_sequences']} sequences x {r0['seq_len'] + 1} tokens = "
          f"{r0['total_tokens']} tokens, tokenizer {r0['tokenizer']} (vocab {r0['vocab_size']}), seed {r0['seed']}")
    _print_table(rows, ["corpus", "kind", "synthetic_type", "share", "n_tokens", "n_unique_tokens", "epochs",
                        "warning"])
    return 0


def cmd_tokenizer(args, store) -> int:
    from train.tokenizer import train_tokenizer

    row = train_tokenizer(store, args.name, args.corpora, args.vocab, args.min_frequency,
                          sample_bytes=args.sample_bytes, seed=args.seed)
    if args.json:
        _json(row)
    else:
        sample = "all of" if row["sample_whole"] else f"a seeded sample (seed {row['sample_seed']}) of"
        print(f"tokenizer {row['tokenizer']}: {row['n_vocab']} tokens (end-of-text id {row['eot_id']}), trained on "
              f"{row['sample_docs']} docs ({row['sample_bytes']} bytes), {sample} {row['corpora']} "
              f"({row['n_docs']} docs, {row['n_bytes']} bytes) in {row['elapsed_s']:.1f}s\n"
              f"saved to {row['path']}; use it with --tokenizer {row['tokenizer']}")
    return 0


def cmd_presets(args, store) -> int:
    from train.model import PRESETS, count_preset_params

    rows = []
    for name, cfg in PRESETS.items():
        n_params, n_params_total = count_preset_params(name, args.vocab)
        rows.append({"preset": name, "n_params": n_params, "n_params_total": n_params_total,
                     "vocab_size": args.vocab, **{k: v for k, v in dataclasses.asdict(cfg).items()
                                                 if k != "vocab_size"}})
    if args.json:
        _json(rows)
    else:
        for r in rows:
            r["n_params"], r["n_params_total"] = f"{r['n_params'] / 1e6:.2f}M", f"{r['n_params_total'] / 1e6:.2f}M"
        print(f"parameters: non-embedding (n_params) and total at vocab {args.vocab}")
        _print_table(rows, ["preset", "n_params", "n_params_total", "d_model", "n_layers", "n_heads", "n_kv_heads",
                            "ffn_hidden", "tie_embeddings"])
    return 0


def cmd_run(args, store) -> int:
    from train.phases import parse_phases
    from train.sweep import RunSpec, SweepError, execute_run

    mixture = args.mixture
    if getattr(args, "phases", None):
        phases = parse_phases(args.phases)   # PhaseError: one line, exit 2
        mixture = mixture or phases[-1]["mixture"]
    if not mixture:
        raise SweepError("give --mixture NAME (or a schedule with --phases cc:0.8,cc67_hq33:1)")
    spec = RunSpec(mixture=mixture, model=args.model, tokens=args.tokens, lr=args.lr, seed=args.seed,
                   options=_run_options(args), val_tokens=args.val_tokens, val_corpora=args.val_corpora)
    _check_one_step(store, spec)
    with store.writer(f"python -m train run --mixture {mixture} --model {args.model}"):
        result = execute_run(store, spec, progress=show_progress(args))
    if args.json:
        _json(result)
    else:
        print(f"run {result.get('run_id')} ({result.get('action')}): status {result.get('status')}, "
              f"{result.get('tokens_seen')} tokens, "
              f"final train loss {_fmt(result.get('final_train_loss'))}, {_fmt(result.get('tokens_per_s'))} tokens/s, "
              f"{_fmt(result.get('elapsed_s'))}s")
    return 0


def _check_one_step(store, spec) -> None:
    """Refuse a budget below one optimizer step before any data is read (one process: world size 1)."""
    from train.data import mixture_config
    from train.sweep import SweepError, check_run_spec, run_config

    check_run_spec(store, spec)
    cfg = run_config(store, spec)
    seq_len = cfg.seq_len or mixture_config(store, spec.mixture).seq_len
    per_step = cfg.batch_size * cfg.grad_accum * seq_len
    if spec.tokens < per_step:
        raise SweepError(f"--tokens {spec.tokens} is less than one optimizer step ({per_step} tokens = batch size "
                         f"{cfg.batch_size} x grad accum {cfg.grad_accum} x seq len {seq_len}); raise --tokens "
                         "or lower --batch-size")


def cmd_sweep(args, store) -> int:
    from train.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.grid)
    if args.dry_run:
        results = run_sweep(store, sweep, dry_run=True, progress=show_progress(args))
    else:
        with store.writer(f"python -m train sweep {args.grid}"):
            results = run_sweep(store, sweep, dry_run=False, progress=show_progress(args))
    if args.json:
        _json(results)
    else:
        _print_table(results, ["run_id", "action", "status", "tokens_seen", "final_train_loss", "elapsed_s", "error"])
    return 1 if any(r.get("status") == "failed" for r in results) else 0


def cmd_export(args, store) -> int:
    from train.export import ExportConfig, export_mixture

    if args.format == "hf":
        from train.export_hf import export_run_hf

        summary = export_run_hf(store, args.mixture, args.out, overwrite=args.overwrite)
        if args.json:
            _json(summary)
        else:
            print(f"run {args.mixture}: LlamaForCausalLM ({summary['dtype']}, {summary['n_params']} parameters, "
                  f"tokenizer {summary['tokenizer']}) -> {summary['out']}: {', '.join(summary['files'])}")
        return 0

    sidecar = export_mixture(store, ExportConfig(args.mixture, args.format, args.out, args.overwrite),
                             progress=show_progress(args))
    if args.json:
        _json(sidecar)
    else:
        print(f"mixture {args.mixture}: {sidecar['n_tokens']} tokens in {sidecar['n_documents']} documents "
              f"({sidecar['dtype']}) -> {', '.join(sidecar['files'])} in {args.out} (+ sidecar JSON)")
    return 0


COMMANDS = {"mix": cmd_mix, "tokenizer": cmd_tokenizer, "presets": cmd_presets, "run": cmd_run,
            "sweep": cmd_sweep, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    from corpora.exits import exit_on_early_interrupt

    exit_on_early_interrupt("python -m train")
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args)
    from corpora.exits import CommandError, run_command

    def command() -> int:
        # heavy imports (torch, DuckDB) inside run_command, so that a Ctrl-C while they load is one line
        from corpora.store import Store, resolve_store_path
        from train.model import UnknownPreset

        try:
            if args.command == "presets":
                return COMMANDS[args.command](args, None)
            store = Store(resolve_store_path(args.store))
            if args.command in ("mix", "tokenizer"):  # run and sweep take the lock after their checks
                with store.writer(f"python -m train {args.command} {args.name}"):
                    return COMMANDS[args.command](args, store)
            return COMMANDS[args.command](args, store)
        except UnknownPreset as e:
            raise CommandError(str(e)) from None

    # what the user can fix is one line; anything else is a bug: traceback
    return run_command(f"python -m train {args.command}", command)


if __name__ == "__main__":
    sys.exit(main())
