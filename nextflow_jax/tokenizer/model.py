# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The vision tokenizer: semantic + pixel branches on one shared index.

  images (B, H, W, 3) in [-1, 1]
    -> semantic ViT encoder -> (B, h, w, semantic_dim)   (optional branch)
    -> pixel CNN encoder    -> (B, h, w, pixel_dim)
    -> concat -> multi-scale residual quantiser (shared index, `quantizer.py`)
    -> pixel part -> pixel CNN decoder -> reconstruction (B, H, W, 3)
    -> semantic part -> semantic ViT decoder -> (B, h, w, semantic_out_dim),
       trained against the semantic objective (see `losses.py`)

h = H / downsample. The last scale of a schedule must be (h, w); the
semantic ViT uses patch size = downsample, so both grids match. With
`use_semantic=False` the tokenizer is a single-branch (pixel-only)
multi-scale VQGAN, which allows the paper's dual-vs-single comparison and
is stage 1 of its training recipe.

Public methods take and return plain arrays:
  encode(images, schedule)         -> per-scale indices [(B, h_k, w_k)]
  decode(indices, image_size)      -> images; any prefix of the scales
  encode_streams(images, ...)      -> self-correction (inputs, targets)
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nextflow_jax.tokenizer import networks
from nextflow_jax.tokenizer import quantizer as quantizer_lib

Schedule = quantizer_lib.Schedule


