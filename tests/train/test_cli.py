"""python -m train: mix/tokenizer/presets/run through the real CLI (--help of every command: tests/test_cli_help.py)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.conftest import add_corpus
from corpora.store import Store
from train.__main__ import main


def _fill(store, lee_texts):
    add_corpus(store, "cc", lee_texts[:250])
    add_corpus(store, "hq", lee_texts[250:260], kind="synthetic", synthetic_type="hq")
    add_corpus(store, "wiki", lee_texts[260:], role="test")
    return store


@pytest.fixture
def cli_store(store, lee_texts):
    return _fill(store, lee_texts)


@pytest.fixture(scope="module")
def checked_store(tmp_path_factory, lee_texts):
    """One store for the calls that must fail before writing anything (building stores is slow)."""
    return _fill(Store(tmp_path_factory.mktemp("checked") / "store", create=True), lee_texts)


def _run(capsys, argv) -> tuple[int, str, str]:
    """Exit status, stdout, stderr of one CLI call (argparse usage errors exit through SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_tokenizer_then_mix_then_run_with_json(cli_store, capsys):
    s = ["--store", str(cli_store.root)]
    code, out, _ = _run(capsys, ["tokenizer", "lee_bpe", "--corpora", "cc,hq", "--vocab", "600", "--json", *s])
    assert code == 0 and json.loads(out)["n_vocab"] == 600 and json.loads(out)["sample_whole"]
    code, out, _ = _run(capsys, ["tokenizer", "small", "--corpora", "cc,hq", "--vocab", "300", "--sample-bytes",
                                 "20k", "--seed", "1", *s])
    assert code == 0 and "a seeded sample (seed 1) of cc,hq" in out
    row = cli_store.read_result("tokenizers", "small").row(0, named=True)
    assert row["sample_bytes"] <= 20_000 < row["n_bytes"] and row["sample_seed"] == 1
    code, out, _ = _run(capsys, ["mix", "m", "--parts", "cc=0.75,hq=0.25", "--tokens", "6k", "--seed", "3",
                                 "--tokenizer", "lee_bpe", "--seq-len", "31", "--json", "-q", *s])
    rows = {r["corpus"]: r for r in json.loads(out)}
    assert code == 0 and rows["cc"]["n_tokens"] == 4_488 and rows["hq"]["n_tokens"] == 1_496  # of 6000 // 32 * 32
    assert rows["hq"]["synthetic_type"] == "hq" and rows["cc"]["synthetic_type"] is None
    train = np.load(cli_store.artifact_dir("mixtures", "m") / "train.npy")
    assert train.shape == (187, 32) and train.dtype == np.uint16
    code, out, _ = _run(capsys, ["mix", "m", "--parts", "cc=0.75,hq=0.25", "--tokens", "6k", "--seed", "3",
                                 "--tokenizer", "lee_bpe", "--seq-len", "31", "-q", *s])
    assert code == 0 and "mixture m: 187 sequences x 32 tokens" in out and "hq" in out

    run = ["run", "--mixture", "m", "--model", "debugmodel", "--tokens", "124", "--batch-size", "2", "--lr", "1e-3",
           "--eval-every-tokens", "124", "--num-threads", "1", "--val-tokens", "320", "--json", "-q", *s]
    code, out, _ = _run(capsys, run)
    row = json.loads(out)
    assert code == 0 and row["action"] == "started" and row["status"] == "done" and row["tokens_seen"] == 124
    assert row["lr_peak"] == 1e-3 and row["batch_size"] == 2 and row["tokenizer"] == "lee_bpe"
    val = cli_store.read_result("run_metrics", row["run_id"]).filter(split="val")
    assert val["domain"].to_list() == ["wiki"]  # the store's only test-role corpus
    code, out, _ = _run(capsys, run)
    assert code == 0 and json.loads(out)["action"] == "skipped"
    code, _, err = _run(capsys, [*run, "--schedule", "linear"])
    assert code == 2 and "unknown schedule 'linear'" in err


@pytest.mark.parametrize("argv, message", [
    (["mix", "m", "--parts", "cc:0.5", "--tokens", "5k"], "malformed part 'cc:0.5'"),
    (["mix", "m", "--parts", "cc=0.5,hq=0.5", "--tokens", "5q"], "cannot read '5q' as a count"),
    (["mix", "m", "--parts", "cc=0.5,web=0.5", "--tokens", "5k"], "unknown corpus 'web'; the store .* has: cc, hq, wiki"),
    (["mix", "m", "--parts", "cc=0.5,hq=0.4", "--tokens", "5k"], "shares must sum to 1"),
    (["mix", "m", "--parts", "hq=1", "--tokens", "5M"], "'hq' would be repeated at least .* --max-epochs 16"),
    (["mix", "m", "--parts", "cc=0.5,hq=0.5", "--tokens", "5k", "--tokenizer", "nope"], "unknown tokenizer 'nope'"),
    (["tokenizer", "t", "--corpora", "cc,web"], "unknown corpus 'web'"),
    (["tokenizer", "t", "--corpora", "cc", "--sample-bytes", "0"], "sample size 0 bytes is not positive"),
    (["run", "--mixture", "m", "--model", "gpt-9", "--tokens", "1k"], "unknown model preset 'gpt-9'; choose one of: .*cpu-1m"),
    (["run", "--mixture", "nope", "--model", "cpu-1m", "--tokens", "1k"], "unknown mixture 'nope'"),
])
def test_bad_input_exits_2_with_one_line_before_any_work(checked_store, capsys, argv, message):
    code, _, err = _run(capsys, [*argv, "--store", str(checked_store.root)])
    last = err.strip().splitlines()[-1]  # argparse prints its usage first
    assert code == 2 and last.startswith(f"python -m train {argv[0]}: error: ") and re.search(message, last), err
    assert not (checked_store.root / "artifacts").exists()


def test_missing_store_is_a_clear_error(tmp_path, capsys):
    code, _, err = _run(capsys, ["mix", "m", "--parts", "cc=1", "--tokens", "5k", "--store", str(tmp_path / "none")])
    assert code == 2 and "no store at" in err


def test_presets_json_lists_every_preset_with_counts(capsys):
    from train.model import PRESETS, count_preset_params

    code, out, _ = _run(capsys, ["presets", "--json", "--vocab", "8192"])
    rows = {r["preset"]: r for r in json.loads(out)}
    assert code == 0 and list(rows) == list(PRESETS)
    for name, r in rows.items():
        assert r["n_params_total"] > r["n_params"] > 0
    assert (rows["cpu-1m"]["n_params"], rows["cpu-1m"]["n_params_total"]) == count_preset_params("cpu-1m", 8192)
    code, out, _ = _run(capsys, ["presets"])
    assert code == 0 and all(name in out for name in PRESETS)
