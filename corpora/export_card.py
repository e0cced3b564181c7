"""The dataset card of an `hf` export (corpora.export): the corpus's provenance collected from the store
(ingest counts and rejects; for synthetic text its generator, prompts, sampling, source, round,
post-processing, near-duplicate rate and unigram shrinkage) and rendered as a README.md with a YAML header."""

from __future__ import annotations

import collections
import json

import pyarrow as pa

from corpora.export import HF_SCHEMA, ExportConfig, ExportStats
from corpora.store import CorpusInfo, Store
from corpora.templates import read_template, template_id

CARD_VERSION = 1
_COLUMN_DOCS = {
    "doc_id": "16 hex digits of BLAKE2b: over the normalised text (NFKC, case-folded, whitespace collapsed) for "
              "natural text, over the generation requests for synthetic text",
    "text": "the document",
    "n_bytes": "UTF-8 bytes of `text`",
    "source": "where the text came from (file:line, file#record, URL; for synthetic text source_corpus/doc_id)",
    "source_doc_id": "doc_id of the source document a synthetic document was generated from (null for natural text)",
    "generator": "model that generated the text (null for natural text)",
    "prompt_id": "prompt template: type + hash of the template text (null for natural text)",
    "meta": "JSON object: reader fields (url, title, ...) or generation details (sampling, seed, finish reasons, chunks)",
}


# ---------------------------------------------------------------------------------------- provenance
def collect_provenance(store: Store, info: CorpusInfo, stats: ExportStats) -> dict:
    """What the store knows about how a corpus was made: ingest counts and, for synthetic text, the recipe
    and the analyses of it. Keys are absent where the store has nothing to say."""
    facts: dict = {}
    runs = store.catalog_rows(
        "SELECT count(*), coalesce(sum(n_duplicates), 0) FROM ingest_runs WHERE corpus = ?", [info.name])[0]
    rejects = store.catalog_rows(
        "SELECT reason, count(*) FROM rejects WHERE corpus = ? GROUP BY reason ORDER BY 2 DESC, 1", [info.name])
    facts["ingest"] = {"n_runs": int(runs[0]), "n_exact_duplicates_dropped": int(runs[1]),
                       "rejects_by_reason": {r: int(n) for r, n in rejects}}
    if info.kind != "synthetic":
        return facts
    m = info.meta
    generation = {k: m[k] for k in ("generator", "backend", "sampling", "seed", "max_chunk_tokens", "max_chunks")
                  if m.get(k) is not None}
    if stats.generators and set(stats.generators) != {m.get("generator")}:
        generation["generators_in_documents"] = dict(stats.generators.most_common())
    if m.get("round") is not None:
        generation["round"] = m["round"]
    elif stats.rounds:
        generation["round"] = sorted(stats.rounds)[-1] if len(stats.rounds) == 1 else dict(stats.rounds)
    if m.get("root_corpus"):
        generation["root_corpus"] = m["root_corpus"]
    facts["generation"] = generation
    source = m.get("source") or m.get("source_corpus")
    if source:
        src = {"corpus": source}
        if store.has_corpus(source):
            s = store.corpus(source)
            src.update(kind=s.kind, n_docs=s.n_docs, n_bytes=s.n_bytes, content_hash=s.content_hash)
        else:
            src["in_store"] = False
        facts["source"] = src
    facts["prompts"] = _prompts(m, stats)
    post = _postprocessing(store, info.name)
    post["n_truncated_docs"] = stats.n_truncated_docs
    facts["postprocessing"] = post
    near = _near_duplicates(store, info, source)
    if near:
        facts["near_duplicates"] = near
    shrink = store.read_result("unigram_shrinkage")
    if shrink is not None and "synthetic" in shrink.columns:
        rows = shrink.filter(shrink["synthetic"] == info.name).to_dicts()
        keep = ("source", "tokenizer", "budget_tokens", "types_at_budget_synthetic", "types_at_budget_source",
                "types_ratio", "entropy_at_budget_synthetic_nats", "entropy_at_budget_source_nats",
                "entropy_diff_nats")
        if rows:
            facts["unigram_shrinkage"] = [{k: r[k] for k in keep if k in r} for r in rows]
    return facts


