"""Prompts, chunking and post-processing: fast checks on hand-checkable and real text."""

from __future__ import annotations

import pytest

from corpora.tokenizers import load_tokenizer
from synth.chunking import chunk_documents, split_sentences
from synth.postprocess import clean_output
from synth.prompts import BUILTIN_TYPES, PromptError, load_prompt


def test_builtin_prompts_have_versioned_ids(tmp_path):
    ids = {load_prompt(t).prompt_id for t in BUILTIN_TYPES}
    assert len(ids) == 3 and all(i.split("-")[0] in BUILTIN_TYPES for i in ids)
    assert load_prompt("hq").mode == "rephrase" and load_prompt("txbk").mode == "topic"
    # a user's copy of the HQ template with one word changed gets another prompt_id
    text = load_prompt("hq").text
    path = tmp_path / "mine.txt"
    path.write_text(text.replace("neutral", "plain"))
    mine = load_prompt("mine", path)
    assert mine.type == "mine" and mine.prompt_id.startswith("mine-")
    assert mine.prompt_id.split("-")[1] != load_prompt("hq").prompt_id.split("-")[1]
    path.write_text(text)
    assert load_prompt("mine", path).prompt_id.split("-")[1] == load_prompt("hq").prompt_id.split("-")[1]


def test_bad_prompts_name_the_problem(tmp_path):
    with pytest.raises(PromptError, match="unknown synthetic type 'poem'"):
        load_prompt("poem")
    bad = tmp_path / "bad.txt"
    bad.write_text("Rewrite {txt} nicely")
    with pytest.raises(PromptError, match=r"bad\.txt: template fields are \['txt'\]"):
        load_prompt("bad", bad)
    with pytest.raises(PromptError, match="cannot read prompt file"):
        load_prompt("x", tmp_path / "missing.txt")


def test_chunks_respect_the_token_budget_and_keep_the_text(lee_texts):
    enc = load_tokenizer("cl100k_base")
    texts = lee_texts[:40]
    for max_tokens in (32, 320):
        chunked = chunk_documents(texts, enc, max_tokens)
        for text, chunks in zip(texts, chunked):
            assert chunks, "every non-empty document has a chunk"
            assert all(len(ids) <= max_tokens + 2 for ids in enc.encode_batch(chunks))  # seams: +-1 token
            # chunks are consecutive pieces of the document: joined, they give back its words
            assert " ".join(chunks).split() == text.split()
    assert sum(len(c) for c in chunk_documents(texts, enc, 32)) > sum(len(c) for c in chunk_documents(texts, enc, 320))
    # one sentence longer than the budget is cut at token boundaries
    long = "word " * 300 + "end."
    pieces = chunk_documents([long], enc, 50)[0]
    assert len(pieces) >= 6 and all(len(enc.encode_batch([p])[0]) <= 52 for p in pieces)
    assert " ".join(pieces).split() == long.split()
    url = "x" * 400  # one "word" over the budget is cut at token boundaries
    assert "".join(chunk_documents([url], enc, 20)[0]) == url
    assert "".join(split_sentences("A b. C d! E\nF")) == "A b. C d! E\nF"


@pytest.mark.parametrize("raw, finish, text, preamble, truncated, empty", [
    ("Here is the rephrased text:\n\nThe cat sat on the mat.", "stop", "The cat sat on the mat.", True, False, False),
    ("Sure! Here's a Wikipedia-style version of the passage:\nParis is the capital.", "stop",
     "Paris is the capital.", True, False, False),
    ("Certainly! Question: Who? Answer: Him.", "stop", "Question: Who? Answer: Him.", True, False, False),
    ("Rephrased text: Rome was not built in a day.", "stop", "Rome was not built in a day.", True, False, False),
    ("The treaty was signed in 1648.\n\nI hope this helps! Let me know if you need more.", "stop",
     "The treaty was signed in 1648.", True, False, False),
    ("The treaty was signed in", "length", "The treaty was signed in", False, True, False),
    ("Here is the rephrased text:", "stop", "", True, False, True),
    ("   \n ", "stop", "", False, False, True),
    ('"Water boils at 100 degrees."', "stop", "Water boils at 100 degrees.", False, False, False),
    ("Here, the river bends: it runs north.", "stop", "Here, the river bends: it runs north.", False, False, False),
])
def test_clean_output_on_crafted_outputs(raw, finish, text, preamble, truncated, empty):
    out = clean_output(raw, finish)
    assert (out.text, out.preamble_stripped, out.truncated, out.empty) == (text, preamble, truncated, empty)
