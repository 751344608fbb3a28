# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The shared decoder stack of NextFlow (Qwen2.5 shape), without embeddings.

`Transformer` maps a (B, L, D) residual stream to (B, L, D): `num_layers`
pre-norm blocks x + Attn(RMSNorm(x)), x + SwiGLU(RMSNorm(x)), then a final
RMSNorm. Token embeddings, the visual connector and the output head live in
the module that wraps it. Text and image tokens go through the same blocks;
they differ only in their RoPE positions and block ids (see `layers` for the
mask rule and `rope` for positions).

Design choices (and why):
  * `scan_layers=True` stacks the layers with `nn.scan`: one compiled block
    whatever the depth. Stacked params (and cache entries) get the leading
    "layers" logical axis. `scan_layers=False` unrolls a Python loop with
    params `layers_0`, `layers_1`, ... (same per-layer shapes), for
    per-layer surgery or debugging.
  * `remat_policy` names the rematerialisation: "none", "full" (recompute
    everything) or a policy of `jax.checkpoint_policies`, e.g.
    "dots_with_no_batch_dims_saveable". It changes memory and speed only.
  * `decode` is a call argument (lm1b-style KV cache, see `layers`); blocks
    receive it as a field, so scan and remat see only array arguments.
  * The residual stream is kept in the compute `dtype` (bf16 in the 7B
    preset, as in Qwen); norms, softmax and RoPE run in float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nextflow_jax.model import layers
from nextflow_jax.model import rope

# Policies of `jax.checkpoint_policies` usable by name (not factories).
_NAMED_POLICIES = ("nothing_saveable", "everything_saveable", "dots_saveable",
                   "checkpoint_dots", "dots_with_no_batch_dims_saveable",
                   "checkpoint_dots_with_no_batch_dims")
REMAT_POLICIES = ("none", "full") + _NAMED_POLICIES


def check_remat_policy(name: str) -> None:
  """Raises ValueError unless `name` is one of `REMAT_POLICIES`."""
  if name not in REMAT_POLICIES:
    raise ValueError(f"remat_policy={name!r} is not supported; choose one of "
                     f"{list(REMAT_POLICIES)}.")