def _prompts(meta: dict, stats: ExportStats) -> list[dict]:
    """Each prompt_id used, with the template text when the template file the corpus names still hashes to it."""
    ids = {pid: n for pid, n in stats.prompt_ids.most_common() if pid} or \
        ({meta["prompt_id"]: 0} if meta.get("prompt_id") else {})
    try:
        text = read_template(meta["prompt_path"]) if meta.get("prompt_path") else None
    except OSError:  # moved or deleted since generation: the card lists the ids without their text
        text = None
    texts = {template_id(type_, text): text for type_ in {pid.rsplit("-", 1)[0] for pid in ids}} if text else {}
    return [{"prompt_id": pid, "n_docs": n, "text": texts.get(pid)} for pid, n in ids.items()]


def _postprocessing(store: Store, corpus: str) -> dict:
    """Counts by reason summed over the corpus's generation runs (synth_runs)."""
    runs = store.read_result("synth_runs")
    counts: collections.Counter = collections.Counter()
    n_runs = 0
    if runs is not None and "corpus" in runs.columns:
        for row in runs.filter(runs["corpus"] == corpus).iter_rows(named=True):
            n_runs += 1
            counts.update(json.loads(row.get("counts_by_reason") or "{}"))
    return {"n_runs": n_runs, "counts_by_reason": dict(counts.most_common())}


def _near_duplicates(store: Store, info: CorpusInfo, source: str | None) -> dict:
    """The latest `stats.dedup` figures of this corpus: against its source, and similarity to own source doc."""
    df = store.read_result("dup_summary")
    if df is None or "corpus" not in df.columns:
        return {}
    rows = sorted(df.filter(df["corpus"] == info.name).to_dicts(), key=lambda r: str(r.get("created_at")))
    out = {}
    against = [r for r in rows if r.get("mode") == "across" and r.get("against") == source]
    if against:
        r = against[-1]
        out["against_source"] = {
            "against": source, "share_with_near_duplicate": r.get("share_with_match"),
            "n_with_match": r.get("n_with_match"), "n_docs_hashed": r.get("n_docs_hashed"),
            "threshold": r.get("threshold"), "ngram": r.get("ngram"), "num_perm": r.get("num_perm"),
            "current": r.get("content_hash") == info.content_hash}
    own = [r for r in rows if r.get("source_jaccard_mean") is not None]
    if own:
        r = own[-1]
        out["own_source_document"] = {
            k: r.get(k) for k in ("n_source_found", "source_jaccard_mean", "source_jaccard_median",
                                  "source_share_near_dup", "threshold")}
        out["own_source_document"]["current"] = r.get("content_hash") == info.content_hash
    within = [r for r in rows if r.get("mode") == "within"]
    if within:
        out["within_corpus_dup_rate"] = within[-1].get("dup_rate")
    return out


# ---------------------------------------------------------------------------------------- the card
def _size_category(n: int) -> str:
    bounds = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"),
              (10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B")]
    return next((label for bound, label in bounds if n < bound), "n>1B")


def build_card(store: Store, info: CorpusInfo, stats: ExportStats, cfg: ExportConfig, tokenizer,
               download_size: int) -> tuple[dict, str]:
    """(YAML header, Markdown body) of a corpus's dataset card."""
    facts = collect_provenance(store, info, stats)
    tags = ["synthmix", info.kind] + ([info.synthetic_type] if info.synthetic_type else [])
    header: dict = {"pretty_name": f"synthmix corpus {info.name}"}
    if cfg.license:
        header["license"] = cfg.license
    if cfg.language:
        header["language"] = list(cfg.language)
    header.update({
        "tags": tags,
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(stats.n_docs)],
        "configs": [{"config_name": "default", "data_files": [{"split": cfg.split, "path": f"data/{cfg.split}-*"}]}],
        "dataset_info": {
            "features": [{"name": f.name, "dtype": "int64" if f.type == pa.int64() else "string"} for f in HF_SCHEMA],
            "splits": [{"name": cfg.split, "num_bytes": stats.n_arrow_bytes, "num_examples": stats.n_docs}],
            "download_size": download_size, "dataset_size": stats.n_arrow_bytes},
        "synthmix": {
            "card_version": CARD_VERSION, "corpus": info.name, "kind": info.kind,
            "synthetic_type": info.synthetic_type, "role": info.role, "content_hash": info.content_hash,
            "n_docs": stats.n_docs, "n_bytes": stats.n_bytes,
            "n_tokens": stats.n_tokens if tokenizer else None, "tokenizer": tokenizer.name if tokenizer else None,
            "meta": info.meta, "provenance": facts},
    })
    return header, _card_body(info, stats, cfg, tokenizer, facts)


