# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Decoder layers: the attention mask rule (by hand and as the module uses
it), GQA, padding, RMSNorm and SwiGLU numerics, argument validation."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax.model import layers
from nextflow_jax.model import pallas_attention
from nextflow_jax.model import rope

B, L, D = 2, 8, 32
ATTN = dict(num_heads=4, head_dim=16, rope_theta=10_000.0)

# Row 0: text, text, 1x1 scale, 2x2 scale, text (one segment).
# Row 1: a 3-token document (text + a 2-token block), a 3-token text
# document, then 2 padding tokens.
SEGMENTS = np.array([[1, 1, 1, 1, 1, 1, 1, 1],
                     [1, 1, 1, 2, 2, 2, 0, 0]], np.int32)
BLOCKS = np.array([[1, 2, 3, 4, 4, 4, 4, 5],
                   [1, 2, 2, 1, 2, 3, 0, 0]], np.int32)
EXPECTED = [
    ["10000000",
     "11000000",
     "11100000",
     "11111110",
     "11111110",
     "11111110",
     "11111110",
     "11111111"],
    ["10000000",
     "11100000",
     "11100000",
     "00010000",
     "00011000",
     "00011100",
     "00000000",
     "00000000"],
]


def _expected() -> np.ndarray:
  return np.array([[[c == "1" for c in row] for row in rows]
                   for rows in EXPECTED])


def _positions() -> np.ndarray:
  row0 = np.concatenate([rope.text_positions(2),
                         rope.image_positions(((1, 1), (2, 2)),
                                              scale_offset=2),
                         rope.text_positions(1, 4)])
  block = rope.text_positions(1, 1)  # Both tokens of the block at 1.
  row1 = np.concatenate([rope.text_positions(1), block, block,
                         rope.text_positions(3), np.zeros((2, 3))])
  return np.stack([row0, row1]).astype(np.float32)


def _x(seed: int = 0) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (B, L, D), jnp.float32)


def _key() -> jax.Array:
  return jax.random.key(0, impl="rbg")


def test_mask_mixed_text_image_packing_padding():
  mask = layers.attention_mask(SEGMENTS, BLOCKS, SEGMENTS, BLOCKS)
  assert mask.shape == (B, L, L) and mask.dtype == jnp.bool_
  np.testing.assert_array_equal(mask, _expected())


def test_mask_pure_image_is_var_rule():
  schedule = ((1, 1), (2, 2), (3, 3), (4, 4))
  levels = np.concatenate([np.full(h * w, k + 1)
                           for k, (h, w) in enumerate(schedule)])[None]
  segments = np.ones_like(levels)
  mask = layers.attention_mask(segments, levels, segments, levels)
  np.testing.assert_array_equal(mask[0], levels[0][:, None] >= levels[0])


def test_mask_against_a_cache():
  # Queries of a new scale against a cache with two written and two empty
  # slots: empty slots (segment 0) are never visible.
  seg_k = np.array([[1, 1, 0, 0]])
  blk_k = np.array([[1, 2, 0, 0]])
  mask = layers.attention_mask(np.array([[1, 1]]), np.array([[2, 2]]),
                               seg_k, blk_k)
  np.testing.assert_array_equal(mask, [[[1, 1, 0, 0], [1, 1, 0, 0]]])
  with pytest.raises(ValueError, match="one batch size"):
    layers.attention_mask(SEGMENTS, BLOCKS, seg_k, blk_k)
  with pytest.raises(ValueError, match="one batch size"):
    layers.attention_mask(SEGMENTS, BLOCKS[:, :3], SEGMENTS, BLOCKS)


@pytest.mark.parametrize("implementation,block", [
    ("blocked", 3), ("blocked", 8), ("blocked", 64), ("pallas", 128)])