class DecoderBlock(nn.Module):
  """Pre-norm block: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)).

  Returns (x, None) so that it can be the body of `nn.scan`.
  """
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rope_theta: float = 1_000_000.0
  mrope_sections: tuple[int, int, int] | None = None
  mrope_interleaved: bool = True
  norm_eps: float = 1e-6
  qkv_bias: bool = True
  attention: str = "xla"  # see `layers.Attention`
  attention_block: int = 512
  decode: bool = False
  kv_len: int | None = None  # see `layers.Attention`
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BLD: jax.Array, positions_BL3: jax.Array,
               segment_ids_BL: jax.Array,
               block_ids_BL: jax.Array) -> tuple[jax.Array, None]:
    """(B, L, D) -> ((B, L, D) in `dtype`, None)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = x_BLD.astype(self.dtype)
    h = layers.RMSNorm(self.norm_eps, param_dtype=self.param_dtype,
                       name="attn_norm")(x)
    h = layers.Attention(
        self.num_heads, self.num_kv_heads, self.head_dim,
        rope_theta=self.rope_theta, mrope_sections=self.mrope_sections,
        mrope_interleaved=self.mrope_interleaved,
        qkv_bias=self.qkv_bias, attention=self.attention,
        attention_block=self.attention_block, name="attn", **kw)(
            h, positions_BL3, segment_ids_BL, block_ids_BL,
            decode=self.decode, kv_len=self.kv_len)
    x = nn.with_logical_constraint(x + h, layers.TOKEN_AXES)
    h = layers.RMSNorm(self.norm_eps, param_dtype=self.param_dtype,
                       name="mlp_norm")(x)
    x = x + layers.SwiGLU(self.mlp_dim, name="mlp", **kw)(h)
    return nn.with_logical_constraint(x, layers.TOKEN_AXES), None


class Transformer(nn.Module):
  """Decoder-only transformer stack shared by text and images."""
  num_layers: int
  width: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rope_theta: float = 1_000_000.0
  # Frequency pairs of the (scale/time, row, column) streams; None:
  # `rope.default_sections(head_dim)`.
  mrope_sections: tuple[int, int, int] | None = None
  # Their frequency layout (`rope.stream_of_pairs`): interleaved, or
  # Qwen2.5-VL's contiguous one (blind to columns at small head_dim).
  mrope_interleaved: bool = True
  norm_eps: float = 1e-6
  qkv_bias: bool = True  # Qwen2.5: q/k/v projections have biases.
  # Attention implementation and its key block (`layers`: xla | blocked |
  # cudnn).
  attention: str = "xla"
  attention_block: int = 512
  scan_layers: bool = True
  remat_policy: str = "none"  # One of REMAT_POLICIES.
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BLD: jax.Array, positions_BL3: jax.Array,
               segment_ids_BL: jax.Array, block_ids_BL: jax.Array, *,
               decode: bool = False, kv_len: int | None = None) -> jax.Array:
    """Runs the stack.

    Args:
      x_BLD: (B, L, width) input embeddings.
      positions_BL3: (B, L, 3) float32 RoPE positions (scale/time, row,
        column); text tokens use (t, t, t).
      segment_ids_BL: (B, L) int32 document ids; 0 = padding.
      block_ids_BL: (B, L) int32, non-decreasing inside a segment: one block
        per text token, one per image scale.
      decode: use the KV cache. Create it with
        `init(rng, x (B, max_len, D), ..., decode=True)`, then call
        `apply({"params": p, "cache": c}, ..., decode=True,
        mutable=["cache"])` with L new tokens per call, keeping the total
        <= max_len.
      kv_len: with `decode`, a static bound on the filled cache length after
        this call; attention reads only that prefix (`layers.Attention`).

    Returns:
      (B, L, width) in `dtype`, after the final RMSNorm.

    Raises:
      ValueError: invalid configuration or inconsistent input shapes.
    """
    layers.check_heads("Transformer", self.num_heads, self.num_kv_heads,
                       self.head_dim)
    layers.check_attention("Transformer", self.attention,
                           self.attention_block)
    check_remat_policy(self.remat_policy)
    if self.num_layers < 1:
      raise ValueError(f"Transformer.num_layers={self.num_layers} must be "
                       "positive.")
    layers.check_inputs("Transformer", x_BLD, positions_BL3, segment_ids_BL,
                        block_ids_BL)
    if x_BLD.shape[-1] != self.width:
      raise ValueError(f"Transformer.width={self.width} but x has shape "
                       f"{x_BLD.shape}.")
    block_cls = DecoderBlock
    if self.remat_policy != "none":
      policy = (None if self.remat_policy == "full" else
                getattr(jax.checkpoint_policies, self.remat_policy))
      block_cls = nn.remat(DecoderBlock, policy=policy,
                           prevent_cse=not self.scan_layers)
    kw = dict(
        num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
        head_dim=self.head_dim, mlp_dim=self.mlp_dim,
        rope_theta=self.rope_theta,
        mrope_sections=rope.resolve_sections(self.mrope_sections,
                                             self.head_dim),
        mrope_interleaved=self.mrope_interleaved,
        norm_eps=self.norm_eps, qkv_bias=self.qkv_bias,
        attention=self.attention, attention_block=self.attention_block,
        decode=decode,
        kv_len=kv_len, dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.with_logical_constraint(x_BLD.astype(self.dtype),
                                   layers.TOKEN_AXES)
    args = (positions_BL3.astype(jnp.float32), segment_ids_BL, block_ids_BL)
    if self.scan_layers:
      stack = nn.scan(
          block_cls, variable_axes={"params": 0, "cache": 0},
          split_rngs={"params": True}, in_axes=(nn.broadcast,) * 3,
          length=self.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(name="layers", **kw)(x, *args)
    else:
      for i in range(self.num_layers):
        x, _ = block_cls(name=f"layers_{i}", **kw)(x, *args)
    return layers.RMSNorm(self.norm_eps, param_dtype=self.param_dtype,
                          name="final_norm")(x)
