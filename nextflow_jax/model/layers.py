# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Layers of the shared decoder: RMSNorm, SwiGLU and grouped-query attention.

Shapes follow Qwen2.5: RMSNorm with a learned scale, a bias-free SwiGLU MLP,
and grouped-query attention whose q/k/v projections have biases and whose
output projection has none.

One attention mask serves text, images, packing, padding and the KV cache
(`attention_mask`): a query attends to a key iff they are in the same
segment, the key is not padding (segment 0), and the key's block id is not
larger than the query's. Every text token is its own block (causal); all
tokens of one image scale share a block (full attention inside a scale,
block-causal across scales: VAR's level(q) >= level(k)).

Design choices (and why):
  * Projections are explicit 3-D params contracted with einsum:
    nn.DenseGeneral creates a flat kernel and reshapes it, which breaks 3-D
    logical names under a mesh.
  * Attention has three implementations (`ATTENTION_IMPLEMENTATIONS`, the
    `attention` field; MaxText's `attention` knob), all computing
    `attention_mask`'s rule from the same ids:
      - "xla": `jax.nn.dot_product_attention` on the (B, L, S) mask (logits
        and softmax in float32, native GQA). Materialises (B, N, L, S)
        scores: the fastest at short lengths, and what the tests compare
        the others against.
      - "blocked": online softmax over key blocks of `attention_block`
        keys in plain JAX (`lax.scan`, Flash-attention style), each block's
        mask built from the ids; scores never exceed (B, N, L, block), and
        the block body is rematerialised in the backward pass, so long
        training sequences fit on any backend.
      - "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`
        with the same boolean mask (GPU only; JAX raises at compile time
        elsewhere or when cuDNN cannot take the shape).
      - "pallas": a flash-attention Pallas kernel for TPU that builds the
        mask from the ids in VMEM and skips key blocks no query of the
        block can see (`pallas_attention.py`); `attention_block` (a
        multiple of 128) sizes its query and key blocks. Its backward pass
        is two more kernels (FlashAttention-2's dK/dV and dQ). On CPU it
        runs in the Pallas interpreter (tests); not on GPU.
    A query row with no visible key is padding (a real token always sees
    itself); its output is set to zero by every implementation.
  * KV cache as in flax lm1b: pass `decode=True`, create the "cache"
    collection with `init(..., decode=True)` on a (B, max_len) dummy input,
    then call `apply(..., decode=True, mutable=["cache"])` with L >= 1 new
    tokens (a prompt, one text token, or a whole image scale). New keys,
    values, segment and block ids are written at `cache_index` and the
    queries attend to the whole cache under the same mask rule; empty slots
    have segment 0, so they are masked like padding. One `cache_index` is
    shared by the batch (rows are padded, not ragged). Keys are cached after
    RoPE, in the compute dtype.
  * Cache entries carry logical activation names, so
    `sharding.logical_shardings` shards an abstract cache like activations.
  * Numerics: RMSNorm, softmax and RoPE in float32; projections in `dtype`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from nextflow_jax.model import pallas_attention
from nextflow_jax.model import rope

TOKEN_AXES = ("act_batch", "act_len", "act_embed")
HEAD_AXES = ("act_batch", "act_len", "act_heads", "act_head_dim")
KV_AXES = ("act_batch", "act_len", "act_kv_heads", "act_head_dim")
MLP_AXES = ("act_batch", "act_len", "act_mlp")
ID_AXES = ("act_batch", "act_len")


def attention_mask(segment_q_BL: jax.Array, block_q_BL: jax.Array,
                   segment_k_BS: jax.Array,
                   block_k_BS: jax.Array) -> jax.Array:
  """Which keys each query may attend to.

  A query attends to a key iff segment[q] == segment[k], segment[k] != 0
  and block[k] <= block[q].

  Args:
    segment_q_BL: (B, L) int segment ids of the queries; 0 = padding,
      packed documents have distinct ids.
    block_q_BL: (B, L) int block ids of the queries, non-decreasing inside
      a segment: a text token has its own block, an image scale shares one.
    segment_k_BS: (B, S) segment ids of the keys (0 = padding or empty
      cache slot).
    block_k_BS: (B, S) block ids of the keys.

  Returns:
    (B, L, S) bool, True where the query may attend to the key.

  Raises:
    ValueError: ids that are not (B, L) / (B, S) pairs of one batch size.
  """
  if (segment_q_BL.ndim != 2 or segment_q_BL.shape != block_q_BL.shape or
      segment_k_BS.ndim != 2 or segment_k_BS.shape != block_k_BS.shape or
      segment_q_BL.shape[0] != segment_k_BS.shape[0]):
    raise ValueError(
        "attention_mask expects query ids (B, L) and key ids (B, S) of one "
        f"batch size; got segment_q {segment_q_BL.shape}, block_q "
        f"{block_q_BL.shape}, segment_k {segment_k_BS.shape}, block_k "
        f"{block_k_BS.shape}.")
  segment_k = segment_k_BS[:, None, :]
  same_segment = segment_q_BL[:, :, None] == segment_k
  earlier_block = block_k_BS[:, None, :] <= block_q_BL[:, :, None]
  return same_segment & (segment_k != 0) & earlier_block


ATTENTION_IMPLEMENTATIONS = ("xla", "blocked", "cudnn", "pallas")


class AttentionChoiceError(ValueError):
  """An attention implementation or block size that cannot be used;
  `field` names the attribute at fault ("attention" or "attention_block")."""

  def __init__(self, field: str, message: str):
    super().__init__(message)
    self.field = field


def check_attention(owner: str, implementation: str, block: int) -> None:
  """Raises AttentionChoiceError for an unknown implementation, a block size
  it cannot take, or "pallas" on a GPU."""
  if implementation not in ATTENTION_IMPLEMENTATIONS:
    raise AttentionChoiceError(
        "attention", f"{owner}.attention={implementation!r}; choose one of "
        f"{ATTENTION_IMPLEMENTATIONS}.")
  if block < 1:
    raise AttentionChoiceError(
        "attention_block", f"{owner}.attention_block={block} must be "
        "positive.")
  if implementation == "pallas":
    if block % pallas_attention.LANES:
      raise AttentionChoiceError(
          "attention_block",
          f"{owner}.attention_block={block}: the pallas kernel needs a "
          f"multiple of {pallas_attention.LANES} (TPU lanes); try 512.")
    if jax.default_backend() == "gpu":
      raise AttentionChoiceError(
          "attention",
          f"{owner}.attention='pallas' is the TPU kernel and has no GPU "
          "lowering; on a GPU use 'cudnn' (or 'blocked').")


def dot_product_attention(q_BLNK: jax.Array, k_BSGK: jax.Array,
                          v_BSGK: jax.Array, segment_q_BL: jax.Array,
                          block_q_BL: jax.Array, segment_k_BS: jax.Array,
                          block_k_BS: jax.Array, *,
                          implementation: str = "xla",
                          block: int = 512) -> jax.Array:
  """Softmax attention under `attention_mask` of the ids, GQA.

  Args:
    q_BLNK: (B, L, N, K) queries (RoPE applied); k_BSGK, v_BSGK: (B, S, G,
      K) keys and values, N a multiple of G.
    segment_q_BL, block_q_BL, segment_k_BS, block_k_BS: the ids of
      `attention_mask`.
    implementation: one of `ATTENTION_IMPLEMENTATIONS` (module docstring).
    block: keys per block of the "blocked" implementation.

  Returns:
    (B, L, N, K) in the dtype of q; zeros where no key is visible.
  """
  check_attention("dot_product_attention", implementation, block)
  if implementation == "blocked":
    out = _blocked_attention(q_BLNK, k_BSGK, v_BSGK, segment_q_BL, block_q_BL,
                             segment_k_BS, block_k_BS, block)
  elif implementation == "pallas":
    out = _pallas_attention(q_BLNK, k_BSGK, v_BSGK, segment_q_BL, block_q_BL,
                            segment_k_BS, block_k_BS, block)
  else:
    mask = attention_mask(segment_q_BL, block_q_BL, segment_k_BS, block_k_BS)
    out = jax.nn.dot_product_attention(
        q_BLNK, k_BSGK, v_BSGK, mask=mask[:, None],
        implementation=None if implementation == "xla" else "cudnn")
  return jnp.where((segment_q_BL != 0)[:, :, None, None], out,
                   jnp.zeros((), out.dtype))


def _blocked_attention(q, k, v, segment_q, block_q, segment_k, block_k,
                       block):
  """Online-softmax attention over key blocks (see the module docstring)."""
  b, length, n, d = q.shape
  s, g = k.shape[1], k.shape[2]
  block = min(block, s)
  pad = -s % block
  if pad:  # Padding keys have segment 0: masked like any padding.
    k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (k, v))
    segment_k, block_k = (jnp.pad(x, ((0, 0), (0, pad)))
                          for x in (segment_k, block_k))
  num_blocks = (s + pad) // block
  # (num_blocks, B, block, ...) slices, scanned in order.
  chunks = tuple(x.reshape(b, num_blocks, block, *x.shape[2:]).swapaxes(0, 1)
                 for x in (k, v, segment_k, block_k))
  qg = q.reshape(b, length, g, n // g, d).astype(jnp.float32) * d ** -0.5

  @jax.checkpoint
  def step(carry, chunk):
    m, l, acc = carry  # (B, L, G, R), (B, L, G, R), (B, L, G, R, K)
    k_c, v_c, seg_c, blk_c = chunk
    logits = jnp.einsum("blgrk,bcgk->blgrc", qg, k_c.astype(jnp.float32))
    mask = attention_mask(segment_q, block_q, seg_c, blk_c)[:, :, None, None]
    logits = jnp.where(mask, logits, -jnp.inf)
    # The running max only shifts the exponent (softmax is invariant to
    # it): a constant for differentiation.
    m_new = jax.lax.stop_gradient(jnp.maximum(m, jnp.max(logits, axis=-1)))
    # Rows with nothing visible yet keep m = -inf; shift them by 0.
    shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    p = jnp.exp(logits - shift[..., None])
    rescale = jnp.exp(m - shift)
    l = l * rescale + jnp.sum(p, axis=-1)
    acc = acc * rescale[..., None] + jnp.einsum(
        "blgrc,bcgk->blgrk", p, v_c.astype(jnp.float32))
    return (m_new, l, acc), None

  init = (jnp.full((b, length, g, n // g), -jnp.inf, jnp.float32),
          jnp.zeros((b, length, g, n // g), jnp.float32),
          jnp.zeros((b, length, g, n // g, d), jnp.float32))
  (_, l, acc), _ = jax.lax.scan(step, init, chunks)
  out = acc / jnp.where(l > 0, l, 1.0)[..., None]
  return out.reshape(b, length, n, d).astype(q.dtype)


def _pallas_attention(q, k, v, segment_q, block_q, segment_k, block_k,
                      block):
  """The Pallas kernels: compiled on TPU, interpreted elsewhere (tests)."""
  return pallas_attention.flash_attention(
      q, k, v, segment_q, block_q, segment_k, block_k, block=block,
      interpret=jax.default_backend() != "tpu")


def check_heads(owner: str, num_heads: int, num_kv_heads: int,
                head_dim: int) -> None:
  """Raises ValueError unless the head counts form valid GQA with RoPE."""
  if num_heads < 1 or num_kv_heads < 1 or num_heads % num_kv_heads:
    raise ValueError(f"{owner}.num_heads={num_heads} must be a positive "
                     f"multiple of num_kv_heads={num_kv_heads} (grouped-query "
                     "attention).")
  if head_dim < 2 or head_dim % 2:
    raise ValueError(f"{owner}.head_dim={head_dim} must be positive and even "
                     "(RoPE rotates pairs).")


def check_inputs(owner: str, x_BLD: jax.Array, positions_BL3: jax.Array,
                 segment_ids_BL: jax.Array, block_ids_BL: jax.Array) -> None:
  """Raises ValueError unless the decoder inputs have consistent shapes."""
  if x_BLD.ndim != 3:
    raise ValueError(f"{owner} expects x of shape (B, L, D); got "
                     f"{x_BLD.shape}.")
  b, length, _ = x_BLD.shape
  for name, array, shape in (("positions", positions_BL3, (b, length, 3)),
                             ("segment_ids", segment_ids_BL, (b, length)),
                             ("block_ids", block_ids_BL, (b, length))):
    if array.shape != shape:
      raise ValueError(f"{owner}: {name} must have shape {shape} to match x "
                       f"{x_BLD.shape}; got {array.shape}.")


class RMSNorm(nn.Module):
  """Root-mean-square norm with a learned scale (Qwen2 RMSNorm).

  Computed in float32; returns the input dtype.
  """
  eps: float = 1e-6
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(..., D) -> (..., D)."""
    scale = self.param("scale", nn.with_logical_partitioning(
        nn.initializers.ones_init(), ("norm",)), (x.shape[-1],),
                       self.param_dtype)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(
        jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (x32 * scale.astype(jnp.float32)).astype(x.dtype)


class SwiGLU(nn.Module):
  """Bias-free gated MLP: down(silu(gate(x)) * up(x))."""
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BLD: jax.Array) -> jax.Array:
    """(B, L, D) -> (B, L, D) in `dtype`."""
    d = x_BLD.shape[-1]
    init = nn.initializers.lecun_normal()

    def kernel(name, shape, names):
      return self.param(name, nn.with_logical_partitioning(init, names),
                        shape, self.param_dtype).astype(self.dtype)

    x = x_BLD.astype(self.dtype)
    gate_BLF = jnp.einsum(
        "bld,df->blf", x, kernel("gate_kernel", (d, self.mlp_dim),
                                 ("embed", "mlp")))
    up_BLF = jnp.einsum(
        "bld,df->blf", x, kernel("up_kernel", (d, self.mlp_dim),
                                 ("embed", "mlp")))
    h_BLF = nn.with_logical_constraint(nn.silu(gate_BLF) * up_BLF, MLP_AXES)
    out = jnp.einsum("blf,fd->bld", h_BLF,
                     kernel("down_kernel", (self.mlp_dim, d),
                            ("mlp", "embed")))
    return nn.with_logical_constraint(out, TOKEN_AXES)


class Attention(nn.Module):
  """Grouped-query self-attention with 3-D RoPE and an optional KV cache.

  Params: q_kernel (D, N, K), k_kernel / v_kernel (D, G, K), q/k/v biases
  (N | G, K) when `qkv_bias`, o_kernel (N, K, D) without bias.
  """
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 1_000_000.0
  mrope_sections: tuple[int, int, int] | None = None  # None: default.
  mrope_interleaved: bool = True  # rope.stream_of_pairs
  qkv_bias: bool = True
  attention: str = "xla"  # One of ATTENTION_IMPLEMENTATIONS.
  attention_block: int = 512  # Keys per block of "blocked".
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BLD: jax.Array, positions_BL3: jax.Array,
               segment_ids_BL: jax.Array, block_ids_BL: jax.Array, *,
               decode: bool = False, kv_len: int | None = None
               ) -> jax.Array:
    """Attends every token to the keys `attention_mask` allows.

    Args:
      x_BLD: (B, L, D) inputs.
      positions_BL3: (B, L, 3) RoPE positions (see `rope`).
      segment_ids_BL: (B, L) int32, 0 = padding.
      block_ids_BL: (B, L) int32, non-decreasing inside a segment.
      decode: use and extend the KV cache (see the module docstring). The
        caller keeps cache_index + L <= max_len; past the end the write
        would be clamped silently.
      kv_len: with `decode`, a static bound on the filled cache length
        after this call (cache_index + L <= kv_len): only the first kv_len
        slots are read, so attention costs what the filled prefix does
        rather than the whole cache. The slots past it are empty (segment
        0, masked), so the result is the same. None: read every slot.

    Returns:
      (B, L, D) in `dtype`; zeros at padding queries.

    Raises:
      ValueError: invalid head configuration, inconsistent input shapes,
        or more new tokens than the cache holds.
    """
    check_heads("Attention", self.num_heads, self.num_kv_heads,
                self.head_dim)
    check_attention("Attention", self.attention, self.attention_block)
    check_inputs("Attention", x_BLD, positions_BL3, segment_ids_BL,
                 block_ids_BL)
    sections = rope.resolve_sections(self.mrope_sections, self.head_dim)
    _, length, d = x_BLD.shape
    x = x_BLD.astype(self.dtype)
    num = {"heads": self.num_heads, "kv_heads": self.num_kv_heads}

    def project(name, heads):
      kernel = self.param(
          name + "_kernel", nn.with_logical_partitioning(
              nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2)),
              ("embed", heads, "head_dim")),
          (d, num[heads], self.head_dim), self.param_dtype)
      y = jnp.einsum("bld,dnk->blnk", x, kernel.astype(self.dtype))
      if self.qkv_bias:
        bias = self.param(
            name + "_bias", nn.with_logical_partitioning(
                nn.initializers.zeros_init(), (heads, "head_dim")),
            (num[heads], self.head_dim), self.param_dtype)
        y = y + bias.astype(self.dtype)
      return y

    q = rope.apply_rope(project("q", "heads"), positions_BL3,
                        self.rope_theta, sections, self.mrope_interleaved)
    k = rope.apply_rope(project("k", "kv_heads"), positions_BL3,
                        self.rope_theta, sections, self.mrope_interleaved)
    v = project("v", "kv_heads")
    q = nn.with_logical_constraint(q, HEAD_AXES)
    k = nn.with_logical_constraint(k, KV_AXES)
    v = nn.with_logical_constraint(v, KV_AXES)
    segment_k, block_k = segment_ids_BL, block_ids_BL

    if decode:
      initialized = self.has_variable("cache", "cached_key")
      new_entries = {"cached_key": (k, KV_AXES),
                     "cached_value": (v, KV_AXES),
                     "cached_segment": (segment_ids_BL.astype(jnp.int32),
                                        ID_AXES),
                     "cached_block": (block_ids_BL.astype(jnp.int32),
                                      ID_AXES)}
      cache = {
          name: self.variable("cache", name, nn.with_logical_partitioning(
              jnp.zeros, names), new.shape, new.dtype)
          for name, (new, names) in new_entries.items()}
      index = self.variable("cache", "cache_index",
                            lambda: jnp.zeros((), jnp.int32))
      if initialized:
        max_len = cache["cached_key"].value.shape[1]
        if length > max_len:
          raise ValueError(f"Attention decode: {length} new tokens do not fit "
                           f"a cache of max_len={max_len}.")
        i = index.value
        for name, (new, _) in new_entries.items():
          start = (0, i) + (0,) * (new.ndim - 2)
          cache[name].value = jax.lax.dynamic_update_slice(
              cache[name].value, new, start)
        index.value = i + length
        if kv_len is not None and not length <= kv_len <= max_len:
          raise ValueError(f"Attention decode: kv_len={kv_len} must lie in "
                           f"[{length}, {max_len}] (new tokens, cache size).")
        read = slice(None, kv_len)
        k = cache["cached_key"].value[:, read]
        v = cache["cached_value"].value[:, read]
        segment_k = cache["cached_segment"].value[:, read]
        block_k = cache["cached_block"].value[:, read]

    out_BLNK = dot_product_attention(
        q, k, v, segment_ids_BL, block_ids_BL, segment_k, block_k,
        implementation=self.attention, block=self.attention_block)
    out_BLNK = nn.with_logical_constraint(out_BLNK, HEAD_AXES)
    o_kernel = self.param("o_kernel", nn.with_logical_partitioning(
        nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
        ("heads", "head_dim", "embed")), (self.num_heads, self.head_dim, d),
                          self.param_dtype)
    out = jnp.einsum("blnk,nkd->bld", out_BLNK, o_kernel.astype(self.dtype))
    return nn.with_logical_constraint(out, TOKEN_AXES)