def render_card(header: dict, body: str) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data) -> bool:  # repeat values instead of &id001 anchors: readable by people
            return True

    def text(dumper, value: str):  # multi-line strings (prompt templates) as literal blocks
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    header_yaml = yaml.dump(header, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
    return "---\n" + header_yaml + "---\n\n" + body


def _card_body(info: CorpusInfo, stats: ExportStats, cfg: ExportConfig, tokenizer, facts: dict) -> str:
    kind = f"synthetic ({info.synthetic_type})" if info.kind == "synthetic" else "natural"
    tokens = f"{stats.n_tokens:,} tokens ({tokenizer.name}, no end-of-text tokens)" if tokenizer else "tokens not counted"
    lines = [
        f"# synthmix corpus `{info.name}`", "",
        f"A {kind} text corpus (role `{info.role}`) exported from a synthmix store: {stats.n_docs:,} documents, "
        f"{stats.n_bytes:,} bytes of UTF-8 text, {tokens}. Store content hash `{info.content_hash}`.", "",
        "## Loading", "", "```python", "from datasets import load_dataset", "",
        f'ds = load_dataset("path/to/{cfg.out_path.name}", split="{cfg.split}")  # offline: a local folder', "```", "",
        f"or `python -m corpora ingest {info.name} path/to/{cfg.out_path.name}` into another store "
        "(same documents, same doc_ids, this card's metadata kept in the corpus's meta).", "",
        "## Columns", "", "| column | type | meaning |", "| --- | --- | --- |",
    ]
    lines += [f"| `{f.name}` | {'int64' if f.type == pa.int64() else 'string'} | {_COLUMN_DOCS[f.name]} |"
              for f in HF_SCHEMA]
    ing = facts["ingest"]
    lines += ["", "## Counts", "", "| | |", "| --- | --- |",
              f"| documents | {stats.n_docs:,} |", f"| bytes | {stats.n_bytes:,} |",
              f"| tokens | {stats.n_tokens:,} ({tokenizer.name}) |" if tokenizer else "| tokens | not counted |",
              f"| mean bytes per document | {stats.n_bytes / stats.n_docs:,.0f} |" if stats.n_docs else
              "| mean bytes per document | - |",
              f"| ingest runs | {ing['n_runs']} |",
              f"| exact duplicates dropped on ingest | {ing['n_exact_duplicates_dropped']:,} |", ""]
    if ing["rejects_by_reason"]:
        lines += ["Ingest rejects by reason (each kept with its location in the store's `rejects` table):", "",
                  "| reason | records |", "| --- | --- |"]
        lines += [f"| {r} | {n:,} |" for r, n in ing["rejects_by_reason"].items()] + [""]
    else:
        lines += ["Ingest rejects: none." if ing["n_runs"] else
                  "Ingest rejects: none (written by a synthmix step, not ingested from files).", ""]
    if info.kind == "synthetic":
        lines += _synthetic_section(info, facts)
    if info.meta.get("hf"):
        hf = info.meta["hf"]
        lines += ["## Imported from", "", f"Ingested from the Hugging Face datasets folder `{hf.get('folder')}` "
                  f"({hf.get('layout')} layout); its card header is kept in this corpus's meta under `hf`.", ""]
    return "\n".join(lines)


def _synthetic_section(info: CorpusInfo, facts: dict) -> list[str]:
    g, src, post = facts.get("generation", {}), facts.get("source"), facts.get("postprocessing", {})
    sampling = g.get("sampling") or {}
    rnd = g.get("round")
    lines = ["## How it was made", "",
             "| | |", "| --- | --- |",
             f"| generator | `{g.get('generator', 'not recorded')}` |",
             f"| backend | {g.get('backend', 'not recorded')} |",
             f"| sampling | {', '.join(f'{k}={v}' for k, v in sampling.items()) or 'not recorded'} |",
             f"| seed | {g.get('seed', 'not recorded')} |",
             f"| chunk size | {g.get('max_chunk_tokens', '-')} tokens of the generator's tokenizer |",
             *([f"| chunks per source document | the first {g['max_chunks']} |"] if g.get("max_chunks") else []),
             f"| generation round | {rnd if rnd is not None else 'not recorded (round 1: generated from natural text)'} |"]
    if g.get("root_corpus"):
        lines.append(f"| root natural corpus | `{g['root_corpus']}` |")
    if src:
        where = (f"{src.get('kind')}, {src.get('n_docs', 0):,} documents, content hash `{src.get('content_hash')}` "
                 "(its state at export)") if src.get("in_store", True) else "no longer in the store"
        lines.append(f"| source corpus | `{src['corpus']}`: {where} |")
    if g.get("generators_in_documents"):
        lines.append(f"| generators in documents | {g['generators_in_documents']} |")
    lines += ["", "### Prompt templates", ""]
    for p in facts.get("prompts", []):
        lines.append(f"`{p['prompt_id']}` ({p['n_docs']:,} documents):")
        lines += ["", "```text", p["text"].rstrip(), "```", ""] if p.get("text") else \
            ["", "(template text not found: no template file hashes to this prompt_id any more)", ""]
    counts = post.get("counts_by_reason", {})
    lines += ["### Post-processing", "",
              f"Over {post.get('n_runs', 0)} generation run(s), per chunk output unless noted "
              "(from the store's `synth_runs`; each case is listed in `synth_rejects`):", "",
              "| what | count |", "| --- | --- |",
              f"| preambles stripped (\"Here is the rephrased text:\") | {counts.get('preamble', 0):,} |",
              f"| truncated at max_new_tokens (kept, flagged) | {counts.get('truncated', 0):,} |",
              f"| empty outputs dropped | {counts.get('empty', 0):,} |",
              f"| documents with every chunk empty (dropped) | {counts.get('empty_doc', 0):,} |",
              f"| failed requests | {counts.get('failed', 0):,} |",
              f"| documents in this corpus with a truncated chunk | {post.get('n_truncated_docs', 0):,} |"]
    lines += [f"| {k} | {v:,} |" for k, v in counts.items()
              if k not in ("preamble", "truncated", "empty", "empty_doc", "failed")]
    lines += ["", "### Analyses", ""]
    near = facts.get("near_duplicates", {})
    if near.get("against_source"):
        a = near["against_source"]
        lines.append(f"- Near-duplicates against the source `{a['against']}`: {a['share_with_near_duplicate']:.2%} "
                     f"of documents ({a['n_with_match']} of {a['n_docs_hashed']}) have one (MinHash LSH, Jaccard >= "
                     f"{a['threshold']}, {a['ngram']}-word shingles){'' if a['current'] else ' [computed on an earlier version of the corpus]'}.")
    if near.get("own_source_document"):
        o = near["own_source_document"]
        lines.append(f"- Similarity to its own source document ({o['n_source_found']} found): mean Jaccard "
                     f"{o['source_jaccard_mean']:.3f}, median {o['source_jaccard_median']:.3f}; "
                     f"{o['source_share_near_dup']:.2%} are near-copies of their source.")
    if near.get("within_corpus_dup_rate") is not None:
        lines.append(f"- Near-duplicate rate within the corpus: {near['within_corpus_dup_rate']:.2%}.")
    for s in facts.get("unigram_shrinkage", []):
        lines.append(f"- Unigram shrinkage against `{s['source']}` at an equal budget of {s['budget_tokens']:,} "
                     f"{s['tokenizer']} tokens: {s['types_at_budget_synthetic']:,.0f} distinct types vs "
                     f"{s['types_at_budget_source']:,.0f} (ratio {s['types_ratio']:.3f}); entropy "
                     f"{s['entropy_at_budget_synthetic_nats']:.3f} vs {s['entropy_at_budget_source_nats']:.3f} nats "
                     f"(difference {s['entropy_diff_nats']:+.3f}).")
    if not near and not facts.get("unigram_shrinkage"):
        lines.append(f"- None in the store yet: `python -m stats.dedup --corpus {info.name} --against "
                     f"{(src or {}).get('corpus', 'SOURCE')}` and `python -m stats.unigram --train {info.name} "
                     "--test TEST` compute them.")
    lines += ["", "### Risks", "",
              "Text written by a language model can carry the generator's biases and factual errors, and is less "
              "diverse than the text it was made from (see the shrinkage figures above when present). Kang et al. "
              "(2025) found rephrased text helpful as about a third of a mixture with natural web text but not on "
              "its own, and generated textbooks alone worse than web text; read the recipe above before training "
              "on it.", ""]
    return lines
