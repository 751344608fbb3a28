# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""GRPO for next-scale image tokens, with prefix tuning (pure functions).

NextFlow section 3.2.5 (nextflow-method.md section 9): generating scale t
is one action, a whole grid of codes, whose probability factorises over its
cells. For G rollouts of each prompt with rewards R_i:

  A_i = (R_i - mean_group R) / (std_group R + eps)        (Eq. 4; a group
        whose rewards are all equal contributes nothing)
  objective = mean_i sum_{t < m} k_t * min(rho_{i,t} A_i,
                                          clip(rho_{i,t}, 1-eps, 1+eps) A_i)
              - beta * KL(pi_theta || pi_ref)              (Eq. 5)

Only the first `m` scales get policy-gradient terms ("prefix tuning"; m =
all scales is vanilla GRPO); finer scales are still sampled by the policy
but their terms are masked out before any exponential, so they get exactly
zero gradient. k_t = (h_t w_t)^-alpha normalised over the first m scales
(NextFlow's scale reweighting, VAR-RL's PANW; alpha = 0 weighs scales
equally).

Choices where the sources are silent (each a knob of `configs/grpo.py`):
  * `ratio`: "scale" (the paper's rho_t = prod over the grid's cells,
    exp(sum_cells log pi_theta - log pi_old)) or "cell" (one ratio per cell,
    clipped per cell and averaged over the grid; steadier for big grids).
  * The ratio and KL use the policy's conditional distribution at the
    rollout temperature, without classifier-free guidance or top-k/top-p
    filtering: rollouts sample from the same distribution when
    `grpo.guidance = 0` and no filter is set (on policy, as VAR-RL trains
    "without CFG"); with guidance or filters the samples come from a
    sharpened distribution and the update is off policy by that much.
  * KL estimator: k3 = exp(q) - q - 1 with q = log pi_ref - log pi_theta
    per cell (Schulman's unbiased, non-negative estimator, as DeepSeek's
    GRPO), averaged over the cells of the first m scales.
  * std is the population std (ddof 0) of a group.

