# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Vision tokenizer trainer (`config.trainer = "tokenizer"`).

Loss (each weight in `config.loss`):
  recon (L1/L2) + codebook + commit (+ entropy)
  + semantic (contrastive with a caption encoder, or cosine to a frozen
    teacher's features; see `tokenizer/losses.py`)
  + from `loss.gan_start_step` on: discriminator feature matching
    (the perceptual term) + PatchGAN hinge generator loss; the
    discriminator trains with the hinge loss from then on.

Stages (`config.stage`), as in the paper's recipe (section 3.6):
  "pixel"   pixel branch alone (`tokenizer.use_semantic=False`);
  "joint"   both branches; `init_from` a pixel-stage workdir copies the
            pixel encoder, decoder and codebook (into the pixel columns);
  "decoder" encoders and codebook frozen, only the pixel decoder (made
            larger with `tokenizer.decoder_channels`) and the
            discriminator train; `init_from` the joint-stage workdir.

Resume order: the workdir's latest checkpoint (state + data position) >
`init_from` (partial copy of a previous stage) > scratch.
Codebook health: an EMA of per-code use frequency (1.0 = uniform); every
`codes.restart_every_steps` steps, codes below `codes.dead_threshold` are
restarted from latents of the batch.
Outputs in the workdir: checkpoints/, TensorBoard events, log.txt,
samples_<step>.png (rows: original, the schedule's prefixes, full
reconstruction), eval_<step>.json and tokenizer_report.json.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from nextflow_jax import checkpoint
from nextflow_jax import metrics
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax.evals import reconstruction
from nextflow_jax.tokenizer import losses
from nextflow_jax.tokenizer import model as model_lib
from nextflow_jax.tokenizer import networks
from nextflow_jax.tokenizer import quantizer as quantizer_lib
from nextflow_jax.trainers import common

REPORT_FILE = "tokenizer_report.json"
STAGES = ("pixel", "joint", "decoder")


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. `params` holds `tokenizer` and, with the
  contrastive objective, `text_encoder` and `log_scale`."""
  step: jax.Array
  params: Any
  opt_state: Any
  disc_params: Any
  disc_opt_state: Any
  code_ema: jax.Array  # (K,) use frequency, 1.0 = uniform


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Plain loss settings, read once from `config.loss` and `config.codes`."""
  recon_kind: str
  recon: float
  perceptual: float
  gan: float
  codebook: float
  entropy: float
  semantic: float
  ema_decay: float
  dead_threshold: float
  restart_every_steps: int


def model_from_config(cfg: ml_collections.ConfigDict
                      ) -> model_lib.VisionTokenizer:
  """Builds the tokenizer from `config.tokenizer` (keys named as fields)."""
  fields = {f.name for f in dataclasses.fields(model_lib.VisionTokenizer)}
  kwargs = {k: v for k, v in cfg.items() if k in fields}
  for key in ("dtype", "param_dtype"):
    if key in kwargs:
      kwargs[key] = jnp.dtype(kwargs[key])
  kwargs["channel_mults"] = tuple(kwargs["channel_mults"])
  kwargs["decoder_channels"] = kwargs.get("decoder_channels") or None
  kwargs["decoder_num_res_blocks"] = kwargs.get("decoder_num_res_blocks") or None
  return model_lib.VisionTokenizer(**kwargs)


def schedule_from_config(cfg: ml_collections.ConfigDict
                         ) -> quantizer_lib.Schedule:
  return scales.parse_schedule(cfg.scales)


def _teacher(config) -> tuple[networks.ViTEncoder, Any]:
  sem = config.semantic
  teacher = networks.ViTEncoder(
      patch_size=2 ** (len(config.tokenizer.channel_mults) - 1),
      width=sem.teacher_width, depth=sem.teacher_depth,
      num_heads=sem.teacher_heads, mlp_dim=sem.teacher_mlp_dim)
  if not os.path.isdir(sem.teacher_checkpoint):
    raise FileNotFoundError(
        f"config.semantic.teacher_checkpoint={sem.teacher_checkpoint!r} is not "
        "a folder; save the teacher's params with "
        "`orbax.checkpoint.StandardCheckpointer().save(path, params)`.")
  size = config.data.image_size
  abstract = jax.eval_shape(teacher.init, jax.random.key(0),
                            jnp.zeros((1, size, size, 3)))["params"]
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        nn.unbox(abstract))
  try:
    params = ocp.StandardCheckpointer().restore(
        os.path.abspath(sem.teacher_checkpoint), target)
  except (ValueError, KeyError) as e:
    raise ValueError(
        f"teacher checkpoint {sem.teacher_checkpoint} does not match a "
        f"ViTEncoder(width={sem.teacher_width}, depth={sem.teacher_depth}, "
        f"heads={sem.teacher_heads}, mlp={sem.teacher_mlp_dim}): {e}") from e
  return teacher, params


