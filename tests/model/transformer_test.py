# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Decoder stack: KV cache vs full forward, causality, scan vs loop, remat,
dtypes, logical names, GQA, validation, and a sharded forward on 4 devices.

Sequences mix text tokens (own block) and image scales (one block per
scale), with packed documents and padding. One module-scoped model is
initialised once; every jitted function sees a handful of shapes, so the
file is compile-bound and small.
"""

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from nextflow_jax import sharding
from nextflow_jax.model import layers
from nextflow_jax.model import rope
from nextflow_jax.model import transformer

CONFIG = dict(num_layers=2, width=64, num_heads=4, num_kv_heads=2,
              head_dim=16, mlp_dim=128, rope_theta=10_000.0)
B, L, MAX_LEN = 2, 23, 32

# (segment, grid): grid None is a text token, (h, w) an image scale.
TEXT = [(1, None)]
SINGLE = TEXT * 6 + [(1, (1, 1)), (1, (2, 2)), (1, (3, 3))] + TEXT * 3
LAYOUTS = {
    # 6 text | 1-token block | 4-token block | 9-token block | 3 text.
    "single": (SINGLE, SINGLE),
    # Two packed documents per row, then padding.
    "packed": (
        TEXT * 3 + [(1, (2, 2))] + TEXT * 2 + [(2, None)] * 2 +
        [(2, (3, 3))],
        TEXT * 7 + [(2, (2, 2)), (2, (3, 3)), (2, None)],
    ),
}
# Decode calls: prefill 7, a 4-token scale, a 9-token scale, 3 single tokens.
CHUNKS = ((0, 7), (7, 11), (11, 20), (20, 21), (21, 22), (22, 23))


def _layout(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(positions (B, L, 3), segment_ids (B, L), block_ids (B, L))."""
  pos = np.zeros((B, L, 3), np.float32)
  seg = np.zeros((B, L), np.int32)
  blk = np.zeros((B, L), np.int32)
  for r, parts in enumerate(LAYOUTS[name]):
    i, state = 0, {}
    for segment, grid in parts:
      block, t = state.get(segment, (1, 0))
      p = (rope.text_positions(1, t) if grid is None else
           rope.image_positions((grid,), scale_offset=t))
      n = len(p)
      pos[r, i:i + n], seg[r, i:i + n], blk[r, i:i + n] = p, segment, block
      state[segment] = (block + 1, t + 1)
      i += n
  return pos, seg, blk


def _x(seed: int = 0) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (B, L, CONFIG["width"]))


def _key() -> jax.Array:
  return jax.random.key(0, impl="rbg")


