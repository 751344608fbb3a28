# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Event files without TensorFlow, log lines, progress, image grids."""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from nextflow_jax import metrics


def test_scalars_round_trip_through_event_files(tmp_path):
  writer = metrics.Writer(str(tmp_path))
  writer.write_scalars(1, {"loss": 2.5, "lr": 1e-4})
  writer.write_scalars(2, {"loss": jnp.float32(2.0)})
  writer.write_images(2, {"grid": np.zeros((8, 8, 3), np.float32)})
  writer.write_texts(2, {"note": "hello"})
  writer.close()
  scalars = metrics.read_scalars(str(tmp_path))
  assert scalars["loss"] == [(1, 2.5), (2, 2.0)]
  np.testing.assert_allclose(scalars["lr"][0][1], 1e-4, rtol=1e-6)
  assert "tensorflow" not in sys.modules


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metrics.Writer(str(tmp_path / "x"), enabled=False)
  writer.write_scalars(1, {"loss": 1.0})
  writer.close()
  assert not (tmp_path / "x").exists()


def test_format_line_and_seconds():
  line = metrics.format_line(10, {"loss": 2.31, "lr": 3e-5, "eta_sec": 3725})
  assert line == "step 10 | loss 2.31 | lr 3.000e-05 | eta 1:02:05"


def test_progress_reports_rate_and_eta():
  progress = metrics.Progress(total_steps=100, start_step=0)
  out = progress.update(10)
  assert out["steps_per_sec"] > 0
  np.testing.assert_allclose(out["eta_sec"], 90 / out["steps_per_sec"])


def test_image_grid_layout_and_range():
  images = np.stack([np.full((4, 4, 3), v, np.float32) for v in (-1, 0, 1)])
  grid = metrics.image_grid(images, num_cols=2, pad=1)
  assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 3) and grid.dtype == np.uint8
  assert grid[1, 1, 0] == 0 and grid[1, 6, 0] == 128 and grid[6, 1, 0] == 255


def test_average_metrics_merge_under_jit():
  cls = metrics.average_metrics("loss", "acc")
  m = jax.jit(lambda x: cls.single_from_model_output(loss=x, acc=2 * x))(
      jnp.float32(1.0))
  m = m.merge(cls.single_from_model_output(loss=jnp.float32(3.0),
                                           acc=jnp.float32(0.0)))
  out = m.compute()
  assert float(out["loss"]) == 2.0 and float(out["acc"]) == 1.0
