"""The report: every section present (filled or saying why not), self-contained, findings read from their table
(stats.findings computes them: tests/stats/test_findings.py), and rendered in a real browser with every image loaded."""

from __future__ import annotations

import html
import re

import polars as pl
import pytest

import train.loop  # noqa: F401 (declares runs, run_metrics, written by _put_runs as a sweep would)
from corpora.demo import build_demo
from corpora.results import declare
from reports.browser import check_page, find_chromium
from reports.build import SECTIONS, build_report
from stats.findings import write_findings
from stats.mixopt.probe import ProbeConfig, run_probe
from stats.unigram import UnigramConfig, run_unigram
from tests.conftest import missing

declare("t", {"x": "int"}, "A table whose writes the store stamps with created_at.")

SECTION_IDS = ["findings", "inventory", "unigram", "dedup", "training", "learning", "scaling", "speedups", "ratios",
               "decisions", "evals", "collapse", "schedules", "mixopt"]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    from corpora.store import Store

    store = Store(tmp_path_factory.mktemp("report") / "store", create=True)
    build_demo(store, progress=False)
    run_unigram(store, UnigramConfig(train=["cc"], test=["wiki"], progress=False))
    return store


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
    findings = page.split('data-section="findings"')[1].split("</section>")[0]
    assert 'class="empty"' in findings and "python -m stats.findings" in findings  # the report computes none


def test_findings_rendered_from_their_table(demo_store, tmp_path):
    """The findings section shows the `findings` table's rows in claim order, each row classed by its verdict,
    and when and with what bootstrap they were computed."""
    df = write_findings(demo_store, n_boot=50, seed=3)
    page = build_report(demo_store, tmp_path / "report.html").read_text()
    body = page.split('data-section="findings"')[1].split("</section>")[0]
    assert 'class="empty"' not in body and "50 bootstrap replicates (seed 3)" in body
    shown = re.findall(r'<tr class="([^"]+)"><td>([^<]+)</td><td><b>([^<]+)</b>', body)
    assert [html.unescape(c) for _, c, _ in shown] == df["claim"].to_list()
    assert [v for _, _, v in shown] == df["verdict"].to_list()
    assert {css for css, _, _ in shown} == {"not-enough-data"}  # the demo store has no runs
    demo_store.delete_result("findings", "all")


def test_study_writes_findings_right_before_the_report(demo_store):
    """The study's findings step runs just before the report, with the [evidence] bootstrap settings."""
    from reports.study import STEPS, StudyConfig, step_findings

    names = [name for name, _ in STEPS]
    assert names[-2:] == ["findings", "report"]
    result = step_findings(demo_store, StudyConfig(evidence={"n_boot": 40, "seed": 2}), progress=False)
    table = demo_store.read_result("findings")
    assert result["findings"] == table.height == 12 and result["verdicts"] == {"not enough data": 12}
    assert set(table["n_boot"]) == {40} and set(table["seed"]) == {2}
    demo_store.delete_result("findings", "all")


@pytest.mark.browser
@pytest.mark.slow
def test_report_in_headless_chromium(full_store, tmp_path):
    if find_chromium() is None:
        missing("chromium is not installed (scripts/test.sh installs Debian's chromium where it can)")
    out = build_report(full_store, tmp_path / "report.html")
    shot = tmp_path / "report.png"
    result = check_page(out, screenshot=shot)
    assert result["sections"] == SECTION_IDS
    assert result["images"] >= 12 and result["images_ok"] == result["images"]
    assert shot.exists() and shot.stat().st_size > 20_000


# ---------------------------------------------------------------------------------------------- every analysis
def _rephrase(text: str, k: int) -> str:
    """A stand-in 'generation': the source's sentences in reverse order, every k-th word dropped."""
    words = " ".join(reversed(text.split(". "))).split()
    return " ".join(w for i, w in enumerate(words) if i % k)


