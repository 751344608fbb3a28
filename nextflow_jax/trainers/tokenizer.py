# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Vision tokenizer trainer (`config.trainer = "tokenizer"`).

Loss (each weight in `config.loss`; the step is `tokenizer_step.py`):
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
Codebook learning (`codes.codebook_update`): "gradient" (the codebook loss,
VAR / TokenFlow) or "kmeans" (each code follows the EMA mean of the
residuals it quantised, decay `codes.ema_decay`; VQ-VAE-2 / SoundStream).
Autoencoder warm-up (`codes.autoencoder_steps`, 0 = off): for that many
steps the decoder reads the continuous latent (no quantiser, no codebook
terms); then every code is seeded from the residuals of one batch and
quantised training goes on. Our choice, not the paper's: on 32 px shapes,
experiments/tokenizer_probe.py (with a k-means codebook) reconstructed at
20.4 dB, shapes-GenEval 0.41 after 400 warm-up + 400 quantised steps, where
400 quantised steps from scratch stayed at 15 dB, 0.00; this trainer's
gradient-learned codebook with the warm-up is not yet measured at that scale
(experiments/README.md).
Outputs in the workdir: checkpoints/, TensorBoard events, log.txt,
samples_<step>.png (rows: original, the schedule's prefixes, full
reconstruction), eval_<step>.json and tokenizer_report.json.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nextflow_jax import checkpoint
from nextflow_jax import metrics
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax import workdirs
from nextflow_jax.data import shapes
from nextflow_jax.data import transforms
from nextflow_jax.evals import reconstruction
from nextflow_jax.evals import shapes_geneval
from nextflow_jax.tokenizer import networks
from nextflow_jax.trainers import common
from nextflow_jax.trainers import loop
from nextflow_jax.trainers import tokenizer_step

REPORT_FILE = "tokenizer_report.json"
STAGES = ("pixel", "joint", "decoder")


