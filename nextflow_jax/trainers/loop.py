# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The training loop the trainers share.

  while step < num_steps:
    state = train_step(state, next batch)            (the trainer's)
    every log_every_steps:  finite-loss check, scalars + progress (ETA)
    every ckpt_every_steps: finite-parameter check, asynchronous save
    every eval_every_steps: evaluate(state, step)     (the trainer's)
    stop (after a save) when train.max_minutes has passed

The last step always logs, saves and evaluates. Checkpoints never hold
non-finite parameters: before every save the parameters are checked on
device (one reduction), and a run that diverged stops with a message naming
the newest checkpoint, which is therefore always a finite one; keep-N
rotation can only drop older finite checkpoints. Pending asynchronous saves
finish even when training stops with an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import dataclasses
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nextflow_jax import checkpoint
from nextflow_jax import metrics


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """How long to train and how often to log, save and evaluate."""
  num_steps: int
  log_every_steps: int
  ckpt_every_steps: int
  eval_every_steps: int
  max_minutes: float = 0.0  # 0 = no time budget
  evaluate: bool = True

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "LoopSettings":
    """From `config.train` (and `config.eval.num_batches`: 0 = no eval)."""
    train = config.train
    return cls(num_steps=train.num_steps,
               log_every_steps=train.log_every_steps,
               ckpt_every_steps=train.ckpt_every_steps,
               eval_every_steps=train.eval_every_steps,
               max_minutes=train.get("max_minutes", 0.0) or 0.0,
               evaluate=bool(config.get("eval", {}).get("num_batches", 1)))


@jax.jit
def all_finite(tree: Any) -> jax.Array:
  """Whether every floating-point leaf of `tree` is finite (on device)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def diverged_message(what: str, step: int,
                     ckpt: checkpoint.Checkpointer) -> str:
  """Why a run stopped, and what is on disk to resume from."""
  latest = ckpt.latest_step()
  kept = ("no checkpoint was saved yet" if latest is None else
          f"the newest checkpoint, step {latest}, holds finite parameters "
          "and a rerun resumes from it")
  return (f"{what} at step {step}; {kept}. Lower optim.lr (or raise "
          "optim.warmup_steps) or check the data.")


def run(state: Any, *, start_step: int, settings: LoopSettings,
        train_iter: Iterator[Any],
        train_step: Callable[[Any, Any, int], tuple[Any, Any]],
        ckpt: checkpoint.Checkpointer, writer: metrics.Writer,
        config: ml_collections.ConfigDict, loss_key: str,
        params_of: Callable[[Any], Any] = lambda s: s.params,
        to_scalars: Callable[[int, dict], dict] | None = None,
        evaluate: Callable[[Any, int], None] | None = None
        ) -> tuple[Any, int, float]:
  """Trains from `start_step` to `settings.num_steps` or the time budget.

  Args:
    state: the train state (on device).
    start_step: the step `state` is at (0, or the resumed step).
    settings: lengths and intervals.
    train_iter: yields host batches; its position is checkpointed.
    train_step: `(state, host_batch, step) -> (state, device metrics)`;
      `step` counts the steps done before this one.
    ckpt: where checkpoints go (closed when the loop ends).
    writer: scalars sink.
    config: saved with every checkpoint.
    loss_key: the metric whose finiteness is checked when logging.
    params_of: the part of the state checked before saving.
    to_scalars: `(step, host metrics) -> scalars to write` at logging
      steps (default: the metrics as they are).
    evaluate: `(state, step)` at evaluation steps.

  Returns:
    (state, the step reached, minutes spent).

  Raises:
    FloatingPointError: the loss or the parameters became non-finite.
  """
  step = start_step
  progress = metrics.Progress(settings.num_steps, start_step,
                              time_budget_sec=60 * settings.max_minutes)
  t_start = time.perf_counter()
  try:
    while step < settings.num_steps:
      state, step_metrics = train_step(state, next(train_iter), step)
      step += 1
      out_of_time = settings.max_minutes > 0 and (
          time.perf_counter() - t_start > 60 * settings.max_minutes)
      last = step == settings.num_steps or out_of_time
      if step % settings.log_every_steps == 0 or last:
        values = jax.device_get(step_metrics)
        loss = float(values[loss_key])
        if not np.isfinite(loss):
          raise FloatingPointError(diverged_message(
              f"{loss_key} is {loss}", step, ckpt))
        scalars = to_scalars(step, values) if to_scalars else values
        writer.write_scalars(step, {**scalars, **progress.update(step)})
      if step % settings.ckpt_every_steps == 0 or last:
        if not bool(all_finite(params_of(state))):
          raise FloatingPointError(diverged_message(
              "the parameters are not finite", step, ckpt))
        ckpt.save(step, state, data_iterator=train_iter, config=config)
      if evaluate is not None and settings.evaluate and (
          step % settings.eval_every_steps == 0 or last):
        evaluate(state, step)
      if out_of_time:
        logging.info("stopping at step %d: train.max_minutes=%s reached",
                     step, settings.max_minutes)
        break
  finally:
    ckpt.close()
  return state, step, (time.perf_counter() - t_start) / 60
