"""Sweeps: grid parsing and checks, deterministic run ids, skipping done runs and resuming interrupted ones."""

from __future__ import annotations

import textwrap

import pytest

from conftest import REPO, add_corpus
from train.data import MixtureConfig, build_mixture
from train.sweep import SweepError, load_sweep, make_run_id, parse_sweep

GRID = """
name = "tiny"
val_tokens = 256

[grid]
mixtures = ["m"]
models = ["cpu-1m"]
tokens = [256, "1k"]
lr = [1e-3, 3e-3]
seed = [0]

[run]
batch_size = 2

[mixtures.m]
parts = { cc = 0.75, hq = 0.25 }
tokens = "4k"
tokenizer = "lee_bpe"
seq_len = 31
"""


def test_example_grid_parses():
    sweep = load_sweep(REPO / "examples" / "sweep_cpu.toml")
    assert sweep.name == "cpu_demo" and len(sweep.runs) == 2 * 2 * 2
    assert {r.mixture for r in sweep.runs} == set(sweep.mixtures) == {"demo_cc", "demo_cc_hq"}
    assert sorted({r.tokens for r in sweep.runs}) == [250_000, 1_000_000]
    assert all(r.sweep == "cpu_demo" and r.options == {"batch_size": 8} for r in sweep.runs)


def test_grid_is_the_cross_product_in_order():
    import tomllib

    sweep = parse_sweep(tomllib.loads(GRID))
    assert [(r.tokens, r.lr) for r in sweep.runs] == [(256, 1e-3), (256, 3e-3), (1000, 1e-3), (1000, 3e-3)]
    assert sweep.mixtures["m"] == MixtureConfig("m", {"cc": 0.75, "hq": 0.25}, 4000, tokenizer="lee_bpe", seq_len=31)


@pytest.mark.parametrize("edit, match", [
    (("[grid]", "[grid]\nsizes = [1]"), r"unknown key\(s\) in \[grid\]: sizes"),
    (('name = "tiny"', 'nam = "tiny"'), r"unknown key\(s\) nam"),
    (('tokens = [256, "1k"]', 'tokens = ["lots"]'), "cannot read 'lots' as a count"),
    (('models = ["cpu-1m"]', 'models = []'), "grid.models is an empty list"),
    (("parts = {", "partz = {"), r"unknown key\(s\) in \[mixtures.m\]: partz"),
    (('seq_len = 31', 'seq_len = 31\n]'), "not valid TOML"),
])
def test_bad_grid_files_name_the_file_and_key(tmp_path, edit, match):
    path = tmp_path / "grid.toml"
    path.write_text(GRID.replace(*edit))
    with pytest.raises(SweepError, match=match) as e:
        load_sweep(path)
    assert str(path) in str(e.value)


def test_run_id_is_deterministic_and_covers_the_config(store, lee_texts):
    import tomllib

    add_corpus(store, "cc", lee_texts[:50])
    build_mixture(store, MixtureConfig("m", {"cc": 1.0}, 2_000, seq_len=31))
    runs = parse_sweep(tomllib.loads(GRID)).runs
    ids = [make_run_id(store, r) for r in runs]
    assert ids == [make_run_id(store, r) for r in parse_sweep(tomllib.loads(GRID)).runs]
    assert len(set(ids)) == 4 and ids[0].startswith("m.cpu-1m.256.s0.") and ids[2].startswith("m.cpu-1m.1k.s0.")
    # The mixture's content is part of the id: a rebuilt mixture's runs are new runs.
    build_mixture(store, MixtureConfig("m", {"cc": 1.0}, 2_000, seq_len=31, seed=1), overwrite=True)
    assert make_run_id(store, runs[0]) != ids[0]