def _teacher(config) -> tuple[networks.ViTEncoder, Any]:
  sem = config.semantic
  teacher = networks.ViTEncoder(
      patch_size=workdirs.build_tokenizer(config.tokenizer).downsample,
      width=sem.teacher_width, depth=sem.teacher_depth,
      num_heads=sem.teacher_heads, mlp_dim=sem.teacher_mlp_dim)
  if not os.path.isdir(sem.teacher_checkpoint):
    raise FileNotFoundError(
        f"config.semantic.teacher_checkpoint={sem.teacher_checkpoint!r} is not "
        "a folder; save the teacher's params with "
        "`orbax.checkpoint.StandardCheckpointer().save(path, params)`.")
  size = config.data.image_size
  abstract = nn.unbox(jax.eval_shape(teacher.init, jax.random.key(0),
                                     jnp.zeros((1, size, size, 3)))["params"])
  params = checkpoint.load_tree(sem.teacher_checkpoint)
  def shapes_of(tree):
    return {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
  if shapes_of(params) != shapes_of(abstract):
    raise ValueError(
        f"teacher checkpoint {sem.teacher_checkpoint} does not match a "
        f"ViTEncoder(width={sem.teacher_width}, depth={sem.teacher_depth}, "
        f"heads={sem.teacher_heads}, mlp={sem.teacher_mlp_dim}).")
  return teacher, jax.tree.map(jnp.asarray, params)


def merge_previous_stage(fresh: Any, previous: Any, semantic_dim: int,
                         use_semantic: bool, reseed_codebook: bool = False
                         ) -> tuple[Any, list[str]]:
  """Copies every previous-stage tokenizer param whose path and shape match.

  The codebook of a pixel-only stage (K, pixel_dim) goes into the pixel
  columns of a dual codebook (K, semantic_dim + pixel_dim). Only the pixel
  decoder may change shape between stages (stage 3 widens it), and the
  codebook when `reseed_codebook` (this run seeds every code from residuals
  after its autoencoder warm-up, so a codebook of another size K starts
  from the previous encoder and decoder: re-quantising a trained
  autoencoder). Any other param that both have with different shapes
  (channels, ...) is an error, since training on would start that part
  from scratch without a word. Returns the merged params and the copied
  paths.

  Raises:
    ValueError: shared params differ in shape (each one named).
  """
  flat_prev = {jax.tree_util.keystr(p): v for p, v in
               jax.tree_util.tree_flatten_with_path(previous)[0]}
  copied, mismatched = [], []

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
    reseeded = reseed_codebook and key.endswith("['codebook']")
    if "pixel_decoder" not in key and not reseeded:
      mismatched.append(f"{key}: previous {tuple(old.shape)} vs this "
                        f"{tuple(value.shape)}")
    return value

  merged = jax.tree_util.tree_map_with_path(pick, fresh)
  if mismatched:
    shown = "; ".join(mismatched[:5])
    raise ValueError(
        f"config.init_from: {len(mismatched)} parameters of the previous "
        f"stage have other shapes ({shown}{' ...' if len(mismatched) > 5 else ''}"
        "); a later stage must keep the tokenizer's pixel_dim, channels "
        "and channel_mults (only the decoder may change), and its "
        "codebook_size unless codes.autoencoder_steps > 0 re-seeds the "
        "codebook.")
  return merged, copied


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the tokenizer; returns the final report (also written)."""
  if config.stage not in STAGES:
    raise ValueError(f"config.stage={config.stage!r}; choose one of {STAGES}.")
  mesh, rules = common.mesh_and_rules(config)
  schedule = workdirs.tokenizer_schedule(config.tokenizer)
  model = workdirs.build_tokenizer(config.tokenizer)
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
  # The text tokenizer is trained here for the jobs that read this workdir
  # (extraction and pretraining take it from here); captions feed this
  # trainer only with the contrastive objective.
  text_tok, _ = common.ensure_text_tokenizer(workdir, train_sources,
                                             config.text)
  keep = "'image'"
  spec = config.data.transforms
  tok_path = None
  if objective == "contrastive":
    spec += "|tokenize(max_len={max_text_len})"
    keep += ",'tokens','tokens_mask'"
    tok_path = text_tok.source
  transform_spec = f"{spec}|keep({keep})"
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
    tx = tokenizer_step.make_optimizer(config.optim, num_steps, params,
                                       config.stage)
    disc_tx = tokenizer_step.make_optimizer(config.disc_optim, num_steps,
                                            disc_params, "all")
    return tokenizer_step.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state=tx.init(params), disc_params=disc_params,
        disc_opt_state=disc_tx.init(disc_params),
        code_ema=jnp.ones((model.codebook_size,), jnp.float32),
        code_sum=jnp.asarray(nn.unbox(
            params["tokenizer"]["quantizer"]["codebook"]), jnp.float32))

  state, state_shardings = common.init_sharded(
      init_state, jax.random.key(config.seed), mesh, rules)
  tx = tokenizer_step.make_optimizer(config.optim, num_steps, state.params,
                                     config.stage)
  disc_tx = tokenizer_step.make_optimizer(config.disc_optim, num_steps,
                                          state.disc_params, "all")
  n_params = sum(x.size for x in jax.tree.leaves(state.params["tokenizer"]))
  logging.info("tokenizer parameters: %.2fM (downsample %d, schedule %s, %d "
               "tokens per image)", n_params / 1e6, model.downsample,
               config.tokenizer.scales, scales.token_count(schedule))

  train_iter = common.make_iterator(config, train_sources, tok_path,
                                    spec=transform_spec)
  if ckpt.latest_step() is not None:  # 1. resume this run
    state, _ = ckpt.restore(common.abstract_target(state),
                            data_iterator=train_iter, config=config)
    logging.info("resumed from step %d", int(state.step))
  elif config.init_from:  # 2. previous stage
    previous = checkpoint.Checkpointer(
        os.path.join(config.init_from, "checkpoints")).restore_raw()
    try:
      merged, copied = merge_previous_stage(
          state.params["tokenizer"], previous["params"]["tokenizer"],
          config.tokenizer.semantic_dim, config.tokenizer.use_semantic,
          reseed_codebook=config.codes.autoencoder_steps > 0)
    except ValueError as e:
      raise ValueError(f"{e} init_from={config.init_from!r}.") from None
    if not copied:
      raise ValueError(f"config.init_from={config.init_from!r}: no parameter "
                       "matches this tokenizer; is it a tokenizer workdir?")
    merged = jax.device_put(merged, state_shardings.params["tokenizer"])
    params = {**state.params, "tokenizer": merged}
    state = state.replace(params=params, code_sum=tokenizer_step.kmeans_sums(
        params, state.code_ema))
    logging.info("init_from %s: copied %d tensors", config.init_from,
                 len(copied))

  weights = tokenizer_step.LossWeights(
      recon_kind=config.loss.recon_kind, recon=config.loss.recon_weight,
      perceptual=config.loss.perceptual_weight, gan=config.loss.gan_weight,
      codebook=config.loss.codebook_weight,
      entropy=config.loss.entropy_weight,
      semantic=config.loss.semantic_weight, ema_decay=config.codes.ema_decay,
      dead_threshold=config.codes.dead_threshold,
      codebook_update=config.codes.codebook_update,
      # The decoder stage keeps the codebook of the joint stage as it is.
      restart_every_steps=(config.codes.restart_every_steps
                           if config.stage != "decoder" else 0))
  batch_sharding = sharding.batch_sharding(mesh)

  @functools.lru_cache(maxsize=3)
  def compiled_step(use_gan: bool, quantize: bool):
    step = tokenizer_step.make_train_step(
        model, disc, text_encoder, teacher, schedule, weights, tx, disc_tx,
        use_gan=use_gan, scale_dropout=config.stage != "decoder",
        quantize=quantize)
    return jax.jit(step, in_shardings=(state_shardings, batch_sharding, None),
                   out_shardings=(state_shardings, None), donate_argnums=0)

  autoencoder_steps = config.codes.autoencoder_steps
  seed_codebook = jax.jit(
      tokenizer_step.make_seed_codebook(model, schedule,
                                        config.codes.dead_threshold),
      in_shardings=(state_shardings, batch_sharding, None),
      out_shardings=state_shardings, donate_argnums=0)

  eval_fns = (reconstruction.make_eval_fn(model, schedule),
              reconstruction.make_preview_fn(model, schedule),
              reconstruction.make_reconstruct_fn(model, schedule))
  writer = metrics.Writer(workdir)
  rng = jax.random.key(config.seed + 1)

  def train_step(state, batch, step):
    batch = _device_batch(batch, mesh)
    if autoencoder_steps and step == autoencoder_steps:
      logging.info("step %d: autoencoder warm-up done; seeding the codebook "
                   "from this batch's residuals", step)
      state = seed_codebook(state, batch, jax.random.fold_in(rng, 0x5EED))
    return compiled_step(step >= config.loss.gan_start_step,
                         step >= autoencoder_steps)(state, batch, rng)

  def evaluate(state, step):
    _evaluate(config, workdir, eval_fns, state.params["tokenizer"],
              eval_sources, tok_path, transform_spec, mesh, writer, step)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, step, minutes = loop.run(
        state, start_step=int(state.step),
        settings=loop.LoopSettings.from_config(config),
        train_iter=train_iter, train_step=train_step, ckpt=ckpt,
        writer=writer, config=config, loss_key="loss/total",
        evaluate=evaluate)
  train_iter.close()
  report = {"steps": step, "minutes": round(minutes, 2),
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
  samples_<step>.png grid (rows: original, then 1..K scales decoded).

  For shapes sources, also the prompt-following ceiling: shapes-GenEval of
  the reconstructions of the first `eval.geneval_images` held-out images
  (`shapes_geneval.score_scenes`); no generator can beat it."""
  eval_fn, preview_fn, reconstruct_fn = eval_fns
  result = {}
  for name, source in zip(config.data.sources, eval_sources):
    it = common.make_iterator(config, [source], tok_path, spec=spec,
                              batch_size=config.eval.batch_size,
                              shuffle=False, num_epochs=1, weights=())
    result[name] = reconstruction.evaluate(
        eval_fn, params, (_device_batch(b, mesh) for b in it),
        config.eval.num_batches)
    it.close()
    if name.startswith("shapes/") and config.eval.geneval_images:
      ceiling = _shapes_ceiling(reconstruct_fn, params, source, config, mesh)
      result[name]["geneval_overall"] = ceiling["overall"]
      result[name]["geneval"] = ceiling
  n = sum(r["num_images"] for r in result.values())
  result["all"] = {k: sum(r[k] * r["num_images"] for r in result.values()) / n
                   for k in ("psnr", "ssim")}
  writer.write_scalars(step, {f"eval/{name}/{k}": v
                              for name, r in result.items()
                              for k, v in r.items() if k != "geneval"})
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


def _shapes_ceiling(reconstruct_fn, params, source, config, mesh) -> dict:
  """shapes-GenEval of reconstructed held-out shapes images."""
  size, batch = config.data.image_size, config.eval.batch_size
  records = [source[i] for i in range(min(config.eval.geneval_images,
                                          len(source)))]
  scenes = [shapes.Scene.from_json(r["scene"]) for r in records]
  prepare = transforms.parse(f"check_image|resize({size})|to_float")
  images = np.stack([transforms.apply(prepare, {"image": r["image"],
                                                "id": i})["image"]
                     for i, r in enumerate(records)])
  recons = []
  for start in range(0, len(images), batch):
    part = images[start:start + batch]
    padded = np.concatenate([part, np.repeat(part[-1:], batch - len(part),
                                             0)])
    recons.append(np.asarray(reconstruct_fn(
        params, sharding.shard_batch(padded, mesh)))[:len(part)])
  return shapes_geneval.score_scenes(np.concatenate(recons), scenes)


def _read_eval(workdir: str, step: int) -> dict:
  path = os.path.join(workdir, f"eval_{step}.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)
