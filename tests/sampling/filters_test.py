# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Top-k / top-p / temperature filters against a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax.sampling import filters


def _reference_kept(logits, top_k, top_p, temperature):
  """Ids kept by top-k then top-p (smallest set with mass >= p; p=1: all)."""
  order = np.argsort(-logits, kind="stable")
  if top_k:
    order = order[:top_k]
  values = logits[order] / temperature
  probs = np.exp(values - values.max())
  probs /= probs.sum()
  kept, mass = [], 0.0
  for i, p in zip(order, probs):
    kept.append(int(i))
    mass += p
    if top_p < 1 and mass >= top_p:  # p = 1 keeps everything
      break
  return set(kept)


@pytest.mark.parametrize("top_k", [None, 1, 5, 64])
@pytest.mark.parametrize("top_p", [0.3, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_filters_match_numpy(top_k, top_p, temperature):
  logits = np.random.default_rng(0).normal(size=(6, 64)).astype(np.float32)
  logits *= 3.0
  filtered = np.asarray(jax.jit(filters.filter_logits, static_argnums=1)(
      logits, top_k, top_p, temperature))
  for row in range(len(logits)):
    kept = set(np.flatnonzero(np.isfinite(filtered[row])).tolist())
    assert kept == _reference_kept(logits[row], top_k, top_p, temperature)
    np.testing.assert_allclose(filtered[row][np.isfinite(filtered[row])],
                               logits[row][np.isfinite(filtered[row])] /
                               temperature, rtol=1e-6)


def test_samples_follow_the_renormalised_distribution():
  logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
  draws = jax.jit(jax.vmap(lambda k: filters.sample(
      jnp.asarray(logits), k, top_k=3, top_p=0.7, temperature=1.0)))(
          jax.random.split(jax.random.key(0), 4000))
  counts = np.bincount(np.asarray(draws), minlength=4) / 4000
  # top-k 3 keeps {0, 1, 2}; top-p 0.7 then keeps {0, 1} (0.5 + 0.3 >= 0.7).
  np.testing.assert_allclose(counts, [0.625, 0.375, 0, 0], atol=0.03)


def test_zero_temperature_is_greedy_and_guidance_is_vars_form():
  logits = jnp.asarray([[0.1, 2.0, 1.9], [3.0, -1.0, 0.0]])
  keys = jax.random.split(jax.random.key(0), 2)
  np.testing.assert_array_equal(
      filters.sample_rows(logits, keys, top_k=None, top_p=1.0,
                          temperature=0.0),
      [1, 0])
  cond, uncond = jnp.asarray([1.0, 2.0]), jnp.asarray([0.5, 3.0])
  np.testing.assert_allclose(filters.guide(cond, uncond, 0.0), cond)
  np.testing.assert_allclose(filters.guide(cond, uncond, 2.0), [2.0, 0.0])


@pytest.mark.parametrize("top_k", [0, -3])
def test_top_k_below_one_raises(top_k):
  with pytest.raises(ValueError, match=f"top_k={top_k} must be >= 1"):
    filters.filter_logits(jnp.zeros((4,)), top_k, 1.0)


def test_ties_and_banned_ids():
  """Ties at the k-th value survive together; -inf ids never survive, even
  when fewer than k are left."""
  logits = jnp.asarray([[3.0, 1.0, 1.0, 0.0, -jnp.inf],
                        [-jnp.inf, 2.0, -jnp.inf, -jnp.inf, -jnp.inf]])
  kept = np.isfinite(np.asarray(filters.filter_logits(logits, 2, 1.0)))
  np.testing.assert_array_equal(kept, [[1, 1, 1, 0, 0], [0, 1, 0, 0, 0]])
  draws = filters.sample_rows(logits, jax.random.split(jax.random.key(0), 2),
                              top_k=3, top_p=0.9, temperature=1.0)
  assert int(draws[1]) == 1 and int(draws[0]) in (0, 1, 2)
