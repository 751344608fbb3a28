# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The trainers' optimizer: the learning rate actually applied at every
update (with and without accumulation) and the weight-decay mask."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nextflow_jax import config_lib
from nextflow_jax import optimizers
from nextflow_jax import workdirs
from nextflow_jax.data import sequences
from nextflow_jax.trainers import pretrain_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR, WARMUP, NUM_STEPS, END = 0.1, 8, 48, 0.1


def intended_lr(micro_step: int) -> float:
  """The schedule the config describes, by micro-step (batch)."""
  if micro_step < WARMUP:
    return LR * micro_step / WARMUP
  progress = min((micro_step - WARMUP) / (NUM_STEPS - WARMUP), 1.0)
  return LR * (END + (1 - END) * 0.5 * (1 + np.cos(np.pi * progress)))


@pytest.mark.parametrize("accum", [1, 2, 4])
def test_learning_rate_applied_at_every_update_follows_the_schedule(accum):
  """With a constant gradient of 1 and no decay, each Adam update moves a
  parameter by exactly the learning rate (m / sqrt(v) = 1). Update u comes
  after micro-step (u + 1) k and applies the schedule at micro-step u k:
  warmup and cosine end on the same batch with and without accumulation."""
  tx = optimizers.adamw(LR, warmup_steps=WARMUP, num_steps=NUM_STEPS,
                        end_lr_ratio=END, weight_decay=0.0, grad_clip=1e9,
                        accum_steps=accum)
  params = {"bias": jnp.zeros(())}
  state = tx.init(params)
  update = jax.jit(tx.update)
  applied = []
  for micro_step in range(NUM_STEPS):
    updates, state = update({"bias": jnp.ones(())}, state, params)
    new = optax.apply_updates(params, updates)
    moved = float(params["bias"] - new["bias"])
    params = new
    if (micro_step + 1) % accum:
      assert moved == 0.0, f"micro-step {micro_step} updated the parameter"
    else:
      applied.append(moved)
  want = [intended_lr(u * accum) for u in range(NUM_STEPS // accum)]
  np.testing.assert_allclose(applied, want, rtol=1e-5, atol=1e-7)
  assert applied[-1] < 1.3 * LR * END  # the cosine reached its end


def test_decay_mask_names():
  params = {"attn": {"q_kernel": 1, "q_bias": 2}, "mlp": {"up_kernel": 3},
            "conv": {"kernel": 4, "bias": 5}, "norm": {"scale": 6},
            "token_embed": 7, "code_embed": 8, "scale_embed": 9,
            "text_head": 10, "codebook": 11}
  mask = optimizers.decay_mask(params, ("text_head",))
  assert mask == {"attn": {"q_kernel": True, "q_bias": False},
                  "mlp": {"up_kernel": True},
                  "conv": {"kernel": True, "bias": False},
                  "norm": {"scale": False}, "token_embed": False,
                  "code_embed": False, "scale_embed": False,
                  "text_head": True, "codebook": False}


def test_zero_gradient_step_decays_only_projections_and_heads():
  """One AdamW step with zero gradients on the mu NextFlow: Adam's term is
  0, so only the decay moves parameters. Norms, biases and every embedding
  table stay exactly as they were; kernels and heads shrink by lr * wd."""
  config = config_lib.load_config(os.path.join(ROOT, "configs",
                                               "nextflow.py:mu"))
  config.optim.warmup_steps = 0
  config.optim.weight_decay = 0.1
  model = workdirs.build_model(config.model, text_vocab_size=64,
                               codebook_size=32, code_dim=8)
  batch = sequences.example_batch(sequences.Layout(), 32, 8)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), batch))["params"]
  tx = pretrain_step.make_optimizer(config.optim, 10)

  @jax.jit
  def zero_gradient_step(params):
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params),
                           tx.init(params), params)
    return optax.apply_updates(params, updates)

  after = zero_gradient_step(params)
  factor = 1.0 - config.optim.lr * config.optim.weight_decay
  flat_before = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_after = jax.tree.leaves(after)
  decayed, kept = set(), set()
  for (path, before), now in zip(flat_before, flat_after):
    name = jax.tree_util.keystr(path)
    if np.array_equal(before, now):
      kept.add(name)
    else:
      np.testing.assert_allclose(now, before * factor, rtol=1e-6,
                                 err_msg=name)
      decayed.add(name)
  for name in ("['token_embed']", "['code_embed']", "['scale_embed']",
               "['connector_in']['bias']", "['decoder']['final_norm']['scale']",
               "['decoder']['layers']['attn_norm']['scale']",
               "['decoder']['layers']['attn']['q_bias']"):
    assert name in kept, name
  for name in ("['text_head']", "['visual_head']",
               "['connector_in']['kernel']",
               "['decoder']['layers']['attn']['q_kernel']",
               "['decoder']['layers']['mlp']['down_kernel']"):
    assert name in decayed, name
