"""Readers: one generator per input format, yielding documents or rejects in a file's own order.

Every reader streams (bounded memory whatever the file size) and never raises on a bad record: it
yields a `Reject` with the record's location and a reason, and goes on. A file that cannot be opened
at all raises `InputError` naming it.

Package layout: `base` (Doc, Reject, ReaderConfig, InputError, the text checks), `compression` (gzip,
bz2 and zstd streams, lines), one module per format (`jsonl`, `text`, `parquet`, `warc`, `mediawiki`,
`hf`), `formats` (format detection, READERS, read_file) and `parts` (read_to_parts, the map step of
ingest, run in workers that preload only this package).
"""

from corpora.readers.base import REASONS, Doc, InputError, ReaderConfig, Reject
from corpora.readers.compression import open_binary
from corpora.readers.formats import FORMATS, READERS, detect_format, read_file
from corpora.readers.hf import MAX_CARD_HEADER_BYTES, HFFolder, read_card_header, read_hf_file, read_hf_folder
from corpora.readers.jsonl import read_jsonl
from corpora.readers.mediawiki import read_mediawiki, wikitext_to_text
from corpora.readers.parquet import read_parquet
from corpora.readers.parts import FileResult, read_to_parts, read_to_parts_job
from corpora.readers.text import TEXT_MODES, read_text
from corpora.readers.warc import read_warc