def test_implementations_equal_xla_in_values_and_gradients(implementation,
                                                           block):
  """Packing, padding, block-causal images and GQA (4 query heads on 2 KV
  heads); key blocks that do not divide S (3), one block (8) and a block
  larger than S (64, and the Pallas kernel's 128): the same outputs and
  gradients as the XLA path."""
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  q = jax.random.normal(k1, (B, L, 4, 16))
  k = jax.random.normal(k2, (B, L, 2, 16))
  v = jax.random.normal(k3, (B, L, 2, 16))
  ids = (SEGMENTS, BLOCKS, SEGMENTS, BLOCKS)

  def loss(impl, q, k, v):
    out = layers.dot_product_attention(q, k, v, *ids, implementation=impl,
                                       block=block)
    return jnp.sum(jnp.sin(out)), out

  (_, want), grads_want = jax.value_and_grad(
      lambda *a: loss("xla", *a), argnums=(0, 1, 2), has_aux=True)(q, k, v)
  (_, got), grads_got = jax.jit(jax.value_and_grad(
      lambda *a: loss(implementation, *a), argnums=(0, 1, 2),
      has_aux=True))(
          q, k, v)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
  assert not np.any(np.asarray(got)[1, 6:])  # padding queries are zero
  for g, w in zip(grads_got, grads_want):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=1e-4)


def _packed_documents(length, seed):
  """(B, length) segment and block ids of packed documents mixing text
  tokens (own block) and image scales of 4 and 16 tokens, padded at the
  end."""
  rng = np.random.default_rng(seed)
  segments = np.zeros((B, length), np.int32)
  blocks = np.zeros((B, length), np.int32)
  for row in range(B):
    start, segment = 0, 1
    while start < length - 20:
      size = min(int(rng.integers(20, 150)), length - 20 - start)
      ids, block = [], 0
      while len(ids) < size:
        block += 1
        ids += [block] * int(rng.choice([1, 1, 4, 16]))
      segments[row, start:start + size] = segment
      blocks[row, start:start + size] = ids[:size]
      start, segment = start + size, segment + 1
  return segments, blocks


def test_pallas_kernel_skips_invisible_blocks_and_equals_xla():
  """300 queries on 300 keys in blocks of 128: a 3x3 grid of block pairs
  whose table marks the causal upper blocks invisible; the kernel's output
  equals the XLA path on real rows (padding rows are zeroed by the caller),
  and so do the backward kernels' gradients.
  Also a cache read: 8 new queries against 300 keys whose last slots are
  empty."""
  segments, blocks = _packed_documents(300, seed=0)
  k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
  q = jax.random.normal(k1, (B, 300, 4, 16))
  k = jax.random.normal(k2, (B, 300, 2, 16))
  v = jax.random.normal(k3, (B, 300, 2, 16))
  padded = [np.pad(x, ((0, 0), (0, 84))) for x in (segments, blocks)]
  table = np.asarray(pallas_attention.visible_blocks(*padded, *padded, 128,
                                                     128))
  assert table.shape == (B, 3, 3)
  assert not table[:, 0, 2].any() and table.diagonal(axis1=1, axis2=2).all()
  ids = (segments, blocks, segments, blocks)
  want = layers.dot_product_attention(q, k, v, *ids)
  got = pallas_attention.flash_attention(q, k, v, *ids, block=128,
                                         interpret=True)
  real = segments != 0
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real],
                             atol=2e-6)
  # The backward kernels over the same 3x3 block pairs (skipped ones
  # included) give XLA's gradients.
  weights = jax.random.normal(jax.random.key(3), q.shape)

  def loss(implementation, q, k, v):
    out = layers.dot_product_attention(q, k, v, *ids, block=128,
                                       implementation=implementation)
    return jnp.sum(out * weights)

  grads_want = jax.grad(functools.partial(loss, "xla"), (0, 1, 2))(q, k, v)
  grads_got = jax.jit(jax.grad(functools.partial(loss, "pallas"),
                               (0, 1, 2)))(q, k, v)
  for g, w in zip(grads_got, grads_want):
    np.testing.assert_allclose(g, w, atol=1e-5)
  # Decode-style read: the last 8 written tokens against the whole cache,
  # of which the last 40 slots are empty (segment 0).
  cache_segments = np.where(np.arange(300) < 260, segments, 0)
  cache_ids = (cache_segments, blocks)
  new = (segments[:, 252:260], blocks[:, 252:260])
  want = layers.dot_product_attention(q[:, 252:260], k, v, *new, *cache_ids)
  got = layers.dot_product_attention(q[:, 252:260], k, v, *new, *cache_ids,
                                     implementation="pallas", block=128)
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_pallas_kernels_lower_for_tpu():
  """The forward and backward kernels lower through Mosaic for a TPU
  (cross-platform export on the CPU host); the TPU compiler itself runs
  only on a TPU."""
  q = jnp.zeros((1, 256, 4, 128), jnp.bfloat16)
  k = jnp.zeros((1, 256, 2, 128), jnp.bfloat16)
  ids = jnp.ones((1, 256), jnp.int32)
  exported = jax.export.export(
      jax.jit(functools.partial(pallas_attention.flash_attention, block=128)),
      platforms=("tpu",))(q, k, k, ids, ids, ids, ids)
  assert exported.mlir_module().count("tpu_custom_call") == 1
  # The gradient: the forward kernel and the two backward kernels.
  grad = jax.grad(lambda q, k, v: jnp.sum(pallas_attention.flash_attention(
      q, k, v, ids, ids, ids, ids, block=128).astype(jnp.float32)),
                  (0, 1, 2))
  exported = jax.export.export(jax.jit(grad), platforms=("tpu",))(q, k, k)
  assert exported.mlir_module().count("tpu_custom_call") == 3


