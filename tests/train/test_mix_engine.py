"""`python -m train mix` takes the engine flags (--engine, --workers, --ray-address): they reach the token
cache's executor, so a Ray cluster that is not there is one line, exit 2, before any work. (A local pool's
tokenizing, and its retry of a dead worker, are covered by tests/corpora/test_executor.py.)"""

from __future__ import annotations

import pytest

from tests.train.test_cli import _fill, _run


@pytest.fixture(scope="module")
def engine_store(tmp_path_factory, lee_texts):
    from corpora.store import Store

    return _fill(Store(tmp_path_factory.mktemp("engine") / "store", create=True), lee_texts)


def test_mix_on_an_unreachable_ray_cluster_is_one_line_exit_2(engine_store, capsys):
    code, _, err = _run(capsys, ["mix", "r", "--parts", "cc=1", "--tokens", "5k", "--engine", "ray",
                                 "--ray-address", "127.0.0.1:9", "--store", str(engine_store.root)])
    assert code == 2 and err.strip().count("\n") == 0, err
    assert not (engine_store.root / "artifacts" / "mixtures").exists()
    assert "no Ray cluster at 127.0.0.1:9" in err or "needs Ray" in err
