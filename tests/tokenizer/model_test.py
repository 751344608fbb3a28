# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""VisionTokenizer: encode/decode contracts and clear errors on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax.tokenizer import model as model_lib

SCHEDULE = ((1, 1), (2, 2), (4, 4))


@pytest.fixture(scope="module", params=[True, False], ids=["dual", "pixel"])
def tokenizer(request):
  model = model_lib.VisionTokenizer(
      codebook_size=64, channels=16, channel_mults=(1, 2, 2, 4),
      num_res_blocks=1, attention=False, num_groups=8,
      use_semantic=request.param, vit_width=32, vit_depth=1, vit_heads=2,
      vit_mlp_dim=64, semantic_decoder_depth=1, semantic_out_dim=32)
  images = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3), minval=-1,
                              maxval=1)
  variables = jax.jit(lambda r: model.init(r, images, SCHEDULE))(
      jax.random.key(1))
  encode = jax.jit(lambda v, x: model.apply(v, x, SCHEDULE,
                                            method=model.encode))
  decode = jax.jit(lambda v, idx: model.apply(v, idx, SCHEDULE,
                                              method=model.decode))
  return model, variables, images, encode, decode


def test_encode_shapes_and_batch_equals_per_image(tokenizer):
  model, variables, images, encode, _ = tokenizer
  indices = encode(variables, images)
  assert [i.shape for i in indices] == [(3, 1, 1), (3, 2, 2), (3, 4, 4)]
  assert all(i.dtype == jnp.int32 for i in indices)
  assert all(0 <= int(i.min()) and int(i.max()) < 64 for i in indices)
  for b in range(3):
    single = encode(variables, images[b:b + 1])
    for s, full in zip(single, indices):
      np.testing.assert_array_equal(s[0], full[b])
  assert model.branch_dims == ((32, 8) if model.use_semantic else (8,))


def test_decode_full_and_prefix(tokenizer):
  model, variables, images, encode, decode = tokenizer
  indices = encode(variables, images)
  full = decode(variables, indices)
  assert full.shape == (3, 32, 32, 3) and full.dtype == jnp.float32
  prefix = jax.jit(lambda v, idx: model.apply(v, idx, SCHEDULE,
                                              method=model.decode))(
                                                  variables, indices[:2])
  assert prefix.shape == (3, 32, 32, 3)
  assert not np.allclose(prefix, full)
  out = model.apply(variables, images, SCHEDULE)
  np.testing.assert_allclose(out["recon"], full, rtol=1e-4, atol=1e-4)
  assert ("semantic" in out) == model.use_semantic


@pytest.mark.parametrize("bad,match", [
    (np.zeros((1, 32, 32, 4)), r"expected \(B, H, W, 3\)"),
    (np.zeros((1, 36, 36, 3)), r"36x36 is not divisible by the tokenizer's "
     r"downsampling factor 8"),
    (np.zeros((1, 64, 64, 3)), r"schedule ends at 4x4 but 64x64 images give "
     r"a 8x8 latent grid"),
])
def test_bad_input_images_to_the_tokenizer(tokenizer, bad, match):
  model, variables, _, _, _ = tokenizer
  with pytest.raises(ValueError, match=match):
    model.apply(variables, jnp.asarray(bad, jnp.float32), SCHEDULE,
                method=model.encode)


@pytest.mark.parametrize("indices,match", [
    ([np.zeros((1, 1, 1), np.int32), np.zeros((1, 3, 3), np.int32)],
     r"indices of scale 1 have shape \(1, 3, 3\); the schedule needs "
     r"\(B, 2, 2\)"),
    ([np.full((1, 1, 1), 64, np.int32)],
     r"indices of scale 0 span \[64, 64\], outside the codebook \[0, 64\)"),
    ([np.zeros((1, 1, 1), np.float32)], r"have dtype float32"),
    ([np.zeros((1, 1, 1), np.int32)] * 4, r"got 4 scales of indices for a "
     r"3-scale schedule"),
])
def test_bad_input_indices_to_the_tokenizer(tokenizer, indices, match):
  model, variables, _, _, _ = tokenizer
  with pytest.raises(ValueError, match=match):
    model.apply(variables, [jnp.asarray(i) for i in indices], SCHEDULE,
                method=model.decode)


def test_self_correction_streams_through_the_model(tokenizer):
  model, variables, images, encode, _ = tokenizer
  inputs, targets = model.apply(variables, images, SCHEDULE,
                                jax.random.key(3), rate=0.0, top_k=2,
                                method=model.encode_streams)
  for i, t, e in zip(inputs, targets, encode(variables, images)):
    np.testing.assert_array_equal(i, e)
    np.testing.assert_array_equal(t, e)
