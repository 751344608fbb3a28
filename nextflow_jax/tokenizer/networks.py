# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Encoder, decoder and discriminator networks of the dual-branch tokenizer.

Pixel branch (VQGAN / taming-transformers, as in TokenFlow):
  `PixelEncoder`  images (B, H, W, 3) -> latent (B, H/f, W/f, latent_dim)
  `PixelDecoder`  latent (B, h, w, latent_dim) -> images (B, h*f, w*f, 3)
  with f = 2 ** (len(channel_mults) - 1).

Semantic branch (TokenFlow's SigLIP tower + task layers):
  `ViTEncoder`  images -> latent (B, H/p, W/p, latent_dim) [+ features]
  `ViTDecoder`  latent (B, h, w, latent_dim) -> features (B, h, w, out_dim)

Losses:
  `PatchDiscriminator`  PatchGAN logits per patch + intermediate activations
    (used for the adversarial and a feature-matching perceptual loss).
  `TextEncoder`  caption tokens -> (B, out_dim), for the default CLIP-style
    image-caption contrastive semantic objective.

Design choices (and why):
  * Position embeddings of the ViTs are 2-D sin-cos tables computed for the
    actual (h, w) grid at call time, not a learned table. Any resolution and
    aspect ratio works with the same parameters (NextFlow's semantic encoder
    is SigLIP2-NaFlex for the same reason). A cell's embedding depends only
    on its integer (row, column), so a grid larger than any seen in training
    extrapolates rather than interpolates.
  * The discriminator uses GroupNorm, not BatchNorm: linen BatchNorm needs a
    mutable `batch_stats` collection threaded through the train step, and
    its statistics would differ between the real and fake passes.
  * The pixel encoder's last 3x3 conv keeps the lowest level's width
    (channels * channel_mults[-1]) before the 1x1 `quant_conv`; taming's
    separate `z_channels` is folded into it. The decoder mirrors this with a
    1x1 `post_quant_conv` to that width. Decoder levels have
    `num_res_blocks + 1` residual blocks, as in taming.
  * Transformer blocks are a Python loop, not `nn.scan`: the tokenizer's
    towers are shallow. There is no dropout, hence no `train` flag.
  * Numerics: norms and softmax run in float32; convs, dense layers and the
    returned arrays are in the compute `dtype`. Losses cast to float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

IMAGE_AXES = ("act_batch", "act_height", "act_width", "act_channels")
TOKEN_AXES = ("act_batch", "act_len", "act_embed")

_CONV_KERNEL = (None, None, "conv_in", "conv_out")


def _conv(features: int, kernel_size: int, *, name: str, dtype: jnp.dtype,
          param_dtype: jnp.dtype, strides: int = 1,
          padding: str | Sequence[tuple[int, int]] = "SAME") -> nn.Conv:
  """A 2-D conv whose kernel and bias carry logical axis names."""
  return nn.Conv(
      features, (kernel_size, kernel_size), strides=(strides, strides),
      padding=padding, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), _CONV_KERNEL),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), ("conv_out",)),
      name=name)


def _group_norm(num_groups: int, *, name: str,
                param_dtype: jnp.dtype) -> nn.GroupNorm:
  """GroupNorm computed (and returned) in float32."""
  return nn.GroupNorm(
      num_groups=num_groups, epsilon=1e-6, dtype=jnp.float32,
      param_dtype=param_dtype,
      scale_init=nn.with_logical_partitioning(
          nn.initializers.ones_init(), ("norm",)),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), ("norm",)),
      name=name)


def _layer_norm(*, name: str, param_dtype: jnp.dtype) -> nn.LayerNorm:
  """LayerNorm computed (and returned) in float32."""
  return nn.LayerNorm(
      epsilon=1e-6, dtype=jnp.float32, param_dtype=param_dtype,
      scale_init=nn.with_logical_partitioning(
          nn.initializers.ones_init(), ("norm",)),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), ("norm",)),
      name=name)


