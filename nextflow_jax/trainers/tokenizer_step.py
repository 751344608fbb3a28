# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The vision tokenizer's train step: state, losses, optimizer (pure).

`trainers/tokenizer.py` builds these from the config and runs the loop; tests
call them directly. Loss (each weight in `LossWeights`):

  recon (L1/L2) + codebook + commit (+ entropy; these three are 0 in the
  autoencoder warm-up, `quantize=False`; with `codebook_update="kmeans"`
  the codebook term is left out and each code follows the EMA mean of the
  residuals it quantised, `quantizer.kmeans_update`)
  + semantic (contrastive with a caption encoder, or cosine to a frozen
    teacher's features; see `tokenizer/losses.py`)
  + with `use_gan`: discriminator feature matching (the perceptual term) +
    PatchGAN hinge generator loss; the discriminator trains with the hinge
    loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from nextflow_jax import optimizers
from nextflow_jax.evals import reconstruction
from nextflow_jax.tokenizer import losses
from nextflow_jax.tokenizer import model as model_lib
from nextflow_jax.tokenizer import networks
from nextflow_jax.tokenizer import quantizer as quantizer_lib


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
  # (K, D) EMA of the residuals each code took, scaled like `code_ema`; the
  # codebook itself with `codebook_update="kmeans"` (code_sum / code_ema).
  code_sum: jax.Array


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
  codebook_update: str = "gradient"  # or "kmeans"


def make_train_step(model: model_lib.VisionTokenizer,
                    disc: networks.PatchDiscriminator,
                    text_encoder: networks.TextEncoder | None,
                    teacher: tuple[networks.ViTEncoder, Any] | None,
                    schedule: quantizer_lib.Schedule, weights: LossWeights,
                    tx: optax.GradientTransformation,
                    disc_tx: optax.GradientTransformation, *, use_gan: bool,
                    scale_dropout: bool = True, quantize: bool = True):
  """Pure `(state, batch, rng) -> (state, metrics)`.

  `use_gan` (discriminator terms on), `scale_dropout` (off when only the
  decoder trains: it must see the latents of inference) and `quantize` (off
  in the autoencoder warm-up: the decoder reads the continuous latent, the
  codebook neither learns nor restarts) are static. Dead-code restarts run
  when `weights.restart_every_steps` > 0.
  """

  def generator_loss(params, disc_params, batch, rng):
    images = batch["image"]
    if quantize:
      out = model.apply({"params": params["tokenizer"]}, images, schedule,
                        train=scale_dropout, rngs={"dropout": rng})
    else:
      out = model.apply({"params": params["tokenizer"]}, images,
                        method=model.autoencode)
      zero = jnp.zeros((), jnp.float32)
      out.update(codebook_loss=zero, commit_loss=zero, entropy_loss=zero)
    terms = {
        "recon": losses.reconstruction_loss(out["recon"], images,
                                            weights.recon_kind),
        "codebook": out["codebook_loss"], "commit": out["commit_loss"],
        "entropy": out["entropy_loss"]}
    codebook_term = (terms["codebook"] if weights.codebook_update ==
                     "gradient" else 0.0)
    total = (weights.recon * terms["recon"] + weights.codebook *
             (codebook_term + terms["commit"]) +
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
    metrics_out = {f"loss/{k}": v for k, v in terms.items()}
    metrics_out.update({
        "loss/total": total,
        "grad_norm": optax.tree.norm(grads),
        # With scale dropout on, this is lower than the eval PSNR.
        "train/psnr": jnp.mean(reconstruction.psnr(out["recon"],
                                                   batch["image"])),
    })
    code_ema, code_sum = state.code_ema, state.code_sum
    if quantize:  # Codebook health: use EMA, periodic dead-code restarts.
      counts = out["code_counts"]
      freq = counts / jnp.maximum(counts.sum(), 1.0) * counts.shape[0]
      code_ema = weights.ema_decay * code_ema + (
          1.0 - weights.ema_decay) * freq
      if weights.codebook_update == "kmeans":
        new_codebook, code_sum = quantizer_lib.kmeans_update(
            params["tokenizer"]["quantizer"]["codebook"], code_sum, code_ema,
            out["residual_rows"], out["indices"], out["keep"],
            weights.ema_decay)
        params = _replace_codebook(params, new_codebook)
      num_restarted = jnp.zeros((), jnp.int32)
      if weights.restart_every_steps:
        codebook = params["tokenizer"]["quantizer"]["codebook"]
        new_codebook, new_ema, restarted = quantizer_lib.restart_dead_codes(
            codebook, code_ema, out["residual_rows"], r_restart,
            weights.dead_threshold)
        due = (state.step + 1) % weights.restart_every_steps == 0
        params = _replace_codebook(params, jnp.where(due, new_codebook,
                                                     codebook))
        code_ema = jnp.where(due, new_ema, code_ema)
        num_restarted = jnp.where(due, restarted, 0).astype(jnp.int32)
      if weights.codebook_update == "kmeans":  # Sums agree with the rows.
        code_sum = kmeans_sums(params, code_ema)
      metrics_out.update({
          "codes/usage_ema": quantizer_lib.codebook_usage(
              code_ema, weights.dead_threshold),
          "codes/batch_perplexity": quantizer_lib.perplexity(counts),
          "codes/restarted": num_restarted,
      })
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state, disc_params=disc_params,
                              disc_opt_state=disc_opt_state,
                              code_ema=code_ema, code_sum=code_sum)
    return new_state, metrics_out

  return step


def make_seed_codebook(model: model_lib.VisionTokenizer,
                       schedule: quantizer_lib.Schedule,
                       dead_threshold: float):
  """Pure `(state, batch, rng) -> state`: the end of the autoencoder
  warm-up. Every code becomes a distinct residual that the quantiser meets
  on this batch (k-means-style seeding: `restart_dead_codes` with every code
  dead), so quantisation starts from codes that fit the trained latent
  instead of the random init; use counts restart at the dead threshold."""

  def seed(state: TrainState, batch, rng):
    params = state.params
    out = model.apply({"params": params["tokenizer"]}, batch["image"],
                      schedule)
    codebook = params["tokenizer"]["quantizer"]["codebook"]
    new_codebook, code_ema, _ = quantizer_lib.restart_dead_codes(
        codebook, jnp.zeros_like(state.code_ema), out["residual_rows"], rng,
        dead_threshold)
    params = _replace_codebook(params, new_codebook)
    return state.replace(params=params, code_ema=code_ema,
                         code_sum=kmeans_sums(params, code_ema))

  return seed


def kmeans_sums(params, code_ema):
  """`code_sum` for which code_sum / code_ema is the current codebook."""
  codebook = params["tokenizer"]["quantizer"]["codebook"]
  return codebook.astype(jnp.float32) * code_ema[:, None]


def _replace_codebook(params, codebook):
  tok = dict(params["tokenizer"])
  tok["quantizer"] = {**tok["quantizer"], "codebook": codebook}
  return {**params, "tokenizer": tok}


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int,
                   params: Any, stage: str) -> optax.GradientTransformation:
  """AdamW (`optimizers.adamw`: warmup + cosine, clipping, decay on conv and
  dense kernels only, never on norms, biases, codebook or positional
  tables); in the decoder stage only `tokenizer/pixel_decoder` trains (the
  rest gets zero updates)."""
  adamw = optimizers.adamw(
      optim.lr, warmup_steps=optim.warmup_steps, num_steps=num_steps,
      end_lr_ratio=optim.end_lr_ratio, b1=optim.b1, b2=optim.b2,
      weight_decay=optim.weight_decay, grad_clip=optim.grad_clip)
  if stage != "decoder":
    return adamw
  labels = jax.tree_util.tree_map_with_path(
      lambda path, _: "train" if "pixel_decoder" in jax.tree_util.keystr(path)
      else "freeze", params)
  return optax.multi_transform({"train": adamw, "freeze": optax.set_to_zero()},
                               labels)
