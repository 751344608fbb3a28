# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""GRPO with prefix tuning for image outputs (nextflow_jax/trainers/grpo.py).

  # a few updates of a small model (tests, a first look):
  python -m nextflow_jax.main --config=configs/grpo.py:mu --workdir=/tmp/grpo \
      --config.model=pretrained/shapes-cpu
  # the CPU recipe on the shipped shapes model:
  python -m nextflow_jax.main --config=configs/grpo.py:cpu \
      --workdir=runs/grpo --config.model=pretrained/shapes-cpu

`model` is a bundle folder or a configs/nextflow.py workdir. Prompts come
from `prompts.source`: "shapes_geneval:seen" (the shapes prompt set without
its held-out prompts, which the sample grids use) or a text file with one
prompt per line. Rewards are names registered in `rl/rewards.py`.
"""

import ml_collections

from nextflow_jax import config_lib


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "grpo"
  c.seed = 0
  c.model = ""  # required: a bundle folder or a pretraining workdir

  c.prompts = ml_collections.ConfigDict()
  c.prompts.source = "shapes_geneval:seen"

  c.grpo = ml_collections.ConfigDict()
  c.grpo.group_size = 8  # G rollouts per prompt
  c.grpo.prompts_per_update = 4  # P prompts per update
  # m: policy-gradient terms on the first m scales only (prefix tuning);
  # 0 = every scale (vanilla GRPO).
  c.grpo.prefix_scales = 3
  c.grpo.clip_eps = 0.2
  c.grpo.beta = 0.01  # KL(pi || reference), k3 estimator
  c.grpo.alpha = 0.0  # k_t = (h_t w_t)^-alpha (PANW); 0 = equal weights
  c.grpo.ratio = "scale"  # "scale": one ratio per grid; "cell": per cell
  c.grpo.inner_steps = 1  # optimizer steps per batch of rollouts
  # VMR: value each rollout's prefix (first m scales) by K continuations,
  # V = eta * log mean exp(R / eta); 0 = the rollout's own reward.
  c.grpo.vmr_continuations = 0
  c.grpo.vmr_eta = 1.0
  c.grpo.rewards = ("shapes_geneval",)
  c.grpo.reward_weights = (1.0,)
  # Rollout sampling; the ratio uses the unguided, unfiltered policy at
  # this temperature, so guidance 0 and top_k 0 keep rollouts on policy
  # (guidance w: cond + w * (cond - uncond), VAR's linear ramp).
  c.grpo.temperature = 1.0
  c.grpo.guidance = 0.0
  c.grpo.top_k = 0
  c.grpo.max_prompt_len = 24  # text tokens

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 2e-5
  c.optim.warmup_steps = 0
  c.optim.end_lr_ratio = 1.0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.weight_decay = 0.05
  c.optim.grad_clip = 1.0

  c.sharding = ml_collections.ConfigDict()
  c.sharding.mesh = (-1, 1, 1)
  c.sharding.rules = "dp"
  c.sharding.rule_overrides = ()

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 200  # updates
  c.train.max_minutes = 0.0
  c.train.log_every_steps = 1
  c.train.ckpt_every_steps = 20
  c.train.eval_every_steps = 20
  c.train.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.num_prompts = 8  # held-out prompts in samples_<step>.png
  return c


def _mu(c):
  c.grpo.group_size = 4
  c.grpo.prompts_per_update = 2
  c.grpo.prefix_scales = 2
  c.train.num_steps = 3
  c.train.ckpt_every_steps = 2
  c.train.eval_every_steps = 3
  c.eval.num_prompts = 4


def _cpu(c):
  del c  # The base is the CPU recipe.


PRESETS = {"mu": _mu, "cpu": _cpu}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.from_presets(arg, _base, PRESETS, default="cpu")
