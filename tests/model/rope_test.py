# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""3-D RoPE: 1-D equivalence for text, HF M-RoPE layout, the interleaved
layout, relative positions, image coordinates and argument validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax.model import rope

B, L, N, K = 2, 7, 3, 16
THETA = 10_000.0


def _x(seed: int = 0, shape=(B, L, N, K)) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _rotate_half(x):
  x1, x2 = np.split(x, 2, axis=-1)
  return np.concatenate([-x2, x1], axis=-1)


def _rope_1d(x, t, theta):
  """Plain 1-D RoPE (HF Llama/Qwen2): x (B, L, N, K), t (B, L)."""
  k = x.shape[-1]
  inv_freq = 1.0 / theta ** (np.arange(0, k, 2, dtype=np.float64) / k)
  freqs = t[..., None] * inv_freq.astype(np.float32)
  emb = np.concatenate([freqs, freqs], -1)[:, :, None, :]
  return x * np.cos(emb) + _rotate_half(x) * np.sin(emb)


def _mrope_hf(x, positions, theta, sections):
  """HF Qwen2.5-VL M-RoPE: per-stream cos/sin split by sections * 2."""
  k = x.shape[-1]
  inv_freq = 1.0 / theta ** (np.arange(0, k, 2, dtype=np.float64) / k)
  # (3, B, L, K): one full table per stream.
  freqs = np.moveaxis(positions, -1, 0)[..., None] * inv_freq.astype(
      np.float32)
  emb = np.concatenate([freqs, freqs], -1)
  bounds = np.cumsum(list(sections) * 2)[:-1]
  cos = np.concatenate([c[i % 3] for i, c in enumerate(
      np.split(np.cos(emb), bounds, axis=-1))], -1)[:, :, None, :]
  sin = np.concatenate([s[i % 3] for i, s in enumerate(
      np.split(np.sin(emb), bounds, axis=-1))], -1)[:, :, None, :]
  return x * cos + _rotate_half(x) * sin


def test_default_sections():
  assert rope.default_sections(128) == rope.QWEN_SECTIONS
  assert rope.default_sections(64) == (8, 12, 12)
  assert rope.default_sections(16) == (2, 3, 3)
  for head_dim in range(6, 258, 2):
    sections = rope.default_sections(head_dim)
    assert sum(sections) == head_dim // 2 and min(sections) >= 1, head_dim
  for bad in (4, 15):
    with pytest.raises(ValueError, match="even and at least 6"):
      rope.default_sections(bad)


@pytest.mark.parametrize("sections, head_dim, match", [
    ((2, 3), 16, "three non-negative ints"),
    ((2, 3, -1, 4), 16, "three non-negative ints"),
    ((2, 3, 3.0), 16, "three non-negative ints"),
    ((2, 3, 4), 16, r"sum to 9 but head_dim=16 has 8"),
    ((2, 3, 3), 15, "even head_dim"),
])
def test_sections_validation(sections, head_dim, match):
  with pytest.raises(ValueError, match=match):
    rope.check_sections(sections, head_dim)
  if head_dim % 2 == 0:
    with pytest.raises(ValueError, match=match):
      rope.apply_rope(_x(shape=(1, 2, 1, head_dim)), jnp.zeros((1, 2, 3)),
                      THETA, sections)
  assert rope.resolve_sections(None, 16) == (2, 3, 3)


def test_apply_rope_bad_shapes():
  with pytest.raises(ValueError, match=r"\(B, L, N, K\)"):
    rope.apply_rope(jnp.zeros((B, L, K)), jnp.zeros((B, L, 3)), THETA,
                    (2, 3, 3))
  with pytest.raises(ValueError, match=r"\(B, L, 3\)"):
    rope.apply_rope(_x(), jnp.zeros((B, L, 2)), THETA, (2, 3, 3))


