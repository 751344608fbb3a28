# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tokenizer networks: shapes, dtypes, logical names, masks, errors, grads.

Shape, dtype and naming checks trace with `jax.eval_shape` (no compilation);
numeric checks initialise a few tiny modules once per module. Init uses rbg
keys: threefry init programs take seconds to compile on a 2-core CPU.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax import sharding
from nextflow_jax.tokenizer import networks

CONV = dict(channels=16, num_res_blocks=1, latent_dim=4, num_groups=8)
PIX8 = dict(CONV, channel_mults=(1, 2, 2, 4))
PIX16 = dict(CONV, channel_mults=(1, 1, 2, 2, 4))
PATCH8 = dict(CONV, channel_mults=(1, 2), patch_size=4)  # 8x, s2d stem
VIT = dict(width=32, depth=1, num_heads=2, mlp_dim=64)
TEXT = dict(vocab_size=64, max_len=16, out_dim=24, **VIT)
B = 2


def _key(seed: int = 0) -> jax.Array:
  return jax.random.key(seed, impl="rbg")


def _images(h: int = 32, w: int = 32) -> jax.Array:
  return jax.random.uniform(jax.random.key(1), (B, h, w, 3), jnp.float32,
                            -1.0, 1.0)


def _text_inputs() -> tuple[jax.Array, jax.Array]:
  tokens = jax.random.randint(jax.random.key(2), (B, 12), 0, 64, jnp.int32)
  mask = jnp.arange(12)[None, :] < jnp.array([[5], [12]])
  return tokens, mask


def _modules(dtype=jnp.float32):
  """(name, module, example inputs) for every network at tiny size."""
  tokens, mask = _text_inputs()
  return [
      ("pixel_encoder_8x", networks.PixelEncoder(**PIX8, dtype=dtype),
       (_images(),)),
      ("pixel_encoder_16x", networks.PixelEncoder(**PIX16, dtype=dtype),
       (_images(),)),
      ("pixel_decoder_8x", networks.PixelDecoder(**PIX8, dtype=dtype),
       (jnp.zeros((B, 4, 4, 4)),)),
      ("vit_encoder", networks.ViTEncoder(patch_size=8, latent_dim=8, **VIT,
                                          dtype=dtype), (_images(),)),
      ("vit_decoder", networks.ViTDecoder(out_dim=48, **VIT, dtype=dtype),
       (jnp.zeros((B, 4, 4, 8)),)),
      ("discriminator", networks.PatchDiscriminator(
          channels=16, num_layers=3, num_groups=8, dtype=dtype),
       (_images(),)),
      ("text_encoder", networks.TextEncoder(**TEXT, dtype=dtype),
       (tokens, mask)),
  ]


MODULE_NAMES = [name for name, _, _ in _modules()]


