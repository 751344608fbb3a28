# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Flash attention as Pallas TPU kernels under the decoder's mask rule.

`layers.dot_product_attention(implementation="pallas")`: a forward kernel
and, under `jax.grad`, two backward kernels.
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

The backward pass (FlashAttention-2's, under `jax.custom_vjp`): the forward
kernel also writes each row's log-sum-exp; D = rowsum(dO * O) is one XLA
reduction; then two kernels recompute each visible block's probabilities
P = exp(S - lse) under the same mask and table:
  * dK, dV: grid (B, N, key blocks, query blocks), query blocks sequential:
    dV += P^T dO, dK += dS^T (scale q), with dS = P * (dO V^T - D). They are
    accumulated per query head in float32 and summed over each KV head's
    group outside the kernel (GQA without atomics).
  * dQ: grid (B, N, query blocks, key blocks), key blocks sequential:
    dQ += scale dS K.

Choices (and why):
  * Block sizes: `block` (the config's `attention_block`, a multiple of 128)
    for both queries and keys, shrunk to the padded length for short
    inputs (queries to a multiple of 8, keys of 128).
  * Residuals: q, k, v, the ids, the output and the (B, N, L) log-sum-exp;
    the padded, transposed layout is rebuilt in the backward pass rather
    than stored.
  * On TPU the kernels are compiled by Mosaic; on CPU they run in the
    Pallas interpreter (exact, slow: what the tests use). There is no GPU
    lowering of these kernels (they use TPU grid specs): on GPU choose
    "cudnn".
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


def _logits_and_mask(q: jax.Array, k_ref, segment_q_ref, block_q_ref,
                     segment_k_ref, block_k_ref) -> tuple[jax.Array, jax.Array]:
  """(bq, bk) float32 logits of scaled queries q (bq, K) against a key
  block, masked to `_MASKED`, and the boolean mask of the ids' rule."""
  logits = jax.lax.dot_general(q, k_ref[...].astype(jnp.float32),
                               (((1,), (1,)), ((), ())),
                               preferred_element_type=jnp.float32)
  segment_k = segment_k_ref[...][:1, :]  # (1, bk)
  mask = ((segment_q_ref[...][:, :1] == segment_k) & (segment_k != 0) &
          (block_k_ref[...][:1, :] <= block_q_ref[...][:, :1]))
  return jnp.where(mask, logits, _MASKED), mask


def _forward_kernel(visible_ref, q_ref, k_ref, v_ref, segment_q_ref,
                    block_q_ref, segment_k_ref, block_k_ref, o_ref, lse_ref,
                    m_scratch, l_scratch, acc_scratch, *, scale: float):
  """One (batch, head, query block, key block) step of the online softmax;
  the last key block writes the output and the rows' log-sum-exp."""
  b, qi, ki = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(ki == 0)
  def _init():
    m_scratch[...] = jnp.full(m_scratch.shape, _MASKED, jnp.float32)
    l_scratch[...] = jnp.zeros(l_scratch.shape, jnp.float32)
    acc_scratch[...] = jnp.zeros(acc_scratch.shape, jnp.float32)

  @pl.when(visible_ref[b, qi, ki] != 0)
  def _accumulate():
    q = q_ref[...].astype(jnp.float32) * scale  # (bq, K)
    logits, mask = _logits_and_mask(q, k_ref, segment_q_ref, block_q_ref,
                                    segment_k_ref, block_k_ref)
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
    seen = total > 0
    safe_total = jnp.where(seen, total, 1.0)
    o_ref[...] = (acc_scratch[...] / safe_total).astype(o_ref.dtype)
    # A row that sees no key gets lse 0; the backward masks its
    # probabilities to 0 whatever lse is.
    lse = jnp.where(seen, m_scratch[...][:, :1] + jnp.log(safe_total), 0.0)
    lse_ref[...] = jnp.broadcast_to(lse, lse_ref.shape)


def _block_grads(scale, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref,
                 *ids) -> tuple[jax.Array, jax.Array, jax.Array]:
  """For one visible block pair: the scaled queries (bq, K), the softmax
  probabilities P (bq, bk) recomputed from the saved log-sum-exp, and
  dS = P * (dO V^T - rowsum(dO * O))."""
  q = q_ref[...].astype(jnp.float32) * scale
  logits, mask = _logits_and_mask(q, k_ref, *ids)
  p = jnp.where(mask, jnp.exp(logits - lse_ref[...][:, :1]), 0.0)
  dp = jax.lax.dot_general(do_ref[...].astype(jnp.float32),
                           v_ref[...].astype(jnp.float32),
                           (((1,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32)
  return q, p, p * (dp - di_ref[...][:, :1])


def _dkv_kernel(visible_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref,
                segment_q_ref, block_q_ref, segment_k_ref, block_k_ref,
                dk_ref, dv_ref, dk_scratch, dv_scratch, *, scale: float):
  """One (batch, query head, key block, query block) step of dK and dV:
  dV += P^T dO, dK += dS^T (scale q), accumulated over query blocks."""
  b, kj, qi = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(qi == 0)
  def _init():
    dk_scratch[...] = jnp.zeros(dk_scratch.shape, jnp.float32)
    dv_scratch[...] = jnp.zeros(dv_scratch.shape, jnp.float32)

  @pl.when(visible_ref[b, qi, kj] != 0)
  def _accumulate():
    q, p, ds = _block_grads(scale, q_ref, k_ref, v_ref, do_ref, lse_ref,
                            di_ref, segment_q_ref, block_q_ref,
                            segment_k_ref, block_k_ref)
    transposed = (((0,), (0,)), ((), ()))
    dv_scratch[...] += jax.lax.dot_general(
        p, do_ref[...].astype(jnp.float32), transposed,
        preferred_element_type=jnp.float32)
    dk_scratch[...] += jax.lax.dot_general(
        ds, q, transposed, preferred_element_type=jnp.float32)

  @pl.when(qi == pl.num_programs(3) - 1)
  def _write():
    dk_ref[...] = dk_scratch[...]
    dv_ref[...] = dv_scratch[...]


def _dq_kernel(visible_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref,
               segment_q_ref, block_q_ref, segment_k_ref, block_k_ref,
               dq_ref, dq_scratch, *, scale: float):
  """One (batch, query head, query block, key block) step of dQ:
  dQ += scale dS K, accumulated over key blocks."""
  b, qi, kj = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(kj == 0)
  def _init():
    dq_scratch[...] = jnp.zeros(dq_scratch.shape, jnp.float32)

  @pl.when(visible_ref[b, qi, kj] != 0)
  def _accumulate():
    _, _, ds = _block_grads(scale, q_ref, k_ref, v_ref, do_ref, lse_ref,
                            di_ref, segment_q_ref, block_q_ref,
                            segment_k_ref, block_k_ref)
    dq_scratch[...] += scale * jax.lax.dot(
        ds, k_ref[...].astype(jnp.float32),
        preferred_element_type=jnp.float32)

  @pl.when(kj == pl.num_programs(3) - 1)
  def _write():
    dq_ref[...] = dq_scratch[...].astype(dq_ref.dtype)


class _Layout:
  """Inputs padded to whole blocks and transposed to the kernels' layout:
  q (B, N, Lp, K), k and v (B, G, Sp, K), lane/sublane-broadcast ids, the
  visible-block table, and the BlockSpecs that read them."""

  def __init__(self, q_BLNK, k_BSGK, v_BSGK, segment_q_BL, block_q_BL,
               segment_k_BS, block_k_BS, block):
    b, length, n, d = q_BLNK.shape
    s, g = k_BSGK.shape[1], k_BSGK.shape[2]
    bq, bk = block_sizes(length, s, block)
    lp, sp = _round_up(length, bq), _round_up(s, bk)
    self.dims = b, length, n, d, s, g, bq, bk, lp, sp
    # Padding rows and keys get segment 0: masked like any padding.
    self.pad_l = ((0, 0), (0, lp - length))
    self.pad_s = ((0, 0), (0, sp - s))
    segment_q, block_q = (jnp.pad(x.astype(jnp.int32), self.pad_l)
                          for x in (segment_q_BL, block_q_BL))
    segment_k, block_k = (jnp.pad(x.astype(jnp.int32), self.pad_s)
                          for x in (segment_k_BS, block_k_BS))
    self.visible = visible_blocks(segment_q, block_q, segment_k, block_k, bq,
                                  bk)
    self.q = self.rows(q_BLNK)
    self.k, self.v = (jnp.pad(x, self.pad_s + ((0, 0), (0, 0))).transpose(
        0, 2, 1, 3) for x in (k_BSGK, v_BSGK))
    self.ids = ([jnp.broadcast_to(x[:, :, None], (b, lp, LANES))
                 for x in (segment_q, block_q)] +
                [jnp.broadcast_to(x[:, None, :], (b, SUBLANES, sp))
                 for x in (segment_k, block_k)])
    self.group = n // g

  def rows(self, x_BLNK):
    """(B, L, N, K) -> (B, N, Lp, K)."""
    return jnp.pad(x_BLNK, self.pad_l + ((0, 0), (0, 0))).transpose(0, 2, 1,
                                                                    3)

  def lanes(self, x_BNL):
    """(B, N, Lp) per-row numbers -> (B, N, Lp, 128), as blocks need."""
    return jnp.broadcast_to(x_BNL[..., None], (*x_BNL.shape, LANES))

  def specs(self, key_major: bool):
    """BlockSpecs (q rows, kv rows, per-row lanes, q ids, k ids, per-head
    key rows) for a grid (B, N, query blocks, key blocks), or (B, N, key
    blocks, query blocks) when `key_major`."""
    *_, d, _, _, bq, bk, _, _ = self.dims
    group = self.group  # lax.div in the index maps: `//` lowers through sign

    def grid_ij(index_map):  # (i, j) = (query block, key block)
      if key_major:
        return lambda b, h, j, i, _: index_map(b, h, i, j)
      return lambda b, h, i, j, _: index_map(b, h, i, j)

    return (pl.BlockSpec((None, None, bq, d),
                         grid_ij(lambda b, h, i, j: (b, h, i, 0))),
            pl.BlockSpec((None, None, bk, d), grid_ij(
                lambda b, h, i, j: (b, jax.lax.div(h, group), j, 0))),
            pl.BlockSpec((None, None, bq, LANES),
                         grid_ij(lambda b, h, i, j: (b, h, i, 0))),
            pl.BlockSpec((None, bq, LANES),
                         grid_ij(lambda b, h, i, j: (b, i, 0))),
            pl.BlockSpec((None, SUBLANES, bk),
                         grid_ij(lambda b, h, i, j: (b, 0, j))),
            pl.BlockSpec((None, None, bk, d),
                         grid_ij(lambda b, h, i, j: (b, h, j, 0))))


_SEMANTICS = pltpu.CompilerParams(
    dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))


def _forward(q, k, v, segment_q, block_q, segment_k, block_k, block,
             interpret):
  """(out (B, L, N, K), lse (B, N, Lp) float32)."""
  lay = _Layout(q, k, v, segment_q, block_q, segment_k, block_k, block)
  b, length, n, d, _, _, bq, bk, lp, sp = lay.dims
  q_spec, kv_spec, lane_spec, q_id_spec, k_id_spec, _ = lay.specs(False)
  out, lse = pl.pallas_call(
      functools.partial(_forward_kernel, scale=d ** -0.5),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=1,
          grid=(b, n, lp // bq, sp // bk),
          in_specs=[q_spec, kv_spec, kv_spec, q_id_spec, q_id_spec,
                    k_id_spec, k_id_spec],
          out_specs=[q_spec, lane_spec],
          scratch_shapes=[pltpu.VMEM((bq, LANES), jnp.float32),
                          pltpu.VMEM((bq, LANES), jnp.float32),
                          pltpu.VMEM((bq, d), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct((b, n, lp, d), q.dtype),
                 jax.ShapeDtypeStruct((b, n, lp, LANES), jnp.float32)],
      compiler_params=_SEMANTICS,
      interpret=interpret,
  )(lay.visible, lay.q, lay.k, lay.v, *lay.ids)
  return out.transpose(0, 2, 1, 3)[:, :length], lse[..., 0]


def _backward(block, interpret, residuals, grad_out):
  """dq, dk, dv (and None for the ids) from two kernels: dK, dV with key
  blocks outer and query blocks inner, dQ the other way round. dK and dV
  are accumulated per query head and summed over each KV head's group."""
  q, k, v, segment_q, block_q, segment_k, block_k, out, lse = residuals
  lay = _Layout(q, k, v, segment_q, block_q, segment_k, block_k, block)
  b, _, n, d, s, g, bq, bk, lp, sp = lay.dims
  grad_rows = lay.rows(grad_out)
  # rowsum(dO * O): the softmax Jacobian's diagonal term, per query row.
  di = lay.lanes(jnp.sum(grad_rows.astype(jnp.float32) *
                         lay.rows(out).astype(jnp.float32), axis=-1))
  lse = lay.lanes(lse)
  inputs = (lay.visible, lay.q, lay.k, lay.v, grad_rows, lse, di, *lay.ids)
  scale = d ** -0.5
  # dK, dV: the grid runs over (B, N, key blocks, query blocks).
  q_spec, kv_spec, lane_spec, q_id_spec, k_id_spec, head_k_spec = (
      lay.specs(True))
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, scale=scale),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=1,
          grid=(b, n, sp // bk, lp // bq),
          in_specs=[q_spec, kv_spec, kv_spec, q_spec, lane_spec, lane_spec,
                    q_id_spec, q_id_spec, k_id_spec, k_id_spec],
          out_specs=[head_k_spec, head_k_spec],
          scratch_shapes=[pltpu.VMEM((bk, d), jnp.float32),
                          pltpu.VMEM((bk, d), jnp.float32)]),
      out_shape=[jax.ShapeDtypeStruct((b, n, sp, d), jnp.float32)] * 2,
      compiler_params=_SEMANTICS,
      interpret=interpret,
  )(*inputs)
  # dQ: the grid runs over (B, N, query blocks, key blocks).
  q_spec, kv_spec, lane_spec, q_id_spec, k_id_spec, _ = lay.specs(False)
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, scale=scale),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=1,
          grid=(b, n, lp // bq, sp // bk),
          in_specs=[q_spec, kv_spec, kv_spec, q_spec, lane_spec, lane_spec,
                    q_id_spec, q_id_spec, k_id_spec, k_id_spec],
          out_specs=q_spec,
          scratch_shapes=[pltpu.VMEM((bq, d), jnp.float32)]),
      out_shape=jax.ShapeDtypeStruct((b, n, lp, d), q.dtype),
      compiler_params=_SEMANTICS,
      interpret=interpret,
  )(*inputs)

  def per_kv_head(x_BNSK):  # (B, N, Sp, K) -> (B, S, G, K)
    x = x_BNSK.reshape(b, g, n // g, sp, d).sum(2)
    return x.transpose(0, 2, 1, 3)[:, :s]

  return (dq.transpose(0, 2, 1, 3)[:, :q.shape[1]],
          per_kv_head(dk).astype(k.dtype), per_kv_head(dv).astype(v.dtype),
          None, None, None, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _attention(q, k, v, segment_q, block_q, segment_k, block_k, block,
               interpret):
  return _forward(q, k, v, segment_q, block_q, segment_k, block_k, block,
                  interpret)[0]


def _attention_fwd(q, k, v, segment_q, block_q, segment_k, block_k, block,
                   interpret):
  out, lse = _forward(q, k, v, segment_q, block_q, segment_k, block_k, block,
                      interpret)
  return out, (q, k, v, segment_q, block_q, segment_k, block_k, out, lse)


_attention.defvjp(_attention_fwd, _backward)


@functools.partial(jax.jit, static_argnames=("block", "interpret"))
def flash_attention(q_BLNK: jax.Array, k_BSGK: jax.Array, v_BSGK: jax.Array,
                    segment_q_BL: jax.Array, block_q_BL: jax.Array,
                    segment_k_BS: jax.Array, block_k_BS: jax.Array, *,
                    block: int = 512, interpret: bool = False) -> jax.Array:
  """Softmax attention under the ids' mask rule, GQA, as Pallas kernels
  (forward, and backward under `jax.grad`).

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
  return _attention(q_BLNK, k_BSGK, v_BSGK, segment_q_BL, block_q_BL,
                    segment_k_BS, block_k_BS, block, interpret)