@pytest.fixture(scope="module")
def full_store(tmp_path_factory, lee_texts):
    """A store that holds every analysis the report reads, each made by the real code: unigram comparisons
    and shrinkage, near-duplicates with source Jaccard, a tokenizer, mixtures, a small real sweep with two
    seeds, fits, speed-ups, optimal ratios, decisions, the learning check and two generation rounds.
    (The synthetic corpora are deterministic rewrites of real news text, not model outputs: generation is
    tested in tests/synth; here it would only cost minutes.)"""
    from corpora.documents import compute_doc_id
    from corpora.store import Store, make_documents
    from stats.dedup import DedupConfig, analyze_against, analyze_corpus
    from stats.evidence import collapse_rounds, decisions, learning_check
    from stats.scaling import ScalingConfig, fit_sweep
    from tests.conftest import add_corpus
    from train.sweep import parse_sweep, run_sweep
    from train.tokenizer import train_tokenizer

    store = Store(tmp_path_factory.mktemp("full") / "store", create=True)
    cc = add_corpus(store, "cc", lee_texts[:80])
    add_corpus(store, "wiki", lee_texts[-40:], role="test")
    cc_docs = store.sql("SELECT doc_id, text FROM documents WHERE corpus = 'cc' ORDER BY doc_id").to_pylist()
    hq_rows = [{"text": _rephrase(d["text"], 5), "source_doc_id": d["doc_id"],
                "meta": {"round": 1, "root_corpus": "cc", "root_doc_id": d["doc_id"]}} for d in cc_docs[:40]]
    hq2_rows = [{"text": _rephrase(h["text"], 4), "source_doc_id": compute_doc_id(h["text"]),
                 "meta": {"round": 2, "root_corpus": "cc", "root_doc_id": h["source_doc_id"]}} for h in hq_rows]
    for rnd, (name, src, rows) in enumerate((("hq", "cc", hq_rows), ("hq2", "hq", hq2_rows)), start=1):
        store.create_corpus(name, "synthetic", "train", "hq", meta={"source": src, "round": rnd, "root_corpus": "cc"})
        store.append_shard(name, make_documents(rows))
    assert cc.n_docs == 80
    run_unigram(store, UnigramConfig(train=["cc", "hq", "cc=0.5,hq=0.5"], test=["wiki"], progress=False))
    dcfg = DedupConfig(threshold=0.8)
    analyze_corpus(store, "cc", dcfg, progress=False)
    analyze_corpus(store, "hq", dcfg, progress=False)  # synthetic: source-doc Jaccard too
    analyze_against(store, "hq", "cc", dcfg, progress=False)
    train_tokenizer(store, "t_bpe", ["cc", "hq"], vocab_size=512)
    mix = {"tokenizer": "t_bpe", "seq_len": 32, "tokens": 4096, "max_epochs": 400}
    doc = {"name": "s", "val_tokens": 2048, "val_corpora": ["wiki"],
           "grid": {"mixtures": ["base", "hq50", "hq100"], "models": ["debugmodel"], "tokens": [1024, 2048, 4096],
                    "lr": [3e-3], "seed": [0, 1]},
           # few validations and one checkpoint per run: each is a store write
           "run": {"batch_size": 8, "eval_tokens": 512, "eval_every_tokens": 1024,
                   "checkpoint_every_tokens": 1 << 20},
           "mixtures": {"base": {"parts": {"cc": 1.0}, **mix}, "hq50": {"parts": {"cc": 0.5, "hq": 0.5}, **mix},
                        "hq100": {"parts": {"hq": 1.0}, **mix}}}
    results = run_sweep(store, parse_sweep(doc), progress=False)
    assert all(r.get("status") == "done" for r in results), results
    fit_sweep(store, "s", ScalingConfig(n_boot=4, n_starts=4))
    from stats.evals import EvalConfig, evaluate_sweep  # downstream metrics: decisions per metric

    evaluate_sweep(store, "s", EvalConfig(tasks=["arc_easy:rc_0shot", "piqa:rc_0shot"], limit=8), progress=False)
    decisions(store, "s")
    learning_check(store, "s")
    collapse_rounds(store, ["wiki"])
    write_findings(store, n_boot=200)
    # an anneal probe (stats/mixopt/probe.py): wsd trunks on base, cooldowns on hq50 (= base + 50% hq)
    run_probe(store, ProbeConfig(trunk="base", candidates=["hq"], share=0.5, cooldown=0.25, seeds=[0, 1],
                                 tokens=2048, val_tokens=2048, val_corpora=["wiki"], options=doc["run"]),
              progress=False)
    return store


