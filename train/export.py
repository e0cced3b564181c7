"""Mixtures for other trainers: a Megatron-LM / NeMo indexed dataset, or a flat token file.

A mixture's token stream is `train.npy` read row after row (rows do not overlap): documents, each
followed by the end-of-text token, the last document of a part possibly cut at the part's quota.
Both exports hold exactly that stream.

- `megatron`: `OUT/NAME_text_document.bin` + `.idx`, the `MMIDIDX` indexed dataset that Megatron-LM's
  `tools/preprocess_data.py`, NeMo and datatrove's Megatron tokenizer write; pass
  `--data-path OUT/NAME_text_document`. One sequence per drawn document (`segments.npy`), so document
  boundaries survive. The .idx layout (little-endian; Megatron-LM `megatron/core/datasets/indexed_dataset.py`):

      b"MMIDIDX\\x00\\x00"          9-byte magic
      <Q version = 1
      <B dtype code               1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16
      <Q sequence count N
      <Q document count N + 1
      int32[N]  sequence lengths (tokens)
      int64[N]  sequence pointers (byte offsets into .bin)
      int64[N+1] document indices (0, 1, ..., N: one sequence per document)

  Token ids are uint16 when the vocabulary has fewer than 65500 ids, else int32 (Megatron's
  `DType.optimal_dtype`; it has no uint32 code).
- `flat`: `OUT/NAME.bin`, the bare token stream (uint16/uint32, no header) that nanoGPT's
  `np.memmap(path, dtype=np.uint16, mode="r")` and OLMo-core's numpy datasets read.

Each gets a JSON sidecar `<file>.json`: tokenizer, vocab size, end-of-text id, dtype, token and
document counts, shares, seed, epochs and content hashes of the parts. Files are written under a
temporary name and renamed, the stream in blocks of `BLOCK_TOKENS` (memory stays flat).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import struct
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from corpora.store import Store, StoreError, atomic_path
from train.data import mixture_config, read_mixture_meta

log = logging.getLogger(__name__)

FORMATS = ("megatron", "flat")
INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
MEGATRON_DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3,
                        np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.float64): 6,
                        np.dtype(np.float32): 7, np.dtype(np.uint16): 8}
BLOCK_TOKENS = 1 << 24  # tokens converted and written per block


class ExportError(StoreError):
    """A mixture export that cannot be done as asked; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    mixture: str
    format: str = "megatron"  # megatron | flat
    out: str = "."  # output directory
    overwrite: bool = False


def megatron_dtype(vocab_size: int) -> np.dtype:
    """Megatron's choice: uint16 below 65500 ids, else int32."""
    return np.dtype(np.uint16 if vocab_size < 65500 else np.int32)


def flat_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def document_lengths(stream: np.ndarray, segments: np.ndarray | None, eot_id: int) -> np.ndarray:
    """Lengths of the stream's documents: the mixture's drawn documents (segments.npy) when they cover the
    stream exactly, else pieces ending at each end-of-text token (and a last piece without one)."""
    if segments is not None and segments.ndim == 2 and int(segments[:, 1].sum()) == len(stream):
        return segments[:, 1].astype(np.int64)
    ends = np.flatnonzero(np.asarray(stream) == eot_id) + 1
    if not len(ends) or ends[-1] != len(stream):
        ends = np.append(ends, len(stream))
    return np.diff(ends, prepend=0).astype(np.int64)


