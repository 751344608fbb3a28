# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Sentencepiece training, round trip with special tokens, vocab layout."""

import io
import itertools

import numpy as np
import pytest
import sentencepiece as spm

from nextflow_jax.text import tokenizer as text_tokenizer
from nextflow_jax.text import vocab

TEXTS = [f"{n} {c} {s}s {r} a {c2} square"
         for n, c, s, r, c2 in itertools.product(
             ["two", "three"], ["red", "blue", "green"],
             ["circle", "triangle"], ["left of", "above"], ["yellow", "cyan"])]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tok") / "text.model")
  return text_tokenizer.train_sentencepiece(TEXTS * 5, path, 512)


@pytest.mark.parametrize("text", [
    "two red circles left of a yellow square",
    "<user> how many circles? <assistant> two",
    "<boi><eoi>",
    "Ünïcode ✨ and 日本語 fall back to bytes",
])
def test_round_trip(tok, text):
  assert tok.decode(tok.encode(text, add_bos=True, add_eos=True)) == text


def test_special_tokens_are_single_ids_at_fixed_positions(tok):
  for token, token_id in vocab.SPECIAL_IDS.items():
    assert token_id in tok.encode(f"a {token} b")
    assert tok.id_to_piece(token_id) == token
  ids = tok.encode("x", add_bos=True, add_eos=True)
  assert ids[0] == vocab.BOS_ID and ids[-1] == vocab.EOS_ID
  assert tok.id_to_piece(vocab.PAD_ID) == vocab.PAD


def test_saved_model_loads_identically(tok):
  loaded = text_tokenizer.TextTokenizer.load(tok.source)
  assert loaded.encode(TEXTS[3]) == tok.encode(TEXTS[3])
  assert loaded.vocab_size == tok.vocab_size <= 512


def test_foreign_model_is_rejected(tmp_path):
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS * 5),
                                 model_writer=model, vocab_size=30,
                                 minloglevel=2)
  path = tmp_path / "foreign.model"
  path.write_bytes(model.getvalue())
  with pytest.raises(ValueError, match=r"has '<unk>' at id 0, expected 1; it "
                     r"was not trained with nextflow_jax's vocabulary layout"):
    text_tokenizer.TextTokenizer.load(str(path))


def test_training_errors():
  with pytest.raises(ValueError, match="vocab_size=100 is too small"):
    text_tokenizer.train_sentencepiece(TEXTS, None, 100)
  with pytest.raises(ValueError, match="no text"):
    text_tokenizer.train_sentencepiece(["", "  "], None, 512)
  with pytest.raises(FileNotFoundError, match="run the prepare_data job"):
    text_tokenizer.TextTokenizer.load("/nonexistent/text.model")


def test_vocab_layout():
  layout = vocab.VocabLayout(text_vocab_size=512, codebook_size=256)
  assert layout.total_size == 768 and layout.visual_offset == 512
  ids = layout.code_to_id(np.array([0, 255]))
  np.testing.assert_array_equal(ids, [512, 767])
  np.testing.assert_array_equal(layout.id_to_code(ids), [0, 255])
  np.testing.assert_array_equal(layout.is_visual([511, 512, 767, 768]),
                                [False, True, True, False])
  with pytest.raises(ValueError, match=r"visual codes must be in \[0, 256\)"):
    layout.code_to_id(np.array([256]))
  with pytest.raises(ValueError, match="ids must be visual"):
    layout.id_to_code(np.array([vocab.BOI_ID]))
  with pytest.raises(ValueError, match="leaves no room"):
    vocab.VocabLayout(text_vocab_size=8, codebook_size=4)


def test_a_folder_holds_one_text_tokenizer_of_either_kind(tok, tmp_path):
  tok.save(str(tmp_path / "text_tokenizer.model"))
  loaded = text_tokenizer.load_from_folder(str(tmp_path))
  assert loaded.encode(TEXTS[0]) == tok.encode(TEXTS[0])
  assert text_tokenizer.load(str(tmp_path / "text_tokenizer.model")
                             ).vocab_size == tok.vocab_size
  (tmp_path / "text_tokenizer.json").write_text("{}")
  with pytest.raises(ValueError, match=r"holds two text tokenizers"):
    text_tokenizer.load_from_folder(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"no text tokenizer in .* "
                     r"\(neither text_tokenizer.model nor "
                     r"text_tokenizer.json\)"):
    text_tokenizer.load_from_folder(str(tmp_path / "empty"))
