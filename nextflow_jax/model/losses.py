# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Cross-entropy over text and visual targets, chunked along the sequence.

Logits are computed for `chunk_size` positions at a time inside a
`lax.map`, with the chunk function rematerialised on the backward pass, so
(B, L, vocabulary) logits never exist at once (the role of the paper's
fused linear cross-entropy).

  text loss   = sum(w * CE) / sum(w) over text targets
  visual loss = sum(w * CE) / sum(w) over visual targets, w = the scale
                reweighting of `sequences.py` (alpha = 0: plain mean)
  total       = text_weight * text loss + visual_weight * visual loss

Also returned: unweighted mean CE and accuracy per target scale (1..S) and
per task (`tasks.TASKS` order), and the counts behind them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nextflow_jax.model import nextflow


def _ce(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-position CE and correctness from float32 logits (..., V)."""
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  return lse - picked, jnp.argmax(logits, -1) == targets


def per_position_ce(model: nextflow.NextFlow, params: Any, hidden: jax.Array,
                    batch: dict[str, jax.Array],
                    chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """(B, L) cross-entropy and correctness of each position's target."""
  b, length, d = hidden.shape
  chunk = min(chunk_size, length)
  if length % chunk:
    raise ValueError(f"seq_len={length} is not a multiple of "
                     f"loss chunk_size={chunk}.")
  n = length // chunk

  def split(x):
    return jnp.moveaxis(x.reshape(b, n, chunk, *x.shape[2:]), 1, 0)

  variables = {"params": params}

  @jax.checkpoint
  def chunk_fn(args):
    h, targets, is_visual = args
    if model.shared_head:
      logits = model.apply(variables, h, method=model.shared_logits)
      ids = jnp.where(is_visual, targets + model.text_vocab_size, targets)
      return _ce(logits, ids)
    text_ce, text_ok = _ce(model.apply(variables, h,
                                       method=model.text_logits),
                           jnp.where(is_visual, 0, targets))
    vis_ce, vis_ok = _ce(model.apply(variables, h,
                                     method=model.visual_logits),
                         jnp.where(is_visual, targets, 0))
    return (jnp.where(is_visual, vis_ce, text_ce),
            jnp.where(is_visual, vis_ok, text_ok))

  ce, ok = jax.lax.map(chunk_fn, (split(hidden), split(batch["targets"]),
                                  split(batch["target_is_visual"])))
  merge = lambda x: jnp.moveaxis(x, 0, 1).reshape(b, length)
  return merge(ce), merge(ok)


def sequence_loss(model: nextflow.NextFlow, params: Any,
                  batch: dict[str, jax.Array], *, text_weight: float = 1.0,
                  visual_weight: float = 1.0, chunk_size: int = 512,
                  num_tasks: int = 7) -> tuple[jax.Array, dict[str, Any]]:
  """Total loss and metrics of a batch of laid-out sequences.

  Returns:
    (total, metrics) with scalars `text_loss`, `visual_loss`,
    `text_accuracy`, `visual_accuracy`, `text_tokens`, `visual_tokens`, and
    arrays `scale_ce`, `scale_accuracy`, `scale_count` (max_scales + 1,
    index = target scale) and `task_ce`, `task_count` (num_tasks,).
  """
  hidden = model.apply({"params": params}, batch)
  ce, ok = per_position_ce(model, params, hidden, batch, chunk_size)
  w = batch["loss_weights"].astype(jnp.float32) * (batch["segment_ids"] > 0)
  vis = batch["target_is_visual"]
  w_text, w_vis = jnp.where(vis, 0.0, w), jnp.where(vis, w, 0.0)
  text_den, vis_den = jnp.sum(w_text), jnp.sum(w_vis)
  text_loss = jnp.sum(w_text * ce) / jnp.maximum(text_den, 1e-9)
  visual_loss = jnp.sum(w_vis * ce) / jnp.maximum(vis_den, 1e-9)
  total = text_weight * text_loss + visual_weight * visual_loss
  counted = (w > 0).astype(jnp.float32)
  okf = ok.astype(jnp.float32)
  num_scale_ids = model.max_scales + 1
  scales = jnp.where(vis, batch["target_scales"], 0).ravel()
  vis_counted = (counted * vis).ravel()
  scale_count = jax.ops.segment_sum(vis_counted, scales, num_scale_ids)
  scale_ce = jax.ops.segment_sum(vis_counted * ce.ravel(), scales,
                                 num_scale_ids) / jnp.maximum(scale_count, 1)
  scale_acc = jax.ops.segment_sum(vis_counted * okf.ravel(), scales,
                                  num_scale_ids) / jnp.maximum(scale_count, 1)
  tasks = batch["task_ids"].ravel()
  task_count = jax.ops.segment_sum(counted.ravel(), tasks, num_tasks)
  task_ce = jax.ops.segment_sum(counted.ravel() * ce.ravel(), tasks,
                                num_tasks) / jnp.maximum(task_count, 1)
  text_counted = counted * (1.0 - vis)
  metrics = {
      "text_loss": text_loss, "visual_loss": visual_loss,
      "text_accuracy": jnp.sum(text_counted * okf) / jnp.maximum(
          jnp.sum(text_counted), 1),
      "visual_accuracy": jnp.sum(counted * vis * okf) / jnp.maximum(
          jnp.sum(counted * vis), 1),
      "text_tokens": jnp.sum(text_counted),
      "visual_tokens": jnp.sum(counted * vis),
      "scale_ce": scale_ce, "scale_accuracy": scale_acc,
      "scale_count": scale_count, "task_ce": task_ce,
      "task_count": task_count,
  }
  return total, metrics