def _write_stream(path: Path, stream: np.ndarray, dtype: np.dtype, desc: str, progress: bool) -> None:
    """The stream as raw `dtype` values, block by block, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for start in tqdm(range(0, len(stream), BLOCK_TOKENS), desc=desc, unit="block",
                          disable=not progress or len(stream) <= BLOCK_TOKENS):
            f.write(np.ascontiguousarray(stream[start:start + BLOCK_TOKENS], dtype=dtype).tobytes())


def write_index(path: Path, lengths: np.ndarray, dtype: np.dtype) -> None:
    """A Megatron .idx for documents of `lengths` tokens stored back to back in `dtype` (one sequence each)."""
    if len(lengths) and int(lengths.max()) >= 1 << 31:
        raise ExportError("a document longer than 2^31 tokens does not fit Megatron's int32 sizes")
    sizes = np.asarray(lengths, dtype=np.int32)
    pointers = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    doc_idx = np.arange(len(sizes) + 1, dtype=np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(INDEX_HEADER)
        f.write(struct.pack("<Q", INDEX_VERSION))
        f.write(struct.pack("<B", MEGATRON_DTYPE_CODES[dtype]))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(sizes.astype("<i4").tobytes())
        f.write(pointers.astype("<i8").tobytes())
        f.write(doc_idx.astype("<i8").tobytes())


def export_mixture(store: Store, cfg: ExportConfig, progress: bool = True) -> dict:
    """Write mixture `cfg.mixture` for another trainer (see the module docstring); returns the sidecar."""
    if cfg.format not in FORMATS:
        raise ExportError(f"unknown mixture export format {cfg.format!r}: use one of {', '.join(FORMATS)}")
    mix_cfg = mixture_config(store, cfg.mixture)  # MixtureError names the built mixtures
    meta = read_mixture_meta(store, cfg.mixture)
    mix_dir = store.artifact_dir("mixtures", cfg.mixture, create=False)
    if not (mix_dir / "train.npy").exists():
        raise ExportError(f"mixture {cfg.mixture!r} has no train.npy (interrupted build?); rebuild it with "
                          f"`python -m train mix {cfg.mixture} ... --force`")
    stream = np.load(mix_dir / "train.npy", mmap_mode="r").reshape(-1)
    vocab_size, eot_id = int(meta["vocab_size"]), int(meta["eot_id"])
    out = store.check_outside(cfg.out, replaces=False)  # files written into --out must not land in the store
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{cfg.mixture}_text_document" if cfg.format == "megatron" else cfg.mixture
    data_path = out / f"{stem}.bin"
    written = [data_path] + ([out / f"{stem}.idx"] if cfg.format == "megatron" else []) + [out / f"{stem}.json"]
    if not cfg.overwrite and any(p.exists() for p in written):
        raise ExportError(f"{next(p for p in written if p.exists())} exists; remove it, choose another --out, "
                          "or pass --overwrite")

    segments = np.load(mix_dir / "segments.npy") if (mix_dir / "segments.npy").exists() else None
    lengths = document_lengths(stream, segments, eot_id)
    if cfg.format == "megatron":
        dtype = megatron_dtype(vocab_size)
        _write_stream(data_path, stream, dtype, f"export {cfg.mixture}", progress)
        write_index(out / f"{stem}.idx", lengths, dtype)
        how = {"megatron_data_path": str((out / stem).resolve()),
               "dtype_code": MEGATRON_DTYPE_CODES[dtype]}
    else:
        dtype = flat_dtype(vocab_size)
        _write_stream(data_path, stream, dtype, f"export {cfg.mixture}", progress)
        how = {"read_with": f"np.memmap({data_path.name!r}, dtype=np.{dtype.name}, mode='r')"}
    parts = {p["corpus"]: p for p in meta.get("parts", [])}
    sidecar = {
        "format": cfg.format, "mixture": cfg.mixture, "files": [p.name for p in written[:-1]], **how,
        "dtype": dtype.name, "n_tokens": int(len(stream)), "n_documents": int(len(lengths)),
        "tokenizer": meta["tokenizer"], "tokenizer_fingerprint": meta.get("tokenizer_fingerprint"),
        "vocab_size": vocab_size, "eot_id": eot_id,
        "documents": "each drawn document followed by eot_id; a part's last document may be cut at its quota",
        "seq_len": mix_cfg.seq_len, "seed": mix_cfg.seed, "token_budget": mix_cfg.tokens,
        "shares": dict(mix_cfg.parts),
        "parts": [{"corpus": c, "share": s, "n_tokens": parts.get(c, {}).get("n_tokens"),
                   "n_unique_tokens": parts.get(c, {}).get("n_unique_tokens"),
                   "epochs": parts.get(c, {}).get("epochs"),
                   "content_hash": (meta.get("content_hashes") or {}).get(c)} for c, s in mix_cfg.parts.items()],
        "source": str(mix_dir / "train.npy"), "mixture_created_at": meta.get("created_at"),
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(out / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(sidecar, indent=1))
    log.info("mixture %s: %d tokens in %d documents -> %s", cfg.mixture, len(stream), len(lengths), data_path)
    return sidecar
