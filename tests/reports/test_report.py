"""The report: every section present (filled or saying why not), self-contained, findings read correctly,
and rendered in a real browser with every image loaded."""

from __future__ import annotations

import re

import polars as pl
import pytest

from corpora.demo import build_demo
from reports.browser import check_page, find_chromium
from reports.build import SECTIONS, build_report, findings
from stats.unigram import UnigramConfig, run_unigram

SECTION_IDS = ["findings", "inventory", "unigram", "dedup", "training", "scaling", "speedups", "ratios"]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    from corpora.store import Store

    store = Store(tmp_path_factory.mktemp("report") / "store", create=True)
    build_demo(store, progress=False)
    run_unigram(store, UnigramConfig(train=["cc"], test=["wiki"], progress=False))
    return store


def _put_runs(store, losses: dict[str, float], shares: dict[str, tuple[str | None, float]]) -> None:
    """Finished runs with known final validation losses, and the mixtures they trained on."""
    for mixture, (stype, share) in shares.items():
        rows = [{"mixture": mixture, "corpus": "cc", "kind": "natural", "synthetic_type": None, "share": 1 - share}]
        if share:
            rows.append({"mixture": mixture, "corpus": stype, "kind": "synthetic", "synthetic_type": stype,
                         "share": share})
        store.put_result("mixtures", mixture, pl.DataFrame(rows))
    for mixture, loss in losses.items():
        run_id = f"{mixture}.m.1000"
        store.put_result("runs", run_id, pl.DataFrame([{
            "run_id": run_id, "sweep": "s", "mixture": mixture, "model": "m", "n_params": 1000, "tokens": 1000,
            "status": "done", "tokens_seen": 1000}]))
        store.put_result("run_metrics", run_id, pl.DataFrame([
            {"run_id": run_id, "step": 1, "tokens_seen": 500, "split": "val", "domain": "wiki", "loss": loss + 1},
            {"run_id": run_id, "step": 2, "tokens_seen": 1000, "split": "val", "domain": "wiki", "loss": loss}]))


def test_findings_read_known_losses(store):
    shares = {"base": (None, 0.0), "hq100": ("hq", 1.0), "txbk33": ("txbk", 0.33), "txbk67": ("txbk", 0.67),
              "txbk100": ("txbk", 1.0)}
    _put_runs(store, {"base": 3.0, "hq100": 2.5, "txbk33": 3.1, "txbk67": 3.4, "txbk100": 3.9}, shares)
    verdicts = {f["claim"]: f["verdict"] for f in findings(store)}
    assert verdicts["HQ alone (100%) is not better than CC (its loss is not lower)"] == "disagrees"  # 2.5 < 3.0
    assert verdicts["TXBK alone (100%) gives higher loss than CC"] == "agrees"
    assert verdicts["33% TXBK beats 67% TXBK"] == "agrees"
    assert verdicts["QA alone (100%) is not better than CC (its loss is not lower)"] == "not enough data"
    assert verdicts["An ~8B generator is as good as a 70B one"] == "not enough data"


def test_every_section_present_and_self_contained(demo_store, tmp_path):
    out = build_report(demo_store, tmp_path / "report.html")
    page = out.read_text()
    for sid in SECTION_IDS:
        assert f'data-section="{sid}"' in page, sid
    assert len(SECTIONS) == len(SECTION_IDS) - 1
    # no network needed to open it: nothing is loaded from elsewhere
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert page.count('src="data:image/png;base64,') >= 4  # inventory + three unigram heatmaps
    assert "No training runs yet" in page  # empty sections say so instead of vanishing
    assert "could not be rendered" not in page


@pytest.mark.browser
def test_report_in_headless_chromium(demo_store, tmp_path):
    if find_chromium() is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs Debian's chromium where it can)")
    out = build_report(demo_store, tmp_path / "report.html")
    shot = tmp_path / "report.png"
    result = check_page(out, screenshot=shot)
    assert result["sections"] == SECTION_IDS
    assert result["images"] >= 4 and result["images_ok"] == result["images"]
    assert shot.exists() and shot.stat().st_size > 20_000