def _dense(features: int, names: tuple[str | None, str | None], *, name: str,
           dtype: jnp.dtype, param_dtype: jnp.dtype) -> nn.Dense:
  """A Dense layer with xavier-uniform kernel named `names` (in, out)."""
  return nn.Dense(
      features, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(
          nn.initializers.xavier_uniform(), names),
      bias_init=nn.with_logical_partitioning(
          nn.initializers.zeros_init(), (names[1],)),
      name=name)


def _check_groups(owner: str, num_groups: int, counts: Sequence[int]) -> None:
  bad = sorted({c for c in counts if c % num_groups})
  if bad:
    raise ValueError(f"{owner}.num_groups={num_groups} must divide every "
                     f"channel count; it does not divide {bad} (channel "
                     f"counts are {sorted(set(counts))}).")


def _check_rgb(owner: str, images: jax.Array) -> None:
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{owner} expects RGB images (B, H, W, 3); got shape "
                     f"{images.shape} (channels must be 3).")


def _check_divisible(owner: str, images: jax.Array, factor: int,
                     factor_name: str) -> None:
  h, w = images.shape[1:3]
  if h % factor or w % factor:
    raise ValueError(f"{owner}: image size {h}x{w} is not divisible by the "
                     f"{factor_name} {factor}.")


def posemb_sincos_2d(h: int, w: int, width: int,
                     temperature: float = 10_000.0) -> np.ndarray:
  """2-D sin-cos position embedding of an h x w grid (MAE / big_vision).

  Row r * w + c holds [sin(c * omega), cos(c * omega), sin(r * omega),
  cos(r * omega)] with omega = temperature ** -(arange(width/4) / (width/4)).

  Args:
    h: grid rows.
    w: grid columns.
    width: embedding width D; must be divisible by 4.
    temperature: the longest wavelength.

  Returns:
    float32 array (h * w, D), a trace-time constant.

  Raises:
    ValueError: width not divisible by 4.
  """
  if width % 4:
    raise ValueError(f"sin-cos position embedding width={width} must be "
                     "divisible by 4.")
  quarter = width // 4
  omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float64) / quarter)
  rows, cols = np.mgrid[:h, :w]
  y = rows.reshape(-1)[:, None] * omega[None, :]
  x = cols.reshape(-1)[:, None] * omega[None, :]
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return pe.astype(np.float32)


class ResBlock(nn.Module):
  """VQGAN residual block: (GroupNorm, swish, conv3x3) x 2 + shortcut.

  The shortcut is a 1x1 conv when the channel count changes.
  """
  features: int
  num_groups: int = 32
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H, W, features)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.swish(_group_norm(self.num_groups, name="norm_0",
                             param_dtype=self.param_dtype)(x_BHWC))
    h = _conv(self.features, 3, name="conv_0", **kw)(h)
    h = nn.swish(_group_norm(self.num_groups, name="norm_1",
                             param_dtype=self.param_dtype)(h))
    h = _conv(self.features, 3, name="conv_1", **kw)(h)
    if x_BHWC.shape[-1] != self.features:
      x_BHWC = _conv(self.features, 1, name="shortcut", **kw)(x_BHWC)
    return nn.with_logical_constraint(x_BHWC.astype(self.dtype) + h,
                                      IMAGE_AXES)


