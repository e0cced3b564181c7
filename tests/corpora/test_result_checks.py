"""Result tables are declared with their columns, and Store.put_result refuses a write its declaration does not
allow, with a one-line message, before anything reaches the disk."""

from __future__ import annotations

import polars as pl
import pytest

from corpora.results import CREATED_AT, check, declare, declared, missing_columns, table
from corpora.store import Store, StoreError

declare("test_results_scores", {"corpus": "str", "score": "float"}, "Scores for the refusal tests.",
        optional={"note": "str"})
declare("test_results_open", {"corpus": "str"}, "A table whose writer adds its own columns.", extra=True)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store", create=True)


def test_a_declaration_is_idempotent_and_a_conflicting_one_is_refused():
    again = declare("test_results_scores", {"corpus": "str", "score": "float"}, "Scores for the refusal tests.",
                    optional={"note": "str"})
    assert again is table("test_results_scores") and again.owner == __name__
    assert "test_results_scores" in declared()
    with pytest.raises(ValueError, match="already declared differently"):
        declare("test_results_scores", {"corpus": "str"}, "Scores for the refusal tests.")
    with pytest.raises(ValueError, match="stamps it"):
        declare("test_results_stamped", {CREATED_AT: "time"}, "created_at is the store's.")
    assert "test_results_stamped" not in declared()


def test_declared_columns_optional_ones_and_created_at_are_accepted(store):
    store.put_result("test_results_scores", "a", pl.DataFrame({"corpus": ["cc"], "score": [1.0]}))
    store.put_result("test_results_scores", "b", pl.DataFrame({"corpus": ["wiki"], "score": [2.0], "note": ["x"],
                                                               CREATED_AT: ["2020-01-01"]}))
    store.put_result("test_results_open", "a", pl.DataFrame({"corpus": ["cc"], "anything": [1]}))
    assert store.read_result("test_results_scores")["score"].sort().to_list() == [1.0, 2.0]
    assert missing_columns("test_results_scores", ["corpus"]) == ["score"]


@pytest.mark.parametrize("table_name, frame, message", [
    ("test_results_nosuch", {"corpus": ["cc"]},
     "result table 'test_results_nosuch' is not declared; declare it with corpora.results.declare(name, columns, "
     "doc) in the module that writes it"),
    ("test_results_scores", {"corpus": ["cc"], "note": ["x"]},
     "result table 'test_results_scores' misses declared column(s) score; write them or change the declaration "
     f"in {__name__}"),
    ("test_results_scores", {"corpus": ["cc"], "score": [1.0], "scroe": [2.0]},
     f"result table 'test_results_scores' got undeclared column(s) scroe; add them to its declaration in {__name__}"),
])
def test_a_write_the_declaration_does_not_allow_is_refused_and_nothing_is_written(store, table_name, frame,
                                                                                  message):
    with pytest.raises(StoreError) as e:
        store.put_result(table_name, "p", pl.DataFrame(frame))
    assert str(e.value) == message and "\n" not in str(e.value)
    assert not store.has_result(table_name, "p") and store.read_result(table_name) is None
    assert not (store.root / "results" / table_name).exists()


def test_check_ignores_created_at_and_column_order():
    check("test_results_scores", ["score", CREATED_AT, "corpus"])
    with pytest.raises(StoreError, match="misses declared column"):
        check("test_results_scores", [CREATED_AT])