def test_stream_of_pairs_contiguous_and_interleaved():
  np.testing.assert_array_equal(rope.stream_of_pairs((2, 3, 3)),
                                [0, 0, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(rope.stream_of_pairs((2, 3, 3), True),
                                [0, 1, 2, 0, 1, 2, 1, 2])
  for sections in ((8, 12, 12), (16, 24, 24), (1, 1, 6), (8, 0, 0)):
    order = rope.stream_of_pairs(sections, True)
    np.testing.assert_array_equal(np.bincount(order, minlength=3), sections)


def test_interleaved_lets_the_model_tell_columns_apart():
  """Neighbouring columns of an 8x8 grid (spacing 8 on [0, 64]) at the cpu
  preset's head_dim 64 and theta 1e6: the column stream's fastest pair
  turns by under 0.002 rad between them when contiguous (the model could
  not tell the columns apart and drew bands), by 8 rad interleaved."""
  head_dim, theta, spacing = 64, 1e6, 64.0 / 8
  freqs = rope.inv_frequencies(head_dim, theta)
  sections = rope.default_sections(head_dim)
  for interleaved, low, high in ((False, 0.0, 2e-3), (True, 1.0, np.inf)):
    columns = freqs[rope.stream_of_pairs(sections, interleaved) == 2]
    assert low <= columns.max() * spacing < high


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("sections", [(2, 3, 3), (8, 0, 0), (1, 1, 6)])
def test_equal_streams_is_1d_rope(sections, interleaved):
  x = _x()
  t = np.asarray(jax.random.uniform(jax.random.key(1), (B, L), jnp.float32,
                                    0.0, 500.0))
  positions = np.repeat(t[..., None], 3, axis=-1)
  got = rope.apply_rope(x, positions, THETA, sections, interleaved)
  np.testing.assert_allclose(got, _rope_1d(np.asarray(x), t, THETA),
                             atol=1e-6, rtol=0)
  # Bit-identical to putting every frequency pair on one stream.
  np.testing.assert_array_equal(
      got, rope.apply_rope(x, positions, THETA, (8, 0, 0)))


def test_matches_hf_mrope_layout():
  x = _x()
  positions = np.asarray(jax.random.uniform(
      jax.random.key(2), (B, L, 3), jnp.float32, 0.0, 64.0))
  for sections in ((2, 3, 3), (3, 2, 3)):
    got = rope.apply_rope(x, positions, THETA, sections)
    np.testing.assert_allclose(
        got, _mrope_hf(np.asarray(x), positions, THETA, sections),
        atol=1e-5, rtol=0)


@pytest.mark.parametrize("interleaved", [False, True])
def test_relative_positions_per_stream(interleaved):
  q, k = _x(3, (1, 1, 1, K)), _x(4, (1, 1, 1, K))
  sections = (2, 3, 3)

  def score(p_q, p_k):
    rq = rope.apply_rope(q, jnp.asarray(p_q, jnp.float32)[None, None],
                         THETA, sections, interleaved)
    rk = rope.apply_rope(k, jnp.asarray(p_k, jnp.float32)[None, None],
                         THETA, sections, interleaved)
    return float(jnp.sum(rq * rk))

  p_q, p_k = np.array([5.0, 12.5, 3.25]), np.array([2.0, 30.0, 7.75])
  base = score(p_q, p_k)
  for shift in ([7.0, 0.0, 0.0], [0.0, -4.5, 0.0], [0.0, 0.0, 11.0],
                [3.0, 9.5, -2.25]):
    np.testing.assert_allclose(score(p_q + shift, p_k + shift), base,
                               atol=1e-4)
  # Changing the offset of any single stream changes the score.
  for stream in range(3):
    moved = p_q.copy()
    moved[stream] += 1.0
    assert abs(score(moved, p_k) - base) > 1e-3, stream


def test_dtype_is_preserved():
  x = _x().astype(jnp.bfloat16)
  assert rope.apply_rope(x, jnp.zeros((B, L, 3)), THETA,
                         (2, 3, 3)).dtype == jnp.bfloat16
  # Position 0 is the identity.
  np.testing.assert_array_equal(
      rope.apply_rope(x, jnp.zeros((B, L, 3)), THETA, (2, 3, 3)), x)


def test_text_positions():
  pos = rope.text_positions(4, offset=3)
  assert pos.shape == (4, 3) and pos.dtype == np.float32
  np.testing.assert_array_equal(pos, [[3] * 3, [4] * 3, [5] * 3, [6] * 3])
  assert rope.text_positions(0).shape == (0, 3)


def test_image_positions_share_extent():
  c = 64.0
  for side in (2, 4):
    pos = rope.image_positions(((side, side),), c)
    assert pos.shape == (side * side, 3) and pos.dtype == np.float32
    spacing = c / side
    for stream in (1, 2):
      coords = np.unique(pos[:, stream])
      np.testing.assert_allclose(np.diff(coords), spacing)
      # Cells tile [0, C]: first cell starts at 0, last cell ends at C.
      np.testing.assert_allclose(coords[0] - spacing / 2, 0.0, atol=1e-5)
      np.testing.assert_allclose(coords[-1] + spacing / 2, c, atol=1e-5)
  # Each 2x2 cell centre is the mean of the four 4x4 cells it covers.
  fine = rope.image_positions(((4, 4),), c)[:, 1:].reshape(2, 2, 2, 2, 2)
  coarse = rope.image_positions(((2, 2),), c)[:, 1:].reshape(2, 2, 2)
  np.testing.assert_allclose(fine.mean(axis=(1, 3)), coarse, atol=1e-5)


def test_image_positions_layout():
  pos = rope.image_positions(((1, 1), (2, 3)), 12.0, scale_offset=5)
  assert pos.shape == (7, 3)
  np.testing.assert_array_equal(pos[:, 0], [5, 6, 6, 6, 6, 6, 6])
  np.testing.assert_allclose(pos[0, 1:], [6.0, 6.0])
  step = 12.0 / np.sqrt(6.0)  # Isotropic spacing on a non-square grid.
  rows, cols = np.divmod(np.arange(6), 3)  # Row-major.
  np.testing.assert_allclose(pos[1:, 1], step * (rows + 0.5), rtol=1e-6)
  np.testing.assert_allclose(pos[1:, 2], step * (cols + 0.5), rtol=1e-6)
  with pytest.raises(ValueError, match="range_factor"):
    rope.image_positions(((2, 2),), 0.0)
  with pytest.raises(ValueError, match="not increasing"):
    rope.image_positions(((2, 2), (1, 1)))
