# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""GRPO trainer with prefix tuning (`config.trainer = "grpo"`).

Each update (the math is `rl/grpo.py`):
  1. takes `grpo.prompts_per_update` prompts P from the prompt source
     (its position is checkpointed with the state);
  2. samples `grpo.group_size` G images per prompt with the policy (the
     next-scale sampler, one compiled program; seeds from `seed` and the
     update number, so a resumed run draws the same rollouts);
  3. scores them with the configured rewards (`rl/rewards.py`) and turns
     the rewards into group advantages;
  4. lays every rollout out as a training sequence (prompt, then its codes
     as inputs and targets) and computes the per-cell log-probabilities of
     the sampled codes under the rollout policy and the frozen reference
     (the starting model);
  5. takes `grpo.inner_steps` AdamW steps on the clipped objective of the
     first `grpo.prefix_scales` scales minus beta * KL.

The starting model is a bundle (`bundle.py`) or a pretraining workdir
(`config.model`). Outputs in the workdir: checkpoints/ (state + prompt
position), TensorBoard events, log.txt, samples_<step>.png (held-out prompts
with their reward under each image), grpo_report.json, and
`bundle/`, the tuned model as a bundle (load it with
`Generator.from_pretrained`).

VMR (VAR-RL's "value as middle return", `grpo.vmr_continuations` K > 0):
the return of a rollout's prefix (its first m scales, the ones the update
tunes) is not the reward of its own final image but the soft value
V = eta * log mean_k exp(R_k / eta) of K fresh continuations of that prefix
(`Generator.text_to_image(prefix_codes=...)`, scales m+1.. sampled by the
current policy with the rollout knobs); group advantages are taken over V.
This removes the finer scales' sampling noise from the prefix's credit at
the cost of K more images per rollout. VAR-RL's optional suffix updates
(the finer scales trained on their own rewards, alternating 1:3 with prefix
updates) are not implemented: with prefix tuning the finer scales keep the
pretrained policy. With K = 0 the final image's reward is the return of
every prefix (plain GRPO).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any

from absl import logging
import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nextflow_jax import bundle
from nextflow_jax import checkpoint
from nextflow_jax import config_lib
from nextflow_jax import metrics
from nextflow_jax import optimizers
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax import workdirs
from nextflow_jax.data import sequences
from nextflow_jax.data import tasks
from nextflow_jax.evals import shapes_geneval
from nextflow_jax.rl import grpo
from nextflow_jax.rl import rewards as rewards_lib
from nextflow_jax.sampling import generator as generator_lib
from nextflow_jax.trainers import common
from nextflow_jax.trainers import loop
from nextflow_jax.trainers import pretrain_step

REPORT_FILE = "grpo_report.json"
BUNDLE_DIR = "bundle"
SHAPES_PREFIX = "shapes_geneval:"


@dataclasses.dataclass(frozen=True)
class Settings:
  """The `grpo` section as plain values."""
  group_size: int
  prompts_per_update: int
  prefix_scales: int
  clip_eps: float
  beta: float
  alpha: float
  ratio: str
  inner_steps: int
  temperature: float
  guidance: float
  top_k: int
  max_prompt_len: int
  vmr_continuations: int
  vmr_eta: float

  @classmethod
  def from_config(cls, section: ml_collections.ConfigDict) -> "Settings":
    return cls(**{f.name: section[f.name] for f in dataclasses.fields(cls)})


