# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Logit filters, classifier-free guidance and token sampling.

All functions are pure and jittable. Semantics (VAR's `helpers.py`, the
HuggingFace convention for temperature):

  * temperature T: logits / T; T = 0 means greedy (arg-max).
  * top-k (k >= 1): keep the k largest logits (ties at the k-th value all
    survive); None: off.
  * top-p (0 < p <= 1): among what top-k kept, keep the smallest set of
    highest-probability tokens whose cumulative probability is >= p (ties
    at the boundary all survive; the arg-max always does); p = 1: off.
  * guidance: l = l_cond + w (l_cond - l_uncond), VAR's form, so w = 0 is
    the conditional branch and w = 1 doubles the conditional direction.

Nothing is sorted: each threshold is found by `BISECTION_STEPS` halvings of
an interval, each one compare-and-sum pass over the vocabulary (sorting
the codebook for every cell dominated sampling time, issue 12), and the draw
is Gumbel-max over the surviving logits (`jax.random.categorical`). The
thresholds are exact up to 2^-BISECTION_STEPS of the logit (or
probability) range, far below float32 spacing of distinct values in
practice.

`top_k` is static (off or on changes the program); temperature, top-p and
guidance are traced arrays, so sweeping them does not recompile.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

BISECTION_STEPS = 32


def guide(cond: jax.Array, uncond: jax.Array,
          weight: jax.Array | float) -> jax.Array:
  """Classifier-free guidance: cond + weight * (cond - uncond)."""
  return cond + weight * (cond - uncond)


def _largest(lo: jax.Array, hi: jax.Array,
             holds: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """The largest t in [lo, hi] (per row) where `holds(t)`, for a `holds`
  that is true at `lo` and stays true below any t where it holds."""
  def halve(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    ok = holds(mid)
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)
  return jax.lax.fori_loop(0, BISECTION_STEPS, halve, (lo, hi))[0]


def filter_logits(logits: jax.Array, top_k: int | None,
                  top_p: jax.Array | float,
                  temperature: jax.Array | float = 1.0) -> jax.Array:
  """Applies temperature, top-k and top-p to the last axis of `logits`.

  Args:
    logits: (..., V) float logits; -inf entries are never kept.
    top_k: static int >= 1, or None to keep all V candidates.
    top_p: scalar in (0, 1].
    temperature: scalar > 0 (applied before top-p).

  Returns:
    (..., V) float32 logits / temperature, -inf where filtered out.

  Raises:
    ValueError: top_k < 1.
  """
  vocab_size = logits.shape[-1]
  if top_k is not None and top_k < 1:
    raise ValueError(f"top_k={top_k} must be >= 1, or None for no top-k.")
  x = logits.astype(jnp.float32) / jnp.maximum(
      jnp.asarray(temperature, jnp.float32), 1e-6)
  finite = jnp.isfinite(x)
  if top_k is not None and top_k < vocab_size:
    lo = jnp.min(jnp.where(finite, x, jnp.inf), -1, keepdims=True)
    hi = jnp.max(jnp.where(finite, x, -jnp.inf), -1, keepdims=True)
    kth = _largest(lo, hi, lambda t: jnp.sum(
        x >= t, -1, keepdims=True) >= top_k)
    x = jnp.where(x >= kth, x, -jnp.inf)
  probs = jax.nn.softmax(x, axis=-1)
  top_p = jnp.asarray(top_p, jnp.float32)
  cut = _largest(jnp.zeros_like(probs[..., :1]),
                 jnp.max(probs, -1, keepdims=True),
                 lambda t: jnp.sum(jnp.where(probs >= t, probs, 0.0), -1,
                                   keepdims=True) >= top_p)
  keep = (probs >= cut) | (top_p >= 1.0)  # float sums may stop short of 1
  return jnp.where(keep, x, -jnp.inf)


def sample(logits: jax.Array, key: jax.Array, *, top_k: int | None,
           top_p: jax.Array | float, temperature: jax.Array | float
           ) -> jax.Array:
  """Draws one id per row of `logits` (..., V) -> (...) int32.

  temperature == 0 returns the arg-max (greedy) whatever top-k/top-p say.
  """
  draw = jax.random.categorical(
      key, filter_logits(logits, top_k, top_p, temperature), axis=-1)
  greedy = jnp.argmax(logits, axis=-1)
  return jnp.where(jnp.asarray(temperature) > 0, draw, greedy).astype(
      jnp.int32)


def sample_rows(logits: jax.Array, keys: jax.Array, *, top_k: int | None,
                top_p: jax.Array | float, temperature: jax.Array | float
                ) -> jax.Array:
  """`sample` with one key per batch row: (B, ..., V), (B,) keys -> (B, ...).

  Each row's draw depends only on its own key and logits, so an image
  sampled in a batch of 8 is the one sampled alone with the same row key.
  """
  return jax.vmap(lambda lg, k: sample(lg, k, top_k=top_k, top_p=top_p,
                                       temperature=temperature))(logits, keys)
