# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Scale schedules for next-scale prediction: the paper's table and helpers.

A schedule is a tuple of (h, w) token grids from coarse to fine, e.g.
((1, 1), (2, 2), (3, 3), (4, 4)). An image of a schedule costs
`token_count(schedule)` = sum(h * w) tokens, and its pixel size is
`downsample * schedule[-1]`.

`PAPER_SCHEDULES` holds NextFlow's 18-step schedules for the 41 aspect ratios
of its Table 14 (nextflow-method.md section 3.4); 256-, 512- and 1024-level
images use the first 12, 16 and 18 steps (64 and 128 use 4 and 8, from the
VAR-RL appendix). Tuples are read as (h, w) with ratio = h / w; the paper does
not say, and the choice only needs to be consistent. The nominal resolutions
of some rows are not exactly 16x the final grid, so images are resized to
`downsample * final grid` (see `pixel_size`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Schedule = tuple[tuple[int, int], ...]

# Aspect-ratio name (h:w as printed in the paper) -> 18-step schedule.
_PAPER_TABLE = {
    "1:4": "1x1 1x4 2x6 2x8 2x10 3x12 4x14 4x16 5x20 6x24 7x28 8x32 10x40 12x48 14x56 16x64 24x96 32x128",
    "13:50": "1x1 1x4 2x6 2x8 2x10 3x12 4x14 4x16 5x19 6x23 7x27 8x31 10x39 12x46 14x54 16x62 24x93 32x124",
    "4:15": "1x1 1x4 2x6 2x8 2x9 3x11 4x13 4x15 5x19 6x22 7x26 8x30 10x38 12x45 14x52 16x60 24x90 32x120",
    "10:36": "1x1 1x4 2x5 2x7 2x9 3x11 4x13 4x14 5x18 6x22 7x25 8x29 10x36 12x44 14x51 16x58 24x87 32x116",
    "11:37": "1x1 1x4 2x5 2x7 3x9 3x10 4x12 4x14 6x18 7x21 8x24 9x28 11x35 14x42 16x49 18x56 27x84 36x112",
    "9:29": "1x1 1x3 2x5 2x6 3x8 3x10 4x11 4x13 6x16 7x20 8x23 9x26 11x32 14x39 16x46 18x52 27x78 36x104",
    "1:3": "1x1 1x3 2x5 2x7 3x8 3x10 4x12 4x14 6x17 7x20 8x24 9x27 11x34 14x40 16x47 18x54 27x81 36x108",
    "10:29": "1x1 1x3 2x5 2x6 3x8 4x9 4x11 5x12 6x16 8x19 9x22 10x25 12x31 15x38 18x44 20x50 30x75 40x100",
    "5:12": "1x1 1x3 2x4 2x6 3x8 4x9 4x10 5x12 6x15 8x18 9x21 10x24 12x30 15x36 18x42 20x48 30x72 40x96",
    "11:23": "1x1 1x3 2x4 3x6 3x7 4x9 5x10 6x12 7x14 8x17 10x20 11x23 14x29 16x34 19x40 22x46 33x69 44x92",
    "1:2": "1x1 1x3 2x4 3x6 3x7 4x8 5x10 6x11 7x14 8x16 10x19 11x22 14x28 16x33 19x38 22x44 33x66 44x88",
    "11:21": "1x1 1x3 2x4 3x5 3x7 4x8 5x9 6x10 7x13 8x16 10x18 11x21 14x26 16x32 19x37 22x42 33x63 44x84",
    "4:7": "1x1 2x3 2x4 3x5 4x7 4x8 5x9 6x10 8x13 9x16 10x18 12x21 15x26 18x32 21x37 24x42 36x63 48x84",
    "3:5": "1x1 2x2 2x4 3x5 4x6 4x8 5x9 6x10 8x12 9x15 10x18 12x20 15x25 18x30 21x35 24x40 36x60 48x80",
    "13:19": "1x1 2x2 2x4 3x5 4x6 5x7 6x8 6x10 8x12 10x14 11x17 13x19 16x24 20x28 23x33 26x38 39x57 52x76",
    "13:18": "1x1 2x2 2x3 3x4 4x6 5x7 6x8 6x9 8x11 10x14 11x16 13x18 16x22 20x27 23x32 26x36 39x54 52x72",
    "25:32": "1x1 2x2 3x3 4x4 4x6 5x7 6x8 7x9 9x11 10x14 12x16 14x18 18x22 21x27 24x32 28x36 42x54 56x72",
    "14:17": "1x1 2x2 3x3 4x4 4x5 5x6 6x7 7x8 9x11 10x13 12x15 14x17 18x21 21x26 24x30 28x34 42x51 56x68",
    "15:17": "1x1 2x2 3x3 4x4 5x5 6x6 7x7 8x8 9x11 11x13 13x15 15x17 19x21 22x26 26x30 30x34 45x51 60x68",
    "15:16": "1x1 2x2 3x3 4x4 5x5 6x6 7x7 8x8 9x10 11x12 13x14 15x16 19x20 22x24 26x28 30x32 45x48 60x64",
    "1:1": "1x1 2x2 3x3 4x4 5x5 6x6 7x7 8x8 10x10 12x12 14x14 16x16 20x20 24x24 28x28 32x32 48x48 64x64",
    "16:15": "1x1 2x2 3x3 4x4 5x5 6x6 7x7 8x8 10x9 12x11 14x13 16x15 20x19 24x22 28x26 32x30 48x45 64x60",
    "17:15": "1x1 2x2 3x3 4x4 5x5 6x6 7x7 8x8 11x9 13x11 15x13 17x15 21x19 26x22 30x26 34x30 51x45 68x60",
    "17:14": "1x1 2x2 3x3 4x4 5x4 6x5 7x6 8x7 11x9 13x10 15x12 17x14 21x18 26x21 30x24 34x28 51x42 68x56",
    "9:7": "1x1 2x2 3x3 4x4 6x4 7x5 8x6 9x7 11x9 14x10 16x12 18x14 22x18 27x21 32x24 36x28 54x42 72x56",
    "18:13": "1x1 2x2 3x2 4x3 6x4 7x5 8x6 9x6 11x8 14x10 16x11 18x13 22x16 27x20 32x23 36x26 54x39 72x52",
    "19:13": "1x1 2x2 4x2 5x3 6x4 7x5 8x6 10x6 12x8 14x10 17x11 19x13 24x16 28x20 33x23 38x26 57x39 76x52",
    "5:3": "1x1 2x2 4x2 5x3 6x4 8x4 9x5 10x6 12x8 15x9 18x10 20x12 25x15 30x18 35x21 40x24 60x36 80x48",
    "7:4": "1x1 3x2 4x2 5x3 7x4 8x4 9x5 10x6 13x8 16x9 18x10 21x12 26x15 32x18 37x21 42x24 63x36 84x48",
    "21:11": "1x1 3x1 4x2 5x3 7x3 8x4 9x5 10x6 13x7 16x8 18x10 21x11 26x14 32x16 37x19 42x22 63x33 84x44",
    "2:1": "1x1 3x1 4x2 6x3 7x3 8x4 10x5 11x6 14x7 16x8 19x10 22x11 28x14 33x16 38x19 44x22 66x33 88x44",
    "23:11": "1x1 3x1 4x2 6x3 7x3 9x4 10x5 12x6 14x7 17x8 20x10 23x11 29x14 34x16 40x19 46x22 69x33 92x44",
    "12:5": "1x1 3x1 4x2 6x2 8x3 9x4 10x4 12x5 15x6 18x8 21x9 24x10 30x12 36x15 42x18 48x20 72x30 96x40",
    "5:2": "1x1 3x1 5x2 6x2 8x3 9x4 11x4 12x5 16x6 19x8 22x9 25x10 31x12 38x15 44x18 50x20 75x30 100x40",
    "26:9": "1x1 3x1 5x2 6x2 8x3 10x3 11x4 13x4 16x6 20x7 23x8 26x9 32x11 39x14 46x16 52x18 78x27 104x36",
    "3:1": "1x1 3x1 5x2 7x2 8x3 10x3 12x4 14x4 17x6 20x7 24x8 27x9 34x11 40x14 47x16 54x18 81x27 108x36",
    "28:9": "1x1 4x1 5x2 7x2 9x3 10x3 12x4 14x4 18x6 21x7 24x8 28x9 35x11 42x14 49x16 56x18 84x27 112x36",
    "29:8": "1x1 4x1 5x2 7x2 9x2 11x3 13x4 14x4 18x5 22x6 25x7 29x8 36x10 44x12 51x14 58x16 87x24 116x32",
    "15:4": "1x1 4x1 6x2 8x2 9x2 11x3 13x4 15x4 19x5 22x6 26x7 30x8 38x10 45x12 52x14 60x16 90x24 120x32",
    "31:8": "1x1 4x1 6x2 8x2 10x2 12x3 14x4 16x4 19x5 23x6 27x7 31x8 39x10 46x12 54x14 62x16 93x24 124x32",
    "4:1": "1x1 4x1 6x2 8x2 10x2 12x3 14x4 16x4 20x5 24x6 28x7 32x8 40x10 48x12 56x14 64x16 96x24 128x32",
}

PAPER_SCHEDULES: dict[str, Schedule] = {
    name: tuple(tuple(int(v) for v in step.split("x")) for step in row.split())
    for name, row in _PAPER_TABLE.items()
}

# Nominal resolution level -> number of leading scales used (1:1 side).
NUM_SCALES_FOR_RESOLUTION = {64: 4, 128: 8, 256: 12, 512: 16, 1024: 18}


def paper_schedule(aspect_ratio: str = "1:1", resolution: int = 256) -> Schedule:
  """Returns the paper's schedule prefix for an aspect ratio and resolution.

  Args:
    aspect_ratio: a name from `PAPER_SCHEDULES`, e.g. "1:1", "9:7", "1:4".
    resolution: resolution level, one of `NUM_SCALES_FOR_RESOLUTION`.

  Raises:
    ValueError: unknown aspect ratio or resolution level.
  """
  if aspect_ratio not in PAPER_SCHEDULES:
    raise ValueError(f"aspect_ratio={aspect_ratio!r} is not in the paper's "
                     f"table; choose one of {list(PAPER_SCHEDULES)}.")
  if resolution not in NUM_SCALES_FOR_RESOLUTION:
    raise ValueError(f"resolution={resolution} is not a level of the paper's "
                     f"schedules; choose one of "
                     f"{sorted(NUM_SCALES_FOR_RESOLUTION)}.")
  return PAPER_SCHEDULES[aspect_ratio][:NUM_SCALES_FOR_RESOLUTION[resolution]]


def square_schedule(sides: Sequence[int]) -> Schedule:
  """(1, 2, 4) -> ((1, 1), (2, 2), (4, 4))."""
  return tuple((int(s), int(s)) for s in sides)


def parse_schedule(spec: str | Sequence) -> Schedule:
  """Parses "1,2,3,4" (squares), "1x1,2x3" or a sequence of ints / pairs."""
  if isinstance(spec, str):
    items = [s.strip() for s in spec.split(",") if s.strip()]
    steps = []
    for item in items:
      parts = item.split("x")
      if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise ValueError(f"scale {item!r} in schedule {spec!r} is not 'N' or "
                         "'HxW' with positive integers.")
      steps.append((int(parts[0]), int(parts[-1])))
    return tuple(steps)
  return tuple((int(s), int(s)) if isinstance(s, int) else
               (int(s[0]), int(s[1])) for s in spec)


def token_count(schedule: Schedule) -> int:
  """Number of visual tokens of one image: sum of h * w over scales."""
  return sum(h * w for h, w in schedule)


def pixel_size(schedule: Schedule, downsample: int) -> tuple[int, int]:
  """(height, width) in pixels of an image tokenized with `schedule`."""
  h, w = schedule[-1]
  return h * downsample, w * downsample


def validate_schedule(schedule: Schedule, *, image_size: int | None = None,
                      downsample: int | None = None,
                      name: str = "scales") -> None:
  """Checks a schedule; raises ValueError naming `name` when it is invalid.

  A valid schedule is non-empty, has positive sides, never shrinks in either
  side, grows in area at every step, and (when `image_size` and
  `downsample` are given) ends at image_size / downsample on both sides.
  """
  if not schedule:
    raise ValueError(f"{name} is empty; give at least one scale, e.g. 1,2,4.")
  for k, (h, w) in enumerate(schedule):
    if h < 1 or w < 1:
      raise ValueError(f"{name}[{k}]={h}x{w}: sides must be positive.")
    if k and (h < schedule[k - 1][0] or w < schedule[k - 1][1] or
              h * w <= schedule[k - 1][0] * schedule[k - 1][1]):
      raise ValueError(
          f"{name}={_fmt(schedule)} is not increasing at step {k} "
          f"({_fmt(schedule[k - 1:k])} -> {h}x{w}); every scale must be at "
          "least as large on both sides and larger in area.")
  if image_size is not None and downsample is not None:
    if image_size % downsample:
      raise ValueError(f"image_size={image_size} is not a multiple of the "
                       f"tokenizer's downsampling factor {downsample}.")
    side = image_size // downsample
    if schedule[-1] != (side, side):
      raise ValueError(
          f"{name} ends at {_fmt(schedule[-1:])} but image_size={image_size} "
          f"with downsample={downsample} needs a final grid of {side}x{side}.")


def _fmt(schedule: Schedule) -> str:
  return ",".join(f"{h}x{w}" for h, w in schedule)


def format_schedule(schedule: Schedule) -> str:
  """((1, 1), (2, 3)) -> "1x1,2x3" (what `parse_schedule` reads)."""
  return _fmt(schedule)


def flatten_codes(indices: Sequence[np.ndarray]) -> np.ndarray:
  """Per-scale [(B, h_k, w_k)] -> (B, token_count) in scale, row-major order."""
  return np.concatenate([np.reshape(i, (i.shape[0], -1)) for i in indices], 1)


def split_codes(flat: np.ndarray, schedule: Schedule) -> list[np.ndarray]:
  """Inverse of `flatten_codes`: (..., token_count) -> [(..., h_k, w_k)]."""
  if flat.shape[-1] != token_count(schedule):
    raise ValueError(f"{flat.shape[-1]} codes do not fit schedule "
                     f"{_fmt(schedule)} ({token_count(schedule)} tokens).")
  out, offset = [], 0
  for h, w in schedule:
    out.append(flat[..., offset:offset + h * w].reshape(
        *flat.shape[:-1], h, w))
    offset += h * w
  return out
