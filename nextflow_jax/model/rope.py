# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Multi-scale 3-D rotary position embedding (NextFlow Eq. 1 on M-RoPE).

Every token carries three real-valued positions, one per stream:

  stream 0: text index t for text, scale index p_s for image tokens;
  stream 1: t for text, row coordinate p_row for image tokens;
  stream 2: t for text, column coordinate p_col for image tokens.

The K/2 frequency pairs inv_freq[i] = theta ** (-2i / K) are divided
among the three streams by `sections` (Qwen: (16, 24, 24) for K = 128);
pair i rotates by the position of the stream it belongs to. Two layouts
(`stream_of_pairs`): Qwen2.5-VL's contiguous one, and an interleaved one
(streams take turns, as in Qwen3-VL's interleaved MRoPE), the default of
our configs. The rotate-half convention of HF Qwen is kept (angles
concatenated twice, the first half of the head dim paired with the second),
so HF checkpoints load without permuting q/k weights. A text token at
(t, t, t) gets exactly 1-D RoPE, which is what preserves Qwen's text
behaviour.

Design choices (and why):
  * Stream assignment: 0 <- scale/time, 1 <- row, 2 <- column, mirroring
    Qwen's (t, h, w). The paper does not say which section carries which
    coordinate; stream 0 has the fewest (and highest) frequencies, which suits
    the few scale indices of an image.
  * Interleaved, not contiguous, frequencies for our models. Contiguously,
    the column stream gets the lowest frequencies: at head_dim 64 and theta
    1e6 its fastest pair turns 0.011 rad across the whole [0, 64] range, so
    the decoder cannot tell the columns of a grid apart. Qwen2.5-VL gets
    away with it because its ViT has already put position into the visual
    tokens; our code embeddings carry none, and every cell of a coarse
    scale has the same input. Measured (experiments/README.md): a model
    trained contiguously gave the cells of one row the same distribution
    (L1 distance 0.0008, against 1.13 between rows; memorize_probe.py) and
    drew horizontal bands. Interleaved, every stream has high and low
    frequencies. Text at (t, t, t) is 1-D RoPE in both layouts, so Qwen
    weights load either way.
  * Image coordinates follow Eq. 1: p_row = C / sqrt(h * w) * (i + 0.5),
    p_col = C / sqrt(h * w) * (j + 0.5). Every grid lies in [0, C] (square
    grids exactly span it), so a 16x16 and a 32x32 grid share one coordinate
    space and higher resolutions need no extrapolation. Non-square grids get
    isotropic spacing. The paper leaves C unspecified; `range_factor` defaults
    to 64 (the side of the paper's largest 1:1 grid, so the finest grid of a
    1024 px square image has unit spacing).
  * p_s = scale_offset + k for the k-th grid: callers pass the running text
    position so that one image consumes one position per scale, as read from
    the paper's Fig. 5 (nextflow-method.md section 4.5).
  * All angle math is float32 (inv_freq is rounded from float64 once);
    outputs are cast back to the input dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp
import numpy as np

from nextflow_jax import scales

QWEN_SECTIONS = (16, 24, 24)  # Qwen2.5-VL's mrope_section for head_dim 128.
DEFAULT_RANGE_FACTOR = 64.0  # The paper's C; not given in the paper.


def default_sections(head_dim: int) -> tuple[int, int, int]:
  """Scales Qwen's (16, 24, 24) to `head_dim / 2` frequency pairs.

  Stream 0 gets round(head_dim / 8) pairs (at least 1); the rest is split
  evenly between streams 1 and 2 (stream 1 takes the odd one). The result
  sums exactly to head_dim / 2, e.g. 128 -> (16, 24, 24), 64 -> (8, 12, 12),
  16 -> (2, 3, 3).

  Raises:
    ValueError: head_dim odd or smaller than 6 (one pair per stream).
  """
  if head_dim % 2 or head_dim < 6:
    raise ValueError(f"head_dim={head_dim} must be even and at least 6 for "
                     "3-D RoPE (one frequency pair per position stream).")
  half, total = head_dim // 2, sum(QWEN_SECTIONS)
  # Round half up of half * 16 / 64.
  first = max(1, (half * QWEN_SECTIONS[0] + total // 2) // total)
  rest = half - first
  return first, rest - rest // 2, rest // 2


def check_sections(sections: Sequence[int],
                   head_dim: int) -> tuple[int, int, int]:
  """Validates M-RoPE sections for `head_dim`; returns them as a tuple.

  Args:
    sections: three non-negative ints, the number of frequency pairs of
      streams 0, 1 and 2.
    head_dim: K, even.

  Raises:
    ValueError: not three non-negative ints, K odd, or a sum != K / 2.
  """
  if head_dim % 2:
    raise ValueError(f"RoPE needs an even head_dim; got {head_dim}.")
  sections = tuple(sections)
  if (len(sections) != 3 or
      not all(isinstance(s, (int, np.integer)) and s >= 0 for s in sections)):
    raise ValueError(f"mrope_sections={sections} must be three non-negative "
                     "ints (frequency pairs of the scale/time, row and "
                     "column streams).")
  if sum(sections) != head_dim // 2:
    raise ValueError(f"mrope_sections={sections} sum to {sum(sections)} but "
                     f"head_dim={head_dim} has {head_dim // 2} frequency "
                     f"pairs; e.g. use {default_sections(head_dim)}.")
  return tuple(int(s) for s in sections)


def resolve_sections(sections: Sequence[int] | None,
                     head_dim: int) -> tuple[int, int, int]:
  """`sections` validated, or `default_sections(head_dim)` when None."""
  if sections is None:
    return default_sections(head_dim)
  return check_sections(sections, head_dim)


def stream_of_pairs(sections: Sequence[int],
                    interleaved: bool = False) -> np.ndarray:
  """(K/2,) int32: the position stream (0, 1, 2) each frequency pair reads.

  Contiguous (Qwen2.5-VL): [0] * s0 + [1] * s1 + [2] * s2, highest
  frequency first, so stream 2 (columns) gets the s2 lowest. Interleaved:
  from the highest frequency down, streams take turns 0, 1, 2, 0, 1, 2, ...,
  and a stream that has its section's count of pairs drops out of the turn;
  e.g. (2, 3, 3) -> 0 1 2 0 1 2 1 2.
  """
  sections = tuple(int(s) for s in sections)
  if not interleaved:
    return np.repeat(np.arange(3), sections).astype(np.int32)
  left, order = list(sections), []
  while any(left):
    for stream in range(3):
      if left[stream]:
        order.append(stream)
        left[stream] -= 1
  return np.asarray(order, np.int32)


def inv_frequencies(head_dim: int, theta: float) -> np.ndarray:
  """(K/2,) float32 theta ** (-2i / K), i < K/2."""
  exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
  return (1.0 / theta ** exponents).astype(np.float32)


def apply_rope(x_BLNK: jax.Array, positions_BL3: jax.Array, theta: float,
               sections: Sequence[int], interleaved: bool = False
               ) -> jax.Array:
  """Rotates queries or keys by their 3-stream positions.

  Args:
    x_BLNK: (B, L, N, K) queries or keys; K even.
    positions_BL3: (B, L, 3) positions (scale/time, row, column); real
      valued, cast to float32.
    theta: RoPE base (Qwen2.5: 1e6).
    sections: three ints summing to K / 2 (see `check_sections`).
    interleaved: the frequency layout (`stream_of_pairs`).

  Returns:
    (B, L, N, K) in the dtype of `x_BLNK`.

  Raises:
    ValueError: bad shapes or sections.
  """
  if x_BLNK.ndim != 4:
    raise ValueError(f"apply_rope expects x of shape (B, L, N, K); got "
                     f"{x_BLNK.shape}.")
  b, length, _, head_dim = x_BLNK.shape
  if positions_BL3.shape != (b, length, 3):
    raise ValueError(f"apply_rope: positions must have shape (B, L, 3) = "
                     f"{(b, length, 3)} to match x {x_BLNK.shape}; got "
                     f"{positions_BL3.shape}.")
  sections = check_sections(sections, head_dim)
  stream_H = stream_of_pairs(sections, interleaved)
  pos_BLH = jnp.take(positions_BL3.astype(jnp.float32), stream_H, axis=-1)
  angles_BLH = pos_BLH * inv_frequencies(head_dim, theta)
  angles_BL1K = jnp.concatenate([angles_BLH, angles_BLH], -1)[:, :, None, :]
  x = x_BLNK.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  out = x * jnp.cos(angles_BL1K) + rotated * jnp.sin(angles_BL1K)
  return out.astype(x_BLNK.dtype)


def text_positions(length: int, offset: int = 0) -> np.ndarray:
  """(length, 3) float32 positions (t, t, t), t = offset ... offset+length-1."""
  if length < 0:
    raise ValueError(f"text_positions: length={length} must be >= 0.")
  t = np.arange(offset, offset + length, dtype=np.float32)
  return np.repeat(t[:, None], 3, axis=1)


def image_positions(schedule: scales.Schedule,
                    range_factor: float = DEFAULT_RANGE_FACTOR,
                    scale_offset: float = 0.0) -> np.ndarray:
  """Per-token (p_s, p_row, p_col) of the grids of `schedule` (Eq. 1).

  Tokens are ordered scale by scale, row-major inside a scale (the order of
  `scales.flatten_codes`). For the k-th grid (h, w), cell (i, j):
  p_s = scale_offset + k, p_row = C / sqrt(h w) * (i + 0.5),
  p_col = C / sqrt(h w) * (j + 0.5), with C = `range_factor`.

  Args:
    schedule: (h, w) grids, coarse to fine (any increasing sub-schedule, e.g.
      the input blocks of an image, or one scale being decoded).
    range_factor: C, the extent of a square grid's coordinates [0, C].
    scale_offset: p_s of the first grid, e.g. the text position after
      the image's opening token.

  Returns:
    (sum h * w, 3) float32.

  Raises:
    ValueError: invalid schedule or non-positive `range_factor`.
  """
  scales.validate_schedule(tuple(schedule), name="image_positions schedule")
  if range_factor <= 0:
    raise ValueError(f"image_positions: range_factor={range_factor} must be "
                     "positive.")
  out = []
  for k, (h, w) in enumerate(schedule):
    step = range_factor / math.sqrt(h * w)
    rows, cols = np.mgrid[:h, :w]
    out.append(np.stack([
        np.full(h * w, scale_offset + k, np.float64),
        step * (rows.reshape(-1) + 0.5),
        step * (cols.reshape(-1) + 0.5),
    ], axis=-1))
  return np.concatenate(out).astype(np.float32)