class ConvAttention(nn.Module):
  """VQGAN spatial self-attention: one head over all H*W cells, residual.

  q, k, v and the output projection are 1x1 convs, as in taming.
  """
  num_groups: int = 32
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H, W, C)."""
    b, hh, ww, c = x_BHWC.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = _group_norm(self.num_groups, name="norm",
                    param_dtype=self.param_dtype)(x_BHWC)
    q, k, v = (_conv(c, 1, name=n, **kw)(h).reshape(b, hh * ww, 1, c)
               for n in ("q", "k", "v"))
    h = jax.nn.dot_product_attention(q, k, v).reshape(b, hh, ww, c)
    h = _conv(c, 1, name="proj_out", **kw)(h)
    return nn.with_logical_constraint(x_BHWC.astype(self.dtype) + h,
                                      IMAGE_AXES)


class _PixelCNN(nn.Module):
  """Hyper-parameters shared by the pixel encoder and decoder."""
  channels: int = 128
  channel_mults: tuple[int, ...] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  latent_dim: int = 8
  num_groups: int = 32
  attention: bool = True  # At the lowest level and in the mid block.
  # Space-to-depth stem: the encoder first folds p x p pixel patches into
  # channels and the decoder ends with the inverse (pixel shuffle), so no
  # conv runs at full resolution. 1 = VQGAN (conv_in on pixels).
  patch_size: int = 1
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def downsample(self) -> int:
    """The spatial downsampling f = patch_size * 2 ** (len(channel_mults)-1)."""
    return self.patch_size * 2 ** (len(self.channel_mults) - 1)


def space_to_depth(x_BHWC: jax.Array, p: int) -> jax.Array:
  """(B, H, W, C) -> (B, H/p, W/p, p*p*C), patches row-major in channels."""
  if p == 1:
    return x_BHWC
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // p, w // p, p * p * c)


def depth_to_space(x_BhwC: jax.Array, p: int) -> jax.Array:
  """(B, h, w, p*p*C) -> (B, h*p, w*p, C); the inverse of space_to_depth."""
  if p == 1:
    return x_BhwC
  b, h, w, pc = x_BhwC.shape
  c = pc // (p * p)
  x = x_BhwC.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * p, w * p, c)


class PixelEncoder(_PixelCNN):
  """VQGAN-style CNN encoder of the pixel branch.

  [space-to-depth by `patch_size`] -> conv_in -> per level:
  `num_res_blocks` ResBlocks (+ attention at the lowest
  level) and a stride-2 downsampling conv (all but the last level) -> mid
  (ResBlock, attention, ResBlock) -> GroupNorm, swish, conv3x3 -> 1x1
  `quant_conv` to `latent_dim`.
  """

  @nn.compact
  def __call__(self, images_BHWC: jax.Array) -> jax.Array:
    """Encodes images.

    Args:
      images_BHWC: (B, H, W, 3) floats in [-1, 1]; H and W divisible by f.

    Returns:
      (B, H/f, W/f, latent_dim) latent in `dtype`.

    Raises:
      ValueError: bad image shape or `num_groups` not dividing a channel
        count.
    """
    _check_groups("PixelEncoder", self.num_groups,
                  [self.channels * m for m in (1, *self.channel_mults)])
    _check_rgb("PixelEncoder", images_BHWC)
    _check_divisible("PixelEncoder", images_BHWC, self.downsample,
                     "downsampling factor")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    blk = dict(num_groups=self.num_groups, **kw)
    last = len(self.channel_mults) - 1
    x = nn.with_logical_constraint(
        space_to_depth(images_BHWC, self.patch_size), IMAGE_AXES)
    x = _conv(self.channels, 3, name="conv_in", **kw)(x)
    for i, mult in enumerate(self.channel_mults):
      for j in range(self.num_res_blocks):
        x = ResBlock(self.channels * mult, name=f"down_{i}_block_{j}",
                     **blk)(x)
        if self.attention and i == last:
          x = ConvAttention(name=f"down_{i}_attn_{j}", **blk)(x)
      if i != last:
        x = _conv(x.shape[-1], 3, strides=2, padding=((0, 1), (0, 1)),
                  name=f"down_{i}_downsample", **kw)(x)
    x = ResBlock(x.shape[-1], name="mid_block_0", **blk)(x)
    if self.attention:
      x = ConvAttention(name="mid_attn", **blk)(x)
    x = ResBlock(x.shape[-1], name="mid_block_1", **blk)(x)
    x = nn.swish(_group_norm(self.num_groups, name="norm_out",
                             param_dtype=self.param_dtype)(x))
    x = _conv(self.channels * self.channel_mults[-1], 3, name="conv_out",
              **kw)(x)
    x = _conv(self.latent_dim, 1, name="quant_conv", **kw)(x)
    return nn.with_logical_constraint(x, IMAGE_AXES)


class PixelDecoder(_PixelCNN):
  """VQGAN-style CNN decoder of the pixel branch (mirror of PixelEncoder).

  1x1 `post_quant_conv` -> conv_in -> mid (ResBlock, attention, ResBlock) ->
  per level, coarse to fine: `num_res_blocks + 1` ResBlocks (+ attention at
  the lowest level) and a nearest-neighbour 2x upsample + conv3x3 (all but
  the finest level) -> GroupNorm, swish, conv3x3 to 3 * patch_size**2
  channels [-> depth-to-space by `patch_size`].
  """

  @nn.compact
  def __call__(self, latent_BhwC: jax.Array) -> jax.Array:
    """Decodes a latent grid.

    Args:
      latent_BhwC: (B, h, w, latent_dim).

    Returns:
      (B, h*f, w*f, 3) images in `dtype`, unbounded (no tanh, as VQGAN).

    Raises:
      ValueError: wrong latent channel count or `num_groups` not dividing a
        channel count.
    """
    _check_groups("PixelDecoder", self.num_groups,
                  [self.channels * m for m in (1, *self.channel_mults)])
    if latent_BhwC.ndim != 4 or latent_BhwC.shape[-1] != self.latent_dim:
      raise ValueError(f"PixelDecoder expects a latent (B, h, w, "
                       f"{self.latent_dim}); got shape {latent_BhwC.shape}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    blk = dict(num_groups=self.num_groups, **kw)
    last = len(self.channel_mults) - 1
    top = self.channels * self.channel_mults[-1]
    x = nn.with_logical_constraint(latent_BhwC, IMAGE_AXES)
    x = _conv(top, 1, name="post_quant_conv", **kw)(x)
    x = _conv(top, 3, name="conv_in", **kw)(x)
    x = ResBlock(top, name="mid_block_0", **blk)(x)
    if self.attention:
      x = ConvAttention(name="mid_attn", **blk)(x)
    x = ResBlock(top, name="mid_block_1", **blk)(x)
    for i in reversed(range(len(self.channel_mults))):
      for j in range(self.num_res_blocks + 1):
        x = ResBlock(self.channels * self.channel_mults[i],
                     name=f"up_{i}_block_{j}", **blk)(x)
        if self.attention and i == last:
          x = ConvAttention(name=f"up_{i}_attn_{j}", **blk)(x)
      if i != 0:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = _conv(x.shape[-1], 3, name=f"up_{i}_upsample", **kw)(x)
    x = nn.swish(_group_norm(self.num_groups, name="norm_out",
                             param_dtype=self.param_dtype)(x))
    x = _conv(3 * self.patch_size ** 2, 3, name="conv_out", **kw)(x)
    return nn.with_logical_constraint(depth_to_space(x, self.patch_size),
                                      IMAGE_AXES)


class SelfAttention(nn.Module):
  """Multi-head bidirectional self-attention with an optional key mask."""
  num_heads: int = 12
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BLD: jax.Array,
               mask_BL: jax.Array | None = None) -> jax.Array:
    """Attends every position to every (unmasked) position.

    Args:
      x_BLD: (B, L, D) inputs; D divisible by `num_heads`.
      mask_BL: optional (B, L) bool, True where a key may be attended to.

    Returns:
      (B, L, D) in `dtype`.
    """
    d = x_BLD.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"attention width {d} is not divisible by "
                       f"num_heads={self.num_heads}.")
    head_dim = d // self.num_heads
    # Explicit 3-D params: nn.DenseGeneral creates its kernel flat and
    # reshapes it, which breaks 3-D logical names under a mesh.
    init = nn.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))
    zeros = nn.initializers.zeros_init()
    x = x_BLD.astype(self.dtype)
    qkv = {}
    for n in ("query", "key", "value"):
      kernel = self.param(n + "_kernel", nn.with_logical_partitioning(
          init, ("embed", "heads", "head_dim")),
          (d, self.num_heads, head_dim), self.param_dtype)
      bias = self.param(n + "_bias", nn.with_logical_partitioning(
          zeros, ("heads", "head_dim")), (self.num_heads, head_dim),
          self.param_dtype)
      qkv[n] = jnp.einsum("bld,dnk->blnk", x, kernel.astype(self.dtype)) + (
          bias.astype(self.dtype))
    mask = None if mask_BL is None else mask_BL[:, None, None, :]
    out_BLNK = jax.nn.dot_product_attention(
        qkv["query"], qkv["key"], qkv["value"], mask=mask)
    out_BLNK = nn.with_logical_constraint(
        out_BLNK, ("act_batch", "act_len", "act_heads", "act_head_dim"))
    out_kernel = self.param("out_kernel", nn.with_logical_partitioning(
        nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2),
        ("heads", "head_dim", "embed")), (self.num_heads, head_dim, d),
        self.param_dtype)
    out_bias = self.param("out_bias", nn.with_logical_partitioning(
        zeros, ("embed",)), (d,), self.param_dtype)
    out = jnp.einsum("blnk,nkd->bld", out_BLNK,
                     out_kernel.astype(self.dtype)) + out_bias.astype(
                         self.dtype)
    return nn.with_logical_constraint(out, TOKEN_AXES)


class TransformerBlock(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""
  num_heads: int = 12
  mlp_dim: int = 3072
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BLD: jax.Array,
               mask_BL: jax.Array | None = None) -> jax.Array:
    """(B, L, D) -> (B, L, D); `mask_BL` as in `SelfAttention`."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    d = x_BLD.shape[-1]
    x = x_BLD.astype(self.dtype)
    h = _layer_norm(name="norm_0", param_dtype=self.param_dtype)(x)
    x = x + SelfAttention(self.num_heads, name="attn", **kw)(h, mask_BL)
    x = nn.with_logical_constraint(x, TOKEN_AXES)
    h = _layer_norm(name="norm_1", param_dtype=self.param_dtype)(x)
    h = nn.gelu(_dense(self.mlp_dim, ("embed", "mlp"), name="mlp_0", **kw)(h))
    h = nn.with_logical_constraint(h, ("act_batch", "act_len", "act_mlp"))
    x = x + _dense(d, ("mlp", "embed"), name="mlp_1", **kw)(h)
    return nn.with_logical_constraint(x, TOKEN_AXES)


