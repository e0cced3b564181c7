"""corpora.tokenizers: every kind of tokenizer name, encoded without special tokens, on real text."""

from __future__ import annotations

import base64
import pickle

import numpy as np
import pytest

from corpora.store import StoreError
from corpora.tokenizers import EOT_TEXT, UnknownTokenizer, load_tokenizer


@pytest.fixture(scope="module")
def cl100k():
    return load_tokenizer("cl100k_base")


def test_cl100k_matches_tiktoken_encode_ordinary(cl100k, lee_texts):
    texts = lee_texts[:120] + ["", "a <|endoftext|> b"]
    expected = [cl100k.encoding.encode_ordinary(t) for t in texts]
    assert cl100k.encode_batch(texts) == expected
    tokens, lengths = cl100k.encode_batch_flat(texts)
    assert tokens.dtype == np.uint32 and lengths.dtype == np.int64
    assert lengths.tolist() == [len(e) for e in expected]
    assert tokens.tolist() == [i for e in expected for i in e]


def test_cl100k_properties_and_decoding(cl100k, lee_texts):
    assert cl100k.name == "cl100k_base"
    assert cl100k.eot_id == 100257 and cl100k.n_vocab == 100277 and cl100k.dtype == np.uint32
    # a document's literal "<|endoftext|>" is text, not the separator
    tokens, _ = cl100k.encode_batch_flat([EOT_TEXT])
    assert cl100k.eot_id not in tokens.tolist() and len(tokens) > 1
    (ids,) = cl100k.encode_batch([" hvor"])
    assert len(ids) == 1 and cl100k.token_str(ids[0]) == " hvor"
    text = lee_texts[0]
    ids = cl100k.encode_batch([text])[0]
    assert cl100k.decode(ids) == text
    assert "".join(cl100k.token_strs(ids)) == text  # lee_background is ASCII: every token is whole UTF-8
    assert cl100k.token_str(cl100k.eot_id) == EOT_TEXT
    # a lone UTF-8 lead byte shows as an escape, not as U+FFFD
    (e2,) = [i for i in range(256) if cl100k.encoding.decode_single_token_bytes(i) == b"\xe2"]
    assert cl100k.token_str(e2) == "\\xe2"


def test_tokenizer_pickles_for_worker_processes(cl100k, lee_texts):
    clone = pickle.loads(pickle.dumps(cl100k.with_threads(1)))
    assert clone.name == cl100k.name and clone.fingerprint == cl100k.fingerprint and clone.num_threads == 1
    assert clone.encode_batch(lee_texts[:5]) == cl100k.encode_batch(lee_texts[:5])
    assert cl100k.num_threads >= 1 and cl100k.with_threads(3).encoding is cl100k.encoding


def test_tiktoken_file_gets_an_added_eot(cl100k, tmp_path, lee_texts):
    ranks = cl100k.encoding._mergeable_ranks
    path = tmp_path / "mine.tiktoken"
    path.write_text("".join(f"{base64.b64encode(b).decode()} {r}\n" for b, r in ranks.items()))
    tok = load_tokenizer(str(path))
    assert tok.name == "mine"
    assert tok.encode_batch(lee_texts[:20]) == cl100k.encode_batch(lee_texts[:20])
    assert tok.eot_id == len(ranks) and tok.n_vocab == len(ranks) + 1
    assert tok.decode([*tok.encode_batch(["a b"])[0], tok.eot_id]) == "a b" + EOT_TEXT


@pytest.fixture(scope="module")
def lee_tokenizer_json(tmp_path_factory, lee_texts):
    """A small byte-level BPE trained on the Lee news articles (no end-of-text token of its own)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lee_texts, trainers.BpeTrainer(vocab_size=600, show_progress=False,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_hf_tokenizer_json_dir_and_store_registered(lee_tokenizer_json, lee_texts, store):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(lee_tokenizer_json))
    expected = [e.ids for e in raw.encode_batch(lee_texts[:50], add_special_tokens=False)]
    registered = store.artifact_dir("tokenizers", "lee") / "tokenizer.json"
    registered.write_bytes(lee_tokenizer_json.read_bytes())
    for name, s in ((str(lee_tokenizer_json), None), (str(lee_tokenizer_json.parent), None), ("lee", store)):
        tok = load_tokenizer(name, store=s)
        assert tok.encode_batch(lee_texts[:50]) == expected
        tokens, lengths = tok.encode_batch_flat(lee_texts[:50])
        assert tokens.tolist() == [i for e in expected for i in e]
        assert lengths.tolist() == [len(e) for e in expected]
        assert tok.eot_id == 600 and tok.n_vocab == 601  # none in the vocab: one was added
        assert tok.dtype == np.uint16
        assert tok.decode(expected[0]) == lee_texts[0]
        assert tok.eot_id not in tok.encode_batch([EOT_TEXT])[0]
    assert load_tokenizer("lee", store=store).name == "lee"
    assert load_tokenizer(str(lee_tokenizer_json)).name == lee_tokenizer_json.parent.name


def test_bytelevel_bpe_runs_on_tiktoken_unless_it_has_a_normalizer(lee_tokenizer_json, lee_texts, tmp_path):
    from tokenizers import Tokenizer, normalizers

    from corpora.tokenizers import HFTokenizer, TiktokenTokenizer

    assert isinstance(load_tokenizer(str(lee_tokenizer_json)), TiktokenTokenizer)
    raw = Tokenizer.from_file(str(lee_tokenizer_json))
    raw.normalizer = normalizers.NFKC()  # tiktoken has no normalizer: this one must stay with tokenizers
    path = tmp_path / "nfkc" / "tokenizer.json"
    path.parent.mkdir()
    raw.save(str(path))
    tok = load_tokenizer(str(path))
    assert isinstance(tok, HFTokenizer)
    assert tok.encode_batch(lee_texts[:20]) == [e.ids for e in raw.encode_batch(lee_texts[:20], add_special_tokens=False)]


def test_smollm2_gguf_tokenizer_cached_in_store(store):
    tok = load_tokenizer("smollm2", store=store)
    assert tok.name == "smollm2" and tok.n_vocab == 49152 and tok.eot_id == 0
    ids = tok.encode_batch([" hvor er"])[0]
    assert "".join(tok.token_strs(ids)) == " hvor er"
    assert tok.eot_id not in tok.encode_batch([EOT_TEXT])[0]
    assert list(store.artifact_dir("tokenizer_cache", "gguf").glob("*.json"))  # next load skips the conversion


@pytest.mark.parametrize("name", ["no_such_tokenizer", "gpt2_but_misspelt", "/no/such/file.json"])
def test_unknown_tokenizer_is_a_one_line_error(name):
    with pytest.raises(UnknownTokenizer) as err:
        load_tokenizer(name)
    assert isinstance(err.value, ValueError) and isinstance(err.value, StoreError)
    assert "\n" not in str(err.value) and "cl100k_base" in str(err.value)
