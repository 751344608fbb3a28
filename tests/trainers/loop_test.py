# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The shared training loop: cadence, time budget, no non-finite checkpoint."""

import flax
import grain
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from nextflow_jax import checkpoint
from nextflow_jax import metrics
from nextflow_jax.trainers import loop


@flax.struct.dataclass
class State:
  params: dict


def fake_step(nan_at=None, loss_nan_at=None):
  """w += 1 per step; w becomes NaN after step `nan_at`; the reported loss
  becomes NaN at step `loss_nan_at`."""
  def train_step(state, batch, step):
    del batch
    w = state.params["w"] + 1.0
    if nan_at is not None and step + 1 >= nan_at:
      w = w * jnp.nan
    loss = jnp.nan if loss_nan_at is not None and step + 1 >= loss_nan_at \
        else 1.0
    return State(params={"w": w}), {"loss": jnp.float32(loss)}
  return train_step


def run_loop(workdir, train_step, *, num_steps=10, log_every=10, ckpt_every=2,
             keep=1, max_minutes=0.0, evaluate=None):
  ckpt = checkpoint.Checkpointer(str(workdir / "checkpoints"),
                                 max_to_keep=keep)
  writer = metrics.Writer(str(workdir))
  try:
    return loop.run(
        State(params={"w": jnp.zeros(3)}), start_step=0,
        settings=loop.LoopSettings(num_steps, log_every, ckpt_every, 5,
                                   max_minutes),
        train_iter=iter(grain.MapDataset.range(100).to_iter_dataset()),
        train_step=train_step, ckpt=ckpt, writer=writer,
        config=ml_collections.ConfigDict({"seed": 0}), loss_key="loss",
        evaluate=evaluate)
  finally:
    writer.close()


def test_cadence_of_saves_and_evaluations(tmp_path):
  evaluated = []
  state, step, _ = run_loop(tmp_path, fake_step(), num_steps=7,
                            evaluate=lambda s, k: evaluated.append(k))
  assert step == 7 and float(state.params["w"][0]) == 7.0
  assert evaluated == [5, 7]  # every 5 steps, and the last one
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.all_steps() == [7]  # keep 1: the last save (7) is kept


def test_non_finite_parameters_are_never_saved(tmp_path):
  """Parameters go NaN at step 5, between logging steps: the save at step 6
  is refused, so the newest checkpoint (4) is the last finite state and
  keep-1 rotation did not drop it."""
  with pytest.raises(FloatingPointError, match=r"the parameters are not "
                     r"finite at step 6; the newest checkpoint, step 4, "
                     r"holds finite parameters"):
    run_loop(tmp_path, fake_step(nan_at=5))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.all_steps() == [4]
  np.testing.assert_array_equal(ckpt.restore_raw()["params"]["w"], 4.0)


def test_non_finite_loss_stops_at_the_logging_step(tmp_path):
  with pytest.raises(FloatingPointError, match=r"loss is nan at step 3; no "
                     r"checkpoint was saved yet"):
    run_loop(tmp_path, fake_step(loss_nan_at=3), log_every=1, ckpt_every=5)


def test_time_budget_stops_after_a_save(tmp_path):
  state, step, _ = run_loop(tmp_path, fake_step(), num_steps=1000,
                            max_minutes=1e-9)
  assert step == 1 and float(state.params["w"][0]) == 1.0
  assert checkpoint.Checkpointer(
      str(tmp_path / "checkpoints")).all_steps() == [1]


def test_progress_eta_respects_the_time_budget():
  progress = metrics.Progress(total_steps=10 ** 9, start_step=0,
                              time_budget_sec=60.0)
  eta = progress.update(1)["eta_sec"]
  assert 0.0 < eta <= 60.0
