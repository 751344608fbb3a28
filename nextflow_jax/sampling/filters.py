# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Logit filters, classifier-free guidance and token sampling.

All functions are pure and jittable. Semantics (VAR's `helpers.py`, the
HuggingFace convention for temperature):

  * temperature T: logits / T; T = 0 means greedy (arg-max).
  * top-k (k >= 1): keep the k largest logits (ties at the k-th value are
    decided by `lax.top_k`'s order, i.e. exactly k survive); None: off.
  * top-p (0 < p <= 1): among what top-k kept, keep the smallest set of
    highest-probability tokens whose cumulative probability is >= p (the
    arg-max always survives); p = 1: off.
  * guidance: l = l_cond + w (l_cond - l_uncond), VAR's form, so w = 0 is
    the conditional branch and w = 1 doubles the conditional direction.

`top_k` is static (it sets the shape of `lax.top_k`); temperature, top-p and
guidance are traced arrays, so sweeping them does not recompile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def guide(cond: jax.Array, uncond: jax.Array,
          weight: jax.Array | float) -> jax.Array:
  """Classifier-free guidance: cond + weight * (cond - uncond)."""
  return cond + weight * (cond - uncond)


def top_k_top_p(logits: jax.Array, top_k: int | None,
                top_p: jax.Array | float,
                temperature: jax.Array | float = 1.0
                ) -> tuple[jax.Array, jax.Array]:
  """Filters the last axis of `logits`.

  Args:
    logits: (..., V) float logits.
    top_k: static int >= 1, or None to keep all V candidates.
    top_p: scalar in (0, 1].
    temperature: scalar > 0 (applied before top-p).

  Returns:
    (candidate logits (..., k) with filtered-out entries at -inf, their
    vocabulary ids (..., k) int32), sorted by decreasing logit.

  Raises:
    ValueError: top_k < 1.
  """
  vocab_size = logits.shape[-1]
  if top_k is not None and top_k < 1:
    raise ValueError(f"top_k={top_k} must be >= 1, or None for no top-k.")
  k = vocab_size if top_k is None else min(top_k, vocab_size)
  values, ids = jax.lax.top_k(logits.astype(jnp.float32), k)
  values = values / jnp.maximum(jnp.asarray(temperature, jnp.float32), 1e-6)
  probs = jax.nn.softmax(values, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # mass of better candidates
  top_p = jnp.asarray(top_p, jnp.float32)
  keep = (before < top_p) | (top_p >= 1.0)  # float sums may stop short of 1
  keep = keep.at[..., 0].set(True)
  return jnp.where(keep, values, -jnp.inf), ids.astype(jnp.int32)


def sample(logits: jax.Array, key: jax.Array, *, top_k: int | None,
           top_p: jax.Array | float, temperature: jax.Array | float
           ) -> jax.Array:
  """Draws one id per row of `logits` (..., V) -> (...) int32.

  temperature == 0 returns the arg-max (greedy) whatever top-k/top-p say.
  """
  values, ids = top_k_top_p(logits, top_k, top_p, temperature)
  choice = jax.random.categorical(key, values, axis=-1)
  choice = jnp.where(jnp.asarray(temperature) > 0, choice, 0)
  return jnp.take_along_axis(ids, choice[..., None], axis=-1)[..., 0]


def sample_rows(logits: jax.Array, keys: jax.Array, *, top_k: int | None,
                top_p: jax.Array | float, temperature: jax.Array | float
                ) -> jax.Array:
  """`sample` with one key per batch row: (B, ..., V), (B,) keys -> (B, ...).

  Each row's draw depends only on its own key and logits, so an image
  sampled in a batch of 8 is the one sampled alone with the same row key.
  """
  return jax.vmap(lambda lg, k: sample(lg, k, top_k=top_k, top_p=top_p,
                                       temperature=temperature))(logits, keys)
