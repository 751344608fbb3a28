# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Shared-index multi-codebook quantiser with multi-scale residual coding.

One scale (TokenFlow's shared mapping, nextflow-method.md section 3.2): the
latent of a grid cell is the concatenation of branch vectors (semantic 32-d,
pixel 8-d by default). Each branch has its own codebook table, and all tables
share one index:

  d[n, i] = sum_b  w_b * |z_b[n] - E_b[i]|^2        (branch weights w_b)
  i*[n]   = argmin_i d[n, i]

With `normalize=True` (TokenFlow), the branch vectors and codebook rows are
L2-normalised before the distance, and the code vectors that are returned are
the unit-norm rows. (VAR's `using_znorm` instead selects by cosine and sums
the raw rows; on 32 px shapes, 300-400 probe steps of either, and of plain
L2 codes, reconstructed equally badly: PSNR 13-15 dB, against 19 dB for the
same network without quantisation; see experiments/README.md.) A
single-branch (pixel-only) quantiser is the same thing with one branch:
`branch_dims=(8,)`.

Multi-scale residual quantisation (VAR / TokenFlow, section 3.3), for a
schedule ((h_1, w_1), ..., (h_K, w_K)) that ends at the latent grid (H, W):

  R <- f;  F <- 0
  for k: r_k = area_down(R, h_k x w_k); idx_k = quantise(r_k)
         u_k = phi_k(up(E[idx_k], H x W)); F += u_k; R -= u_k
  returns idx_1..idx_K and F = sum_k u_k (straight-through: f + sg(F - f))

Choices where the sources are silent (each a field):
  * `upsample_method`: "bicubic-pytorch" (PyTorch's bicubic, a = -0.75, as
    VAR and TokenFlow use); any `jax.image.resize` method.
  * `num_phi`: 0 (TokenFlow: no phi). With n > 0, VAR's partially shared
    phi_k(x) = (1 - r) x + r conv3x3(x), conv chosen by the nearest "tick".
  * Scale dropout (`scale_drop_prob`, `scale_drop_fraction`): the paper
    drops "50% of VAR scales". We read it as: with probability p a sample
    drops that fraction of its middle scales (never the first or last). A
    dropped scale contributes nothing, and its residual passes on.
  * Losses, VAR form: averaged over the partial sums F_k = sum_{j<=k} u_j,
    codebook = mean_k mean((F_k - sg(f))^2) and
    commit = beta * mean_k mean((sg(F_k) - f)^2), so codes used at coarse
    scales are also pulled towards f on their own. Optional entropy term
    (TokenFlow's default weight is 0).
  * Quantisation always runs in float32 with HIGHEST matmul precision (no
    TF32 / bf16 passes on accelerators), so codes do not depend on the
    hardware.

Self-correction streams (section 5.3, `encode_streams`): `targets` are top-1
indices. In `inputs`, a fraction `rate` of each scale's cells takes a code
sampled, with probabilities softmax(-d / temperature), among the 2nd..k-th
nearest codes. The top-1 is excluded, so exactly the masked cells differ from
the targets. The residual for the next scale is taken with respect to the
code actually used (`residual_from="inputs"`, Infinity-style, the default)
or the top-1 code (`"targets"`).
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Schedule = tuple[tuple[int, int], ...]


@functools.lru_cache(maxsize=None)
def area_matrix(out_size: int, in_size: int) -> np.ndarray:
  """(out, in) averaging weights of adaptive average pooling ("area").

  Output cell i averages input cells [floor(i*in/out), ceil((i+1)*in/out)),
  as PyTorch's adaptive_avg_pool / interpolate(mode="area").
  """
  m = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start = (i * in_size) // out_size
    end = -((-(i + 1) * in_size) // out_size)
    m[i, start:end] = 1.0 / (end - start)
  return m


def area_downsample(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """(B, H, W, D) -> (B, h, w, D) by adaptive average pooling."""
  h, w = size
  if x.shape[1:3] == (h, w):
    return x
  ah = jnp.asarray(area_matrix(h, x.shape[1]))
  aw = jnp.asarray(area_matrix(w, x.shape[2]))
  return jnp.einsum("hH,bHWd,wW->bhwd", ah, x, aw,
                    precision=jax.lax.Precision.HIGHEST)


def upsample(x: jax.Array, size: tuple[int, int], method: str) -> jax.Array:
  """(B, h, w, D) -> (B, H, W, D); identity when the size already matches."""
  if x.shape[1:3] == tuple(size):
    return x
  return jax.image.resize(x, (x.shape[0], *size, x.shape[3]), method=method)


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def joint_distances(z: jax.Array, codebook: jax.Array,
                    branch_dims: Sequence[int],
                    branch_weights: Sequence[float],
                    normalize: bool) -> jax.Array:
  """Weighted sum of per-branch squared distances.

  Args:
    z: (..., D) latents, D = sum(branch_dims).
    codebook: (K, D) rows, branches concatenated.
    branch_dims: width of each branch.
    branch_weights: weight of each branch's distance.
    normalize: L2-normalise each branch of z and of the codebook first.

  Returns:
    (..., K) float32 distances.
  """
  z = z.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  total = 0.0
  offset = 0
  for dim, weight in zip(branch_dims, branch_weights):
    zb, eb = z[..., offset:offset + dim], codebook[:, offset:offset + dim]
    offset += dim
    if normalize:
      zb, eb = l2_normalize(zb), l2_normalize(eb)
    dots = jnp.matmul(zb, eb.T, precision=jax.lax.Precision.HIGHEST)
    d = jnp.sum(zb * zb, -1, keepdims=True) - 2.0 * dots + jnp.sum(eb * eb, -1)
    total = total + weight * jnp.maximum(d, 0.0)
  return total


class MultiScaleQuantizer(nn.Module):
  """Shared-index codebooks + multi-scale residual quantisation.

  Attributes:
    codebook_size: K, entries per table.
    branch_dims: latent width per branch, e.g. (32, 8) = (semantic, pixel);
      (8,) for a single-branch (pixel-only) tokenizer.
    branch_weights: distance weight per branch (TokenFlow: 1.0 each).
    normalize: L2-normalise branches and codebook rows (TokenFlow); False is
      VAR's plain L2 quantiser.
    upsample_method: `jax.image.resize` method for code maps.
    num_phi: 0 for no refinement convs; else VAR's shared phi convs.
    phi_ratio: phi mixing ratio r.
    beta: commitment weight.
    scale_drop_prob: probability that a sample drops scales in training.
    scale_drop_fraction: fraction of middle scales such a sample drops.
    use_entropy_loss: compute the entropy term (costs a softmax over K per
      cell; 0 is returned otherwise).
  """
  codebook_size: int
  branch_dims: tuple[int, ...] = (32, 8)
  branch_weights: tuple[float, ...] = (1.0, 1.0)
  normalize: bool = True
  upsample_method: str = "bicubic-pytorch"
  num_phi: int = 0
  phi_ratio: float = 0.5
  beta: float = 0.25
  scale_drop_prob: float = 0.0
  scale_drop_fraction: float = 0.5
  use_entropy_loss: bool = False

  @property
  def latent_dim(self) -> int:
    return sum(self.branch_dims)

  def setup(self):
    if len(self.branch_weights) != len(self.branch_dims):
      raise ValueError(f"branch_weights {self.branch_weights} needs one weight "
                       f"per branch of branch_dims {self.branch_dims}.")
    self.codebook = self.param(
        "codebook", nn.with_logical_partitioning(
            nn.initializers.normal(1.0), ("codebook", "code_dim")),
        (self.codebook_size, self.latent_dim), jnp.float32)
    if self.num_phi:
      self.phi_kernels = self.param(
          "phi", nn.with_logical_partitioning(
              nn.initializers.variance_scaling(1.0, "fan_in", "normal",
                                               in_axis=(1, 2, 3),
                                               out_axis=4, batch_axis=0),
              (None, None, None, "conv_in", "conv_out")),
          (self.num_phi, 3, 3, self.latent_dim, self.latent_dim), jnp.float32)

  # ------------------------------------------------------------ codebook

  def code_vectors(self) -> jax.Array:
    """(K, D) float32 rows that codes stand for (unit-norm per branch when
    `normalize`)."""
    codebook = self.codebook.astype(jnp.float32)
    if not self.normalize:
      return codebook
    parts, offset = [], 0
    for dim in self.branch_dims:
      parts.append(l2_normalize(codebook[:, offset:offset + dim]))
      offset += dim
    return jnp.concatenate(parts, axis=-1)

  def distances(self, z: jax.Array) -> jax.Array:
    """(..., D) -> (..., K) joint distances to every code."""
    return joint_distances(z, self.codebook, self.branch_dims,
                           self.branch_weights, self.normalize)

  def lookup(self, indices: jax.Array,
             table: jax.Array | None = None) -> jax.Array:
    """(...,) int codes -> (..., D) code vectors (of `table` if given)."""
    table = self.code_vectors() if table is None else table
    return jnp.take(table, indices, axis=0)

  # -------------------------------------------------------------- scales

  def _phi(self, x: jax.Array, k: int, num_scales: int) -> jax.Array:
    if not self.num_phi:
      return x
    ticks = np.linspace(1 / (3 * self.num_phi), 1 - 1 / (3 * self.num_phi),
                        self.num_phi)
    position = k / max(num_scales - 1, 1)
    kernel = self.phi_kernels[int(np.argmin(np.abs(ticks - position)))]
    conv = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST)
    return (1.0 - self.phi_ratio) * x + self.phi_ratio * conv

  def _up(self, codes: jax.Array, size: tuple[int, int], k: int,
          num_scales: int, table: jax.Array) -> jax.Array:
    return self._phi(upsample(self.lookup(codes, table), size,
                              self.upsample_method), k, num_scales)

  def _check(self, f: jax.Array, schedule: Schedule) -> None:
    if f.ndim != 4 or f.shape[-1] != self.latent_dim:
      raise ValueError(f"latent has shape {f.shape}; expected (B, H, W, "
                       f"{self.latent_dim}).")
    if tuple(schedule[-1]) != tuple(f.shape[1:3]):
      raise ValueError(f"schedule ends at {schedule[-1]} but the latent grid "
                       f"is {f.shape[1:3]}; the last scale must equal it.")

  def __call__(self, f: jax.Array, schedule: Schedule, *,
               train: bool = False) -> dict[str, jax.Array]:
    """Quantises a latent at every scale.

    Args:
      f: (B, H, W, D) encoder latent.
      schedule: ((h_1, w_1), ..., (H, W)).
      train: enables scale dropout (uses the "dropout" rng).

    Returns:
      dict with `latent` (B, H, W, D) straight-through quantised latent,
      `quantized` the same without straight-through (sum of code maps),
      `indices` list of (B, h_k, w_k) int32, `codebook_loss`,
      `commit_loss`, `entropy_loss` (scalars), `code_counts` (K,) uses per
      code in this batch, `keep` (B, K) float scale mask, and
      `residual_rows` (B * sum(h_k * w_k), D): the residuals that were
      quantised, candidates for restarting dead codes.
    """
    self._check(f, schedule)
    f32 = f.astype(jnp.float32)
    target = jax.lax.stop_gradient(f32)
    batch, size, num_scales = f.shape[0], f.shape[1:3], len(schedule)
    keep = jnp.ones((batch, num_scales), jnp.float32)
    if train and self.scale_drop_prob > 0 and num_scales > 2:
      keep = self._scale_keep_mask(batch, num_scales)
    table = self.code_vectors()
    residual = f32
    quantized = jnp.zeros_like(f32)
    indices, rows = [], []
    codebook_loss = commit_loss = entropy = jnp.zeros((), jnp.float32)
    counts = jnp.zeros((self.codebook_size,), jnp.float32)
    for k, hw in enumerate(schedule):
      r = jax.lax.stop_gradient(area_downsample(residual, hw))
      d = self.distances(r)
      idx = jnp.argmin(d, axis=-1).astype(jnp.int32)
      u = self._up(idx, size, k, num_scales, table) * keep[:, k, None, None,
                                                             None]
      quantized = quantized + u
      residual = residual - jax.lax.stop_gradient(u)
      codebook_loss += jnp.mean((quantized - target) ** 2)
      commit_loss += jnp.mean((jax.lax.stop_gradient(quantized) - f32) ** 2)
      indices.append(idx)
      rows.append(r.reshape(-1, r.shape[-1]))
      weights = jnp.broadcast_to(keep[:, k, None, None], idx.shape)
      counts = counts.at[idx.ravel()].add(weights.ravel())
      if self.use_entropy_loss:
        entropy = entropy + _entropy_loss(d)
    latent = f32 + jax.lax.stop_gradient(quantized - f32)
    return {"latent": latent.astype(f.dtype), "quantized": quantized,
            "indices": indices, "codebook_loss": codebook_loss / num_scales,
            "commit_loss": self.beta * commit_loss / num_scales,
            "entropy_loss": entropy / num_scales, "code_counts": counts,
            "keep": keep, "residual_rows": jnp.concatenate(rows)}

  def _scale_keep_mask(self, batch: int, num_scales: int) -> jax.Array:
    rng = self.make_rng("dropout")
    r_sample, r_scales = jax.random.split(rng)
    middle = num_scales - 2
    num_drop = max(1, int(round(self.scale_drop_fraction * middle)))
    scores = jax.random.uniform(r_scales, (batch, middle))
    ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    drop_middle = ranks < num_drop
    applies = jax.random.uniform(r_sample, (batch, 1)) < self.scale_drop_prob
    drop = jnp.concatenate([jnp.zeros((batch, 1), bool),
                            drop_middle & applies,
                            jnp.zeros((batch, 1), bool)], axis=-1)
    return 1.0 - drop.astype(jnp.float32)

  def encode(self, f: jax.Array, schedule: Schedule) -> list[jax.Array]:
    """(B, H, W, D) latent -> per-scale top-1 indices [(B, h_k, w_k)]."""
    return self(f, schedule)["indices"]

  def decode(self, indices: Sequence[jax.Array], size: tuple[int, int],
             num_scales: int | None = None) -> jax.Array:
    """Per-scale indices (any prefix of a schedule) -> (B, H, W, D) latent.

    A prefix of the scales gives the coarse latent of that many scales (the
    previews of next-scale generation). `size` is the full latent grid and
    `num_scales` the length of the whole schedule (default: len(indices));
    it places the phi convs of a prefix where the full schedule has them.
    """
    num_scales = len(indices) if num_scales is None else num_scales
    table = self.code_vectors()
    return sum(self._up(idx, size, k, num_scales, table)
               for k, idx in enumerate(indices))

  def encode_streams(self, f: jax.Array, schedule: Schedule, rng: jax.Array,
                     *, rate: float, top_k: int, temperature: float = 1.0,
                     residual_from: str = "inputs"
                     ) -> tuple[list[jax.Array], list[jax.Array]]:
    """Self-correction streams: (inputs, targets) per scale.

    Args:
      f: (B, H, W, D) latent.
      schedule: scale schedule ending at (H, W).
      rng: PRNG key.
      rate: fraction of cells per scale whose input code is resampled.
      top_k: resampled codes come from the 2nd..top_k-th nearest (>= 2).
      temperature: sampling temperature on -distance.
      residual_from: "inputs" or "targets" (see module docstring).

    Returns:
      (inputs, targets): lists of (B, h_k, w_k) int32. With rate 0 both
      equal `encode(f, schedule)`.
    """
    self._check(f, schedule)
    if top_k < 2 or top_k > self.codebook_size:
      raise ValueError(f"top_k={top_k} must be in [2, {self.codebook_size}].")
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f"rate={rate} must be in [0, 1].")
    if residual_from not in ("inputs", "targets"):
      raise ValueError(f"residual_from={residual_from!r}; use 'inputs' or "
                       "'targets'.")
    residual = f.astype(jnp.float32)
    size, num_scales = f.shape[1:3], len(schedule)
    table = self.code_vectors()
    inputs, targets = [], []
    for k, hw in enumerate(schedule):
      rng, r_mask, r_pick = jax.random.split(rng, 3)
      d = self.distances(area_downsample(residual, hw))
      neg_d, nearest = _nearest_k(d, top_k)
      target = nearest[..., 0].astype(jnp.int32)
      logits = neg_d[..., 1:] / temperature
      pick = jax.random.categorical(r_pick, logits, axis=-1)
      sampled = jnp.take_along_axis(nearest[..., 1:], pick[..., None],
                                    axis=-1)[..., 0].astype(jnp.int32)
      mask = jax.random.bernoulli(r_mask, rate, target.shape)
      inp = jnp.where(mask, sampled, target)
      used = inp if residual_from == "inputs" else target
      residual = residual - self._up(used, size, k, num_scales, table)
      inputs.append(inp)
      targets.append(target)
    return inputs, targets


def _nearest_k(d: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """(-distance, index) of the k nearest codes, nearest first.

  k successive argmins: for the small k of self-correction this is several
  times faster than `lax.top_k`, which sorts all K codes on CPU.
  """
  values, indices = [], []
  for _ in range(k):
    idx = jnp.argmin(d, axis=-1)
    values.append(-jnp.take_along_axis(d, idx[..., None], -1)[..., 0])
    indices.append(idx)
    d = jnp.where(jax.nn.one_hot(idx, d.shape[-1], dtype=bool), jnp.inf, d)
  return jnp.stack(values, -1), jnp.stack(indices, -1)


def _entropy_loss(d: jax.Array, temperature: float = 0.01) -> jax.Array:
  """Per-cell entropy minus batch-mean entropy of softmax(-d / t).

  Low when each cell is confident and the batch spreads over many codes.
  """
  logp = jax.nn.log_softmax(-d.reshape(-1, d.shape[-1]) / temperature, -1)
  p = jnp.exp(logp)
  per_cell = -jnp.mean(jnp.sum(p * logp, -1))
  mean_p = jnp.mean(p, 0)
  batch = -jnp.sum(mean_p * jnp.log(mean_p + 1e-9))
  return per_cell - batch


def codebook_usage(ema_counts: jax.Array, threshold: float) -> jax.Array:
  """Fraction of codes whose EMA use count exceeds `threshold`."""
  return jnp.mean((ema_counts > threshold).astype(jnp.float32))


def perplexity(counts: jax.Array) -> jax.Array:
  """exp(entropy) of the code histogram; K when all codes are used equally."""
  p = counts / jnp.maximum(jnp.sum(counts), 1e-9)
  return jnp.exp(-jnp.sum(p * jnp.log(p + 1e-12)))


def kmeans_update(codebook: jax.Array, code_sum: jax.Array,
                  code_ema: jax.Array, residual_rows: jax.Array,
                  indices: Sequence[jax.Array], keep: jax.Array,
                  decay: float) -> tuple[jax.Array, jax.Array]:
  """One k-means (EMA) step of the codebook, instead of the codebook loss.

  Each code moves to the running mean of the residuals it quantised (VQ-VAE-2
  / SoundStream EMA codebooks): `code_sum` is an EMA, with the same `decay`
  and normalisation as the use frequency `code_ema` (already updated with
  this batch's counts), of the sum of the residual rows each code took; the
  code is `code_sum / code_ema`. Codes this batch (and the recent past) did
  not use keep their row.

  Args:
    codebook: (K, D) current codebook.
    code_sum: (K, D) running sum of assigned residuals, frequency-scaled.
    code_ema: (K,) use frequency after this batch's update (1.0 = uniform).
    residual_rows: (N, D) the residuals that were quantised, scale by scale
      (the quantiser's `residual_rows`).
    indices: per-scale (B, h_k, w_k) codes, in the same order as the rows.
    keep: (B, num_scales) scale mask (a dropped scale's codes count 0).
    decay: EMA decay.

  Returns:
    (new codebook, new code_sum).
  """
  num_codes = codebook.shape[0]
  assign = jnp.concatenate([i.reshape(-1) for i in indices])
  weights = jnp.concatenate([
      jnp.broadcast_to(keep[:, k, None, None], i.shape).reshape(-1)
      for k, i in enumerate(indices)])
  sums = jax.ops.segment_sum(residual_rows.astype(jnp.float32) *
                             weights[:, None], assign, num_codes)
  scale = num_codes / jnp.maximum(jnp.sum(weights), 1.0)
  code_sum = decay * code_sum + (1.0 - decay) * sums * scale
  used = (code_ema > 1e-6)[:, None]
  new_codebook = jnp.where(used, code_sum / jnp.where(used, code_ema[:, None],
                                                      1.0), codebook)
  return new_codebook.astype(codebook.dtype), code_sum


def restart_dead_codes(codebook: jax.Array, ema_counts: jax.Array,
                       candidates: jax.Array, rng: jax.Array,
                       threshold: float
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Replaces rarely used codes by residuals that were just quantised.

  The usual remedy for dead codes (k-means restarts, SoundStream): every code
  whose EMA use count is below `threshold` becomes a distinct random
  candidate (drawn without replacement when there are enough), as it is:
  the code then quantises that residual exactly, whatever its scale (the
  residuals of fine scales are small). Its count is reset to the threshold
  so it is not restarted again at once. Adam moments of a dead row are ~0
  already (it got no gradient).

  Args:
    codebook: (K, D) codebook parameter.
    ema_counts: (K,) running use frequency.
    candidates: (N, D) residuals of the current batch (`residual_rows`).
    rng: PRNG key.
    threshold: counts below this are dead.

  Returns:
    (new codebook, new counts, number of restarted codes).
  """
  num_codes = codebook.shape[0]
  dead = ema_counts < threshold
  order = jax.random.permutation(rng, candidates.shape[0])
  picks = order[jnp.arange(num_codes) % candidates.shape[0]]
  fresh = candidates[picks].astype(codebook.dtype)
  new_codebook = jnp.where(dead[:, None], fresh, codebook)
  new_counts = jnp.where(dead, threshold, ema_counts)
  return new_codebook, new_counts, jnp.sum(dead)
