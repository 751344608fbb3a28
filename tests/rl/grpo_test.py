# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""GRPO math: advantages, VMR, scale weights, the clipped prefix loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax.data import sequences as seq
from nextflow_jax.data import shapes
from nextflow_jax.data import tasks
from nextflow_jax.model import nextflow
from nextflow_jax.rl import grpo
from nextflow_jax.rl import rewards

SCHEDULE = ((1, 1), (2, 2), (3, 3))


def test_advantages_equal_a_numpy_reference():
  r = np.array([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0, 0.1, 0.9, 0.3, 0.2],
               np.float32)
  got = np.asarray(grpo.group_advantages(r, 4))
  groups = r.reshape(-1, 4)
  std = groups.std(axis=1, keepdims=True)
  want = (groups - groups.mean(axis=1, keepdims=True)) / (std + 1e-6)
  want[1] = 0.0  # std = 0: the group contributes nothing
  np.testing.assert_allclose(got, want.ravel(), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="groups of 5"):
    grpo.group_advantages(r, 5)
  with pytest.raises(ValueError, match=">= 2 rollouts"):
    grpo.group_advantages(r, 1)


def test_soft_value_is_its_formula():
  r = np.array([[0.2, 0.9], [1.0, 1.0], [0.0, 3.0]], np.float32)
  for eta in (1.0, 0.5):
    want = eta * np.log(np.mean(np.exp(r / eta), axis=-1))
    np.testing.assert_allclose(grpo.soft_value(r, eta), want, rtol=1e-6)


def test_scale_weights():
  w = grpo.scale_weights(SCHEDULE, 2, alpha=1.0)
  np.testing.assert_allclose(w, [0.8, 0.2, 0.0], rtol=1e-6)
  np.testing.assert_allclose(grpo.scale_weights(SCHEDULE, 3, 0.0), [1 / 3] * 3)
  with pytest.raises(ValueError, match=r"prefix=4 must be in \[1, 3\]"):
    grpo.scale_weights(SCHEDULE, 4, 0.0)


def _cells(rng_seed=0, batch=4):
  """Per-cell logits (B, L, K) of 14 visual targets (1 + 4 + 9) and their
  scales, as a laid-out sequence would give them."""
  rng = np.random.default_rng(rng_seed)
  scales_of = np.concatenate([np.full(h * w, k + 1) for k, (h, w) in
                              enumerate(SCHEDULE)])
  target_scales = np.tile(np.concatenate([[0, 0], scales_of, [0]]),
                          (batch, 1))  # two text positions, one pad
  logits = rng.normal(size=target_scales.shape + (7,)).astype(np.float32)
  targets = rng.integers(0, 7, target_scales.shape)
  return jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(target_scales)


def _logp(logits, targets, target_scales):
  lp = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None],
                           -1)[..., 0]
  return jnp.where(target_scales > 0, lp, 0.0)


@pytest.mark.parametrize("ratio", ["scale", "cell"])
def test_policy_equal_to_reference_has_zero_kl_and_unit_ratios(ratio):
  logits, targets, target_scales = _cells()
  logp = _logp(logits, targets, target_scales)
  adv = jnp.array([1.0, -1.0, 0.5, -0.5])
  weights = jnp.asarray(grpo.scale_weights(SCHEDULE, 3, 0.0))
  loss, m = grpo.grpo_loss(logp, logp, logp, target_scales, adv, weights,
                           clip_eps=0.2, beta=0.1, ratio=ratio)
  assert float(m["kl"]) == 0.0 and float(m["clip_fraction"]) == 0.0
  assert float(m["ratio_mean"]) == 1.0
  # With every ratio 1 the objective is the weighted mean advantage.
  np.testing.assert_allclose(float(loss), -float(jnp.mean(adv)), atol=1e-6)


@pytest.mark.parametrize("ratio", ["scale", "cell"])
@pytest.mark.parametrize("prefix", [1, 2])
def test_scales_past_the_prefix_get_exactly_zero_gradient(ratio, prefix):
  logits, targets, target_scales = _cells()
  old = _logp(logits + 0.3, targets, target_scales)
  ref = _logp(logits - 0.2, targets, target_scales)
  adv = jnp.array([1.0, -1.0, 0.5, -0.5])
  weights = jnp.asarray(grpo.scale_weights(SCHEDULE, prefix, 0.5))

  def loss(lg):
    return grpo.grpo_loss(_logp(lg, targets, target_scales), old, ref,
                          target_scales, adv, weights, clip_eps=0.2,
                          beta=0.1, ratio=ratio)[0]

  grad = np.asarray(jax.grad(loss)(logits))
  past = np.asarray(target_scales) > prefix
  inside = (np.asarray(target_scales) > 0) & ~past
  assert np.all(grad[past] == 0.0)
  assert np.abs(grad[inside]).sum() > 0


