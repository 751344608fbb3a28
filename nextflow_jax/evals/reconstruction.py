# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Reconstruction metrics of a vision tokenizer on held-out images.

PSNR and SSIM are computed on images mapped to [0, 1] (clipped), SSIM with
the standard 11x11 Gaussian window (sigma 1.5, K1 0.01, K2 0.03, valid
padding, mean over channels), as in Wang et al. 2004 / skimage. Besides the
full reconstruction, every prefix of the scale schedule is decoded, which
shows how much each scale adds. Codebook usage is the fraction of codes that
occur at least once in the evaluated set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from nextflow_jax.tokenizer import model as model_lib
from nextflow_jax.tokenizer import quantizer as quantizer_lib


def to_unit(images: jax.Array) -> jax.Array:
  """[-1, 1] -> [0, 1], clipped."""
  return jnp.clip((images.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image PSNR in dB of [-1, 1] images (B, H, W, C) -> (B,)."""
  mse = jnp.mean((to_unit(x) - to_unit(y)) ** 2, axis=(1, 2, 3))
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-ax ** 2 / (2 * sigma ** 2))
  g /= g.sum()
  return np.outer(g, g).astype(np.float32)


def ssim(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image SSIM of [-1, 1] images (B, H, W, C) -> (B,); H, W >= 11."""
  if min(x.shape[1:3]) < 11:
    raise ValueError(f"SSIM needs images of at least 11x11 (its window); got "
                     f"{x.shape[1]}x{x.shape[2]}.")
  x, y = to_unit(x), to_unit(y)
  channels = x.shape[-1]
  window = jnp.asarray(_gaussian_window())[:, :, None, None]
  window = jnp.tile(window, (1, 1, 1, channels))

  def blur(z):
    return jax.lax.conv_general_dilated(
        z, window, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels, precision=jax.lax.Precision.HIGHEST)

  c1, c2 = 0.01 ** 2, 0.03 ** 2
  mx, my = blur(x), blur(y)
  sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(
      x * y) - mx * my
  s = ((2 * mx * my + c1) * (2 * sxy + c2)) / (
      (mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
  return jnp.mean(s, axis=(1, 2, 3))


def make_eval_fn(model: model_lib.VisionTokenizer,
                 schedule: quantizer_lib.Schedule
                 ) -> Callable[[dict, jax.Array], dict[str, jax.Array]]:
  """Jitted (params, images) -> per-image metrics and code histogram.

  Returns a dict with `psnr`, `ssim` (B,), `psnr_prefix` (B, K) for the
  first 1..K scales and `code_counts` (codebook_size,).
  """

  @jax.jit
  def eval_fn(params, images):
    variables = {"params": params}
    indices = model.apply(variables, images, schedule, method=model.encode)
    prefix_psnr = []
    for k in range(1, len(schedule) + 1):
      recon = model.apply(variables, indices[:k], schedule,
                          method=model.decode)
      prefix_psnr.append(psnr(recon, images))
    counts = jnp.zeros((model.codebook_size,), jnp.float32)
    for idx in indices:
      counts = counts.at[idx.ravel()].add(1.0)
    return {"psnr": prefix_psnr[-1], "ssim": ssim(recon, images),
            "psnr_prefix": jnp.stack(prefix_psnr, -1), "code_counts": counts}

  return eval_fn


def make_preview_fn(model: model_lib.VisionTokenizer,
                    schedule: quantizer_lib.Schedule
                    ) -> Callable[[dict, jax.Array], jax.Array]:
  """Jitted (params, images (B, H, W, 3)) -> (B, K, H, W, 3): the images
  decoded from the first 1..K scales (the last is the full reconstruction)."""

  @jax.jit
  def preview_fn(params, images):
    variables = {"params": params}
    indices = model.apply(variables, images, schedule, method=model.encode)
    return jnp.stack([model.apply(variables, indices[:k], schedule,
                                  method=model.decode)
                      for k in range(1, len(schedule) + 1)], axis=1)

  return preview_fn


def make_reconstruct_fn(model: model_lib.VisionTokenizer,
                        schedule: quantizer_lib.Schedule
                        ) -> Callable[[dict, jax.Array], jax.Array]:
  """Jitted (params, images (B, H, W, 3)) -> top-1 codes decoded back."""

  @jax.jit
  def reconstruct_fn(params, images):
    variables = {"params": params}
    indices = model.apply(variables, images, schedule, method=model.encode)
    return model.apply(variables, indices, schedule, method=model.decode)

  return reconstruct_fn


def evaluate(eval_fn, params, batches: Iterator[dict],
             num_batches: int | None = None) -> dict[str, float]:
  """Averages `eval_fn` over batches of {"image": (B, H, W, 3)}.

  Returns:
    {"psnr", "ssim", "psnr_scale_<k>" for each prefix, "codebook_usage",
     "perplexity", "num_images"}.
  """
  sums, counts, n = {}, None, 0
  for i, batch in enumerate(batches):
    if num_batches is not None and i >= num_batches:
      break
    out = jax.device_get(eval_fn(params, batch["image"]))
    n += out["psnr"].shape[0]
    for key in ("psnr", "ssim"):
      sums[key] = sums.get(key, 0.0) + float(out[key].sum())
    prefix = out["psnr_prefix"].sum(0)
    sums["prefix"] = sums.get("prefix", 0.0) + prefix
    counts = out["code_counts"] if counts is None else counts + out[
        "code_counts"]
  if not n:
    raise ValueError("evaluation got no images; check the eval split.")
  result = {"psnr": sums["psnr"] / n, "ssim": sums["ssim"] / n,
            "num_images": n}
  for k, value in enumerate(sums["prefix"] / n, 1):
    result[f"psnr_scale_{k}"] = float(value)
  result["codebook_usage"] = float(np.mean(counts > 0))
  result["perplexity"] = float(quantizer_lib.perplexity(jnp.asarray(counts)))
  return result
