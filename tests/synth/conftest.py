"""Fixtures for synth tests: small stores (the real SmolLM2 generator, `smollm2`, is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from corpora.store import Store
from tests.conftest import add_corpus


@pytest.fixture(scope="session")
def short_lee_texts(lee_texts) -> list[str]:
    """The shortest real news articles (300-600 characters), so prompts stay small."""
    return sorted((t for t in lee_texts if len(t) >= 300), key=len)[:6]


@pytest.fixture
def cc_store(store, short_lee_texts) -> Store:
    add_corpus(store, "cc", short_lee_texts)
    return store
