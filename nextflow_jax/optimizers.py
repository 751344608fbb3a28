# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The trainers' optimizer: AdamW, warmup + cosine, clipping, decay mask,
gradient accumulation.

Step counts (`warmup_steps`, `num_steps`) are micro-steps: batches, the
trainers' step counter. With accumulation over k micro-batches
(`optax.MultiSteps`), the inner optimizer updates once every k micro-steps
and its schedule counts *updates*, so the schedule is laid out in updates:
ceil(warmup_steps / k) warmup updates, then cosine decay until update
num_steps // k. Update u (0-based) therefore applies the learning rate the
unaccumulated schedule gives micro-step u * k, and warmup and decay end on
the same batch with and without accumulation.

Weight decay applies only where `decay_mask` says: to projection matrices
(parameters named `kernel` or `*_kernel`, plus any names the caller adds,
e.g. the NextFlow output heads). Norm scales, biases, embedding tables
(text tokens, the code table initialised from the tokenizer's codebook, the
scale embeddings), codebooks and positional tables never decay.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import jax
import optax


def learning_rate_schedule(lr: float, *, warmup_steps: int, num_steps: int,
                           end_lr_ratio: float,
                           accum_steps: int = 1) -> optax.Schedule:
  """The learning rate of each optimizer update (see the module docstring).

  Args:
    lr: peak learning rate.
    warmup_steps: linear warmup from 0, in micro-steps.
    num_steps: the run's length in micro-steps; the cosine ends there at
      `lr * end_lr_ratio`.
    end_lr_ratio: final learning rate as a fraction of `lr`.
    accum_steps: micro-batches per update.
  """
  if accum_steps < 1:
    raise ValueError(f"accum_steps={accum_steps} must be >= 1.")
  warmup = math.ceil(warmup_steps / accum_steps)
  total = max(num_steps // accum_steps, warmup + 1)
  return optax.warmup_cosine_decay_schedule(
      0.0, lr, warmup, total, end_value=lr * end_lr_ratio)


def _leaf_name(path: Sequence[Any]) -> str:
  """The parameter's own name: the last dict key of its path (boxed
  parameters add a `.value` attribute after it)."""
  for key in reversed(path):
    if isinstance(key, jax.tree_util.DictKey):
      return str(key.key)
  return ""


def decay_mask(params: Any, decay_names: Sequence[str] = ()) -> Any:
  """True for parameters that weight decay applies to.

  Args:
    params: a parameter tree (boxed or not).
    decay_names: extra parameter names that decay besides `kernel` and
      `*_kernel` (e.g. ("head", "text_head", "visual_head")).
  """
  def decays(path, _):
    name = _leaf_name(path)
    return name == "kernel" or name.endswith("_kernel") or (
        name in decay_names)
  return jax.tree_util.tree_map_with_path(decays, params)


def adamw(lr: float, *, warmup_steps: int, num_steps: int,
          end_lr_ratio: float = 0.1, b1: float = 0.9, b2: float = 0.95,
          weight_decay: float = 0.0, grad_clip: float = 1.0,
          accum_steps: int = 1,
          decay_names: Sequence[str] = ()) -> optax.GradientTransformation:
  """Clip by global norm -> AdamW with the masked decay, accumulated.

  Args:
    lr, warmup_steps, num_steps, end_lr_ratio, accum_steps: the schedule
      (`learning_rate_schedule`).
    b1, b2: Adam moments.
    weight_decay: decoupled decay (AdamW), applied where `decay_mask`.
    grad_clip: global-norm clipping of each update's gradient (of the
      accumulated mean with accumulation).
    decay_names: see `decay_mask`.
  """
  schedule = learning_rate_schedule(
      lr, warmup_steps=warmup_steps, num_steps=num_steps,
      end_lr_ratio=end_lr_ratio, accum_steps=accum_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(grad_clip),
      optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay,
                  mask=lambda p: decay_mask(p, decay_names)))
  if accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accum_steps)
  return tx
