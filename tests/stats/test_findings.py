"""The study's findings (stats.findings): paired by seed, never contradicting their counts, written to the
`findings` table with the same rows the report computed itself before it only read them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from corpora.demo import build_demo
from corpora.results import missing_columns
from corpora.store import Store
from stats.findings import compute_findings, main, write_findings
from stats.unigram import UnigramConfig, run_unigram

# what reports.build.findings computed (n_boot=500) on the stores of test_rows_equal_what_the_report_computed,
# before the computation moved here: on the demo store alone, and with runs and every derived table added
EXPECTED = Path(__file__).with_name("findings_expected.json")

SEED_SHARES = {"base": (None, 0.0), "hq100": ("hq", 1.0), "qa100": ("qa", 1.0), "txbk33": ("txbk", 0.33),
               "txbk67": ("txbk", 0.67), "txbk100": ("txbk", 1.0)}


def _seed_losses() -> dict[tuple[str, int], float]:
    losses = {}
    for seed, noise in enumerate((0.0, 0.01, -0.01)):
        losses.update({("base", seed): 3.0 + noise, ("hq100", seed): 2.5 - noise,  # clearly lower than base
                       ("qa100", seed): 3.0 - noise,  # base +- seed noise: within noise
                       ("txbk33", seed): 3.1, ("txbk67", seed): 3.4 + noise, ("txbk100", seed): 3.9})
    return losses


def _put_runs(store, losses: dict[tuple[str, int], float], shares: dict[str, tuple[str | None, float]],
              models=("m",), budgets=(1000,)) -> None:
    """Finished runs with known final validation losses ({(mixture, seed): loss}, the same for every model
    and budget), and the mixtures they trained on."""
    for mixture, (stype, share) in shares.items():
        rows = [{"mixture": mixture, "corpus": "cc", "kind": "natural", "synthetic_type": None, "share": 1 - share}]
        if share:
            rows.append({"mixture": mixture, "corpus": stype, "kind": "synthetic", "synthetic_type": stype,
                         "share": share})
        store.put_result("mixtures", mixture, pl.DataFrame(rows))
    runs, metrics = [], []
    for (mixture, seed), loss in losses.items():
        for model in models:
            for tokens in budgets:
                run_id = f"{mixture}.{model}.{tokens}.s{seed}"
                runs.append({"run_id": run_id, "sweep": "s", "mixture": mixture, "model": model, "n_params": 1000,
                             "tokens": tokens, "seed": seed, "status": "done", "tokens_seen": tokens})
                metrics += [
                    {"run_id": run_id, "step": 1, "tokens_seen": 500, "split": "val", "domain": "wiki", "loss": loss + 1},
                    {"run_id": run_id, "step": 2, "tokens_seen": tokens, "split": "val", "domain": "wiki",
                     "loss": loss}]
    part = "_".join(models)  # one part per call: few writes
    store.put_result("runs", part, pl.DataFrame(runs))
    store.put_result("run_metrics", part, pl.DataFrame(metrics))


def _put_declared(store, table: str, part: str, df: pl.DataFrame) -> None:
    """A hand-made part holding only the columns the findings read; the other declared columns are null, so
    the write passes the table's declaration (corpora.results)."""
    from corpora.results import table as declaration

    missing = [c for c in declaration(table).columns if c not in df.columns]
    store.put_result(table, part, df.with_columns(pl.lit(None).alias(c) for c in missing))


def _put_derived(store) -> None:
    """Small hand-made tables of every other kind the findings read (speed-ups, optimal ratios, decisions, the
    learning check, shrinkage, a second training set's unigram comparison, generation runs)."""
    _put_declared(store, "speedups", "s", pl.DataFrame([
        {"sweep": "s", "domain": "avg", "model": m, "mixture": f"{t}33", "synthetic_type": t, "synthetic_share": 0.33,
         "tokens": 2000, "speedup": sp, "speedup_lo": lo, "speedup_hi": hi, "extrapolated": m == "m2", "status": "ok"}
        for t, m, sp, lo, hi in (("hq", "m1", 7.5, 5.5, 9.0), ("hq", "m2", 3.0, 1.2, 4.1), ("qa", "m1", 6.0, 2.0, 11.0))]))
    _put_declared(store, "optimal_ratios", "s", pl.DataFrame([
        {"sweep": "s", "domain": "avg", "synthetic_type": t, "model": m, "tokens": 2000, "ratio_opt": r,
         "ratio_lo": lo, "ratio_hi": hi, "status": "ok"}
        for t, m, r, lo, hi in (("hq", "m1", 0.31, 0.2, 0.4), ("qa", "m2", 0.6, 0.55, 0.7))]))
    _put_declared(store, "decisions", "s", pl.DataFrame([
        {"sweep": "s", "domain": "avg", "model": m, "tokens": t, "target_model": "m2", "target_tokens": 2000,
         "seed": seed, "n_pairs": 15, "n_agree": a, "accuracy": a / 15, "n_flip": f, "flip_share": f / 15,
         "metric": "loss"}
        for m, t, seed, a, f in (("m1", 1000, "mean", 12, 2), ("m1", 2000, "mean", 11, 3), ("m2", 2000, "0", 15, 1),
                                 ("m2", 2000, "1", 15, 2))]))
    _put_declared(store, "learning_check", "s", pl.DataFrame([
        {"sweep": "s", "run_id": f"r{i}", "mixture": "base", "model": "m1", "tokens": 1000, "seed": i,
         "domain": "wiki", "loss": loss, "unigram_loss": 6.0, "uniform_loss": 9.2, "below_unigram": loss < 6.0,
         "alpha": 0.5} for i, loss in enumerate((5.1, 5.7, 6.3))]))
    _put_declared(store, "unigram_shrinkage", "all", pl.DataFrame([
        {"synthetic": s, "source": "cc", "tokenizer": "cl100k_base", "types_ratio": r}
        for s, r in (("hq", 0.81), ("qa", 1.02))]))
    _put_declared(store, "unigram_comparisons", "hq", pl.DataFrame([
        {"train": "hq", "test": "wiki", "tokenizer": "cl100k_base", "type_coverage": 0.01, "token_coverage": 0.2,
         "kl_nats": 9.5, "alpha": 0.5}]))
    _put_declared(store, "synth_runs", "r1", pl.DataFrame([
        {"run_id": "r1", "corpus": "hq", "source": "cc", "type": "hq", "generator": "/models/SmolLM2-360M-Instruct",
         "started_at": "2026-01-01T00:00:00", "counts_by_reason": "{}"}]))


