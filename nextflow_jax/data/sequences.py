# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Documents of text and images -> model inputs (one layout for everything).

Training, sampling and evaluation all build sequences here, so train-time
and sample-time layouts cannot drift apart.

Layout of an image with schedule ((h_1, w_1), ..., (h_K, w_K))
(nextflow-method.md section 4.2):

  ... text | <boi> | B_2 | B_3 | ... | B_K | <eoi> | text ...

  * <boi> is a text token; its output predicts the scale-1 code (1x1).
  * Block B_k (k = 2..K) has h_k * w_k positions. The input at cell (i, j)
    is Up_{h_k x w_k}(E[inputs_{k-1}])[i, j]: the previous scale's residual
    code embeddings (the self-corrected `inputs` stream), upsampled with the
    tokenizer's interpolation. Because upsampling is linear, the builder
    stores, per position, up to `MAX_TAPS` (code, weight) pairs and the
    model computes sum_p weight_p * E[code_p] -> connector MLP. The output
    at cell (i, j) predicts `targets_k[i, j]` (top-1 codes).
  * <eoi> is inserted after B_K (never predicted: the schedule says when an
    image ends). Text positions predict the next token.
  * Option `context_final_block`: images that are only context (the source
    of an edit, an image to caption) get one more block with the final
    scale's own codes, so the model sees every scale. The paper does not
    say; default off.

Positions (multi-scale 3-D RoPE, streams (time/scale, row, col)): text at
counter t gets (t, t, t). <boi> at b gets (b, b, b). Block B_k gets
(b + k - 1, C / sqrt(h w) (i + 0.5), C / sqrt(h w) (j + 0.5)), and <eoi>
gets (b + K, b + K, b + K). Text resumes at b + K + 1, so one image costs
K + 1 time steps at any resolution (NextFlow Eq. 1 and its Fig. 5).

Attention uses `block_ids`: every text token has its own block (causal) and
all positions of a scale share one block (full attention inside a scale,
block-causal across scales). Packed documents get distinct `segment_ids`.

Extra per-position inputs: `scale_ids` (k for block B_k, the learnable
scale embedding; 0 for text, <boi> included) and `num_scales` (K for <boi>
and the blocks: the sinusoidal scale-length embedding; 0 for text).

Loss weights: text targets weigh 1 where supervised. Visual targets of
scale s weigh k_s = (h_s w_s)^-alpha, normalised so they sum to the image's
token count (alpha = 0 gives plain cross-entropy; section 5.2).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from nextflow_jax import scales
from nextflow_jax.text import vocab

MAX_TAPS = 16  # bicubic upsampling reads at most 4x4 source cells
FIELDS = ("tokens", "positions", "visual_codes", "visual_weights",
          "is_visual", "block_ids", "scale_ids", "num_scales", "targets",
          "target_is_visual", "target_scales", "loss_weights", "task_ids")
_SPECIAL = re.compile(r"<[a-z_]+>")


@dataclasses.dataclass(frozen=True)
class Text:
  """Text token ids; `loss`: supervise predicting these tokens."""
  ids: Sequence[int]
  loss: bool = True


@dataclasses.dataclass(frozen=True)
class Image:
  """Per-scale codes of one image.

  Attributes:
    inputs: [(h_k, w_k)] codes fed to the next scale (self-corrected).
    targets: [(h_k, w_k)] top-1 codes to predict.
    loss: supervise the codes (a generated image) or not (a context image).
  """
  inputs: Sequence[np.ndarray]
  targets: Sequence[np.ndarray]
  loss: bool = True


@dataclasses.dataclass(frozen=True)
class Layout:
  """Layout knobs (see the module docstring).

  Attributes:
    rope_range: C, the extent [0, C] of every grid's spatial positions.
    upsample_method: interpolation of the code maps between scales; must be
      the tokenizer's (`jax.image.resize` method).
    alpha: scale reweighting exponent (paper: 0.9 from 512 px on).
    context_final_block: give context images a block of final-scale codes.
  """
  rope_range: float = 64.0
  upsample_method: str = "bicubic-pytorch"
  alpha: float = 0.0
  context_final_block: bool = False


@functools.lru_cache(maxsize=None)
def interpolation_matrix(out_size: int, in_size: int,
                         method: str) -> np.ndarray:
  """(out, in) weights R with Up(x) = R @ x along one axis (linear resize)."""
  eye = np.eye(in_size, dtype=np.float32)
  with jax.ensure_compile_time_eval():  # also when called under jit
    r = jax.image.resize(eye, (out_size, in_size), method=method)
  return np.asarray(r, np.float32)


