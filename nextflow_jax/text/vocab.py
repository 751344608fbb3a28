# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The vocabulary layout: where text ids, special tokens and visual codes live.

One id space is shared by the text tokenizer and the visual codebook:

  [0, 4)                           <pad>, <unk>, <bos>, <eos>
  [4, 4 + len(SPECIAL_TOKENS))     SPECIAL_TOKENS, in order (never split)
  [.., text_vocab_size)            sentencepiece pieces
  [text_vocab_size, + codebook)    visual codes 0..K-1 (shared dual-codebook
                                   index), id = text_vocab_size + code

The paper appends its visual codes after Qwen2.5's text vocabulary the same
way (nextflow-method.md section 4.1). With a single shared output head the
model predicts over `total_size` ids; with dual heads the text head covers
[0, text_vocab_size) and the visual head [0, codebook_size).
"""

from __future__ import annotations

import dataclasses

import numpy as np

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"

# Image boundaries, then chat roles, then task markers. Appending keeps ids.
SPECIAL_TOKENS = (
    "<boi>",  # begin of image: predicts the first (1x1) scale
    "<eoi>",  # end of image
    "<system>",
    "<user>",
    "<assistant>",
    "<think>",  # chain-of-thought text before an image
    "<frame>",  # separates video frames
)
SPECIAL_IDS = {tok: 4 + i for i, tok in enumerate(SPECIAL_TOKENS)}
BOI_ID = SPECIAL_IDS["<boi>"]
EOI_ID = SPECIAL_IDS["<eoi>"]


@dataclasses.dataclass(frozen=True)
class VocabLayout:
  """Sizes of the text and visual parts of the shared id space."""
  text_vocab_size: int
  codebook_size: int

  def __post_init__(self):
    if self.text_vocab_size <= 4 + len(SPECIAL_TOKENS):
      raise ValueError(f"text_vocab_size={self.text_vocab_size} leaves no room "
                       "for text pieces after the special tokens.")
    if self.codebook_size < 1:
      raise ValueError(f"codebook_size={self.codebook_size} must be >= 1.")

  @property
  def visual_offset(self) -> int:
    return self.text_vocab_size

  @property
  def total_size(self) -> int:
    return self.text_vocab_size + self.codebook_size

  def code_to_id(self, codes: np.ndarray) -> np.ndarray:
    """Visual codes (0..K-1) -> ids in the shared space."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
      raise ValueError(f"visual codes must be in [0, {self.codebook_size}); "
                       f"got [{codes.min()}, {codes.max()}].")
    return codes + self.visual_offset

  def id_to_code(self, ids: np.ndarray) -> np.ndarray:
    """Ids in the shared space -> visual codes; raises on non-visual ids."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < self.visual_offset or
                     ids.max() >= self.total_size):
      raise ValueError(f"ids must be visual, in [{self.visual_offset}, "
                       f"{self.total_size}); got [{ids.min()}, {ids.max()}].")
    return ids - self.visual_offset

  def is_visual(self, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    return (ids >= self.visual_offset) & (ids < self.total_size)
