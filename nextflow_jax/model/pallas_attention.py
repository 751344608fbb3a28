# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Flash attention as a Pallas TPU kernel under the decoder's mask rule.

The forward pass of `layers.dot_product_attention(implementation="pallas")`.
The mask is `layers.attention_mask`'s rule, computed inside the kernel from
the four id vectors (a query sees a key iff same segment, key segment != 0,
block[k] <= block[q]), so one kernel serves packing, padding, causal text,
block-causal image scales and a KV cache: the mask is data, not a static
pattern (splash attention's masks are static NumPy arrays, which cannot
express packed next-scale documents).

Layout and schedule (as jax.experimental.pallas.ops.tpu.flash_attention):
  * q is (B, N, L, K), k and v are (B, G, S, K); the grid is (B, N, L
    blocks, S blocks), the last axis sequential ("arbitrary"), the others
    parallel. Query head h reads KV head h // (N // G) (GQA without
    repeating KV in memory).
  * Online softmax: running max m and sum l as (block_q, 128) lane-broadcast
    float32 scratch, the (block_q, K) accumulator in float32 VMEM; logits,
    softmax and the accumulator are float32 whatever the input dtype.
  * Query ids travel as (B, L, 128) (lane-broadcast) and key ids as (B, 8,
    S) (sublane-broadcast), the layouts TPU blocks need.
  * Block skipping: a (B, L blocks, S blocks) table, scalar-prefetched,
    marks the block pairs that may hold a visible key; the others skip both
    matmuls. The table is conservative (a block pair is skipped only when
    its segment ranges do not overlap, or its smallest key block id exceeds
    its largest query block id), and the exact mask is applied inside.
    Block-causal training sequences skip about half of the pairs; the
    sampler's cache reads skip the empty slots past the filled prefix.