class VisionTokenizer(nn.Module):
  """Dual-codebook (or pixel-only) multi-scale residual VQ tokenizer.

  Attributes:
    codebook_size: K, entries shared by both codebook tables.
    channels, channel_mults, num_res_blocks, attention, num_groups: pixel
      encoder (see `networks.PixelEncoder`).
    patch_size: space-to-depth stem of the pixel encoder and pixel-shuffle
      head of the decoder (1 = none, VQGAN). downsample is
      patch_size * 2 ** (len(channel_mults) - 1).
    decoder_channels, decoder_num_res_blocks: pixel decoder; None = same as
      the encoder. Stage 3 of the recipe doubles the decoder capacity.
    pixel_dim: pixel latent width (TokenFlow: 8).
    use_semantic: add the semantic branch.
    semantic_dim: semantic latent width (TokenFlow: 32).
    vit_width, vit_depth, vit_heads, vit_mlp_dim: semantic encoder.
    semantic_decoder_depth: semantic decoder depth (same width and heads).
    semantic_out_dim: semantic decoder output width (teacher feature width
      or contrastive embedding width).
    pixel_weight: w in d_sem + w * d_pix.
    normalize, upsample_method, num_phi, beta, scale_drop_prob,
      scale_drop_fraction, use_entropy_loss: see `quantizer.py`.
    dtype, param_dtype: compute and parameter dtypes of the networks
      (quantisation always runs in float32).
  """
  codebook_size: int = 4096
  channels: int = 128
  channel_mults: tuple[int, ...] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  attention: bool = True
  num_groups: int = 32
  patch_size: int = 1
  decoder_channels: int | None = None
  decoder_num_res_blocks: int | None = None
  pixel_dim: int = 8
  use_semantic: bool = True
  semantic_dim: int = 32
  vit_width: int = 256
  vit_depth: int = 4
  vit_heads: int = 4
  vit_mlp_dim: int = 1024
  semantic_decoder_depth: int = 2
  semantic_out_dim: int = 256
  pixel_weight: float = 1.0
  normalize: bool = True
  upsample_method: str = "bicubic-pytorch"
  num_phi: int = 0
  beta: float = 0.25
  scale_drop_prob: float = 0.0
  scale_drop_fraction: float = 0.5
  use_entropy_loss: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def downsample(self) -> int:
    return self.patch_size * 2 ** (len(self.channel_mults) - 1)

  @property
  def branch_dims(self) -> tuple[int, ...]:
    if self.use_semantic:
      return (self.semantic_dim, self.pixel_dim)
    return (self.pixel_dim,)

  def setup(self):
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.pixel_encoder = networks.PixelEncoder(
        channels=self.channels, channel_mults=self.channel_mults,
        num_res_blocks=self.num_res_blocks, latent_dim=self.pixel_dim,
        num_groups=self.num_groups, attention=self.attention,
        patch_size=self.patch_size, **common)
    self.pixel_decoder = networks.PixelDecoder(
        channels=self.decoder_channels or self.channels,
        channel_mults=self.channel_mults,
        num_res_blocks=self.decoder_num_res_blocks or self.num_res_blocks,
        latent_dim=self.pixel_dim, num_groups=self.num_groups,
        attention=self.attention, patch_size=self.patch_size, **common)
    if self.use_semantic:
      self.semantic_encoder = networks.ViTEncoder(
          patch_size=self.downsample, width=self.vit_width,
          depth=self.vit_depth, num_heads=self.vit_heads,
          mlp_dim=self.vit_mlp_dim, latent_dim=self.semantic_dim, **common)
      self.semantic_decoder = networks.ViTDecoder(
          width=self.vit_width, depth=self.semantic_decoder_depth,
          num_heads=self.vit_heads, mlp_dim=self.vit_mlp_dim,
          out_dim=self.semantic_out_dim, **common)
    weights = (1.0, self.pixel_weight) if self.use_semantic else (1.0,)
    self.quantizer = quantizer_lib.MultiScaleQuantizer(
        codebook_size=self.codebook_size, branch_dims=self.branch_dims,
        branch_weights=weights, normalize=self.normalize,
        upsample_method=self.upsample_method, num_phi=self.num_phi,
        beta=self.beta, scale_drop_prob=self.scale_drop_prob,
        scale_drop_fraction=self.scale_drop_fraction,
        use_entropy_loss=self.use_entropy_loss)

  # ----------------------------------------------------------- validation

  def check_inputs(self, images: jax.Array, schedule: Schedule) -> None:
    """Raises ValueError when images or schedule do not fit this model."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images have shape {images.shape}; expected "
                       "(B, H, W, 3) in [-1, 1].")
    h, w = images.shape[1:3]
    f = self.downsample
    if h % f or w % f:
      raise ValueError(f"image size {h}x{w} is not divisible by the "
                       f"tokenizer's downsampling factor {f}.")
    if tuple(schedule[-1]) != (h // f, w // f):
      raise ValueError(f"schedule ends at {schedule[-1][0]}x{schedule[-1][1]} "
                       f"but {h}x{w} images give a {h // f}x{w // f} latent "
                       f"grid (downsample {f}); use a schedule ending there.")

  def check_indices(self, indices: Sequence[jax.Array],
                    schedule: Schedule) -> None:
    """Raises ValueError when indices do not match a schedule (prefix)."""
    if not indices or len(indices) > len(schedule):
      raise ValueError(f"got {len(indices)} scales of indices for a "
                       f"{len(schedule)}-scale schedule.")
    for k, (idx, hw) in enumerate(zip(indices, schedule)):
      if idx.ndim != 3 or tuple(idx.shape[1:]) != tuple(hw):
        raise ValueError(f"indices of scale {k} have shape {idx.shape}; the "
                         f"schedule needs (B, {hw[0]}, {hw[1]}).")
      if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise ValueError(f"indices of scale {k} have dtype {idx.dtype}; "
                         "expected integers.")
      if not isinstance(idx, jax.core.Tracer) and idx.size and (
          int(idx.min()) < 0 or int(idx.max()) >= self.codebook_size):
        raise ValueError(f"indices of scale {k} span [{int(idx.min())}, "
                         f"{int(idx.max())}], outside the codebook "
                         f"[0, {self.codebook_size}).")

  # ------------------------------------------------------------- branches

  def encode_latent(self, images: jax.Array) -> jax.Array:
    """(B, H, W, 3) -> (B, h, w, D) continuous latent, D = sum(branch dims)."""
    pixel = self.pixel_encoder(images).astype(jnp.float32)
    if not self.use_semantic:
      return pixel
    semantic = self.semantic_encoder(images).astype(jnp.float32)
    return jnp.concatenate([semantic, pixel], axis=-1)

  def split(self, latent: jax.Array) -> tuple[jax.Array | None, jax.Array]:
    """(B, h, w, D) -> (semantic part or None, pixel part)."""
    if not self.use_semantic:
      return None, latent
    return latent[..., :self.semantic_dim], latent[..., self.semantic_dim:]

  def decode_latent(self, latent: jax.Array) -> jax.Array:
    """(B, h, w, D) quantised latent -> (B, H, W, 3) reconstruction."""
    return self.pixel_decoder(self.split(latent)[1].astype(self.dtype))

  def decode_semantic(self, latent: jax.Array) -> jax.Array:
    """(B, h, w, D) quantised latent -> (B, h, w, semantic_out_dim)."""
    return self.semantic_decoder(self.split(latent)[0].astype(self.dtype))

  # ---------------------------------------------------------------- API

  def __call__(self, images: jax.Array, schedule: Schedule, *,
               train: bool = False) -> dict[str, jax.Array]:
    """Full forward pass for training.

    Returns:
      The quantiser's dict (`latent`, `indices`, losses, `code_counts`, ...)
      plus `recon` (B, H, W, 3), `semantic` (B, h, w, semantic_out_dim) when
      the semantic branch is on.
    """
    self.check_inputs(images, schedule)
    latent = self.encode_latent(images)
    out = self.quantizer(latent, schedule, train=train)
    out["recon"] = self.decode_latent(out["latent"]).astype(jnp.float32)
    if self.use_semantic:
      out["semantic"] = self.decode_semantic(out["latent"]).astype(
          jnp.float32)
    return out

  def autoencode(self, images: jax.Array) -> dict[str, jax.Array]:
    """The networks without the quantiser (the autoencoder warm-up).

    Returns:
      `latent` (B, h, w, D) continuous, `recon` (B, H, W, 3) decoded from it,
      and `semantic` (B, h, w, semantic_out_dim) with the semantic branch.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images have shape {images.shape}; expected "
                       "(B, H, W, 3) in [-1, 1].")
    latent = self.encode_latent(images)
    out = {"latent": latent,
           "recon": self.decode_latent(latent).astype(jnp.float32)}
    if self.use_semantic:
      out["semantic"] = self.decode_semantic(latent).astype(jnp.float32)
    return out

  def encode(self, images: jax.Array,
             schedule: Schedule) -> list[jax.Array]:
    """(B, H, W, 3) -> per-scale top-1 indices [(B, h_k, w_k) int32]."""
    self.check_inputs(images, schedule)
    return self.quantizer.encode(self.encode_latent(images), schedule)

  def decode(self, indices: Sequence[jax.Array], schedule: Schedule
             ) -> jax.Array:
    """Indices of the first n scales of `schedule` -> (B, H, W, 3) images.

    With fewer scales than the schedule, this is the coarse preview after
    that many steps of next-scale generation.
    """
    self.check_indices(indices, schedule)
    latent = self.quantizer.decode(indices, tuple(schedule[-1]),
                                   num_scales=len(schedule))
    return self.decode_latent(latent).astype(jnp.float32)

  def encode_streams(self, images: jax.Array, schedule: Schedule,
                     rng: jax.Array, *, rate: float, top_k: int,
                     temperature: float = 1.0,
                     residual_from: str = "inputs"
                     ) -> tuple[list[jax.Array], list[jax.Array]]:
    """Self-correction (inputs, targets) streams; see `quantizer.py`."""
    self.check_inputs(images, schedule)
    return self.quantizer.encode_streams(
        self.encode_latent(images), schedule, rng, rate=rate, top_k=top_k,
        temperature=temperature, residual_from=residual_from)

  def code_vectors(self) -> jax.Array:
    """(K, D) code vectors (initialises the transformer's code embeddings)."""
    return self.quantizer.code_vectors()