def make_train_step(model: model_lib.VisionTokenizer,
                    disc: networks.PatchDiscriminator,
                    text_encoder: networks.TextEncoder | None,
                    teacher: tuple[networks.ViTEncoder, Any] | None,
                    schedule: quantizer_lib.Schedule, weights: LossWeights,
                    tx: optax.GradientTransformation,
                    disc_tx: optax.GradientTransformation, *, use_gan: bool,
                    scale_dropout: bool = True):
  """Pure `(state, batch, rng) -> (state, metrics)`.

  `use_gan` (discriminator terms on) and `scale_dropout` (off when only the
  decoder trains: it must see the latents of inference) are static.
  Dead-code restarts run when `weights.restart_every_steps` > 0.
  """

  def generator_loss(params, disc_params, batch, rng):
    images = batch["image"]
    out = model.apply({"params": params["tokenizer"]}, images, schedule,
                      train=scale_dropout, rngs={"dropout": rng})
    terms = {
        "recon": losses.reconstruction_loss(out["recon"], images,
                                            weights.recon_kind),
        "codebook": out["codebook_loss"], "commit": out["commit_loss"],
        "entropy": out["entropy_loss"]}
    total = (weights.recon * terms["recon"] + weights.codebook *
             (terms["codebook"] + terms["commit"]) +
             weights.entropy * terms["entropy"])
    if text_encoder is not None:
      text = text_encoder.apply({"params": params["text_encoder"]},
                                batch["tokens"], batch["tokens_mask"])
      terms["semantic"], terms["clip_accuracy"] = losses.contrastive_loss(
          jnp.mean(out["semantic"], axis=(1, 2)), text, params["log_scale"])
      total += weights.semantic * terms["semantic"]
    elif teacher is not None:
      _, features = teacher[0].apply({"params": teacher[1]}, images,
                                     return_features=True)
      terms["semantic"] = losses.cosine_distance_loss(out["semantic"],
                                                      features)
      total += weights.semantic * terms["semantic"]
    if use_gan:
      logits_fake, feats_fake = disc.apply({"params": disc_params},
                                           out["recon"])
      _, feats_real = disc.apply({"params": disc_params}, images)
      terms["perceptual"] = losses.feature_matching_loss(feats_real,
                                                         feats_fake)
      terms["gan_g"] = losses.hinge_generator_loss(logits_fake)
      total += weights.perceptual * terms["perceptual"] + (
          weights.gan * terms["gan_g"])
    return total, (out, terms)

  def step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    r_drop, r_restart = jax.random.split(rng)
    (total, (out, terms)), grads = jax.value_and_grad(
        generator_loss, has_aux=True)(state.params, state.disc_params, batch,
                                      r_drop)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
    if use_gan:
      def disc_loss(dp):
        real, _ = disc.apply({"params": dp}, batch["image"])
        fake, _ = disc.apply({"params": dp},
                             jax.lax.stop_gradient(out["recon"]))
        return losses.hinge_discriminator_loss(real, fake)
      terms["gan_d"], d_grads = jax.value_and_grad(disc_loss)(disc_params)
      d_updates, disc_opt_state = disc_tx.update(d_grads, disc_opt_state,
                                                 disc_params)
      disc_params = optax.apply_updates(disc_params, d_updates)
    # Codebook health: EMA of use frequency, periodic dead-code restarts.
    counts = out["code_counts"]
    freq = counts / jnp.maximum(counts.sum(), 1.0) * counts.shape[0]
    code_ema = weights.ema_decay * state.code_ema + (
        1.0 - weights.ema_decay) * freq
    num_restarted = jnp.zeros((), jnp.int32)
    if weights.restart_every_steps:
      codebook = params["tokenizer"]["quantizer"]["codebook"]
      new_codebook, new_ema, restarted = quantizer_lib.restart_dead_codes(
          codebook, code_ema, out["residual_rows"], r_restart,
          weights.dead_threshold, model.branch_dims)
      due = (state.step + 1) % weights.restart_every_steps == 0
      params = _replace_codebook(params, jnp.where(due, new_codebook,
                                                   codebook))
      code_ema = jnp.where(due, new_ema, code_ema)
      num_restarted = jnp.where(due, restarted, 0).astype(jnp.int32)
    metrics_out = {f"loss/{k}": v for k, v in terms.items()}
    metrics_out.update({
        "loss/total": total,
        "grad_norm": optax.tree.norm(grads),
        "codes/usage_ema": quantizer_lib.codebook_usage(
            code_ema, weights.dead_threshold),
        "codes/batch_perplexity": quantizer_lib.perplexity(counts),
        "codes/restarted": num_restarted,
        # With scale dropout on, this is lower than the eval PSNR.
        "train/psnr": jnp.mean(reconstruction.psnr(out["recon"],
                                                   batch["image"])),
    })
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state, disc_params=disc_params,
                              disc_opt_state=disc_opt_state,
                              code_ema=code_ema)
    return new_state, metrics_out

  return step


