"""The demo store: real text that a registry package ships, so a fresh offline machine can run the study.

gensim's wheel carries, as test data, 300 news articles (`lee_background.cor`, one per line: our stand-in
for web text, corpus `cc`) and a shortened MediaWiki dump of 206 pages (106 articles + 100 redirects:
corpus `wiki`, the test domain). We read these plain files only; nothing there is ever unpickled.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from corpora.ingest import IngestConfig, IngestReport, ingest
from corpora.readers import ReaderConfig
from corpora.store import Store

LEE_FILE = "lee_background.cor"
WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def demo_data_dir() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the demo data comes with gensim: run scripts/setup.sh (pip install gensim)")
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"


def build_demo(store: Store, progress: bool = True) -> list[IngestReport]:
    """Ingest the demo corpora (idempotent: a second call finds both files done and skips them)."""
    data = demo_data_dir()
    return [
        ingest(store, [data / LEE_FILE], IngestConfig("cc", role="train", format="text",
                                                       reader=ReaderConfig(text_mode="line")), progress),
        ingest(store, [data / WIKI_FILE], IngestConfig("wiki", role="test", format="mediawiki"), progress),
    ]