VMR (VAR-RL, "value as middle return"): a prefix's value from K
continuations, V = eta * log mean_k exp(R_k / eta) (`soft_value`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nextflow_jax.model import nextflow


def group_advantages(rewards: np.ndarray | jax.Array, group_size: int,
                     eps: float = 1e-6) -> jax.Array:
  """(N,) rewards, consecutive groups of `group_size` -> (N,) advantages.

  Raises:
    ValueError: N is not a multiple of the group size, or the group has one
      member (its advantage is undefined).
  """
  rewards = jnp.asarray(rewards, jnp.float32)
  if group_size < 2 or rewards.shape[0] % group_size:
    raise ValueError(f"{rewards.shape[0]} rewards do not split into groups "
                     f"of {group_size} (a group needs >= 2 rollouts).")
  groups = rewards.reshape(-1, group_size)
  mean = jnp.mean(groups, axis=1, keepdims=True)
  std = jnp.std(groups, axis=1, keepdims=True)
  adv = jnp.where(std > eps, (groups - mean) / (std + eps), 0.0)
  return adv.reshape(-1)


def soft_value(rewards: np.ndarray | jax.Array, eta: float = 1.0
               ) -> jax.Array:
  """VMR: (..., K) rewards of K continuations -> (...,)
  eta * log mean_k exp(R_k / eta)."""
  rewards = jnp.asarray(rewards, jnp.float32)
  k = rewards.shape[-1]
  return eta * (jax.nn.logsumexp(rewards / eta, axis=-1) - jnp.log(k))


def scale_weights(schedule: Sequence[tuple[int, int]], prefix: int,
                  alpha: float) -> np.ndarray:
  """(S,) k_t: (h_t w_t)^-alpha on the first `prefix` scales, normalised to
  sum 1 there; 0 on the rest."""
  if not 1 <= prefix <= len(schedule):
    raise ValueError(f"prefix={prefix} must be in [1, {len(schedule)}] (the "
                     "number of scales).")
  sizes = np.asarray([h * w for h, w in schedule], np.float64)
  weights = sizes ** -alpha
  weights[prefix:] = 0.0
  return (weights / weights.sum()).astype(np.float32)


def cell_log_probs(model: nextflow.NextFlow, params: Any,
                   batch: dict[str, jax.Array], temperature: float = 1.0
                   ) -> tuple[jax.Array, jax.Array]:
  """Per-position log-probability of each visual target and the entropy of
  its distribution, under softmax(logits / temperature).

  Args:
    model, params: the policy (or reference).
    batch: laid-out sequences (`sequences.build` + `pad`), (B, L) fields.
    temperature: the rollout temperature.

  Returns:
    (log_probs, entropy), each (B, L) float32; 0 where the position has no
    visual target.
  """
  hidden = model.apply({"params": params}, batch)
  logits = model.apply({"params": params}, hidden,
                       method=model.visual_logits) / temperature
  logp_all = jax.nn.log_softmax(logits, axis=-1)
  is_target = batch["target_is_visual"] & (batch["segment_ids"] > 0)
  targets = jnp.where(is_target, batch["targets"], 0)
  logp = jnp.take_along_axis(logp_all, targets[..., None], -1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, -1)
  return jnp.where(is_target, logp, 0.0), jnp.where(is_target, entropy, 0.0)


def grpo_loss(logp: jax.Array, logp_old: jax.Array, logp_ref: jax.Array,
              target_scales: jax.Array, advantages: jax.Array,
              weights: jax.Array, *, clip_eps: float, beta: float,
              ratio: str = "scale") -> tuple[jax.Array, dict[str, jax.Array]]:
  """The GRPO loss (minimised: -objective + beta * KL) of one batch.

  Args:
    logp, logp_old, logp_ref: (B, L) per-cell log-probabilities of the
      sampled codes under the policy, the rollout policy and the reference
      (`cell_log_probs`; 0 off visual targets).
    target_scales: (B, L) int, 1-based scale of each visual target (0 =
      none), `sequences` field `target_scales`.
    advantages: (B,) per rollout.
    weights: (S,) k_t (`scale_weights`); scales with weight 0 get no term.
    clip_eps: PPO clip range.
    beta: KL weight.
    ratio: "scale" or "cell" (module docstring).

  Returns:
    (loss, metrics): `objective`, `kl`, `clip_fraction`, `ratio_mean`.
  """
  if ratio not in ("scale", "cell"):
    raise ValueError(f"ratio={ratio!r}; choose 'scale' or 'cell'.")
  num_scales = weights.shape[0]
  # (B, L, S) one-hot of each cell's scale, 0 for non-targets.
  member = jax.nn.one_hot(target_scales - 1, num_scales, dtype=jnp.float32)
  active = jnp.einsum("bls,s->bl", member, (weights > 0).astype(jnp.float32))
  delta = jnp.where(active > 0, logp - logp_old, 0.0)
  adv = advantages[:, None]
  if ratio == "scale":
    log_rho = jnp.einsum("bl,bls->bs", delta, member)  # (B, S)
    rho = jnp.exp(jnp.where(weights > 0, log_rho, 0.0))
    clipped = jnp.clip(rho, 1.0 - clip_eps, 1.0 + clip_eps)
    terms = jnp.minimum(rho * adv, clipped * adv)  # (B, S)
    clip_hit = (jnp.abs(rho - 1.0) > clip_eps).astype(jnp.float32)
    objective = jnp.mean(jnp.sum(terms * weights, -1))
    clip_fraction = jnp.sum(jnp.mean(clip_hit, 0) * (weights > 0)) / jnp.sum(
        weights > 0)
    ratio_mean = jnp.sum(jnp.mean(rho, 0) * (weights > 0)) / jnp.sum(
        weights > 0)
  else:
    rho = jnp.exp(delta)  # (B, L); 1 off the prefix
    clipped = jnp.clip(rho, 1.0 - clip_eps, 1.0 + clip_eps)
    cell_terms = jnp.minimum(rho * adv, clipped * adv) * active
    count = jnp.maximum(jnp.einsum("bl,bls->bs", active, member), 1.0)
    terms = jnp.einsum("bl,bls->bs", cell_terms, member) / count
    objective = jnp.mean(jnp.sum(terms * weights, -1))
    cells = jnp.maximum(jnp.sum(active), 1.0)
    clip_fraction = jnp.sum((jnp.abs(rho - 1.0) > clip_eps) * active) / cells
    ratio_mean = jnp.sum(rho * active) / cells
  q = jnp.where(active > 0, logp_ref - logp, 0.0)
  kl = jnp.sum((jnp.exp(q) - q - 1.0) * active) / jnp.maximum(
      jnp.sum(active), 1.0)
  loss = -objective + beta * kl
  return loss, {"objective": objective, "kl": kl,
                "clip_fraction": clip_fraction, "ratio_mean": ratio_mean}
