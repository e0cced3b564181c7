"""`corpora sql` is strictly read-only: hostile statements are refused and nothing is written anywhere."""

from __future__ import annotations

import json

import pytest

from corpora.store import StoreError
from tests.reliability.conftest import one_line_error, run_cli, tree_digest


def hostile(out: str, shard: str) -> list[str]:
    """Statements a query must never run; `out` is a path outside the store, `shard` one of its shards."""
    return [
        f"EXPLAIN ANALYZE COPY (SELECT 42 AS a) TO '{out}'",
        f"explain analyze copy (select 42 as a) to '{out}'",
        f"EXPLAIN (ANALYZE) COPY (SELECT 42 AS a) TO '{out}'",
        f"/* harmless */ EXPLAIN -- really\n ANALYZE COPY (SELECT 1 AS a) TO '{out}'",
        f"EXPLAIN COPY (SELECT 1 AS a) TO '{out}'",
        f"COPY (SELECT 42 AS a) TO '{out}'",
        f"COPY (SELECT * FROM documents LIMIT 1) TO '{shard}' (FORMAT parquet)",
        f"/* SELECT */ COPY (SELECT 1 AS a) TO '{out}'",
        f"ATTACH '{out}.duckdb' AS evil",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "SET enable_external_access = true",
        "RESET ALL",
        "PRAGMA threads = 1",
        "PRAGMA database_size",
        "CALL pragma_version()",
        "CHECKPOINT",
        f"EXPORT DATABASE '{out}.dir'",
        "SELECT 1; DROP TABLE shards",
        f"SELECT 1; COPY (SELECT 1 AS a) TO '{out}'",
        "WITH x AS (SELECT 1) DELETE FROM shards",
        "WITH x AS (SELECT 1 AS a) INSERT INTO corpora SELECT 'z', 'natural', NULL, 'train', now(), NULL FROM x",
        "DELETE FROM shards",
        "UPDATE corpora SET role = 'test'",
        "DROP VIEW documents",
        "CREATE TABLE evil AS SELECT 1",
        "CREATE OR REPLACE VIEW documents AS SELECT 1 AS a",
        "VACUUM",
        "DETACH memory",
        "BEGIN TRANSACTION",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        f"SELECT * FROM read_parquet('{shard}/../../../catalog.duckdb')",
        f"SELECT * FROM '{out}'",
    ]


def test_hostile_statements_are_refused_and_nothing_is_written(small_store, tmp_path):
    out = tmp_path / "outside" / "x.csv"
    out.parent.mkdir()
    out_s = str(out)
    shard = str(small_store.shards("cc")[0].path)
    before = tree_digest(small_store.root)
    before_rows = small_store.sql("SELECT corpus, count(*) AS n FROM documents GROUP BY ALL ORDER BY 1").to_pylist()
    for stmt in hostile(out_s, shard):
        with pytest.raises(StoreError) as e:
            small_store.sql(stmt)
        assert "\n" not in str(e.value), stmt
    assert list(out.parent.iterdir()) == []
    assert tree_digest(small_store.root) == before
    after_rows = small_store.sql("SELECT corpus, count(*) AS n FROM documents GROUP BY ALL ORDER BY 1").to_pylist()
    assert after_rows == before_rows and after_rows


def test_cli_refuses_with_one_line_and_writes_nothing(small_store, tmp_path):
    out = tmp_path / "x.csv"
    proc = run_cli("corpora", "sql", f"EXPLAIN ANALYZE COPY (SELECT 42 AS a) TO '{out}'", store=small_store.root)
    assert "refused" in one_line_error(proc, 2)
    assert not out.exists()
    proc = run_cli("corpora", "sql", "SELECT count(*) FROM read_csv('/etc/passwd')", store=small_store.root)
    one_line_error(proc, 2)


def test_reads_still_work(small_store):
    """What a reader needs stays allowed: documents, catalog tables, result views, EXPLAIN, DESCRIBE."""
    assert small_store.sql("SELECT count(*) AS n FROM documents").to_pylist() == [{"n": 50}]
    assert small_store.sql("SELECT count(*) AS n FROM shards WHERE corpus = ?", ["cc"]).to_pylist() == [{"n": 2}]
    assert small_store.sql("SELECT sum(n) AS s FROM scores").to_pylist() == [{"s": 6}]
    assert small_store.sql("EXPLAIN SELECT * FROM documents").num_rows >= 1
    assert small_store.sql("-- a comment\nWITH d AS (SELECT * FROM documents) SELECT count(*) AS n FROM d"
                           ).to_pylist() == [{"n": 50}]
    assert "doc_id" in small_store.sql("DESCRIBE documents").column("column_name").to_pylist()


def test_json_output_has_real_types(small_store):
    proc = run_cli("corpora", "sql", "--json",
                   "SELECT sum(n_bytes) AS total, 1.5::DECIMAL(10,2) AS d, 'nan'::DOUBLE AS nan, "
                   "'inf'::DOUBLE AS inf, '\\x00\\xff'::BLOB AS b, DATE '2024-01-02' AS day, "
                   "(SELECT list(x ORDER BY n) FROM scores) AS xs FROM documents", store=small_store.root)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)  # strict JSON: NaN would not parse as a number here
    total = sum(s.n_bytes for s in small_store.shards("cc")) + sum(s.n_bytes for s in small_store.shards("wiki"))
    assert row["total"] == total and isinstance(row["total"], int)
    assert row["d"] == 1.5 and row["nan"] is None and row["inf"] is None
    assert row["b"] == "AP8=" and row["day"] == "2024-01-02"
    assert row["xs"] == [1.5, None, None]
    assert "NaN" not in proc.stdout and "Infinity" not in proc.stdout
