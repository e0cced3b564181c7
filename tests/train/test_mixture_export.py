"""Mixture export: the Megatron indexed dataset read back by a reader written here from the format's published
layout (Megatron-LM megatron/core/datasets/indexed_dataset.py), and the flat file read with np.memmap; both
must give the mixture's token stream exactly, document by document."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from corpora.store import Store
from tests.conftest import add_corpus
from train.data import MixtureConfig, build_mixture
from train.export import ExportConfig, ExportError, document_lengths, export_mixture

SEQ_LEN = 63
# Megatron's DType codes, written out again here so the reader does not share the writer's table
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
          8: np.uint16}


def read_indexed_dataset(prefix: str) -> tuple[np.dtype, list[np.ndarray], np.ndarray]:
    """An independent MMIDIDX reader: (dtype, one token array per sequence, document indices)."""
    with open(prefix + ".idx", "rb") as f:
        assert f.read(9) == b"MMIDIDX\x00\x00"
        (version,) = struct.unpack("<Q", f.read(8))
        (code,) = struct.unpack("<B", f.read(1))
        (n_seq,) = struct.unpack("<Q", f.read(8))
        (n_doc,) = struct.unpack("<Q", f.read(8))
        sizes = np.frombuffer(f.read(4 * n_seq), dtype="<i4")
        pointers = np.frombuffer(f.read(8 * n_seq), dtype="<i8")
        doc_idx = np.frombuffer(f.read(8 * n_doc), dtype="<i8")
        assert f.read() == b""  # nothing after the document indices
    assert version == 1
    dtype = np.dtype(DTYPES[code])
    data = np.memmap(prefix + ".bin", dtype=dtype, mode="r")
    assert data.nbytes == int(sizes.astype(np.int64).sum()) * dtype.itemsize
    seqs = [np.asarray(data[p // dtype.itemsize: p // dtype.itemsize + s]) for p, s in zip(pointers, sizes)]
    return dtype, seqs, doc_idx


@pytest.fixture(scope="module")
def mix_store(tmp_path_factory, lee_texts) -> Store:
    """Two mixtures of real news text: cl100k_base (100k ids: int32/uint32) and a byte-level BPE trained on
    them (1024 ids: uint16)."""
    from train.tokenizer import train_tokenizer

    store = Store(tmp_path_factory.mktemp("mix") / "store", create=True)
    add_corpus(store, "cc", lee_texts[:120], shard_size=50)
    add_corpus(store, "hq", lee_texts[120:150], kind="synthetic", synthetic_type="hq")
    build_mixture(store, MixtureConfig("m", {"cc": 0.67, "hq": 0.33}, "30k", seed=3, seq_len=SEQ_LEN), progress=False)
    train_tokenizer(store, "bpe", ["cc"], vocab_size=1024)
    build_mixture(store, MixtureConfig("m16", {"cc": 0.5, "hq": 0.5}, "10k", seed=1, seq_len=SEQ_LEN,
                                       tokenizer="bpe"), progress=False)
    return store


def _stream(store, name):
    return np.load(store.artifact_dir("mixtures", name) / "train.npy").reshape(-1)


@pytest.mark.parametrize("mixture, code", [("m", 4), ("m16", 8)])
def test_megatron_reads_back_the_mixture_document_by_document(mix_store, tmp_path, mixture, code):
    sidecar = export_mixture(mix_store, ExportConfig(mixture, "megatron", str(tmp_path)), progress=False)
    dtype, seqs, doc_idx = read_indexed_dataset(str(tmp_path / f"{mixture}_text_document"))
    assert dtype == np.dtype(DTYPES[code])
    stream = _stream(mix_store, mixture)
    assert np.array_equal(np.concatenate(seqs).astype(np.int64), stream.astype(np.int64))
    # one sequence per drawn document, in stream order, as segments.npy records them
    segments = np.load(mix_store.artifact_dir("mixtures", mixture) / "segments.npy")
    assert [len(s) for s in seqs] == segments[:, 1].tolist()
    assert doc_idx.tolist() == list(range(len(seqs) + 1))
    meta = json.loads((mix_store.artifact_dir("mixtures", mixture) / "mixture.json").read_text())
    whole = sum(int(s[-1]) == meta["eot_id"] for s in seqs)
    assert whole >= len(seqs) - 2  # only a part's last document may be cut at its quota (two parts)
    assert sidecar["n_tokens"] == len(stream) and sidecar["n_documents"] == len(seqs)
    assert sidecar["dtype_code"] == code and sidecar["eot_id"] == meta["eot_id"]


def test_flat_file_is_the_stream_with_a_sidecar(mix_store, tmp_path):
    sidecar = export_mixture(mix_store, ExportConfig("m", "flat", str(tmp_path)), progress=False)
    side = json.loads((tmp_path / "m.json").read_text())
    assert side == json.loads(json.dumps(sidecar))
    flat = np.memmap(tmp_path / "m.bin", dtype=side["dtype"], mode="r")
    assert side["dtype"] == "uint32" and np.array_equal(flat, _stream(mix_store, "m"))
    meta = json.loads((mix_store.artifact_dir("mixtures", "m") / "mixture.json").read_text())
    assert side["shares"] == {"cc": 0.67, "hq": 0.33} and side["seed"] == 3 and side["seq_len"] == SEQ_LEN
    assert [p["epochs"] for p in side["parts"]] == [p["epochs"] for p in meta["parts"]]
    assert [p["content_hash"] for p in side["parts"]] == [mix_store.corpus(c).content_hash for c in ("cc", "hq")]
    assert side["tokenizer"] == "cl100k_base" and side["vocab_size"] == meta["vocab_size"]
    # the documents are separated by end-of-text: as many as the drawn documents that were not cut
    segments = np.load(mix_store.artifact_dir("mixtures", "m") / "segments.npy")
    assert int((flat == side["eot_id"]).sum()) >= len(segments) - 2
    assert np.array_equal(np.memmap(tmp_path / "m.bin", dtype=np.uint32, mode="r")[: SEQ_LEN + 1],
                          np.load(mix_store.artifact_dir("mixtures", "m") / "train.npy")[0])
    with pytest.raises(ExportError, match="exists"):
        export_mixture(mix_store, ExportConfig("m", "flat", str(tmp_path)), progress=False)


def test_document_boundaries_without_segments():
    eot = 9
    stream = np.array([1, 2, eot, 3, eot, eot, 4, 5])
    assert document_lengths(stream, None, eot).tolist() == [3, 2, 1, 2]  # the last piece has no end-of-text
    assert document_lengths(stream[:5], None, eot).tolist() == [3, 2]
    wrong = np.array([[0, 4]])  # segments that do not cover the stream are not trusted
    assert document_lengths(stream, wrong, eot).tolist() == [3, 2, 1, 2]


def test_cli_export_and_errors(mix_store, tmp_path, capsys):
    from train.__main__ import main

    store = ["--store", str(mix_store.root), "-q"]
    assert main(["export", "m16", "--format", "megatron", "--out", str(tmp_path), "--json", *store]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == ["m16_text_document.bin", "m16_text_document.idx"]
    assert main(["export", "nope", "--out", str(tmp_path), *store]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown mixture 'nope'" in err
