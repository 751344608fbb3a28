# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Documents of text and images -> model inputs (one layout for everything).

Training, sampling and evaluation all build sequences here, so train-time
and sample-time layouts cannot drift apart.

Layout of an image with schedule ((h_1, w_1), ..., (h_K, w_K)) in the
default next-scale order (`Layout.image_order = "next_scale"`,
nextflow-method.md section 4.2):

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

Raster order (`Layout.image_order = "raster"`, the baseline: the same
backbone writing the final grid one token at a time). An image must then
have a single scale (h, w), n = h * w cells in row-major order; extract
such codes with `extract.schedule` (configs/extract.py). Layout:

  ... text | <boi> | c_0 | c_1 | ... | c_{n-2} | <eoi> | text ...

  * <boi> (num_scales 1) predicts cell 0. Position c_i is fed the code of
    cell i (one tap: `inputs[i]` with weight 1, so the embedding is
    E[code] -> connector MLP as for the scale blocks) and predicts
    `targets[i + 1]`; every position is its own block (causal, like text).
    As in next-scale order the fed codes are the `inputs` stream and the
    predicted ones the `targets`; extract with `extract.rate = 0` for plain
    teacher forcing.
  * RoPE: c_i gets (b + 1 + i, row_i, col_i). The time advances by one per
    token, as for text, so it orders the cells like the 1-D position of a
    raster LLM (a shared time for the whole grid would leave only row/col
    to tell cells apart); row/col are the *fed* cell's grid coordinates,
    C / sqrt(h w) (r + 0.5) as for a scale block. <eoi> is at b + n and
    text resumes at b + n + 1: an image costs n + 1 time steps.
  * Every cell position has scale_ids 1 and num_scales 1; all visual
    targets weigh 1 (one scale: alpha has no effect).
  * Context images (loss off) get all n cells, c_0 .. c_{n-1} (c_{n-1}
    predicts nothing), so the model sees the whole image; <eoi> is then at
    b + n + 1. (This is what `context_final_block` gives next-scale order,
    which is why that option is refused in raster order.)
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
IMAGE_ORDERS = ("next_scale", "raster")
_NO_CODES = np.zeros(MAX_TAPS, np.int32)
_NO_WEIGHTS = np.zeros(MAX_TAPS, np.float32)
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
    image_order: "next_scale" (NextFlow) or "raster" (the baseline: one
      token at a time over a single-scale grid).
  """
  rope_range: float = 64.0
  upsample_method: str = "bicubic-pytorch"
  alpha: float = 0.0
  context_final_block: bool = False
  image_order: str = "next_scale"

  def __post_init__(self):
    if self.image_order not in IMAGE_ORDERS:
      raise ValueError(f"image_order={self.image_order!r} is unknown; choose "
                       f"one of {list(IMAGE_ORDERS)}.")
    if self.image_order == "raster" and self.context_final_block:
      raise ValueError("context_final_block applies to next-scale order "
                       "only (raster context images always get every cell); "
                       "set it to False.")


def check_image_order(image_order: str, schedule: scales.Schedule) -> None:
  """Raises ValueError unless codes of `schedule` fit `image_order`."""
  if image_order == "raster" and len(schedule) != 1:
    raise ValueError(
        f"raster image order needs single-scale codes, but the schedule is "
        f"{scales.format_schedule(schedule)} ({len(schedule)} scales); "
        f"extract codes with a single-scale schedule (configs/extract.py: "
        f"extract.schedule={schedule[-1][0]}x{schedule[-1][1]}).")


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

  Raises:
    ValueError: an image with inconsistent or out-of-range codes, or with
      several scales in raster order.
  """
  doc = _Document(task_id)
  image_layout = (_raster_image if layout.image_order == "raster" else
                  _next_scale_image)
  t = 0
  for part in parts:
    if isinstance(part, Text):
      for token in part.ids:
        doc.add(int(token), (t, t, t), supervised=part.loss)
        t += 1
      continue
    schedule = _check_image(part, codebook_size)
    check_image_order(layout.image_order, schedule)
    t = image_layout(doc, part, schedule, t, layout)
    doc.add(vocab.EOI_ID, (t, t, t))
    t += 1
  return doc.finish()