def _boxes(tree):
  return jax.tree.leaves(
      tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


@pytest.fixture(scope="module")
def setup():
  model = transformer.Transformer(**CONFIG)
  params = nn.unbox(jax.jit(model.init)(_key(), _x(), *_layout("single")))
  return types.SimpleNamespace(model=model, params=params,
                               forward=jax.jit(model.apply))


@pytest.fixture(scope="module")
def decoder(setup):
  """(empty cache from init(decode=True) on a max_len dummy, step fn)."""
  dummy = (jnp.zeros((B, MAX_LEN, CONFIG["width"])),
           jnp.zeros((B, MAX_LEN, 3)), jnp.zeros((B, MAX_LEN), jnp.int32),
           jnp.zeros((B, MAX_LEN), jnp.int32))
  init = jax.jit(functools.partial(setup.model.init, decode=True))
  step = jax.jit(functools.partial(setup.model.apply, decode=True,
                                   mutable=["cache"]))
  return init(_key(), *dummy)["cache"], step


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_kv_cache_matches_full_forward(setup, decoder, layout):
  pos, seg, blk = _layout(layout)
  x = _x(1)
  full = setup.forward(setup.params, x, pos, seg, blk)
  cache, step = decoder
  outs = []
  for a, b in CHUNKS:
    out, mutated = step({"params": setup.params["params"], "cache": cache},
                        x[:, a:b], pos[:, a:b], seg[:, a:b], blk[:, a:b])
    cache = mutated["cache"]
    outs.append(out)
  np.testing.assert_allclose(np.concatenate(outs, axis=1), full, atol=1e-5)
  attn_cache = nn.unbox(cache)["layers"]["attn"]
  np.testing.assert_array_equal(attn_cache["cache_index"], [L, L])
  np.testing.assert_array_equal(attn_cache["cached_segment"][0, :, :L], seg)
  assert not attn_cache["cached_segment"][:, :, L:].any()


def test_prefix_sized_cache_reads_equal_whole_cache_reads(setup, decoder):
  pos, seg, blk = _layout("packed")
  x = _x(1)
  cache, step = decoder
  whole, short = cache, cache
  prefix_step = jax.jit(functools.partial(setup.model.apply, decode=True,
                                          mutable=["cache"]),
                        static_argnames="kv_len")
  for a, b in CHUNKS:
    args = (x[:, a:b], pos[:, a:b], seg[:, a:b], blk[:, a:b])
    want, whole = step({"params": setup.params["params"], "cache": whole},
                       *args)
    got, short = prefix_step({"params": setup.params["params"],
                              "cache": short}, *args, kv_len=b)
    whole, short = whole["cache"], short["cache"]
    np.testing.assert_allclose(got, want, atol=1e-6)
  with pytest.raises(ValueError, match=r"kv_len=2 must lie in \[3, 32\]"):
    jax.eval_shape(functools.partial(setup.model.apply, decode=True,
                                     mutable=["cache"], kv_len=2),
                   {"params": setup.params["params"], "cache": short},
                   *(a[:, :3] for a in (x, pos, seg, blk)))


@pytest.mark.parametrize("implementation,block", [("blocked", 5),
                                                  ("pallas", 128)])
def test_attention_implementations_match_xla_full_and_decode(
    setup, implementation, block):
  """The same parameters under another attention (blocked key blocks of 5,
  which divide neither L nor the cache; the Pallas kernel, interpreted):
  the full forward and the KV-cached decode (prefix-sized reads) equal the
  XLA stack's forward."""
  pos, seg, blk = _layout("packed")
  x = _x(1)
  want = setup.forward(setup.params, x, pos, seg, blk)
  blocked = transformer.Transformer(**CONFIG, attention=implementation,
                                    attention_block=block)
  got = jax.jit(blocked.apply)(setup.params, x, pos, seg, blk)
  np.testing.assert_allclose(got, want, atol=2e-5)
  dummy = (jnp.zeros((B, MAX_LEN, CONFIG["width"])),
           jnp.zeros((B, MAX_LEN, 3)), jnp.zeros((B, MAX_LEN), jnp.int32),
           jnp.zeros((B, MAX_LEN), jnp.int32))
  cache = jax.jit(functools.partial(blocked.init, decode=True))(
      _key(), *dummy)["cache"]
  step = jax.jit(functools.partial(blocked.apply, decode=True,
                                   mutable=["cache"]), static_argnames="kv_len")
  outs = []
  for a, b in CHUNKS:
    out, mutated = step({"params": setup.params["params"], "cache": cache},
                        x[:, a:b], pos[:, a:b], seg[:, a:b], blk[:, a:b],
                        kv_len=b)
    cache = mutated["cache"]
    outs.append(out)
  np.testing.assert_allclose(np.concatenate(outs, axis=1), want, atol=2e-5)


def test_decode_overflowing_the_cache_raises(setup, decoder):
  cache, _ = decoder
  too_long = (jnp.zeros((B, MAX_LEN + 1, CONFIG["width"])),
              jnp.zeros((B, MAX_LEN + 1, 3)),
              jnp.ones((B, MAX_LEN + 1), jnp.int32),
              jnp.ones((B, MAX_LEN + 1), jnp.int32))
  with pytest.raises(ValueError, match="do not fit a cache of max_len=32"):
    jax.eval_shape(functools.partial(setup.model.apply, decode=True,
                                     mutable=["cache"]),
                   {"params": setup.params["params"], "cache": cache},
                   *too_long)


@pytest.mark.parametrize("layout, j", [("single", 8), ("packed", 4),
                                       ("packed", 9)])
def test_a_token_only_affects_its_segment_from_its_block_on(setup, layout,
                                                            j):
  pos, seg, blk = _layout(layout)
  x = _x(2)
  base = np.asarray(setup.forward(setup.params, x, pos, seg, blk))
  moved = np.asarray(setup.forward(setup.params, x.at[0, j].add(1.0), pos,
                                   seg, blk))
  affected = (seg[0] == seg[0, j]) & (blk[0] >= blk[0, j])
  diff = np.abs(moved - base).max(axis=-1)
  assert (diff[0, affected] > 1e-4).all(), diff[0]
  np.testing.assert_array_equal(diff[0, ~affected], 0.0)
  np.testing.assert_array_equal(diff[1], 0.0)


def test_scan_and_loop_agree(setup):
  pos, seg, blk = _layout("packed")
  loop = transformer.Transformer(**CONFIG, scan_layers=False)
  stacked = setup.params["params"]["layers"]
  loop_params = {"params": {
      "final_norm": setup.params["params"]["final_norm"],
      **{f"layers_{i}": jax.tree.map(lambda a, i=i: a[i], stacked)
         for i in range(CONFIG["num_layers"])}}}
  abstract = nn.unbox(jax.eval_shape(loop.init, _key(), _x(), pos, seg, blk))
  assert (jax.tree.map(lambda a: a.shape, loop_params) ==
          jax.tree.map(lambda a: a.shape, abstract))
  np.testing.assert_allclose(
      jax.jit(loop.apply)(loop_params, _x(), pos, seg, blk),
      setup.forward(setup.params, _x(), pos, seg, blk), atol=1e-5)


def test_remat_policies_give_identical_outputs_and_grads(setup):
  pos, seg, blk = _layout("packed")
  results = []
  for policy in ("none", "full", "dots_with_no_batch_dims_saveable"):
    model = transformer.Transformer(**CONFIG, remat_policy=policy)

    def loss(params, model=model):
      out = model.apply(params, _x(), pos, seg, blk)
      return jnp.mean(jnp.square(out - 0.5)), out

    results.append(jax.jit(jax.value_and_grad(loss, has_aux=True))(
        setup.params))
  (_, ref_out), ref_grads = results[0]
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(ref_grads))
  # Same math; remat only changes XLA's fusion, hence rounding.
  for (_, out), grads in results[1:]:
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6,
                                   rtol=1e-4), grads, ref_grads)


