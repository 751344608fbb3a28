# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A Hugging Face `tokenizer.json` (Qwen's byte-level BPE) in our id layout.

NextFlow starts from Qwen2.5, whose text ids come from Qwen's BPE
vocabulary, while the rest of the library reads the layout of `vocab.py`
(<pad>, <unk>, <bos>, <eos> at 0-3, then our special tokens). The two
coexist by a fixed shift: our id = Qwen's id + `NUM_RESERVED`, and ids
below `NUM_RESERVED` are ours. So every Qwen token keeps its embedding
row (shifted), our specials get their own rows (`convert/qwen.py` adds
them, mean-initialised), and nothing downstream needs to know which text
tokenizer a model uses. Qwen's own special tokens (`<|im_start|>`,
`<|endoftext|>`, ...) stay Qwen tokens at their shifted ids.

  tok = HFTextTokenizer.load("qwen/tokenizer.json")
  tok.encode("两个红色的圆 🔴", add_bos=True)   # [2, 11 + q0, 11 + q1, ...]
  tok.hf_ids(ids)                              # Qwen's own ids back

Same interface as the sentencepiece `tokenizer.TextTokenizer`: `encode`,
`decode`, `vocab_size`, `id_to_piece`, `save`, `source`, `file_name`.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import re

from nextflow_jax.text import vocab

# Ids of our own tokens: <pad>, <unk>, <bos>, <eos> and SPECIAL_TOKENS.
NUM_RESERVED = 4 + len(vocab.SPECIAL_TOKENS)
_OURS = {vocab.PAD: vocab.PAD_ID, vocab.UNK: vocab.UNK_ID,
         vocab.BOS: vocab.BOS_ID, vocab.EOS: vocab.EOS_ID,
         **vocab.SPECIAL_IDS}
_PIECE = {i: t for t, i in _OURS.items()}
# Special tokens written in the text become their ids (as sentencepiece's
# user-defined symbols do); <pad>/<unk>/<bos>/<eos> stay plain text there.
_SPECIAL_SPLIT = re.compile(
    "(" + "|".join(re.escape(t) for t in vocab.SPECIAL_TOKENS) + ")")


def _tokenizers():
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reading a Hugging Face tokenizer.json needs the "
                      "`tokenizers` package: pip install tokenizers (or "
                      "nextflow_jax[convert]).") from e
  return tokenizers


class HFTextTokenizer:
  """Wraps a `tokenizers.Tokenizer`, shifting its ids by `NUM_RESERVED`."""

  file_name = "text_tokenizer.json"

  def __init__(self, json_text: str, source: str = "<memory>"):
    try:
      self._tok = _tokenizers().Tokenizer.from_str(json_text)
    except Exception as e:  # tokenizers raises its own Exception type.
      raise ValueError(f"{source} is not a Hugging Face tokenizer.json: "
                       f"{e}") from None
    self.json_text = json_text
    self.source = source

  @classmethod
  def load(cls, path: str) -> "HFTextTokenizer":
    if not os.path.exists(path):
      raise FileNotFoundError(f"no tokenizer.json at {path}.")
    with open(path, encoding="utf-8") as f:
      return cls(f.read(), source=path)

  @property
  def hf_vocab_size(self) -> int:
    """Qwen's ids, added (special) tokens included."""
    return self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def vocab_size(self) -> int:
    return NUM_RESERVED + self.hf_vocab_size

  def encode(self, text: str, *, add_bos: bool = False,
             add_eos: bool = False) -> list[int]:
    """Text -> our ids (Qwen's + `NUM_RESERVED`; our specials as theirs)."""
    ids = [vocab.BOS_ID] if add_bos else []
    for part in _SPECIAL_SPLIT.split(text):
      if part in vocab.SPECIAL_IDS:
        ids.append(vocab.SPECIAL_IDS[part])
      elif part:
        ids += [i + NUM_RESERVED for i in
                self._tok.encode(part, add_special_tokens=False).ids]
    return ids + ([vocab.EOS_ID] if add_eos else [])

  def hf_ids(self, ids: Sequence[int]) -> list[int]:
    """Our ids -> Qwen's; raises on our reserved ids (Qwen has no such)."""
    ours = [int(i) for i in ids if int(i) < NUM_RESERVED]
    if ours:
      raise ValueError(f"ids {ours} are nextflow_jax's own tokens, not "
                       "Qwen's.")
    return [int(i) - NUM_RESERVED for i in ids]

  def decode(self, ids: Sequence[int]) -> str:
    """Our ids -> text; pad/bos/eos dropped, our specials kept as text."""
    out, run = [], []
    for i in (int(i) for i in ids):
      if i >= NUM_RESERVED:
        run.append(i - NUM_RESERVED)
        continue
      if run:
        out.append(self._tok.decode(run, skip_special_tokens=False))
        run = []
      if i not in (vocab.PAD_ID, vocab.BOS_ID, vocab.EOS_ID):
        out.append(_PIECE[i])
    if run:
      out.append(self._tok.decode(run, skip_special_tokens=False))
    return "".join(out)

  def id_to_piece(self, token_id: int) -> str:
    token_id = int(token_id)
    if token_id < NUM_RESERVED:
      return _PIECE[token_id]
    piece = self._tok.id_to_token(token_id - NUM_RESERVED)
    if piece is None:
      raise ValueError(f"id {token_id} is beyond the vocabulary "
                       f"({self.vocab_size} ids).")
    return piece

  def save(self, path: str) -> None:
    """Writes the tokenizer.json atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(self.json_text)
    os.replace(tmp, path)