class _Document:
  """The columns of a document being laid out (see `build`)."""

  def __init__(self, task_id: int):
    self.cols: dict[str, list] = {f: [] for f in FIELDS}
    self.own_loss: list[bool] = []  # supervise predicting this position
    self.block = 0
    self.task_id = task_id

  def add(self, token: int, pos: tuple[float, float, float],
          codes: np.ndarray = _NO_CODES, weights: np.ndarray = _NO_WEIGHTS,
          is_visual: bool = False, scale_id: int = 0, num_scales: int = 0, *,
          target: int = 0, target_is_visual: bool = False,
          target_scale: int = 0, weight: float = 0.0,
          supervised: bool = False, new_block: bool = True) -> None:
    """Appends one position (defaults: a text-like position)."""
    if new_block:
      self.block += 1
    values = {"tokens": token, "positions": pos, "visual_codes": codes,
              "visual_weights": weights, "is_visual": is_visual,
              "block_ids": self.block, "scale_ids": scale_id,
              "num_scales": num_scales, "targets": target,
              "target_is_visual": target_is_visual,
              "target_scales": target_scale, "loss_weights": weight,
              "task_ids": self.task_id}
    for f in FIELDS:
      self.cols[f].append(values[f])
    self.own_loss.append(supervised)

  def finish(self) -> dict[str, np.ndarray]:
    """The FIELDS arrays, text positions predicting the next text token."""
    out = {f: np.asarray(v) for f, v in self.cols.items()}
    n = len(self.own_loss)
    is_text_input = ~out["is_visual"]
    next_is_text = np.zeros(n, bool)
    next_is_text[:-1] = is_text_input[1:]
    predicts_text = is_text_input & ~out["target_is_visual"] & next_is_text
    idx = np.nonzero(predicts_text)[0]
    out["targets"][idx] = out["tokens"][idx + 1]
    out["loss_weights"][idx] = np.asarray(self.own_loss, np.float32)[idx + 1]
    return _cast(out)


def _next_scale_image(doc: _Document, part: Image, schedule: scales.Schedule,
                      b: int, layout: Layout) -> int:
  """<boi> at time b, then blocks B_2..B_K (next-scale order).

  Returns:
    The time of <eoi>.
  """
  num = len(schedule)
  kw = scale_weights(schedule, layout.alpha)
  # <boi> predicts scale 1.
  doc.add(vocab.BOI_ID, (b, b, b), num_scales=num,
          target=int(part.targets[0].ravel()[0]), target_is_visual=True,
          target_scale=1, weight=float(kw[0]) * part.loss,
          supervised=part.loss)
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
    for cell in range(len(index)):
      doc.add(0, (b + k, *rowcol[cell]), codes[cell], weight[cell], True,
              k + 1, num, target=int(targets[cell]),
              target_is_visual=k < num, target_scale=k + 1 if k < num else 0,
              weight=float(kw[k]) * part.loss if k < num else 0.0,
              new_block=cell == 0)
  return b + len(blocks) + 1


def _raster_image(doc: _Document, part: Image, schedule: scales.Schedule,
                  b: int, layout: Layout) -> int:
  """<boi> at time b, then one causal position per fed cell (raster order).

  Returns:
    The time of <eoi>.
  """
  inputs = np.asarray(part.inputs[0]).ravel()
  targets = np.asarray(part.targets[0]).ravel()
  n = len(targets)
  rowcol = image_positions(schedule, 0, layout.rope_range)
  weight = float(part.loss)
  doc.add(vocab.BOI_ID, (b, b, b), num_scales=1, target=int(targets[0]),
          target_is_visual=True, target_scale=1, weight=weight,
          supervised=part.loss)
  one_tap = np.zeros(MAX_TAPS, np.float32)
  one_tap[0] = 1.0
  fed = n - 1 if part.loss else n  # context images: every cell
  for i in range(fed):
    codes = np.zeros(MAX_TAPS, np.int32)
    codes[0] = inputs[i]
    predicts = i + 1 < n
    doc.add(0, (b + 1 + i, *rowcol[i]), codes, one_tap, True, 1, 1,
            target=int(targets[i + 1]) if predicts else 0,
            target_is_visual=predicts, target_scale=int(predicts),
            weight=weight if predicts else 0.0)
  return b + 1 + fed


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


def example_batch(layout: Layout, codebook_size: int,
                  seq_len: int) -> dict[str, np.ndarray]:
  """A (1, seq_len) batch of the layout's fields, to initialise a model."""
  return {k: v[None] for k, v in pad(
      build([Text([1])], layout, codebook_size=codebook_size),
      seq_len).items()}


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