def test_findings_are_paired_by_seed_and_never_contradict_their_counts(store):
    _put_runs(store, _seed_losses(), SEED_SHARES, models=("m1", "m2"), budgets=(1000, 2000))
    rows = {f["claim"]: f for f in compute_findings(store, n_boot=500)}
    hq = rows["HQ alone (100%) is not better than CC (its loss is higher)"]
    assert hq["verdict"] == "disagrees" and hq["counts"].startswith("0/12 pairs as claimed, 12 against")
    qa = rows["QA alone (100%) is not better than CC (its loss is higher)"]
    assert qa["verdict"] == "inconclusive (within noise)"
    assert rows["TXBK alone (100%) gives higher loss than CC"]["verdict"] == "agrees"
    assert rows["33% TXBK beats 67% TXBK"]["counts"].startswith("12/12 pairs as claimed")
    assert rows["An ~8B generator is as good as a 70B one"]["verdict"] == "not enough data"
    for f in rows.values():  # the verdict and its counts tell the same story
        m = re.match(r"(\d+)/(\d+) [^,]*, (\d+)", f["counts"])
        if m and f["verdict"] == "agrees":
            assert int(m[1]) > int(m[3])
        if m and f["verdict"] == "disagrees":
            assert int(m[3]) > int(m[1])


def test_mixed_when_models_disagree(store):
    shares = {"base": (None, 0.0), "txbk100": ("txbk", 1.0)}
    _put_runs(store, {("base", s): 3.0 for s in range(3)} | {("txbk100", s): 3.5 + s / 100 for s in range(3)},
              shares, models=("m1",), budgets=(1000, 2000))
    _put_runs(store, {("base", s): 3.0 for s in range(3)} | {("txbk100", s): 2.5 + s / 100 for s in range(3)},
              shares, models=("m2",), budgets=(1000, 2000))
    row = {f["claim"]: f for f in compute_findings(store, n_boot=500)}["TXBK alone (100%) gives higher loss than CC"]
    assert row["verdict"] == "mixed" and "as claimed for m1, against for m2" in row["counts"]


def test_rows_equal_what_the_report_computed(tmp_path):
    """The demo store the report tests build, then runs of known losses and every derived table: the
    `findings` table holds, row for row, what reports.build.findings returned before the move."""
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    store = Store(tmp_path / "store", create=True)
    build_demo(store, progress=False)
    run_unigram(store, UnigramConfig(train=["cc"], test=["wiki"], progress=False))
    for case in ("demo", "demo_with_runs"):
        if case == "demo_with_runs":
            _put_runs(store, _seed_losses(), SEED_SHARES, models=("m1", "m2"), budgets=(1000, 2000))
            _put_derived(store)
        write_findings(store, n_boot=500)
        table = store.read_result("findings")
        assert missing_columns("findings", table.columns) == []
        assert table["position"].to_list() == list(range(table.height))
        assert (table["n_boot"] == 500).all() and (table["seed"] == 0).all()
        rows = table.sort("position").select("claim", "verdict", "counts", "measured").to_dicts()
        assert rows == expected[case], case
    assert {r["verdict"] for r in rows} >= {"agrees", "disagrees", "mixed", "not enough data"}


def test_cli_writes_the_table_and_prints_every_claim(store, capsys):
    _put_runs(store, _seed_losses(), SEED_SHARES, models=("m1",), budgets=(1000, 2000))
    assert main(["--store", str(store.root), "--n-boot", "100", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    table = store.read_result("findings").sort("position")
    assert [r["claim"] for r in printed] == table["claim"].to_list() and len(printed) == 12
    assert printed[2]["verdict"] == "agrees" and table["n_boot"][0] == 100
    assert main(["--store", str(store.root), "-q"]) == 0  # a rerun replaces the one part
    assert store.read_result("findings").height == 12
    assert re.search(r"^agrees +TXBK alone \(100%\) gives higher loss than CC$", capsys.readouterr().out, re.M)
