# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Pretraining's train step: state, optimizer, initialisation (pure).

`trainers/pretrain.py` builds these from the config and runs the loop;
tests, benchmarks and the sharding goldens call them directly.

Optimizer: AdamW with warmup + cosine, clipping and gradient accumulation
(`optimizers.py`). Weight decay applies to the projection matrices and the
output heads (`DECAY_NAMES`) only: never to norms, biases, the text-token
and code embeddings or the scale embeddings.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nextflow_jax import optimizers
from nextflow_jax.model import losses
from nextflow_jax.model import nextflow


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


# Output heads decay like the projection matrices (`optimizers.decay_mask`).
DECAY_NAMES = ("head", "text_head", "visual_head")


def make_optimizer(optim: ml_collections.ConfigDict,
                   num_steps: int) -> optax.GradientTransformation:
  """`config.optim` -> AdamW (see `optimizers.adamw`)."""
  return optimizers.adamw(
      optim.lr, warmup_steps=optim.warmup_steps, num_steps=num_steps,
      end_lr_ratio=optim.end_lr_ratio, b1=optim.b1, b2=optim.b2,
      weight_decay=optim.weight_decay, grad_clip=optim.grad_clip,
      accum_steps=optim.grad_accum_steps, decay_names=DECAY_NAMES)


def make_init_state(model: nextflow.NextFlow, tx: optax.GradientTransformation,
                    example: dict[str, jax.Array], code_vectors: np.ndarray):
  """`rng -> TrainState` (boxed, for `common.init_sharded`).

  The code embedding table starts from the tokenizer's code vectors and
  keeps its logical axis names, so it and its optimizer moments are
  sharded like the rest.
  """
  def init_state(rng):
    params = dict(model.init(rng, example)["params"])
    params["code_embed"] = params["code_embed"].replace_boxed(
        jnp.asarray(code_vectors, model.param_dtype))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params))
  return init_state


def make_train_step(model: nextflow.NextFlow, tx, loss_cfg: dict):
  """Pure `(state, batch) -> (state, metrics)`."""

  def step(state: TrainState, batch):
    (total, m), grads = jax.value_and_grad(
        lambda p: losses.sequence_loss(model, p, batch, **loss_cfg),
        has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    m = dict(m, total_loss=total, grad_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state), m

  return step
