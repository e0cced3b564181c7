"""Hugging Face datasets folders (save_to_disk Arrow files, or Parquet data files named by the card) and
their data files."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from corpora.readers.base import Doc, InputError, ReaderConfig, Reject, _check_text, _jsonable

if TYPE_CHECKING:  # pyarrow is imported where it is used, so the readers stay light for workers
    import pyarrow as pa

# Exported document columns that come back as columns; doc_id and n_bytes are recomputed from the text.
_HF_COLUMNS = ("source_doc_id", "generator", "prompt_id")


def _hf_batches(path: Path) -> Iterator["pa.RecordBatch"]:
    """Record batches of a .parquet file, or of a save_to_disk .arrow file (the Arrow IPC stream format)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.name.lower().endswith(".parquet"):
        yield from pq.ParquetFile(path).iter_batches(batch_size=4096)
        return
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid as stream_error:  # datasets writes streams; an Arrow IPC *file* reads too
            try:
                file_reader = pa.ipc.open_file(source)
            except pa.ArrowInvalid:
                raise stream_error from None
            yield from (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
            return
        end = source.tell()
        for batch in reader:
            yield batch
            end = source.tell()
        # A stream cut exactly between two messages reads as a shorter, complete-looking stream; only the
        # end-of-stream marker after the last message proves that nothing is missing.
        size = source.size()
        source.seek(end)
        if source.read(size - end) not in _ARROW_EOS:
            raise EOFError(f"the Arrow stream ends after byte {end} without its end-of-stream marker "
                           "(the file is truncated); later rows are missing")


_ARROW_EOS = (b"\xff\xff\xff\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00")  # since Arrow 0.15; before


_DOC_ID_RE = re.compile(r"[0-9a-f]{16}")
_SPLIT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def _hf_doc(text: str, source: str, record: dict, keep_doc_id: bool) -> Doc:
    """A document from one row; a row exported by synthmix comes back with its columns and meta."""
    columns = {}
    doc_id = record.pop("doc_id", None)
    # A folder is hostile input: its ids are recomputed from the text. Only a synthetic row of a synthmix
    # export keeps its id (a synthetic id hashes how the text was made, so it cannot be recomputed), and
    # only when it has the shape of one (16 hex digits).
    if keep_doc_id and isinstance(record.get("generator"), str) and isinstance(doc_id, str) and \
            _DOC_ID_RE.fullmatch(doc_id):
        columns["doc_id"] = doc_id
    for key in _HF_COLUMNS:
        value = record.pop(key, None)
        if isinstance(value, str):
            columns[key] = value
    meta: dict = {}
    raw = record.pop("meta", None)
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
            meta = parsed if isinstance(parsed, dict) else {"meta": parsed}
        except json.JSONDecodeError:
            meta = {"meta": raw}
    elif isinstance(raw, dict):
        meta = raw
    elif raw is not None:
        meta = {"meta": raw}
    record.pop("n_bytes", None)
    meta.update({k: v for k, v in record.items() if v is not None and _jsonable(v)})
    return Doc(text, source, meta, columns)


def read_hf_file(path: Path, cfg: ReaderConfig) -> Iterator[Doc | Reject]:
    """Rows of one data file of a Hugging Face datasets folder (.parquet, or a save_to_disk .arrow file).

    Columns other than the text go into meta (the exported `source` too); source_doc_id, generator and
    prompt_id come back as document columns, an exported `meta` (JSON) as the document's meta, and with
    cfg.keep_doc_ids an exported doc_id as the id (else ids are recomputed from the text)."""
    import pyarrow as pa

    reason = "corrupt_parquet" if path.name.lower().endswith(".parquet") else "corrupt_arrow"
    row = 0
    try:
        for batch in _hf_batches(path):
            if cfg.text_field not in batch.schema.names:
                yield Reject(str(path), "missing_text_field",
                             f"no column {cfg.text_field!r} (columns: {', '.join(batch.schema.names)}); "
                             "pass --text-field")
                return
            # IPC reads do not check buffers against offsets; a damaged batch must fail here, not crash
            # the process in to_pylist (a segfault, found by the fuzz test)
            batch.validate(full=True)
            for record in batch.to_pylist():
                source = f"{path}#{row}"
                row += 1
                text = record.pop(cfg.text_field)
                if (bad := _check_text(text, source, cfg)) is not None:
                    yield bad
                    continue
                yield _hf_doc(text, source, record, cfg.keep_doc_ids)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except EOFError as e:
        yield Reject(f"{path}#{row}", "truncated_stream", str(e)[:200])
    except (pa.ArrowException, OSError, ValueError) as e:  # ValueError: e.g. a string that is not UTF-8
        yield Reject(f"{path}#{row}", reason, f"{type(e).__name__}: {e}"[:200])


@dataclasses.dataclass
class HFFolder:
    """A Hugging Face datasets folder: its data files by split, and its metadata."""
    path: Path
    layout: str  # "save_to_disk" (Arrow files) or "parquet" (data files named by the card, or data/*.parquet)
    splits: dict[str, list[Path]]
    card: dict  # the YAML header of README.md ({} without one)
    info: dict  # dataset_info.json of a save_to_disk folder ({} without one)

    @property
    def files(self) -> list[Path]:
        return [f for files in self.splits.values() for f in files]


MAX_CARD_HEADER_BYTES = 1 << 20  # a real card header is a few KB; more is an attack or a mistake


def read_card_header(readme: Path) -> dict:
    """The YAML header of a dataset card (README.md between `---` lines); {} when there is none.

    The card is hostile input: the header is capped at MAX_CARD_HEADER_BYTES, parsed without aliases
    (an alias bomb of a few hundred bytes would expand to gigabytes) and kept only as JSON values
    (dates become ISO strings, sets lists; binary values, NaN and infinities are dropped)."""
    import yaml

    try:
        with open(readme, "rb") as f:
            raw = f.read(MAX_CARD_HEADER_BYTES + 8)
    except OSError as e:
        raise InputError(f"{readme}: cannot read the dataset card ({e.strerror or e})") from None
    text = raw.decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        if len(raw) > MAX_CARD_HEADER_BYTES:
            raise InputError(f"{readme}: the YAML header is larger than {MAX_CARD_HEADER_BYTES >> 20} MiB; "
                             "shorten the dataset card")
        raise InputError(f"{readme}: the YAML header opened by '---' is never closed; add a '---' line after it")
    try:
        header = yaml.load(text[3:end], Loader=_card_loader())  # noqa: S506 (a SafeLoader without aliases)
    except (yaml.YAMLError, RecursionError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{readme}: bad YAML header ({first}); fix the dataset card") from None
    header = _json_safe(header) if header is not None else {}
    if not isinstance(header, dict):
        raise InputError(f"{readme}: the YAML header is not a mapping of keys to values")
    return header


def _card_loader():
    import yaml

    class CardLoader(yaml.SafeLoader):
        """SafeLoader that refuses aliases (`*name`): they are how a small card expands exponentially."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a dataset card",
                                                  event.start_mark)
            return super().compose_node(parent, index)

    return CardLoader


def _json_safe(value, depth: int = 0):
    """A YAML value as JSON: dates as ISO strings, sets as sorted lists, keys as strings; bytes, NaN,
    infinities and integers past 64 bits dropped (None), nesting cut at 100 levels."""
    import datetime
    import math

    if depth > 100:
        return None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, (str, int, float, bool)) or k is None:
                out[str(k)] = _json_safe(v, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_json_safe(v, depth + 1) for v in value), key=str)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 63) else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None  # bytes (!!binary) and anything else JSON cannot hold


def _card_data_files(folder: Path, card: dict) -> dict[str, list[Path]]:
    """Split -> files named by the card's `configs` (the default config, else the first)."""
    configs = card.get("configs") or []
    if not isinstance(configs, list) or not configs:
        return {}
    config = next((c for c in configs if isinstance(c, dict) and (c.get("default") or
                                                                    c.get("config_name") == "default")), configs[0])
    spec = config.get("data_files") if isinstance(config, dict) else None
    if isinstance(spec, (str, dict)):
        spec = [spec]
    patterns: dict[str, list[str]] = {}
    for item in spec or []:
        if isinstance(item, str):
            patterns.setdefault("train", []).append(item)
        elif isinstance(item, dict) and "path" in item:
            paths = item["path"] if isinstance(item["path"], list) else [item["path"]]
            patterns.setdefault(str(item.get("split", "train")), []).extend(map(str, paths))
    splits = {}
    for split, globs in patterns.items():
        for g in globs:
            _relative_inside(folder, g, f"{folder / 'README.md'}: data_files path {g!r}")
        files = sorted({p for g in globs for p in folder.glob(g) if p.is_file()})
        files = [_inside(folder, p, f"{folder / 'README.md'}: data_files {p}") for p in files]
        if not files:
            raise InputError(f"{folder}: the card's data_files {globs} for split {split!r} match no file")
        splits[split] = files
    return splits


def _relative_inside(folder: Path, name: str, what: str) -> Path:
    """folder/name for a path written in a folder's metadata: refused when absolute or climbing out with
    '..' (a dataset folder may only name its own files)."""
    import os

    if not name or os.path.isabs(name) or name.startswith("~"):
        raise InputError(f"{what} is not a path inside the folder; a dataset folder may only name its own files")
    parts = Path(os.path.normpath(name)).parts
    if parts and parts[0] == "..":
        raise InputError(f"{what} climbs out of the folder with '..'; a dataset folder may only name its own files")
    return folder / name


def _inside(folder: Path, path: Path, what: str) -> Path:
    """`path` when it resolves inside `folder` (symlinks followed), else InputError."""
    root = folder.resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        raise InputError(f"{what} resolves to {real}, outside the folder {root}; a dataset folder may only "
                         "hold its own files (copy a linked folder with `cp -rL` first)")
    return path


def _json_file(path: Path, shape: type, what: str):
    """A folder's JSON metadata file, checked to be a `shape` (dict or list); InputError naming it."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CARD_HEADER_BYTES + 1)
        if len(raw) > MAX_CARD_HEADER_BYTES:
            raise ValueError(f"larger than {MAX_CARD_HEADER_BYTES >> 20} MiB")
        value = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise InputError(f"{path}: not a readable {what} ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(value, shape):
        raise InputError(f"{path}: not a {what} (a JSON {shape.__name__.replace('dict', 'object')} expected, "
                         f"found {type(value).__name__})")
    return value


def _saved_split(folder: Path, root: Path) -> tuple[list[Path], dict]:
    """The Arrow files of one `Dataset.save_to_disk` folder (state.json) and its dataset_info.json."""
    state_path = folder / "state.json"
    state = _json_file(state_path, dict, "datasets state file (re-save with save_to_disk)")
    entries = state.get("_data_files")
    if not isinstance(entries, list) or not all(isinstance(f, dict) and isinstance(f.get("filename"), str)
                                                for f in entries):
        raise InputError(f"{state_path}: not a datasets state file (`_data_files` must be a list of "
                         "{{\"filename\": ...}}); re-save with save_to_disk")
    files = [_inside(root, _relative_inside(folder, f["filename"], f"{state_path}: filename {f['filename']!r}"),
                     f"{state_path}: filename {f['filename']!r}") for f in entries]
    info_path = folder / "dataset_info.json"
    info = _json_safe(_json_file(info_path, dict, "datasets info file")) if info_path.exists() else {}
    return files, info


def read_hf_folder(folder: str | Path) -> HFFolder:
    """Find the data files of a Hugging Face datasets folder; raises InputError for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory")
    readme = folder / "README.md"
    card = read_card_header(readme) if readme.exists() else {}
    if (folder / "dataset_dict.json").exists():  # DatasetDict.save_to_disk: one folder per split
        dict_path = folder / "dataset_dict.json"
        names = _json_file(dict_path, dict, "datasets dict file").get("splits")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and _SPLIT_RE.fullmatch(n)
                                                               for n in names):
            raise InputError(f"{dict_path}: `splits` must be a list of split names (letters, digits, '_', '-', "
                             f"'.'), not {str(names)[:100]}")
        splits, info = {}, {}
        for name in names:
            splits[name], info = _saved_split(_inside(folder, folder / name, f"{dict_path}: split {name!r}"), folder)
        return _complete(HFFolder(folder, "save_to_disk", splits, card, info))
    if (folder / "state.json").exists():  # Dataset.save_to_disk
        files, info = _saved_split(folder, folder)
        split = info.get("split")
        return _complete(HFFolder(folder, "save_to_disk", {split if isinstance(split, str) and split else "train": files},
                                  card, info))
    splits = _card_data_files(folder, card)
    if not splits:  # the Hub's convention without a card: data/{split}-00000-of-00001.parquet
        for f in sorted(_inside(folder, p, str(p)) for p in (folder / "data").glob("*.parquet")):
            m = re.match(r"^([A-Za-z0-9_]+?)(?:[-_]\d+(?:-of-\d+)?)?\.parquet$", f.name)
            splits.setdefault(m.group(1) if m else "train", []).append(f)
    if not splits:
        raise InputError(f"{folder}: not a Hugging Face datasets folder (no dataset_dict.json, state.json, "
                         "README.md with data_files, or data/*.parquet); pass data files instead")
    return _complete(HFFolder(folder, "parquet", splits, card, {}))


def _complete(hf: HFFolder) -> HFFolder:
    missing = [f for f in hf.files if not f.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: listed by {hf.path} but missing; the folder is incomplete")
    return hf