def _boxes(tree):
  return jax.tree.leaves(
      tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


@pytest.fixture(scope="module")
def pixel8():
  enc = networks.PixelEncoder(**PIX8)
  dec = networks.PixelDecoder(**PIX8)
  enc_vars = jax.jit(enc.init)(_key(0), _images())
  dec_vars = jax.jit(dec.init)(_key(1), jnp.zeros((B, 4, 4, 4)))
  return enc, dec, nn.unbox(enc_vars), nn.unbox(dec_vars)


@pytest.fixture(scope="module")
def vit():
  model = networks.ViTEncoder(patch_size=8, latent_dim=8, **VIT)
  return model, nn.unbox(jax.jit(model.init)(_key(), _images()))


@pytest.fixture(scope="module")
def text():
  model = networks.TextEncoder(**TEXT)
  return model, nn.unbox(jax.jit(model.init)(_key(), *_text_inputs()))


@pytest.mark.parametrize("config, size, grid", [
    (PIX8, (32, 32), (4, 4)),
    (PIX16, (32, 32), (2, 2)),
    (PIX8, (32, 64), (4, 8)),
    (PIX16, (64, 32), (4, 2)),
    (PATCH8, (32, 64), (4, 8)),
])
def test_pixel_shapes(config, size, grid):
  enc = networks.PixelEncoder(**config)
  dec = networks.PixelDecoder(**config)
  images = jax.ShapeDtypeStruct((B, *size, 3), jnp.float32)
  assert enc.downsample == size[0] // grid[0]
  latent = jax.eval_shape(lambda x: enc.init_with_output(_key(), x)[0],
                          images)
  assert latent.shape == (B, *grid, 4)
  out = jax.eval_shape(lambda z: dec.init_with_output(_key(), z)[0], latent)
  assert out.shape == (B, *size, 3)


def test_space_to_depth_inverts_and_keeps_patches_whole():
  x = jnp.arange(2 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 8, 12, 3)
  folded = networks.space_to_depth(x, 4)
  assert folded.shape == (2, 2, 3, 48)
  # Cell (1, 2) holds the 4x4 pixel patch at rows 4:8, cols 8:12.
  np.testing.assert_array_equal(folded[0, 1, 2],
                                x[0, 4:8, 8:12].reshape(-1))
  np.testing.assert_array_equal(networks.depth_to_space(folded, 4), x)
  assert networks.space_to_depth(x, 1) is x


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_bf16_compute_keeps_params_f32(name):
  module, inputs = {n: (m, i) for n, m, i in _modules(jnp.bfloat16)}[name]
  outputs, variables = jax.eval_shape(
      lambda *x: module.init_with_output(_key(), *x), *inputs)
  params = jax.tree.leaves(nn.unbox(variables))
  assert params and all(p.dtype == jnp.float32 for p in params)
  assert all(o.dtype == jnp.bfloat16 for o in jax.tree.leaves(outputs))


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_every_param_has_logical_names(name):
  module, inputs = {n: (m, i) for n, m, i in _modules()}[name]
  variables = jax.eval_shape(lambda *x: module.init(_key(), *x), *inputs)
  leaves = _boxes(variables)
  assert leaves
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), leaf
    assert len(leaf.names) == leaf.value.ndim, leaf
    named = [n for n in leaf.names if n is not None]
    assert set(named) <= set(sharding.LOGICAL_AXES), leaf.names
    assert len(named) == len(set(named)), leaf.names


def test_posemb_sincos_2d():
  pe = networks.posemb_sincos_2d(4, 6, 32)
  assert pe.shape == (24, 32) and pe.dtype == np.float32
  np.testing.assert_array_equal(pe, networks.posemb_sincos_2d(4, 6, 32))
  dists = np.linalg.norm(pe[:, None] - pe[None], axis=-1)
  assert dists[~np.eye(24, dtype=bool)].min() > 0.1
  # A cell's embedding depends only on its (row, column): a larger grid
  # extends a smaller one.
  big = networks.posemb_sincos_2d(8, 12, 32).reshape(8, 12, 32)
  np.testing.assert_allclose(big[:4, :6], pe.reshape(4, 6, 32), atol=1e-6)
  with pytest.raises(ValueError, match="divisible by 4"):
    networks.posemb_sincos_2d(2, 2, 30)


def test_vit_encoder_any_grid(vit):
  model, variables = vit
  apply = jax.jit(model.apply, static_argnames="return_features")
  for (h, w), grid in [((32, 32), (4, 4)), ((64, 64), (8, 8)),
                       ((32, 64), (4, 8))]:
    latent, feats = apply(variables, _images(h, w), return_features=True)
    assert latent.shape == (B, *grid, 8)
    assert feats.shape == (B, *grid, 32)
    assert np.isfinite(np.asarray(latent)).all()


def test_vit_decoder_shape():
  model = networks.ViTDecoder(out_dim=48, **VIT)
  latent = jax.ShapeDtypeStruct((B, 3, 5, 8), jnp.float32)
  out = jax.eval_shape(lambda z: model.init_with_output(_key(), z)[0],
                       latent)
  assert out.shape == (B, 3, 5, 48)