def test_an_unknown_attention_implementation_is_named():
  q = jnp.zeros((B, L, 4, 16))
  with pytest.raises(ValueError, match=r"attention='flash'.*xla"):
    layers.dot_product_attention(q, q, q, SEGMENTS, BLOCKS, SEGMENTS,
                                 BLOCKS, implementation="flash")
  with pytest.raises(ValueError, match=r"attention_block=100: the pallas "
                     r"kernel needs a multiple of 128"):
    layers.dot_product_attention(q, q, q, SEGMENTS, BLOCKS, SEGMENTS,
                                 BLOCKS, implementation="pallas", block=100)
  with pytest.raises(ValueError, match=r"attention_block=0"):
    layers.Attention(num_kv_heads=2, attention_block=0, **ATTN).init(
        jax.random.key(0), _x(), _positions(), SEGMENTS, BLOCKS)


@pytest.fixture(scope="module")
def attention():
  module = layers.Attention(num_kv_heads=2, **ATTN)
  args = (_positions(), SEGMENTS, BLOCKS)
  params = nn.unbox(jax.jit(module.init)(_key(), _x(), *args))
  return module, params, args


def test_attention_uses_the_mask(attention):
  module, params, args = attention
  jac = jax.jit(jax.jacfwd(lambda x: module.apply(params, x, *args)))(_x())
  dep = np.abs(np.asarray(jac)).sum(axis=(2, 5))  # (B, Lq, B, Lk)
  for b in range(B):
    np.testing.assert_array_equal(dep[b, :, b] > 0, _expected()[b])
    assert not dep[b, :, 1 - b].any()


