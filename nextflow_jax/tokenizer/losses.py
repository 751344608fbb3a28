# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tokenizer training losses (pure functions, float32).

* Reconstruction: L1 or L2 between images in [-1, 1].
* Perceptual: no pretrained network can be downloaded here (LPIPS needs
  VGG weights), so the perceptual term is discriminator feature matching
  (pix2pixHD): the mean L1 distance between the discriminator's intermediate
  activations on real and reconstructed images. It compares local structure
  at several receptive fields, which is the role LPIPS plays.
* Adversarial: PatchGAN hinge losses (taming-transformers, TokenFlow).
* Semantic: with a frozen teacher, 1 - cos(semantic decoder output, teacher
  features) per token (TokenFlow). Without one, the default is a CLIP-style
  symmetric contrastive loss between the pooled semantic decoder output of
  the quantised latent and a jointly trained caption encoder. This makes the
  semantic codes carry what the captions say, with nothing downloaded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def reconstruction_loss(x: jax.Array, y: jax.Array, kind: str) -> jax.Array:
  """Mean L1 ("l1") or squared ("l2") error."""
  diff = x.astype(jnp.float32) - y.astype(jnp.float32)
  if kind == "l1":
    return jnp.mean(jnp.abs(diff))
  if kind == "l2":
    return jnp.mean(diff * diff)
  raise ValueError(f"reconstruction loss {kind!r}; use 'l1' or 'l2'.")


def feature_matching_loss(real_features: list[jax.Array],
                          fake_features: list[jax.Array]) -> jax.Array:
  """Mean L1 between discriminator activations (real ones held fixed)."""
  return sum(jnp.mean(jnp.abs(jax.lax.stop_gradient(r).astype(jnp.float32) -
                              f.astype(jnp.float32)))
             for r, f in zip(real_features, fake_features)) / len(real_features)


def hinge_discriminator_loss(logits_real: jax.Array,
                             logits_fake: jax.Array) -> jax.Array:
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real.astype(jnp.float32))) +
                jnp.mean(jax.nn.relu(1.0 + logits_fake.astype(jnp.float32))))


def hinge_generator_loss(logits_fake: jax.Array) -> jax.Array:
  return -jnp.mean(logits_fake.astype(jnp.float32))


def cosine_distance_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """mean(1 - cos(pred, target)) over the last axis (teacher distillation)."""
  pred = pred.astype(jnp.float32)
  target = jax.lax.stop_gradient(target.astype(jnp.float32))
  cos = jnp.sum(pred * target, -1) * jax.lax.rsqrt(
      jnp.sum(pred * pred, -1) * jnp.sum(target * target, -1) + 1e-12)
  return jnp.mean(1.0 - cos)


def contrastive_loss(image_emb: jax.Array, text_emb: jax.Array,
                     log_scale: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Symmetric InfoNCE (CLIP) over a batch of matching pairs.

  Args:
    image_emb: (B, D) image embeddings.
    text_emb: (B, D) caption embeddings; row i matches image i.
    log_scale: scalar log temperature (logit scale = exp, capped at 100).

  Returns:
    (loss, image-to-text retrieval accuracy within the batch).
  """
  img = image_emb.astype(jnp.float32)
  txt = text_emb.astype(jnp.float32)
  img = img * jax.lax.rsqrt(jnp.sum(img * img, -1, keepdims=True) + 1e-12)
  txt = txt * jax.lax.rsqrt(jnp.sum(txt * txt, -1, keepdims=True) + 1e-12)
  logits = jnp.exp(jnp.minimum(log_scale, jnp.log(100.0))) * img @ txt.T
  labels = jnp.arange(logits.shape[0])
  logp_i = jax.nn.log_softmax(logits, -1)
  logp_t = jax.nn.log_softmax(logits, 0)
  loss = -0.5 * (jnp.mean(logp_i[labels, labels]) +
                 jnp.mean(logp_t[labels, labels]))
  accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
  return loss, accuracy