def test_scale_ratio_is_the_product_over_cells_and_is_clipped():
  logits, targets, target_scales = _cells(batch=1)
  logp = _logp(logits, targets, target_scales)
  old = logp - 0.05 * (target_scales > 0)  # each cell's ratio is e^0.05
  weights = jnp.asarray(grpo.scale_weights(SCHEDULE, 3, 0.0))
  _, m = grpo.grpo_loss(logp, old, logp, target_scales, jnp.array([1.0]),
                        weights, clip_eps=0.25, beta=0.0, ratio="scale")
  rho = np.exp(0.05 * np.array([1, 4, 9]))  # product over each grid
  np.testing.assert_allclose(float(m["ratio_mean"]), rho.mean(), rtol=1e-5)
  assert float(m["clip_fraction"]) == pytest.approx(1 / 3)  # the 3x3 grid
  # A positive advantage: min(rho A, clip(rho) A) takes the clipped value.
  np.testing.assert_allclose(float(m["objective"]),
                             np.minimum(rho, 1.25).mean(), rtol=1e-5)


def test_cell_log_probs_read_the_visual_targets():
  model = nextflow.NextFlow(
      text_vocab_size=64, codebook_size=7, code_dim=4, num_layers=1,
      width=16, num_heads=2, num_kv_heads=1, head_dim=8, mlp_dim=32,
      max_scales=4)
  rng = np.random.default_rng(0)
  codes = [rng.integers(0, 7, s) for s in SCHEDULE]
  doc = seq.pad(seq.build(tasks.t2i_prompt([5, 6]) + [
      seq.Image(codes, codes)], seq.Layout(), codebook_size=7), 24)
  batch = {k: jnp.asarray(v)[None] for k, v in doc.items()}
  params = nn.unbox(model.init(jax.random.key(0), batch))["params"]
  logp, entropy = grpo.cell_log_probs(model, params, batch, temperature=2.0)
  hidden = model.apply({"params": params}, batch)
  lp = jax.nn.log_softmax(model.apply({"params": params}, hidden,
                                      method=model.visual_logits) / 2.0)
  is_target = np.asarray(batch["target_is_visual"][0])
  assert is_target.sum() == 14
  want = np.take_along_axis(np.asarray(lp[0]), np.asarray(
      batch["targets"][0])[:, None], -1)[:, 0]
  np.testing.assert_allclose(np.asarray(logp[0])[is_target],
                             want[is_target], rtol=1e-5)
  assert np.all(np.asarray(logp[0])[~is_target] == 0)
  assert np.all(np.asarray(entropy[0])[is_target] > 0)


def test_builtin_reward_scores_renders_and_blank_images():
  rng = np.random.default_rng(3)
  scenes = [shapes.sample_scene(rng, 64) for _ in range(24)]
  images = np.stack([np.asarray(shapes.render(s)) for s in scenes])
  prompts = [shapes.caption(s) for s in scenes]
  total, parts = rewards.combined(
      ["shapes_geneval", "shapes_geneval_binary"], [0.5, 0.5])(images,
                                                                prompts)
  assert parts["shapes_geneval"].mean() >= 0.99
  assert parts["shapes_geneval_binary"].mean() >= 0.99
  np.testing.assert_allclose(total, 0.5 * parts["shapes_geneval"] +
                             0.5 * parts["shapes_geneval_binary"])
  blank = np.zeros_like(images)
  _, parts = rewards.combined(["shapes_geneval_binary"], [1.0])(blank,
                                                                 prompts)
  assert parts["shapes_geneval_binary"].max() == 0.0


def test_bad_input_rewards():
  images, prompts = np.zeros((2, 8, 8, 3), np.uint8), ["a", "b"]

  @rewards.register("test_nan_reward")
  def nan_reward(images, prompts, **record):
    del images, record
    return np.array([0.5, np.nan])[:len(prompts)]

  @rewards.register("test_wrong_shape_reward")
  def wrong_shape(images, prompts, **record):
    del images, prompts, record
    return np.zeros((3,))

  with pytest.raises(ValueError, match=r"'test_nan_reward' returned "
                     r"non-finite values at images \[1\]"):
    rewards.combined(["test_nan_reward"], [1.0])(images, prompts)
  with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(2,\)"):
    rewards.combined(["test_wrong_shape_reward"], [1.0])(images, prompts)
  with pytest.raises(ValueError, match="no reward named 'ocr'"):
    rewards.combined(["ocr"], [1.0])
  with pytest.raises(ValueError, match="need one weight each"):
    rewards.combined(["shapes_geneval"], [1.0, 2.0])
  with pytest.raises(ValueError, match="registered already"):
    rewards.register("shapes_geneval")(nan_reward)