def test_attention_padding_rows_are_zero_and_grads_finite(attention):
  module, params, args = attention
  out = jax.jit(module.apply)(params, _x(), *args)
  assert out.shape == (B, L, D)
  np.testing.assert_array_equal(out[1, 6:], 0.0)
  assert np.isfinite(out).all() and np.abs(out[:, :6]).min() > 0

  def loss(p):
    return jnp.sum(module.apply(p, _x(), *args) ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_gqa_equals_mha_with_repeated_kv_heads(attention, num_kv_heads):
  _, _, args = attention
  gqa = layers.Attention(num_kv_heads=num_kv_heads, **ATTN)
  mha = layers.Attention(num_kv_heads=4, **ATTN)
  params = nn.unbox(gqa.init(_key(), _x(), *args))["params"]
  repeat = 4 // num_kv_heads
  mha_params = {name: (jnp.repeat(p, repeat, axis=1 if "kernel" in name else 0)
                       if name[0] in "kv" else p)
                for name, p in params.items()}
  mha_shapes = jax.eval_shape(mha.init, _key(), _x(), *args)["params"]
  assert {k: v.shape for k, v in mha_params.items()} == {
      k: v.value.shape for k, v in mha_shapes.items()}
  np.testing.assert_allclose(
      mha.apply({"params": mha_params}, _x(), *args),
      gqa.apply({"params": params}, _x(), *args), atol=1e-5)


def test_attention_params_and_names():
  module = layers.Attention(num_kv_heads=2, qkv_bias=False, **ATTN)
  variables = jax.eval_shape(module.init, _key(), _x(), _positions(),
                             SEGMENTS, BLOCKS)
  params = variables["params"]
  assert sorted(params) == ["k_kernel", "o_kernel", "q_kernel", "v_kernel"]
  assert params["q_kernel"].names == ("embed", "heads", "head_dim")
  assert params["k_kernel"].value.shape == (D, 2, 16)
  assert params["o_kernel"].names == ("heads", "head_dim", "embed")
  biased = jax.eval_shape(layers.Attention(num_kv_heads=2, **ATTN).init,
                          _key(), _x(), _positions(), SEGMENTS, BLOCKS)
  assert biased["params"]["k_bias"].names == ("kv_heads", "head_dim")
  assert "o_bias" not in biased["params"]


@pytest.mark.parametrize("config, inputs, match", [
    (dict(num_heads=4, num_kv_heads=3, head_dim=16), {},
     r"num_heads=4 must be a positive multiple of num_kv_heads=3"),
    (dict(num_heads=4, num_kv_heads=0, head_dim=16), {},
     "positive multiple"),
    (dict(num_heads=4, num_kv_heads=2, head_dim=15), {}, "even"),
    (dict(num_heads=4, num_kv_heads=2, head_dim=16,
          mrope_sections=(4, 2, 1)), {}, "sum to 7"),
    (dict(num_heads=4, num_kv_heads=2, head_dim=16),
     dict(positions=np.zeros((B, L, 2), np.float32)),
     r"positions must have shape \(2, 8, 3\)"),
    (dict(num_heads=4, num_kv_heads=2, head_dim=16),
     dict(segments=SEGMENTS[:, :4]), r"segment_ids must have shape"),
])
def test_attention_invalid_arguments_raise(config, inputs, match):
  module = layers.Attention(**config)
  positions = inputs.get("positions", _positions())
  segments = inputs.get("segments", SEGMENTS)
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(module.init, _key(), _x(), positions, segments, BLOCKS)


def test_rmsnorm():
  norm = layers.RMSNorm(eps=1e-6)
  x = np.asarray(_x()) * 3.0 + 1.0
  variables = norm.init(_key(), x)
  assert variables["params"]["scale"].names == ("norm",)
  params = {"params": {"scale": jnp.linspace(0.5, 1.5, D)}}
  expected = x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-6) * (
      np.linspace(0.5, 1.5, D))
  np.testing.assert_allclose(norm.apply(params, x), expected, rtol=1e-5)
  out = norm.apply(params, x.astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16
  assert nn.unbox(variables)["params"]["scale"].dtype == jnp.float32


def test_swiglu():
  mlp = layers.SwiGLU(mlp_dim=48)
  variables = mlp.init(_key(), _x())
  names = {k: v.names for k, v in variables["params"].items()}
  assert names == {"gate_kernel": ("embed", "mlp"),
                   "up_kernel": ("embed", "mlp"),
                   "down_kernel": ("mlp", "embed")}
  p = {k: np.asarray(v, np.float64)
       for k, v in nn.unbox(variables)["params"].items()}
  x = np.asarray(_x(), np.float64)
  gate = x @ p["gate_kernel"]
  expected = (gate / (1 + np.exp(-gate)) * (x @ p["up_kernel"])) @ (
      p["down_kernel"])
  np.testing.assert_allclose(mlp.apply(variables, _x()), expected,
                             rtol=1e-4, atol=1e-5)
  bf16 = layers.SwiGLU(mlp_dim=48, dtype=jnp.bfloat16)
  assert bf16.apply(variables, _x()).dtype == jnp.bfloat16