def check_config(config: ml_collections.ConfigDict) -> None:
  """Up-front checks of the `grpo` and `prompts` sections."""
  g = config.grpo
  if not config.model or not (
      os.path.exists(os.path.join(config.model, bundle.CONFIG_FILE)) or
      os.path.isdir(os.path.join(config.model, "checkpoints"))):
    raise config_lib.ConfigError(
        "model", config.model, "give a model bundle (it holds bundle.json) "
        "or the --workdir of configs/nextflow.py (it holds checkpoints/).")
  if g.group_size < 2:
    raise config_lib.ConfigError("grpo.group_size", g.group_size,
                                 "must be >= 2 (advantages compare a group).")
  if g.prompts_per_update < 1:
    raise config_lib.ConfigError("grpo.prompts_per_update",
                                 g.prompts_per_update, "must be >= 1.")
  shape = sharding.resolve_mesh_shape(config.sharding.mesh,
                                     jax.device_count())
  dp = shape[0] * shape[1]
  if (g.group_size * g.prompts_per_update) % dp:
    raise config_lib.ConfigError(
        "grpo.prompts_per_update", g.prompts_per_update,
        f"group_size * prompts_per_update must be a multiple of the "
        f"data-parallel size {dp}.")
  if g.prefix_scales < 0:
    raise config_lib.ConfigError("grpo.prefix_scales", g.prefix_scales,
                                 "must be >= 0 (0 = every scale).")
  if not 0.0 < g.clip_eps < 1.0:
    raise config_lib.ConfigError("grpo.clip_eps", g.clip_eps,
                                 "must be in (0, 1).")
  for key in ("beta", "alpha"):
    if g[key] < 0:
      raise config_lib.ConfigError(f"grpo.{key}", g[key], "must be >= 0.")
  if g.ratio not in ("scale", "cell"):
    raise config_lib.ConfigError("grpo.ratio", g.ratio,
                                 "choose 'scale' or 'cell'.")
  if g.vmr_continuations < 0:
    raise config_lib.ConfigError("grpo.vmr_continuations",
                                 g.vmr_continuations,
                                 "must be >= 0 (0 = VMR off).")
  if g.vmr_eta <= 0:
    raise config_lib.ConfigError("grpo.vmr_eta", g.vmr_eta, "must be > 0.")
  if g.vmr_continuations and not g.prefix_scales:
    raise config_lib.ConfigError(
        "grpo.vmr_continuations", g.vmr_continuations,
        "VMR values a prefix of the scales; set grpo.prefix_scales to m < "
        "the number of scales, or vmr_continuations=0.")
  if g.inner_steps < 1:
    raise config_lib.ConfigError("grpo.inner_steps", g.inner_steps,
                                 "must be >= 1.")
  if g.temperature <= 0:
    raise config_lib.ConfigError("grpo.temperature", g.temperature,
                                 "must be > 0.")
  if g.guidance < 0 or g.top_k < 0:
    raise config_lib.ConfigError(
        "grpo.guidance", (g.guidance, g.top_k),
        "guidance and top_k must be >= 0 (0 = off).")
  try:
    rewards_lib.combined(tuple(g.rewards), tuple(g.reward_weights))
  except ValueError as e:
    raise config_lib.ConfigError("grpo.rewards", tuple(g.rewards), str(e))
  source = config.prompts.source
  if source.startswith(SHAPES_PREFIX):
    if source[len(SHAPES_PREFIX):] not in ("seen", "heldout", "all"):
      raise config_lib.ConfigError(
          "prompts.source", source, "shapes_geneval:<seen|heldout|all> or "
          "a text file with one prompt per line.")
  elif not os.path.isfile(source):
    raise config_lib.ConfigError(
        "prompts.source", source, "is not a file; give a text file with one "
        "prompt per line, or shapes_geneval:seen.")


def load_prompts(source: str) -> list[dict[str, str]]:
  """[{"prompt", "category"}] of a prompt source (`prompts.source`)."""
  if source.startswith(SHAPES_PREFIX):
    return [{"prompt": p["prompt"], "category": p["category"]}
            for p in shapes_geneval.load_prompt_set(
                split=source[len(SHAPES_PREFIX):])]
  with open(source, encoding="utf-8") as f:
    prompts = [{"prompt": line.strip(), "category": ""} for line in f
               if line.strip()]
  if not prompts:
    raise ValueError(f"prompts.source={source!r} has no prompts.")
  return prompts


def prompt_iterator(prompts: list[dict[str, str]], batch_size: int,
                    seed: int) -> grain.DatasetIterator:
  """Shuffled, repeated batches of prompts; checkpointable position."""
  ds = grain.MapDataset.source(prompts).shuffle(seed=seed).repeat()
  return iter(ds.batch(batch_size, batch_fn=list))


def load_model(path: str) -> workdirs.TrainedModel:
  """A bundle folder or a pretraining workdir."""
  if os.path.exists(os.path.join(path, bundle.CONFIG_FILE)):
    return bundle.load(path)
  return workdirs.load_pretrain_run(path)


def rollout_batch(gen: generator_lib.Generator, prompts: list[str],
                  codes: list[np.ndarray], seq_len: int
                  ) -> dict[str, np.ndarray]:
  """Rollouts laid out as training sequences: <bos> prompt, then the image
  whose inputs and targets are the sampled codes. (B, seq_len) fields."""
  docs = []
  for i, prompt in enumerate(prompts):
    image = [c[i] for c in codes]
    parts = tasks.t2i_prompt(gen.text_tokenizer.encode(prompt)) + [
        sequences.Image(image, image)]
    docs.append(sequences.pad(sequences.build(
        parts, gen.layout, codebook_size=gen.model.codebook_size), seq_len))
  return {k: np.stack([d[k] for d in docs]) for k in docs[0]}


