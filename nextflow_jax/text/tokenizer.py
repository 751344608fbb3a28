# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Sentencepiece text tokenizer: in-process training and a thin wrapper.

The tokenizer is trained on the datasets' own text (captions, questions,
answers, instructions) with the layout of `vocab.py`: pad/unk/bos/eos at ids
0-3, then `SPECIAL_TOKENS` as user-defined symbols (never split), then
pieces. Byte fallback keeps any Unicode text encodable.

  tok = train_sentencepiece(texts, "workdir/text_tokenizer.model", 1024)
  ids = tok.encode("two red circles", add_bos=True)

A model converted from Qwen reads Qwen's `tokenizer.json` instead
(`hf_tokenizer.HFTextTokenizer`, same interface); `load` and
`load_from_folder` open either kind by its file name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import io
import os

import sentencepiece as spm

from nextflow_jax.text import hf_tokenizer
from nextflow_jax.text import vocab

# Byte fallback needs 256 byte pieces plus the text's characters.
MIN_VOCAB_SIZE = 384


class TextTokenizer:
  """Wraps a sentencepiece model that follows the `vocab.py` layout."""

  file_name = "text_tokenizer.model"

  def __init__(self, model_proto: bytes, source: str = "<memory>"):
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.model_proto = model_proto
    self.source = source
    expected = {vocab.PAD: vocab.PAD_ID, vocab.UNK: vocab.UNK_ID,
                vocab.BOS: vocab.BOS_ID, vocab.EOS: vocab.EOS_ID,
                **vocab.SPECIAL_IDS}
    for token, token_id in expected.items():
      if self._sp.piece_to_id(token) != token_id:
        raise ValueError(
            f"text tokenizer {source} has {token!r} at id "
            f"{self._sp.piece_to_id(token)}, expected {token_id}; it was not "
            "trained with nextflow_jax's vocabulary layout. Retrain it with "
            "`train_sentencepiece` (the prepare_data job does).")

  @classmethod
  def load(cls, path: str) -> "TextTokenizer":
    if not os.path.exists(path):
      raise FileNotFoundError(f"no text tokenizer at {path}; run the "
                              "prepare_data job (configs/data.py) first.")
    with open(path, "rb") as f:
      return cls(f.read(), source=path)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str, *, add_bos: bool = False,
             add_eos: bool = False) -> list[int]:
    """Text -> ids. Special tokens written in the text become their ids."""
    ids = self._sp.encode(text, out_type=int)
    return ([vocab.BOS_ID] if add_bos else []) + ids + (
        [vocab.EOS_ID] if add_eos else [])

  def decode(self, ids: Sequence[int]) -> str:
    """Ids -> text; pad/bos/eos are dropped, special tokens kept as text."""
    ids = [int(i) for i in ids if i not in (vocab.PAD_ID, vocab.BOS_ID,
                                             vocab.EOS_ID)]
    return self._sp.decode(ids)

  def id_to_piece(self, token_id: int) -> str:
    return self._sp.id_to_piece(int(token_id))

  def save(self, path: str) -> None:
    """Writes the model file atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
      f.write(self.model_proto)
    os.replace(tmp, path)


def load(path: str) -> TextTokenizer | hf_tokenizer.HFTextTokenizer:
  """A text tokenizer file: `.json` (Hugging Face) or sentencepiece."""
  if path.endswith(".json"):
    return hf_tokenizer.HFTextTokenizer.load(path)
  return TextTokenizer.load(path)


def load_from_folder(folder: str
                     ) -> TextTokenizer | hf_tokenizer.HFTextTokenizer:
  """The text tokenizer a workdir or bundle holds, of either kind.

  Raises:
    FileNotFoundError: the folder has neither file.
    ValueError: it has both (which one the model was trained with is then
      ambiguous).
  """
  names = [cls.file_name for cls in (TextTokenizer,
                                     hf_tokenizer.HFTextTokenizer)
           if os.path.exists(os.path.join(folder, cls.file_name))]
  if not names:
    raise FileNotFoundError(
        f"no text tokenizer in {folder} (neither {TextTokenizer.file_name} "
        f"nor {hf_tokenizer.HFTextTokenizer.file_name}); run the "
        "prepare_data job (configs/data.py) first, or convert a Qwen "
        "checkpoint (python -m nextflow_jax.convert.qwen).")
  if len(names) > 1:
    raise ValueError(f"{folder} holds two text tokenizers ({names}); keep "
                     "the one its model was trained with.")
  return load(os.path.join(folder, names[0]))


def train_sentencepiece(texts: Iterable[str], path: str | None,
                        vocab_size: int, *, model_type: str = "bpe",
                        num_threads: int = 2) -> TextTokenizer:
  """Trains a sentencepiece model in-process on `texts`.

  Args:
    texts: training sentences (captions, questions, answers, ...).
    path: where to save the `.model` file (atomically); None keeps it in
      memory only.
    vocab_size: total text vocabulary, specials included (>= 384).
    model_type: "bpe" or "unigram".
    num_threads: trainer threads.

  Raises:
    ValueError: too small a vocabulary, no text, unknown model type.
  """
  if vocab_size < MIN_VOCAB_SIZE:
    raise ValueError(f"vocab_size={vocab_size} is too small: byte fallback "
                     f"needs at least {MIN_VOCAB_SIZE}.")
  if model_type not in ("bpe", "unigram"):
    raise ValueError(f"model_type={model_type!r}; use 'bpe' or 'unigram'.")
  sentences = [t for t in texts if t and t.strip()]
  if not sentences:
    raise ValueError("no text to train the tokenizer on.")
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model,
      model_type=model_type, vocab_size=vocab_size,
      user_defined_symbols=list(vocab.SPECIAL_TOKENS),
      pad_id=vocab.PAD_ID, unk_id=vocab.UNK_ID, bos_id=vocab.BOS_ID,
      eos_id=vocab.EOS_ID, pad_piece=vocab.PAD, unk_piece=vocab.UNK,
      bos_piece=vocab.BOS, eos_piece=vocab.EOS, character_coverage=1.0,
      byte_fallback=True, hard_vocab_limit=False, num_threads=num_threads,
      minloglevel=2)
  tokenizer = TextTokenizer(model.getvalue())
  if path is not None:
    tokenizer.save(path)
    tokenizer.source = path
  return tokenizer