Choices (and why):
  * Forward only. The backward pass differentiates the "blocked"
    implementation (plain JAX, online softmax over key blocks, rematerialised)
    on the same inputs; `layers.py` ties the two with `jax.custom_vjp`. It
    has the same memory bound as the kernel; a Pallas backward kernel would
    be faster and is not written yet.
  * Block sizes: `block` (the config's `attention_block`, a multiple of 128)
    for both queries and keys, shrunk to the padded length for short
    inputs (queries to a multiple of 8, keys of 128).
  * On TPU the kernel is compiled by Mosaic; on CPU it runs in the Pallas
    interpreter (exact, slow: what the tests use). There is no GPU lowering
    of this kernel (it uses TPU grid specs): on GPU choose "cudnn".
"""

from __future__ import annotations

import functools

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
import jax.numpy as jnp

LANES = 128
SUBLANES = 8
_MASKED = -1e30  # finite: a row with nothing visible yet stays finite
_INT_MAX = jnp.iinfo(jnp.int32).max
_INT_MIN = jnp.iinfo(jnp.int32).min


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def block_sizes(length: int, keys: int, block: int) -> tuple[int, int]:
  """The (query, key) block sizes for L queries and S keys: `block`, or
  the padded length when it is shorter (a multiple of 8 / 128)."""
  return (min(block, _round_up(length, SUBLANES)),
          min(block, _round_up(keys, LANES)))


def visible_blocks(segment_q: jax.Array, block_q: jax.Array,
                   segment_k: jax.Array, block_k: jax.Array, bq: int,
                   bk: int) -> jax.Array:
  """Which (query block, key block) pairs may hold a visible key.

  Args:
    segment_q, block_q: (B, Lp) query ids, Lp a multiple of bq.
    segment_k, block_k: (B, Sp) key ids, Sp a multiple of bk.
    bq, bk: block sizes.

  Returns:
    (B, Lp // bq, Sp // bk) int32, 1 where a pair may hold a visible key
    (never 0 where one does), 0 where none can.
  """
  b = segment_q.shape[0]

  def ranges(segment, blocks, size, block_reduce, block_fill):
    segment = segment.reshape(b, -1, size)
    real = segment != 0
    return (jnp.where(real, segment, _INT_MAX).min(-1),
            jnp.where(real, segment, 0).max(-1),
            block_reduce(jnp.where(real, blocks.reshape(b, -1, size),
                                   block_fill), axis=-1))

  q_min, q_max, q_block_max = ranges(segment_q, block_q, bq, jnp.max,
                                     _INT_MIN)
  k_min, k_max, k_block_min = ranges(segment_k, block_k, bk, jnp.min,
                                     _INT_MAX)
  overlap = ((q_min[:, :, None] <= k_max[:, None, :]) &
             (k_min[:, None, :] <= q_max[:, :, None]))
  earlier = k_block_min[:, None, :] <= q_block_max[:, :, None]
  return (overlap & earlier).astype(jnp.int32)


def _kernel(visible_ref, q_ref, k_ref, v_ref, segment_q_ref, block_q_ref,
            segment_k_ref, block_k_ref, o_ref, m_scratch, l_scratch,
            acc_scratch, *, scale: float):
  """One (batch, head, query block, key block) step of the online softmax."""
  b, qi, ki = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(ki == 0)
  def _init():
    m_scratch[...] = jnp.full(m_scratch.shape, _MASKED, jnp.float32)
    l_scratch[...] = jnp.zeros(l_scratch.shape, jnp.float32)
    acc_scratch[...] = jnp.zeros(acc_scratch.shape, jnp.float32)

  @pl.when(visible_ref[b, qi, ki] != 0)
  def _accumulate():
    q = q_ref[...].astype(jnp.float32) * scale  # (bq, K)
    k = k_ref[...].astype(jnp.float32)  # (bk, K)
    logits = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())),
                                 preferred_element_type=jnp.float32)
    segment_k = segment_k_ref[...][:1, :]  # (1, bk)
    mask = ((segment_q_ref[...][:, :1] == segment_k) & (segment_k != 0) &
            (block_k_ref[...][:1, :] <= block_q_ref[...][:, :1]))
    logits = jnp.where(mask, logits, _MASKED)
    m_prev = m_scratch[...][:, :1]  # (bq, 1)
    m_new = jnp.maximum(m_prev, jnp.max(logits, axis=1, keepdims=True))
    p = jnp.where(mask, jnp.exp(logits - m_new), 0.0)
    rescale = jnp.exp(m_prev - m_new)
    l_new = rescale * l_scratch[...][:, :1] + jnp.sum(p, axis=1,
                                                       keepdims=True)
    acc_scratch[...] = acc_scratch[...] * rescale + jax.lax.dot(
        p, v_ref[...].astype(jnp.float32),
        preferred_element_type=jnp.float32)
    m_scratch[...] = jnp.broadcast_to(m_new, m_scratch.shape)
    l_scratch[...] = jnp.broadcast_to(l_new, l_scratch.shape)

  @pl.when(ki == pl.num_programs(3) - 1)
  def _write():
    total = l_scratch[...][:, :1]
    o_ref[...] = (acc_scratch[...] /
                  jnp.where(total > 0, total, 1.0)).astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("block", "interpret"))
def flash_attention(q_BLNK: jax.Array, k_BSGK: jax.Array, v_BSGK: jax.Array,
                    segment_q_BL: jax.Array, block_q_BL: jax.Array,
                    segment_k_BS: jax.Array, block_k_BS: jax.Array, *,
                    block: int = 512, interpret: bool = False) -> jax.Array:
  """Softmax attention under the ids' mask rule, GQA, as one Pallas kernel.

  Args:
    q_BLNK: (B, L, N, K) queries (RoPE applied); k_BSGK, v_BSGK: (B, S, G,
      K) keys and values, N a multiple of G.
    segment_q_BL, block_q_BL, segment_k_BS, block_k_BS: the ids of
      `layers.attention_mask`.
    block: query and key block size, a multiple of 128.
    interpret: run in the Pallas interpreter (any backend) instead of
      compiling with Mosaic (TPU).

  Returns:
    (B, L, N, K) in the dtype of q; zeros where no key is visible.
  """
  b, length, n, d = q_BLNK.shape
  s, g = k_BSGK.shape[1], k_BSGK.shape[2]
  bq, bk = block_sizes(length, s, block)
  lp, sp = _round_up(length, bq), _round_up(s, bk)
  # Padding rows and keys get segment 0: masked like any padding.
  pad_l = ((0, 0), (0, lp - length))
  pad_s = ((0, 0), (0, sp - s))
  segment_q, block_q = (jnp.pad(x.astype(jnp.int32), pad_l)
                        for x in (segment_q_BL, block_q_BL))
  segment_k, block_k = (jnp.pad(x.astype(jnp.int32), pad_s)
                        for x in (segment_k_BS, block_k_BS))
  visible = visible_blocks(segment_q, block_q, segment_k, block_k, bq, bk)
  q = jnp.pad(q_BLNK, pad_l + ((0, 0), (0, 0))).transpose(0, 2, 1, 3)
  k, v = (jnp.pad(x, pad_s + ((0, 0), (0, 0))).transpose(0, 2, 1, 3)
          for x in (k_BSGK, v_BSGK))
  q_ids = [jnp.broadcast_to(x[:, :, None], (b, lp, LANES))
           for x in (segment_q, block_q)]
  k_ids = [jnp.broadcast_to(x[:, None, :], (b, SUBLANES, sp))
           for x in (segment_k, block_k)]

  group = n // g  # lax.div in the index map: `//` lowers through sign
  q_spec = pl.BlockSpec((None, None, bq, d), lambda b, h, i, j, _: (b, h, i, 0))
  kv_spec = pl.BlockSpec((None, None, bk, d),
                         lambda b, h, i, j, _: (b, jax.lax.div(h, group), j, 0))
  q_id_spec = pl.BlockSpec((None, bq, LANES), lambda b, h, i, j, _: (b, i, 0))
  k_id_spec = pl.BlockSpec((None, SUBLANES, bk),
                           lambda b, h, i, j, _: (b, 0, j))
  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=1,
      grid=(b, n, lp // bq, sp // bk),
      in_specs=[q_spec, kv_spec, kv_spec, q_id_spec, q_id_spec, k_id_spec,
                k_id_spec],
      out_specs=q_spec,
      scratch_shapes=[pltpu.VMEM((bq, LANES), jnp.float32),
                      pltpu.VMEM((bq, LANES), jnp.float32),
                      pltpu.VMEM((bq, d), jnp.float32)])
  out = pl.pallas_call(
      functools.partial(_kernel, scale=d ** -0.5),
      grid_spec=grid_spec,
      out_shape=jax.ShapeDtypeStruct((b, n, lp, d), q_BLNK.dtype),
      compiler_params=pltpu.CompilerParams(
          dimension_semantics=("parallel", "parallel", "parallel",
                               "arbitrary")),
      interpret=interpret,
  )(visible, q, k, v, *q_ids, *k_ids)
  return out.transpose(0, 2, 1, 3)[:, :length]
