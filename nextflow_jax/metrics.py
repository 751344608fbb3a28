# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Metrics: TensorBoard event files, a readable log line, progress and ETA.

The only module that writes metrics. Event files are written with
tensorboardX, so TensorFlow is never needed (CLU 0.0.12's writers import it;
see deps-report). Aggregation uses `clu.metrics` (`average_metrics`).

  writer = Writer(workdir)                      # only process 0 writes
  progress = Progress(num_steps, start_step=step)
  writer.write_scalars(step, {"loss": loss, **progress.update(step)})
  writer.write_images(step, {"samples": image_grid(images)})

`read_scalars(logdir)` reads the event files back (no TensorFlow), for
notebooks and tests.
"""

from __future__ import annotations

from collections.abc import Mapping
import glob
import os
import struct
import time
from typing import Any

from absl import logging
from clu import metrics as clu_metrics
import flax
import jax
import numpy as np
from PIL import Image
from PIL import ImageDraw


def average_metrics(*names: str) -> type[clu_metrics.Collection]:
  """A `clu.metrics.Collection` class averaging each named model output.

  Usage: `M = average_metrics("loss", "accuracy")`;
  `m = M.single_from_model_output(loss=l, accuracy=a)`; `m.merge(m2)`;
  `m.compute()` -> {"loss": mean, "accuracy": mean}.
  """
  fields = {n: clu_metrics.Average.from_output(n) for n in names}
  cls = type("AverageMetrics", (clu_metrics.Collection,),
             {"__annotations__": fields})
  return flax.struct.dataclass(cls)


class Writer:
  """Scalars, images and texts to TensorBoard event files and the log.

  Args:
    logdir: where event files go (created if needed).
    enabled: write anything at all; default only on process 0.
  """

  def __init__(self, logdir: str, *, enabled: bool | None = None):
    self.logdir = logdir
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    if self.enabled:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      os.makedirs(logdir, exist_ok=True)
      self._tb = tensorboardX.SummaryWriter(logdir=logdir, flush_secs=10)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes scalars and logs one line `step 10 | loss 2.31 | ...`."""
    if not self.enabled:
      return
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    for key, value in values.items():
      self._tb.add_scalar(key, value, step)
    logging.info("%s", format_line(step, values))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Images as uint8 HWC, or float HWC in [-1, 1]."""
    if not self.enabled:
      return
    for key, image in images.items():
      self._tb.add_image(key, to_uint8(image), step, dataformats="HWC")

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    if not self.enabled:
      return
    for key, text in texts.items():
      self._tb.add_text(key, text, step)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def format_line(step: int, values: Mapping[str, float]) -> str:
  """`step 10 | loss 2.3100 | steps_per_sec 4.12 | eta 0:01:05`."""
  parts = [f"step {step}"]
  for key, value in values.items():
    if key == "eta_sec":
      parts.append(f"eta {format_seconds(value)}")
    elif abs(value) >= 1e4 or (value and abs(value) < 1e-3):
      parts.append(f"{key} {value:.3e}")
    else:
      parts.append(f"{key} {value:.4g}")
  return " | ".join(parts)


def format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
  """Steps per second (since the last update) and ETA.

  The ETA is the time to `total_steps` at the current rate, or the time
  left of `time_budget_sec` (a run's `train.max_minutes`) when that ends
  the run first.
  """

  def __init__(self, total_steps: int, start_step: int = 0,
               time_budget_sec: float = 0.0):
    self.total_steps = total_steps
    self.time_budget_sec = time_budget_sec
    self._start_time = self._last_time = time.perf_counter()
    self._last_step = start_step

  def update(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    steps = step - self._last_step
    rate = steps / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
    if self.time_budget_sec > 0:
      eta = min(eta, max(0.0, self.time_budget_sec - (now - self._start_time)))
    return {"steps_per_sec": rate, "eta_sec": eta}


def to_uint8(image: np.ndarray) -> np.ndarray:
  """uint8 passes through; float images in [-1, 1] map to [0, 255]."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  return np.clip(np.round((image + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, num_cols: int | None = None,
               pad: int = 2) -> np.ndarray:
  """(N, H, W, C) images -> one uint8 (rows*H', cols*W', C) grid."""
  images = to_uint8(images)
  n, h, w, c = images.shape
  num_cols = num_cols or int(np.ceil(np.sqrt(n)))
  num_rows = int(np.ceil(n / num_cols))
  grid = np.full((num_rows * (h + pad) + pad, num_cols * (w + pad) + pad, c),
                 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, num_cols)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y:y + h, x:x + w] = images[i]
  return grid


def labeled_grid(rows: list[list[np.ndarray]], labels: list[str], *,
                 tile: int = 128, band: int = 36) -> np.ndarray:
  """Rows of images, each row captioned: uint8 grid (prompts under images).

  Args:
    rows: per row, images (H, W, 3) (uint8 or [-1, 1] float), upscaled
      (nearest) so that their height is `tile`.
    labels: one text per row, wrapped into a `band`-pixel strip below it.
  """
  strips = []
  width = 0
  for images, label in zip(rows, labels):
    tiles = []
    for image in images:
      image = to_uint8(image)
      scale = max(1, tile // image.shape[0])
      tiles.append(np.repeat(np.repeat(image, scale, 0), scale, 1))
    strip = image_grid(np.stack(tiles), num_cols=len(tiles))
    canvas = Image.new("RGB", (strip.shape[1], strip.shape[0] + band),
                       "white")
    canvas.paste(Image.fromarray(strip), (0, 0))
    chars = max(8, strip.shape[1] // 6)
    lines = [label[i:i + chars] for i in range(0, len(label), chars)][:3]
    ImageDraw.Draw(canvas).multiline_text((4, strip.shape[0] + 1),
                                          "\n".join(lines), fill="black")
    strips.append(np.asarray(canvas))
    width = max(width, canvas.width)
  padded = [np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)),
                   constant_values=255) for s in strips]
  return np.concatenate(padded, 0)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes an image (uint8 or [-1, 1] float, HWC) as PNG, atomically."""
  tmp = path + ".tmp.png"
  Image.fromarray(to_uint8(image)).save(tmp)
  os.replace(tmp, path)


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Reads scalar summaries from the event files in `logdir` (no TF).

  Returns:
    {tag: [(step, value), ...]} in file order.
  """
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    offset = 0
    while offset + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      record = data[offset + 12:offset + 12 + length]
      offset += 12 + length + 4  # length, length crc, data, data crc
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out