def _replace_codebook(params, codebook):
  tok = dict(params["tokenizer"])
  tok["quantizer"] = {**tok["quantizer"], "codebook": codebook}
  return {**params, "tokenizer": tok}


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int,
                   params: Any, stage: str) -> optax.GradientTransformation:
  """AdamW + warmup-cosine + clipping; in the decoder stage only
  `tokenizer/pixel_decoder` trains (the rest gets zero updates)."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, optim.lr, optim.warmup_steps, max(num_steps, optim.warmup_steps + 1),
      end_value=optim.lr * optim.end_lr_ratio)
  adamw = optax.chain(
      optax.clip_by_global_norm(optim.grad_clip),
      optax.adamw(schedule, b1=optim.b1, b2=optim.b2,
                  weight_decay=optim.weight_decay))
  if stage != "decoder":
    return adamw
  labels = jax.tree_util.tree_map_with_path(
      lambda path, _: "train" if "pixel_decoder" in jax.tree_util.keystr(path)
      else "freeze", params)
  return optax.multi_transform({"train": adamw, "freeze": optax.set_to_zero()},
                               labels)


def merge_previous_stage(fresh: Any, previous: Any, semantic_dim: int,
                         use_semantic: bool) -> tuple[Any, list[str]]:
  """Copies every previous-stage tokenizer param whose path and shape match.

  The codebook of a pixel-only stage (K, pixel_dim) goes into the pixel
  columns of a dual codebook (K, semantic_dim + pixel_dim). Returns the
  merged params and the list of copied paths.
  """
  flat_prev = {jax.tree_util.keystr(p): v for p, v in
               jax.tree_util.tree_flatten_with_path(previous)[0]}
  copied = []

  def pick(path, value):
    key = jax.tree_util.keystr(path)
    old = flat_prev.get(key)
    if old is None:
      return value
    if old.shape == value.shape:
      copied.append(key)
      return jnp.asarray(old, value.dtype)
    if key.endswith("['codebook']") and use_semantic and (
        old.shape[0] == value.shape[0] and
        old.shape[1] + semantic_dim == value.shape[1]):
      copied.append(key + " (pixel columns)")
      return value.at[:, semantic_dim:].set(jnp.asarray(old, value.dtype))
    return value

  return jax.tree_util.tree_map_with_path(pick, fresh), copied


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the tokenizer; returns the final report (also written)."""
  if config.stage not in STAGES:
    raise ValueError(f"config.stage={config.stage!r}; choose one of {STAGES}.")
  mesh, rules = common.mesh_and_rules(config)
  schedule = schedule_from_config(config.tokenizer)
  model = model_from_config(config.tokenizer)
  objective = config.semantic.objective if config.tokenizer.use_semantic else (
      "none")
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 max_to_keep=config.train.keep_checkpoints)
  if config.stage == "decoder" and ckpt.latest_step() is None and (
      not config.init_from):
    raise ValueError("config.stage='decoder' fine-tunes the decoder of a "
                     "trained tokenizer: set config.init_from to the workdir "
                     "of the joint stage.")
  train_sources = common.open_sources(config.data, config.data.split)
  eval_sources = common.open_sources(config.data, config.data.eval_split)
  # Captions are only needed by the contrastive objective.
  text_tok = None
  keep = "'image'"
  spec = config.data.transforms
  if objective == "contrastive":
    text_tok, _ = common.ensure_text_tokenizer(workdir, train_sources,
                                               config.text)
    spec += "|tokenize(max_len={max_text_len})"
    keep += ",'tokens','tokens_mask'"
  transform_spec = f"{spec}|keep({keep})"
  tok_path = text_tok.source if text_tok else None
  size = config.data.image_size
  disc = networks.PatchDiscriminator(channels=config.disc.channels,
                                     num_layers=config.disc.num_layers,
                                     num_groups=config.disc.num_groups)
  text_encoder = teacher = None
  if objective == "contrastive":
    sem = config.semantic
    text_encoder = networks.TextEncoder(
        vocab_size=text_tok.vocab_size, width=sem.text_width,
        depth=sem.text_depth, num_heads=sem.text_heads,
        mlp_dim=sem.text_width * 4, max_len=config.data.max_text_len,
        out_dim=config.tokenizer.semantic_out_dim)
  elif objective == "teacher":
    teacher = _teacher(config)
  num_steps = config.train.num_steps
  images0 = jnp.zeros((1, size, size, 3))
  tokens0 = jnp.zeros((1, config.data.max_text_len), jnp.int32)

  def init_params(rng):
    r_tok, r_text = jax.random.split(rng)
    params = {"tokenizer": model.init(r_tok, images0, schedule)["params"]}
    if text_encoder is not None:
      params["text_encoder"] = text_encoder.init(
          r_text, tokens0, tokens0 > 0)["params"]
      params["log_scale"] = jnp.log(jnp.float32(10.0))
    return params

  def init_state(rng):
    r_params, r_disc = jax.random.split(rng)
    params = init_params(r_params)
    disc_params = disc.init(r_disc, images0)["params"]
    tx = make_optimizer(config.optim, num_steps, params, config.stage)
    disc_tx = make_optimizer(config.disc_optim, num_steps, disc_params, "all")
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state=tx.init(params), disc_params=disc_params,
        disc_opt_state=disc_tx.init(disc_params),
        code_ema=jnp.ones((model.codebook_size,), jnp.float32))

  state, state_shardings = common.init_sharded(
      init_state, jax.random.key(config.seed), mesh, rules)
  tx = make_optimizer(config.optim, num_steps, state.params, config.stage)
  disc_tx = make_optimizer(config.disc_optim, num_steps, state.disc_params,
                           "all")
  n_params = sum(x.size for x in jax.tree.leaves(state.params["tokenizer"]))
  logging.info("tokenizer parameters: %.2fM (downsample %d, schedule %s, %d "
               "tokens per image)", n_params / 1e6, model.downsample,
               config.tokenizer.scales, scales.token_count(schedule))

  train_iter = common.make_iterator(config, train_sources, tok_path,
                                    spec=transform_spec)
  if ckpt.latest_step() is not None:  # 1. resume this run
    state, _ = ckpt.restore(common.abstract_target(state),
                            data_iterator=train_iter)
    logging.info("resumed from step %d", int(state.step))
  elif config.init_from:  # 2. previous stage
    previous = checkpoint.Checkpointer(
        os.path.join(config.init_from, "checkpoints")).restore_raw()
    merged, copied = merge_previous_stage(
        state.params["tokenizer"], previous["params"]["tokenizer"],
        config.tokenizer.semantic_dim, config.tokenizer.use_semantic)
    if not copied:
      raise ValueError(f"config.init_from={config.init_from!r}: no parameter "
                       "matches this tokenizer; is it a tokenizer workdir?")
    merged = jax.device_put(merged, state_shardings.params["tokenizer"])
    state = state.replace(params={**state.params, "tokenizer": merged})
    logging.info("init_from %s: copied %d tensors", config.init_from,
                 len(copied))

  weights = LossWeights(
      recon_kind=config.loss.recon_kind, recon=config.loss.recon_weight,
      perceptual=config.loss.perceptual_weight, gan=config.loss.gan_weight,
      codebook=config.loss.codebook_weight,
      entropy=config.loss.entropy_weight,
      semantic=config.loss.semantic_weight, ema_decay=config.codes.ema_decay,
      dead_threshold=config.codes.dead_threshold,
      # The decoder stage keeps the codebook of the joint stage as it is.
      restart_every_steps=(config.codes.restart_every_steps
                           if config.stage != "decoder" else 0))
  batch_sharding = sharding.batch_sharding(mesh)

  @functools.lru_cache(maxsize=2)
  def compiled_step(use_gan: bool):
    step = make_train_step(model, disc, text_encoder, teacher, schedule,
                           weights, tx, disc_tx, use_gan=use_gan,
                           scale_dropout=config.stage != "decoder")
    return jax.jit(step, in_shardings=(state_shardings, batch_sharding, None),
                   out_shardings=(state_shardings, None), donate_argnums=0)

  eval_fns = (reconstruction.make_eval_fn(model, schedule),
              reconstruction.make_preview_fn(model, schedule))
  writer = metrics.Writer(workdir)
  start = int(state.step)
  progress = metrics.Progress(num_steps, start)
  rng = jax.random.key(config.seed + 1)
  t_start = time.perf_counter()
  step = start
  # try/finally: pending asynchronous saves finish even when training stops
  # with an error, so the last checkpoint is always complete.
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      while step < num_steps:
        batch = _device_batch(next(train_iter), mesh)
        state, step_metrics = compiled_step(
            step >= config.loss.gan_start_step)(state, batch, rng)
        step += 1
        out_of_time = config.train.max_minutes and (
            time.perf_counter() - t_start > 60 * config.train.max_minutes)
        last = step == num_steps or out_of_time
        if step % config.train.log_every_steps == 0 or last:
          values = jax.device_get(step_metrics)
          common.check_finite(float(values["loss/total"]), step,
                              ckpt.latest_step())
          writer.write_scalars(step, {**values, **progress.update(step)})
        if step % config.train.ckpt_every_steps == 0 or last:
          ckpt.save(step, state, data_iterator=train_iter, config=config)
        if config.eval.num_batches and (
            step % config.train.eval_every_steps == 0 or last):
          _evaluate(config, workdir, eval_fns, state.params["tokenizer"],
                    eval_sources, tok_path, transform_spec, mesh, writer, step)
        if out_of_time:
          logging.info("stopping at step %d: train.max_minutes=%s reached",
                       step, config.train.max_minutes)
          break
  finally:
    ckpt.close()
  train_iter.close()
  report = {"steps": step, "minutes": round((time.perf_counter() - t_start)
                                            / 60, 2),
            "parameters_millions": round(n_params / 1e6, 3),
            "eval": _read_eval(workdir, step)}
  writer.close()
  if jax.process_index() == 0:
    with open(os.path.join(workdir, REPORT_FILE), "w") as f:
      json.dump(report, f, indent=2)
  return report