@functools.lru_cache(maxsize=None)
def interpolation_taps(src: tuple[int, int], dst: tuple[int, int],
                       method: str) -> tuple[np.ndarray, np.ndarray]:
  """Sparse 2-D upsampling from grid `src` to grid `dst`.

  Returns:
    (index (h*w, MAX_TAPS) into the flattened source grid, weight
    (h*w, MAX_TAPS)); unused taps have weight 0.
  """
  rh = interpolation_matrix(dst[0], src[0], method)
  rw = interpolation_matrix(dst[1], src[1], method)
  full = np.einsum("ia,jb->ijab", rh, rw).reshape(dst[0] * dst[1], -1)
  order = np.argsort(-np.abs(full), axis=-1, kind="stable")[:, :MAX_TAPS]
  weights = np.take_along_axis(full, order, -1)
  dropped = np.abs(full).sum(-1) - np.abs(weights).sum(-1)
  if dropped.max() > 1e-6:
    raise ValueError(f"upsampling {src} -> {dst} with {method!r} reads more "
                     f"than {MAX_TAPS} source cells per target cell.")
  if order.shape[1] < MAX_TAPS:  # tiny source grids
    pad = MAX_TAPS - order.shape[1]
    order = np.pad(order, ((0, 0), (0, pad)))
    weights = np.pad(weights, ((0, 0), (0, pad)))
  return order.astype(np.int32), weights.astype(np.float32)


def scale_weights(schedule: scales.Schedule, alpha: float) -> np.ndarray:
  """Per-scale token weight k~_s; sum over the image's tokens = token count."""
  n = np.array([h * w for h, w in schedule], np.float64)
  k = n ** -alpha
  return (k * n.sum() / (n * k).sum()).astype(np.float32)


def image_positions(schedule: scales.Schedule, k: int,
                    rope_range: float) -> np.ndarray:
  """(h_k * w_k, 2) row/col RoPE coordinates of scale k (0-based)."""
  h, w = schedule[k]
  step = rope_range / np.sqrt(h * w)
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return np.stack([step * (rows.ravel() + 0.5), step * (cols.ravel() + 0.5)],
                  -1).astype(np.float32)


def build(parts: Sequence[Text | Image], layout: Layout, *,
          codebook_size: int, task_id: int = 0) -> dict[str, np.ndarray]:
  """Lays out one document.

  Args:
    parts: text and images in order.
    layout: layout knobs.
    codebook_size: K, to check codes.
    task_id: stored per position (per-task loss reporting).

  Returns:
    dict of FIELDS, each with leading length n (positions (n, 3),
    visual_codes / visual_weights (n, MAX_TAPS)).
  """
  cols: dict[str, list] = {f: [] for f in FIELDS}
  own_loss: list[bool] = []  # supervise predicting this position's token
  t = 0
  block = 0

  def add(token, pos, codes, weights, is_visual, scale_id, num_scales,
          target=0, target_is_visual=False, target_scale=0, weight=0.0,
          supervised=False, new_block=True):
    nonlocal block
    if new_block:
      block += 1
    cols["tokens"].append(token)
    cols["positions"].append(pos)
    cols["visual_codes"].append(codes)
    cols["visual_weights"].append(weights)
    cols["is_visual"].append(is_visual)
    cols["block_ids"].append(block)
    cols["scale_ids"].append(scale_id)
    cols["num_scales"].append(num_scales)
    cols["targets"].append(target)
    cols["target_is_visual"].append(target_is_visual)
    cols["target_scales"].append(target_scale)
    cols["loss_weights"].append(weight)
    cols["task_ids"].append(task_id)
    own_loss.append(supervised)

  no_codes = np.zeros(MAX_TAPS, np.int32)
  no_weights = np.zeros(MAX_TAPS, np.float32)
  for part in parts:
    if isinstance(part, Text):
      for token in part.ids:
        add(int(token), (t, t, t), no_codes, no_weights, False, 0, 0,
            supervised=part.loss)
        t += 1
      continue
    schedule = _check_image(part, codebook_size)
    num = len(schedule)
    kw = scale_weights(schedule, layout.alpha)
    b = t
    # <boi> predicts scale 1.
    add(vocab.BOI_ID, (b, b, b), no_codes, no_weights, False, 0, num,
        target=int(part.targets[0].ravel()[0]), target_is_visual=True,
        target_scale=1, weight=float(kw[0]) * part.loss, supervised=part.loss)
    blocks = list(range(1, num))
    if layout.context_final_block and not part.loss:
      blocks.append(num)
    for k in blocks:  # Block for scale k+1 (0-based k), inputs of scale k.
      src = schedule[k - 1]
      dst = schedule[k] if k < num else schedule[-1]
      index, weight = interpolation_taps(tuple(src), tuple(dst),
                                         layout.upsample_method)
      codes = np.asarray(part.inputs[k - 1]).ravel()[index]
      rowcol = image_positions(schedule, min(k, num - 1), layout.rope_range)
      targets = (np.asarray(part.targets[k]).ravel() if k < num else
                 np.zeros(len(index), np.int64))
      block += 1
      for cell in range(len(index)):
        add(0, (b + k, *rowcol[cell]), codes[cell], weight[cell], True,
            k + 1, num, target=int(targets[cell]),
            target_is_visual=k < num, target_scale=k + 1 if k < num else 0,
            weight=float(kw[k]) * part.loss if k < num else 0.0,
            new_block=False)
    t = b + len(blocks) + 1
    add(vocab.EOI_ID, (t, t, t), no_codes, no_weights, False, 0, 0)
    t += 1
  out = {f: np.asarray(v) for f, v in cols.items()}
  # Text-like positions predict the next token when it is a text token.
  n = len(own_loss)
  is_text_input = ~out["is_visual"]
  next_is_text = np.zeros(n, bool)
  next_is_text[:-1] = is_text_input[1:]
  predicts_text = is_text_input & ~out["target_is_visual"] & next_is_text
  idx = np.nonzero(predicts_text)[0]
  out["targets"][idx] = out["tokens"][idx + 1]
  out["loss_weights"][idx] = np.asarray(own_loss, np.float32)[idx + 1]
  return _cast(out)