def test_bf16_compute_keeps_params_f32():
  model = transformer.Transformer(**CONFIG, dtype=jnp.bfloat16)
  out, variables = jax.eval_shape(model.init_with_output, _key(), _x(),
                                  *_layout("single"))
  assert out.shape == (B, L, CONFIG["width"]) and out.dtype == jnp.bfloat16
  params = jax.tree.leaves(nn.unbox(variables))
  assert params and all(p.dtype == jnp.float32 for p in params)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_every_param_and_cache_entry_has_logical_names(scan_layers):
  model = transformer.Transformer(**CONFIG, scan_layers=scan_layers)
  variables = jax.eval_shape(functools.partial(model.init, decode=True),
                             _key(), _x(), *_layout("single"))
  leaves = jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(
      x, nn.LogicallyPartitioned))
  per_block = 12  # 2 norms, q/k/v kernels and biases, o, 3 MLP kernels.
  assert len(leaves) == (per_block if scan_layers else 2 * per_block) + 1
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), leaf
    assert len(leaf.names) == leaf.value.ndim, leaf
    assert set(leaf.names) <= set(sharding.LOGICAL_AXES), leaf.names
    assert len(set(leaf.names)) == len(leaf.names), leaf.names
  if scan_layers:
    attn = variables["params"]["layers"]["attn"]
    assert attn["q_kernel"].names == ("layers", "embed", "heads", "head_dim")
    assert attn["q_kernel"].value.shape == (2, 64, 4, 16)
    cache = variables["cache"]["layers"]["attn"]
    assert cache["cached_key"].names == ("layers",) + layers.KV_AXES
    assert cache["cached_key"].value.shape == (2, B, L, 2, 16)
    assert cache["cached_block"].names == ("layers",) + layers.ID_AXES
    assert cache["cache_index"].shape == (2,)


@pytest.mark.parametrize("num_kv_heads", [1, 4])
def test_gqa_extremes(num_kv_heads):
  model = transformer.Transformer(**dict(CONFIG, num_kv_heads=num_kv_heads))
  out, variables = jax.eval_shape(model.init_with_output, _key(), _x(),
                                  *_layout("single"))
  assert out.shape == (B, L, CONFIG["width"])
  k_kernel = variables["params"]["layers"]["attn"]["k_kernel"]
  assert k_kernel.value.shape == (2, 64, num_kv_heads, 16)


@pytest.mark.parametrize("overrides, inputs, match", [
    (dict(num_kv_heads=3), {}, "multiple of num_kv_heads=3"),
    (dict(num_heads=2, num_kv_heads=4), {}, "multiple of num_kv_heads=4"),
    (dict(head_dim=15), {}, "even"),
    (dict(mrope_sections=(2, 2, 2)), {}, "sum to 6"),
    (dict(remat_policy="sometimes"),
     {}, r"remat_policy='sometimes' is not supported; choose one of .*full"),
    (dict(num_layers=0), {}, "num_layers=0 must be positive"),
    (dict(width=48), {}, r"width=48 but x has shape \(2, 23, 64\)"),
    ({}, dict(positions=np.zeros((B, L, 2))),
     r"positions must have shape \(2, 23, 3\)"),
    ({}, dict(block_ids=np.zeros((B, L - 1), np.int32)),
     r"block_ids must have shape \(2, 23\)"),
])
def test_invalid_configs_and_inputs_raise(overrides, inputs, match):
  model = transformer.Transformer(**dict(CONFIG, **overrides))
  pos, seg, blk = _layout("single")
  args = (inputs.get("positions", pos), seg, inputs.get("block_ids", blk))
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(model.init, _key(), _x(), *args)


def test_sharded_forward_matches_unsharded(setup):
  mesh = sharding.make_mesh((1, 2, 2))
  rules = sharding.get_rules("fsdp_tp")
  model = setup.model
  inputs = (np.asarray(_x(3)), *_layout("packed"))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(model.init, _key(), *inputs)
    shardings = sharding.logical_shardings(abstract, mesh, rules)
    variables = jax.jit(lambda r: nn.unbox(model.init(r, *inputs)),
                        out_shardings=shardings)(_key())
    out = jax.jit(model.apply)(variables,
                               *sharding.shard_batch(inputs, mesh))
  params = variables["params"]["layers"]
  assert params["attn"]["q_kernel"].sharding.spec == P(None, "fsdp",
                                                        "tensor", None)
  assert params["attn"]["k_kernel"].sharding.spec == P(None, "fsdp",
                                                        "tensor", None)
  assert params["mlp"]["down_kernel"].sharding.spec == P(None, "tensor",
                                                         "fsdp")
  reference = setup.forward(jax.device_get(variables), *inputs)
  np.testing.assert_allclose(out, reference, atol=1e-5)