@pytest.mark.slow
def test_report_against_a_store_with_every_analysis(full_store, tmp_path):
    from corpora.results import missing_columns

    # every table the report reads is there, written with its declared columns and stamped by the store
    # (generation and stats.mixopt tables are tested in their packages)
    for table in ("unigram_counts", "unigram_comparisons", "unigram_shrinkage", "dup_summary", "dup_source",
                  "mixtures", "runs", "run_metrics", "fits", "speedups", "optimal_ratios", "decisions",
                  "decision_snr", "evals", "learning_check", "probes", "probe_decisions", "collapse_rounds"):
        df = full_store.read_result(table)
        assert df is not None and df.height, table
        assert missing_columns(table, df.columns) == [], table
        assert df["created_at"].dtype == pl.Datetime("us") and df["created_at"].null_count() == 0, table
    page = build_report(full_store, tmp_path / "report.html").read_text()
    assert "could not be rendered" not in page
    for sid in SECTION_IDS:
        body = page.split(f'data-section="{sid}"')[1].split("</section>")[0]
        if sid == "mixopt":  # renders here; its data is tested on a real swarm in tests/stats/test_mixopt_swarm.py
            continue
        assert 'class="empty"' not in body, sid  # every section has its data
    dedup = page.split('data-section="dedup"')[1].split("</section>")[0]
    assert "How far generation moved the text" in dedup and dedup.count("data:image/png") == 2  # rates + Jaccard
    assert "Pairwise decision accuracy" in page
    # the learning section states the count the learning_check table holds (recomputed here from its losses)
    lc = full_store.read_result("learning_check")
    n_bad = int((lc["loss"] >= lc["unigram_loss"]).sum())
    assert n_bad == int((~lc["below_unigram"]).sum())
    learning = page.split('data-section="learning"')[1].split("</section>")[0]
    if n_bad:
        assert f"Here {n_bad} of {lc.height} (run, domain) results" in learning
    else:
        assert f"Here every one of {lc.height} (run, domain) results is below its unigram baseline" in learning
    collapse = page.split('data-section="collapse"')[1].split("</section>")[0]
    assert collapse.count("data:image/png") == 1 and "hq2" in collapse
    assert lc.height == 18 and set(lc["domain"]) == {"wiki"}
    assert (lc["uniform_loss"] - lc["vocab_size"].cast(pl.Float64).log()).abs().max() < 1e-12
    assert lc["vocab_size"][0] <= 512 and (lc["unigram_loss"] < lc["uniform_loss"]).all()
    dec = full_store.read_result("decisions")
    assert set(dec["seed"]) == {"mean", "0", "1"} and dec["n_pairs"].max() == 3
    assert {"loss", "acc", "acc_per_char", "correct_prob", "margin", "bpb"} <= set(dec["metric"])
    evals = page.split('data-section="evals"')[1].split("</section>")[0]
    assert evals.count("data:image/png") == 2 and "piqa:rc_0shot" in evals
    assert "Downstream verdicts" in evals and "HQ alone (100%) is not better than CC" in evals
    fits = full_store.read_result("fits")
    assert (fits.filter(pl.col("fit") == "data")["n_seeds"] == 2).all()


def test_store_stamps_created_at_on_every_result(store):
    """The report orders rows by created_at: the store stamps it on every write (a writer's own value, e.g. an
    ISO string, is replaced), so parts written by different modules concatenate and sort."""
    import datetime as dt

    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    store.put_result("t", "a", pl.DataFrame({"x": [1, 2]}))
    store.put_result("t", "b", pl.DataFrame({"x": [3], "created_at": ["2020-01-01T00:00:00+00:00"]}))
    df = store.read_result("t").sort("created_at")
    assert df["x"].to_list() == [1, 2, 3] and df["created_at"].dtype == pl.Datetime("us")
    assert df["created_at"].min() >= before.replace(microsecond=0)
    assert pl.from_arrow(store.sql("SELECT count(*) AS n FROM t WHERE created_at IS NOT NULL"))["n"][0] == 3