def test_text_encoder_ignores_padding(text):
  model, variables = text
  tokens, mask = _text_inputs()
  apply = jax.jit(model.apply)
  out = apply(variables, tokens, mask)
  assert out.shape == (B, 24)
  repadded = jnp.where(mask, tokens, (tokens + 7) % 64)
  assert not np.array_equal(repadded, tokens)
  np.testing.assert_allclose(apply(variables, repadded, mask), out,
                             atol=1e-6)
  changed = tokens.at[:, 0].set((tokens[:, 0] + 1) % 64)
  assert not np.allclose(apply(variables, changed, mask), out, atol=1e-4)


def test_text_encoder_too_long_raises(text):
  model, variables = text
  tokens = jnp.zeros((B, 17), jnp.int32)
  with pytest.raises(ValueError, match="exceeds max_len=16"):
    model.apply(variables, tokens, tokens > 0)


@pytest.mark.parametrize("module, shape, match", [
    (networks.PixelEncoder(**PIX8), (B, 36, 32, 3),
     "not divisible by the downsampling factor 8"),
    (networks.PixelEncoder(**PIX8), (B, 32, 32, 4), "channels must be 3"),
    (networks.PixelEncoder(**dict(PIX8, channels=24, num_groups=16)),
     (B, 32, 32, 3), r"PixelEncoder.num_groups=16 must divide"),
    (networks.PixelDecoder(**dict(PIX8, num_groups=6)), (B, 4, 4, 4),
     r"PixelDecoder.num_groups=6 must divide"),
    (networks.PixelDecoder(**PIX8), (B, 4, 4, 3), r"latent \(B, h, w, 4\)"),
    (networks.ViTEncoder(patch_size=8, **VIT), (B, 32, 36, 3),
     "not divisible by the patch_size 8"),
    (networks.ViTEncoder(patch_size=8, **VIT), (B, 32, 32, 1),
     "channels must be 3"),
    (networks.ViTEncoder(patch_size=8, **dict(VIT, num_heads=3)),
     (B, 32, 32, 3), "divisible by num_heads=3"),
    (networks.PatchDiscriminator(channels=16, num_groups=12),
     (B, 32, 32, 3), "PatchDiscriminator.num_groups=12 must divide"),
    (networks.PatchDiscriminator(channels=16, num_groups=8), (B, 16, 16, 3),
     "at least 24 px"),
])
def test_bad_inputs_raise(module, shape, match):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda x: module.init(_key(), x), x)


@pytest.mark.parametrize("num_layers, size, grid", [
    (3, (32, 32), (2, 2)),
    (3, (64, 48), (6, 4)),
    (2, (32, 32), (6, 6)),
])
def test_discriminator_shapes(num_layers, size, grid):
  model = networks.PatchDiscriminator(channels=16, num_layers=num_layers,
                                      num_groups=8)
  images = jax.ShapeDtypeStruct((B, *size, 3), jnp.float32)
  logits, features = jax.eval_shape(
      lambda x: model.init_with_output(_key(), x)[0], images)
  assert logits.shape == (B, *grid, 1)
  assert len(features) == num_layers + 1
  widths = [16 * min(2 ** n, 8) for n in range(num_layers + 1)]
  assert [f.shape[-1] for f in features] == widths
  assert features[0].shape[1:3] == (size[0] // 2, size[1] // 2)
  assert features[-1].shape[1:3] == (grid[0] + 1, grid[1] + 1)


def test_pixel_autoencoder_gradients(pixel8):
  enc, dec, enc_vars, dec_vars = pixel8
  images = _images()

  def loss_fn(params):
    latent = enc.apply(params["enc"], images)
    return jnp.mean((dec.apply(params["dec"], latent) - images) ** 2)

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(
      {"enc": enc_vars, "dec": dec_vars})
  assert np.isfinite(loss)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(g).all() for g in leaves)
  for part in ("enc", "dec"):
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads[part]))
  nonzero = sum(bool(np.abs(g).max() > 0) for g in leaves)
  assert nonzero >= 0.9 * len(leaves)
  # Runs on a non-square grid too.
  latent = jax.jit(enc.apply)(enc_vars, _images(32, 64))
  assert latent.shape == (B, 4, 8, 4) and np.isfinite(latent).all()