def prefix_values(gen: generator_lib.Generator, reward_fn, texts: list[str],
                  prefix_codes: list[np.ndarray],
                  knobs: generator_lib.SamplingConfig, continuations: int,
                  eta: float) -> np.ndarray:
  """VMR: (B,) soft values of B prefixes from K continuations each.

  Args:
    gen: the generator holding the current policy.
    reward_fn: `rewards.combined(...)`.
    texts: B prompts.
    prefix_codes: the first m scales of B rollouts, each (B, h_k, w_k).
    knobs: sampling config of the continuations (their seed included).
    continuations: K.
    eta: the soft value's temperature.

  Returns:
    V_b = eta * log mean_k exp(R_bk / eta), float32 (B,).
  """
  many = [t for t in texts for _ in range(continuations)]
  prefix = [np.repeat(c, continuations, axis=0) for c in prefix_codes]
  images = gen.text_to_image(many, knobs, prefix_codes=prefix)
  rewards, _ = reward_fn(images.pixels, many)
  return np.asarray(grpo.soft_value(
      np.reshape(rewards, (len(texts), continuations)), eta))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Tunes the model; returns the report (also written)."""
  s = Settings.from_config(config.grpo)
  mesh, rules = common.mesh_and_rules(config)
  trained = load_model(config.model)
  model, schedule = trained.model, trained.schedule
  prefix = s.prefix_scales or len(schedule)
  weights = jnp.asarray(grpo.scale_weights(schedule, prefix, s.alpha))
  reward_fn = rewards_lib.combined(tuple(config.grpo.rewards),
                                   tuple(config.grpo.reward_weights))
  seq_len = -(-(s.max_prompt_len + 2 + scales.token_count(schedule) + 1)
              // 8) * 8
  rows = s.group_size * s.prompts_per_update
  tx = optimizers.adamw(
      config.optim.lr, warmup_steps=config.optim.warmup_steps,
      num_steps=config.train.num_steps * s.inner_steps,
      end_lr_ratio=config.optim.end_lr_ratio, b1=config.optim.b1,
      b2=config.optim.b2, weight_decay=config.optim.weight_decay,
      grad_clip=config.optim.grad_clip,
      decay_names=pretrain_step.DECAY_NAMES)

  # Policy, optimizer and reference on the mesh with the model's logical
  # shardings; the initial values are then replaced by the loaded params.
  example = sequences.example_batch(trained.layout, model.codebook_size,
                                    seq_len)

  def init_state(rng):
    params = model.init(rng, example)["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": tx.init(params)}

  state, state_shardings = common.init_sharded(
      init_state, jax.random.key(0), mesh, rules)
  param_shardings = state_shardings["params"]
  reference = jax.device_put(trained.params, param_shardings)
  # Its own buffers: the update donates the state, never the reference.
  state["params"] = jax.jit(lambda p: jax.tree.map(jnp.copy, p),
                            out_shardings=param_shardings)(reference)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 max_to_keep=config.train.keep_checkpoints)
  prompts = load_prompts(config.prompts.source)
  train_iter = prompt_iterator(prompts, s.prompts_per_update, config.seed)
  if ckpt.latest_step() is not None:
    state, _ = ckpt.restore(common.abstract_target(state),
                            data_iterator=train_iter, config=config)
    logging.info("resumed from update %d", int(state["step"]))

  gen = generator_lib.Generator.from_trained(
      trained, max_prompt_len=s.max_prompt_len + 1)
  knobs = generator_lib.SamplingConfig(
      guidance=s.guidance, temperature=s.temperature,
      top_k=s.top_k or None, top_p=1.0)
  batch_sharding = sharding.batch_sharding(mesh)
  log_probs = jax.jit(
      lambda p, b: grpo.cell_log_probs(model, p, b, s.temperature)[0],
      in_shardings=(param_shardings, batch_sharding))

  def update(state, batch, old, ref, adv):
    def loss_fn(params):
      logp, entropy = grpo.cell_log_probs(model, params, batch, s.temperature)
      loss, m = grpo.grpo_loss(logp, old, ref, batch["target_scales"], adv,
                               weights, clip_eps=s.clip_eps, beta=s.beta,
                               ratio=s.ratio)
      return loss, (m, entropy)
    (loss, (m, entropy)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"],
                                   state["params"])
    member = jax.nn.one_hot(batch["target_scales"] - 1, len(schedule))
    per_scale = jnp.einsum("bl,bls->s", entropy, member) / jnp.maximum(
        jnp.sum(member, (0, 1)), 1.0)
    return {"step": state["step"], "params": optax.apply_updates(
        state["params"], updates), "opt_state": opt_state}, dict(
            m, loss=loss, grad_norm=optax.tree.norm(grads),
            entropy=per_scale)

  update = jax.jit(update, in_shardings=(state_shardings, batch_sharding,
                                         batch_sharding, batch_sharding,
                                         batch_sharding),
                   out_shardings=(state_shardings, None), donate_argnums=0)
  writer = metrics.Writer(workdir)

  def train_step(state, prompt_batch, step):
    start = time.perf_counter()
    texts = [p["prompt"] for p in prompt_batch for _ in range(s.group_size)]
    gen.params = state["params"]
    seed = config.seed * 1_000_003 + step
    images = gen.text_to_image(texts, dataclasses.replace(knobs, seed=seed))
    total, parts = reward_fn(images.pixels, texts)
    returns = total
    if s.vmr_continuations:
      returns = prefix_values(gen, reward_fn, texts, images.codes[:prefix],
                              dataclasses.replace(knobs, seed=seed + 2**30),
                              s.vmr_continuations, s.vmr_eta)
    adv = grpo.group_advantages(returns, s.group_size)
    batch = sharding.shard_batch(rollout_batch(gen, texts, images.codes,
                                               seq_len), mesh)
    old = log_probs(state["params"], batch)
    ref = log_probs(reference, batch)
    adv = jax.device_put(adv, batch_sharding)
    for _ in range(s.inner_steps):
      state, m = update(state, batch, old, ref, adv)
    state["step"] = state["step"] + 1
    m = jax.device_get(m)
    out = {k: float(v) for k, v in m.items() if k != "entropy"}
    out.update({f"entropy/scale_{k + 1}": float(v)
                for k, v in enumerate(m["entropy"])})
    if s.vmr_continuations:
      out["vmr/value_mean"] = float(np.mean(returns))
    out.update({"reward/mean": float(total.mean()),
                "reward/std": float(total.std()),
                "rollout_tokens_per_sec": rows * scales.token_count(
                    schedule) / (time.perf_counter() - start)})
    out.update({f"reward/{k}": float(v.mean()) for k, v in parts.items()
                if len(parts) > 1})
    categories = [p["category"] for p in prompt_batch
                  for _ in range(s.group_size)]
    for name in sorted(set(categories) - {""}):
      chosen = [t for t, c in zip(total, categories) if c == name]
      out[f"category/{name}"] = float(np.mean(chosen))
    return state, out

  held_out = load_prompts(f"{SHAPES_PREFIX}heldout")[:config.eval.num_prompts]

  def evaluate(state, step):
    gen.params = state["params"]
    texts = [p["prompt"] for p in held_out]
    images = gen.text_to_image(texts, dataclasses.replace(knobs, seed=12345))
    total, _ = reward_fn(images.pixels, texts)
    grid = metrics.labeled_grid([[im] for im in images.pixels], [
        f"{t} ({r:.2f})" for t, r in zip(texts, total)])
    writer.write_scalars(step, {"eval/reward_mean": float(total.mean())})
    if jax.process_index() == 0:
      metrics.save_png(os.path.join(workdir, f"samples_{step}.png"), grid)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, step, minutes = loop.run(
        state, start_step=int(state["step"]),
        settings=loop.LoopSettings.from_config(config),
        train_iter=train_iter, train_step=train_step, ckpt=ckpt,
        writer=writer, config=config, loss_key="loss",
        params_of=lambda st: st["params"], evaluate=evaluate)
  writer.close()
  report = {"updates": step, "minutes": round(minutes, 2),
            "prefix_scales": prefix, "rollouts_per_update": rows,
            "vmr_continuations": s.vmr_continuations}
  if jax.process_index() == 0:
    # A resumed run replaces the bundle of the previous one.
    final = os.path.join(workdir, BUNDLE_DIR)
    fresh = bundle.export(
        dataclasses.replace(trained, params=jax.device_get(state["params"])),
        final + f".{step}", provenance={
            "grpo_workdir": os.path.basename(os.path.abspath(workdir)),
            "updates": step,
            "started_from": os.path.basename(os.path.abspath(config.model))})
    if os.path.exists(final):
      shutil.rmtree(final)
    os.rename(fresh, final)
    with open(os.path.join(workdir, REPORT_FILE), "w") as f:
      json.dump(report, f, indent=2)
  return report