def _device_batch(batch: dict, mesh) -> dict:
  """Numeric arrays of a host batch as global sharded arrays."""
  return sharding.shard_batch(
      {k: v for k, v in batch.items() if k in ("image", "tokens",
                                                "tokens_mask")}, mesh)


def _evaluate(config, workdir, eval_fns, params, eval_sources, tok_path,
              spec, mesh, writer, step) -> None:
  """Held-out metrics per source and overall (eval_<step>.json), and a
  samples_<step>.png grid (rows: original, then 1..K scales decoded)."""
  eval_fn, preview_fn = eval_fns
  result = {}
  for name, source in zip(config.data.sources, eval_sources):
    it = common.make_iterator(config, [source], tok_path, spec=spec,
                              batch_size=config.eval.batch_size,
                              shuffle=False, num_epochs=1, weights=())
    result[name] = reconstruction.evaluate(
        eval_fn, params, (_device_batch(b, mesh) for b in it),
        config.eval.num_batches)
    it.close()
  n = sum(r["num_images"] for r in result.values())
  result["all"] = {k: sum(r[k] * r["num_images"] for r in result.values()) / n
                   for k in ("psnr", "ssim")}
  writer.write_scalars(step, {f"eval/{name}/{k}": v
                              for name, r in result.items()
                              for k, v in r.items()})
  it = common.make_iterator(config, eval_sources, tok_path, spec=spec,
                            batch_size=config.eval.batch_size, shuffle=False,
                            num_epochs=1)
  first = _device_batch(next(it), mesh)
  it.close()
  images = np.asarray(first["image"])[:config.eval.num_samples]
  previews = np.asarray(preview_fn(params, first["image"]))[:len(images)]
  rows = np.concatenate([images[:, None], previews], axis=1)
  grid = metrics.image_grid(rows.reshape(-1, *rows.shape[2:]),
                            num_cols=rows.shape[1])
  writer.write_images(step, {"samples": grid})
  if jax.process_index() == 0:
    metrics.save_png(os.path.join(workdir, f"samples_{step}.png"), grid)
    with open(os.path.join(workdir, f"eval_{step}.json"), "w") as f:
      json.dump(result, f, indent=2)


def _read_eval(workdir: str, step: int) -> dict:
  path = os.path.join(workdir, f"eval_{step}.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)