def _check_image(part: Image, codebook_size: int) -> scales.Schedule:
  if len(part.inputs) != len(part.targets) or not part.targets:
    raise ValueError(f"an image needs inputs and targets for every scale; got "
                     f"{len(part.inputs)} and {len(part.targets)}.")
  schedule = tuple(tuple(np.shape(t)) for t in part.targets)
  for k, (inp, tgt) in enumerate(zip(part.inputs, part.targets)):
    if np.shape(inp) != np.shape(tgt) or np.ndim(tgt) != 2:
      raise ValueError(f"scale {k}: inputs {np.shape(inp)} and targets "
                       f"{np.shape(tgt)} must be equal 2-D grids.")
    for name, a in (("inputs", inp), ("targets", tgt)):
      a = np.asarray(a)
      if a.size and (a.min() < 0 or a.max() >= codebook_size):
        raise ValueError(f"scale {k} {name} hold codes in [{a.min()}, "
                         f"{a.max()}], outside the codebook [0, "
                         f"{codebook_size}).")
  scales.validate_schedule(schedule, name="image schedule")
  return schedule


def _cast(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  dtypes = {"positions": np.float32, "visual_weights": np.float32,
            "loss_weights": np.float32, "is_visual": bool,
            "target_is_visual": bool}
  return {k: v.astype(dtypes.get(k, np.int32)) for k, v in out.items()}


def image_from_record(record: dict[str, Any], field: str,
                      frame: int | None = None) -> Image:
  """An `Image` (loss on) from an extracted-codes record (`extract.py`)."""
  schedule = scales.parse_schedule(record["schedule"])
  inputs, targets = record[f"{field}.inputs"], record[f"{field}.targets"]
  if frame is not None:
    inputs, targets = inputs[frame], targets[frame]
  return Image(scales.split_codes(np.asarray(inputs), schedule),
               scales.split_codes(np.asarray(targets), schedule))


def check_text(text: str, rid: str) -> str:
  """Rejects text with special tokens that are not in the vocabulary."""
  for token in _SPECIAL.findall(text):
    if token not in vocab.SPECIAL_IDS and token not in (vocab.BOS, vocab.EOS,
                                                        vocab.PAD, vocab.UNK):
      raise ValueError(f"record {rid}: text contains {token!r}, which is not "
                       f"a special token of the vocabulary "
                       f"{list(vocab.SPECIAL_IDS)}.")
  return text


def pad(example: dict[str, np.ndarray], length: int,
        rid: str = "") -> dict[str, np.ndarray]:
  """Pads one document to `length` with `segment_ids` 1 (0 = padding)."""
  n = len(example["tokens"])
  if n > length:
    raise ValueError(f"record {rid}: the sequence has {n} positions, more than "
                     f"seq_len={length}; raise seq_len or use a smaller "
                     "schedule.")
  out = {k: np.concatenate([v, np.zeros((length - n,) + v.shape[1:], v.dtype)])
         for k, v in example.items()}
  out["segment_ids"] = (np.arange(length) < n).astype(np.int32)
  return out
