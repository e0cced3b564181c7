"""Every result table the code writes is declared by the module that writes it, and docs/store.md lists the
declarations as `corpora.results.markdown()` renders them."""

from __future__ import annotations

import importlib
import pkgutil
import re

from corpora.results import COLUMNS, declared, markdown
from tests.conftest import REPO

BEGIN = "<!-- result tables: corpora.results.markdown(), checked by tests/test_results.py -->\n"
END = "<!-- end of result tables -->"


def _import_every_writer() -> None:
    """Import every module of the packages that write results, so each declares its tables."""
    for package in ("corpora", "train", "stats", "synth"):
        for info in pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)


def _study_tables():
    _import_every_writer()
    def from_tests(owner: str) -> bool:  # pytest may import a test module as "tests.x.test_y" or as "test_y"
        return owner.startswith("tests") or owner.rpartition(".")[2].startswith(("test_", "conftest"))

    return [t for t in declared().values() if not from_tests(t.owner)]


def test_every_table_written_by_name_is_declared_by_a_module_of_the_code():
    tables = {t.name for t in _study_tables()}
    written = set()
    for package in ("corpora", "train", "stats", "synth", "reports"):
        for path in (REPO / package).rglob("*.py"):
            written |= set(re.findall(r'put_result\("(\w+)"', path.read_text(encoding="utf-8")))
    written |= {"fits", "speedups", "optimal_ratios"}  # stats.scaling.sweep writes them in a loop
    assert written and written <= tables, sorted(written - tables)
    assert "jaccard_est" in COLUMNS["dup_source"]  # reports.build plots it by that name


def test_docs_store_lists_every_declared_table():
    text = (REPO / "docs" / "store.md").read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"docs/store.md lacks the block {BEGIN.strip()} ... {END}"
    listed = text.split(BEGIN)[1].split(END)[0]
    want = markdown(_study_tables())
    assert listed == want, ("docs/store.md's result tables differ from the declarations; paste this between the "
                            f"markers:\n{want}")