def _check_width(owner: str, width: int, num_heads: int) -> None:
  if width % num_heads or width % 4:
    raise ValueError(f"{owner}.width={width} must be divisible by "
                     f"num_heads={num_heads} and by 4 (sin-cos position "
                     "embedding).")


class ViTEncoder(nn.Module):
  """Semantic encoder: ViT with sin-cos positions and an encode task layer.

  Patchify (conv, stride `patch_size`) -> + 2-D sin-cos position embedding
  of the actual grid -> `depth` pre-LN blocks -> LayerNorm (the features) ->
  "encode_task_layer": Dense(width), tanh, Dense(latent_dim).
  """
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  latent_dim: int = 32
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
      self, images_BHWC: jax.Array, *, return_features: bool = False
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Encodes images of any size divisible by `patch_size`.

    Args:
      images_BHWC: (B, H, W, 3) floats in [-1, 1].
      return_features: also return the features fed to the task layer
        (after the final LayerNorm), e.g. as a frozen teacher's targets.

    Returns:
      latent (B, H/p, W/p, latent_dim), and with `return_features` the tuple
      (latent, features (B, H/p, W/p, width)); both in `dtype`.

    Raises:
      ValueError: bad image shape or width.
    """
    _check_width("ViTEncoder", self.width, self.num_heads)
    _check_rgb("ViTEncoder", images_BHWC)
    _check_divisible("ViTEncoder", images_BHWC, self.patch_size, "patch_size")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.with_logical_constraint(images_BHWC, IMAGE_AXES)
    x = _conv(self.width, self.patch_size, strides=self.patch_size,
              padding="VALID", name="patch_embed", **kw)(x)
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d) + posemb_sincos_2d(h, w, d).astype(self.dtype)
    x = nn.with_logical_constraint(x, TOKEN_AXES)
    for i in range(self.depth):
      x = TransformerBlock(self.num_heads, self.mlp_dim, name=f"block_{i}",
                           **kw)(x)
    feats = _layer_norm(name="norm_out",
                        param_dtype=self.param_dtype)(x).astype(self.dtype)
    z = jnp.tanh(_dense(self.width, ("embed", "mlp"),
                        name="encode_task_layer_0", **kw)(feats))
    z = _dense(self.latent_dim, ("mlp", "code_dim"),
               name="encode_task_layer_1", **kw)(z)
    z = nn.with_logical_constraint(z.reshape(b, h, w, self.latent_dim),
                                   IMAGE_AXES)
    if not return_features:
      return z
    feats = nn.with_logical_constraint(feats.reshape(b, h, w, d), IMAGE_AXES)
    return z, feats


class ViTDecoder(nn.Module):
  """Semantic decoder: regresses teacher features from the semantic latent.

  Dense(width) -> + 2-D sin-cos position embedding -> `depth` pre-LN blocks
  -> LayerNorm -> "decode_task_layer": Dense(width), tanh, Dense(out_dim).
  """
  width: int = 768
  depth: int = 3
  num_heads: int = 12
  mlp_dim: int = 3072
  out_dim: int = 768
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, latent_BhwC: jax.Array) -> jax.Array:
    """(B, h, w, latent_dim) -> (B, h, w, out_dim) in `dtype`."""
    _check_width("ViTDecoder", self.width, self.num_heads)
    if latent_BhwC.ndim != 4:
      raise ValueError("ViTDecoder expects a latent (B, h, w, C); got shape "
                       f"{latent_BhwC.shape}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, _ = latent_BhwC.shape
    x = nn.with_logical_constraint(latent_BhwC, IMAGE_AXES)
    x = _dense(self.width, ("code_dim", "embed"), name="embed_in", **kw)(x)
    x = x.reshape(b, h * w, self.width)
    x = x + posemb_sincos_2d(h, w, self.width).astype(self.dtype)
    x = nn.with_logical_constraint(x, TOKEN_AXES)
    for i in range(self.depth):
      x = TransformerBlock(self.num_heads, self.mlp_dim, name=f"block_{i}",
                           **kw)(x)
    x = _layer_norm(name="norm_out", param_dtype=self.param_dtype)(x)
    x = jnp.tanh(_dense(self.width, ("embed", "mlp"),
                        name="decode_task_layer_0", **kw)(x))
    x = _dense(self.out_dim, ("mlp", "embed"), name="decode_task_layer_1",
               **kw)(x)
    return nn.with_logical_constraint(x.reshape(b, h, w, self.out_dim),
                                      IMAGE_AXES)


class PatchDiscriminator(nn.Module):
  """PatchGAN discriminator (pix2pix / taming NLayerDiscriminator).

  conv4x4/2 + LeakyReLU; then `num_layers - 1` x (conv4x4/2, GroupNorm,
  LeakyReLU) and one (conv4x4/1, GroupNorm, LeakyReLU), doubling the width
  up to 8 * `channels`; then conv4x4/1 to one logit per patch. All convs pad
  by 1, so an H x W image gives an (H/2^n - 2) x (W/2^n - 2) logit grid for
  H, W divisible by 2^n (n = num_layers).
  """
  channels: int = 64
  num_layers: int = 3
  num_groups: int = 32
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self,
               images_BHWC: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """Scores image patches.

    Args:
      images_BHWC: (B, H, W, 3) images.

    Returns:
      logits (B, h', w', 1) and the num_layers + 1 activations after each
      LeakyReLU (for feature matching), all in `dtype`.

    Raises:
      ValueError: bad image shape, an image too small for one logit, or
        `num_groups` not dividing a channel count.
    """
    widths = [self.channels * min(2 ** n, 8)
              for n in range(self.num_layers + 1)]
    _check_groups("PatchDiscriminator", self.num_groups, widths[1:])
    _check_rgb("PatchDiscriminator", images_BHWC)
    h, w = images_BHWC.shape[1:3]
    if min(h, w) // 2 ** self.num_layers < 3:
      raise ValueError(f"PatchDiscriminator with num_layers={self.num_layers} "
                       f"needs images of at least {3 * 2 ** self.num_layers} "
                       f"px per side; got {h}x{w}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype,
              padding=((1, 1), (1, 1)))
    x = nn.with_logical_constraint(images_BHWC, IMAGE_AXES)
    features = []
    for n, width in enumerate(widths):
      x = _conv(width, 4, strides=2 if n < self.num_layers else 1,
                name=f"conv_{n}", **kw)(x)
      if n:
        x = _group_norm(self.num_groups, name=f"norm_{n}",
                        param_dtype=self.param_dtype)(x)
      x = nn.leaky_relu(x, 0.2).astype(self.dtype)
      x = nn.with_logical_constraint(x, IMAGE_AXES)
      features.append(x)
    logits = _conv(1, 4, name="conv_out", **kw)(x)
    return nn.with_logical_constraint(logits, IMAGE_AXES), features


class TextEncoder(nn.Module):
  """Caption encoder for the CLIP-style image-caption contrastive objective.

  Token + learned position embedding -> `depth` pre-LN blocks with
  bidirectional attention restricted to unpadded keys -> LayerNorm -> masked
  mean over unpadded positions -> Dense(out_dim).
  """
  vocab_size: int = 32_000
  width: int = 512
  depth: int = 6
  num_heads: int = 8
  mlp_dim: int = 2048
  max_len: int = 77
  out_dim: int = 512
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BL: jax.Array, mask_BL: jax.Array) -> jax.Array:
    """Encodes token sequences.

    Args:
      tokens_BL: (B, L) int32 token ids, L <= max_len.
      mask_BL: (B, L) bool, True at real tokens, False at padding. Padding
        positions do not affect the output.

    Returns:
      (B, out_dim) in `dtype`.

    Raises:
      ValueError: L > max_len or mismatched shapes.
    """
    if tokens_BL.ndim != 2 or mask_BL.shape != tokens_BL.shape:
      raise ValueError(f"TextEncoder expects tokens and mask of one shape "
                       f"(B, L); got {tokens_BL.shape} and {mask_BL.shape}.")
    length = tokens_BL.shape[1]
    if length > self.max_len:
      raise ValueError(f"TextEncoder: sequence length {length} exceeds "
                       f"max_len={self.max_len}.")
    if self.width % self.num_heads:
      raise ValueError(f"TextEncoder.width={self.width} must be divisible by "
                       f"num_heads={self.num_heads}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    init = nn.initializers.normal(stddev=0.02)
    x = nn.Embed(self.vocab_size, self.width,
                 embedding_init=nn.with_logical_partitioning(
                     init, ("vocab", "embed")),
                 name="token_embed", **kw)(tokens_BL)
    pos = self.param("pos_embed",
                     nn.with_logical_partitioning(init, (None, "embed")),
                     (self.max_len, self.width), self.param_dtype)
    x = x + pos[:length].astype(self.dtype)
    x = nn.with_logical_constraint(x, TOKEN_AXES)
    mask = mask_BL.astype(bool)
    for i in range(self.depth):
      x = TransformerBlock(self.num_heads, self.mlp_dim, name=f"block_{i}",
                           **kw)(x, mask)
    x = _layer_norm(name="norm_out", param_dtype=self.param_dtype)(x)
    weights = mask.astype(jnp.float32)[..., None]
    pooled = (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
    return _dense(self.out_dim, ("embed", "mlp"), name="proj", **kw)(pooled)
