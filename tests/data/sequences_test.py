# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The sequence layout: label alignment, residual inputs, positions, weights."""

import jax
import numpy as np
import pytest

from nextflow_jax import scales
from nextflow_jax.data import sequences as seq
from nextflow_jax.text import vocab

SCHEDULE = ((1, 1), (2, 2), (3, 3))
K = 50


def image(seed=0, loss=True):
  rng = np.random.default_rng(seed)
  targets = [rng.integers(0, K, hw) for hw in SCHEDULE]
  inputs = [np.where(rng.random(hw) < 0.5, rng.integers(0, K, hw), t)
            for hw, t in zip(SCHEDULE, targets)]
  return seq.Image(inputs, targets, loss)


def test_text_image_text_layout():
  img = image()
  out = seq.build([seq.Text([vocab.BOS_ID, 20, 21], loss=False), img,
                   seq.Text([30, vocab.EOS_ID])], seq.Layout(),
                  codebook_size=K)
  n_img = 1 + 4 + 9 + 1  # <boi>, blocks for scales 2 and 3, <eoi>
  assert len(out["tokens"]) == 3 + n_img + 2
  boi = 3
  # Text: position 2 (token 21) predicts <boi>, supervised with the image.
  assert out["targets"][2] == vocab.BOI_ID and out["loss_weights"][2] == 1
  assert out["loss_weights"][0] == 0  # 20 is not supervised (prompt)
  # <boi> predicts the 1x1 scale.
  assert out["tokens"][boi] == vocab.BOI_ID
  assert out["target_is_visual"][boi] and out["target_scales"][boi] == 1
  assert out["targets"][boi] == img.targets[0][0, 0]
  # Block of scale 2 predicts scale-2 targets cell by cell.
  blk2 = slice(boi + 1, boi + 5)
  np.testing.assert_array_equal(out["targets"][blk2], img.targets[1].ravel())
  assert out["target_scales"][blk2].tolist() == [2] * 4
  assert out["is_visual"][blk2].all() and (out["scale_ids"][blk2] == 2).all()
  blk3 = slice(boi + 5, boi + 14)
  np.testing.assert_array_equal(out["targets"][blk3], img.targets[2].ravel())
  # <eoi> is an input, not a target; it predicts the text after the image.
  eoi = boi + 14
  assert out["tokens"][eoi] == vocab.EOI_ID
  assert out["targets"][eoi] == 30 and out["loss_weights"][eoi] == 1
  assert not out["target_is_visual"][boi - 1]
  assert out["loss_weights"][-1] == 0  # nothing after the last token


def test_block_inputs_are_upsampled_residual_codes_not_cumulative():
  img = image(1)
  out = seq.build([img], seq.Layout(), codebook_size=K)
  emb = np.random.default_rng(0).normal(size=(K, 5)).astype(np.float32)
  feats = (emb[out["visual_codes"]] * out["visual_weights"][..., None]).sum(1)
  for k, sl in ((1, slice(1, 5)), (2, slice(5, 14))):
    prev = emb[img.inputs[k - 1]]  # (h, w, 5): inputs of the previous scale
    want = jax.image.resize(prev, SCHEDULE[k] + (5,), "bicubic-pytorch")
    np.testing.assert_allclose(feats[sl], np.asarray(want).reshape(-1, 5),
                               rtol=1e-5, atol=1e-5)
  # 1x1 -> 2x2: every cell reads exactly the scale-1 input code.
  assert (out["visual_codes"][1:5, 0] == img.inputs[0][0, 0]).all()
  np.testing.assert_allclose(out["visual_weights"][1:5, 0], 1.0)


def test_positions_blocks_and_scale_ids():
  out = seq.build([seq.Text([2, 7]), image()], seq.Layout(rope_range=12.0),
                  codebook_size=K)
  pos = out["positions"]
  np.testing.assert_array_equal(pos[:3], [[0, 0, 0], [1, 1, 1], [2, 2, 2]])
  # Scale 2 (2x2): time b + 1 = 3, rows/cols C/2 * (i + .5).
  np.testing.assert_allclose(pos[3:7], [[3, 3, 3], [3, 3, 9], [3, 9, 3],
                                        [3, 9, 9]])
  np.testing.assert_allclose(pos[7, 1:], [2, 2])  # 3x3: C/3 * 0.5
  assert pos[7, 0] == 4 and (pos[-1] == 5).all()  # <eoi> at b + K
  blocks = out["block_ids"]
  assert blocks.tolist() == [1, 2, 3] + [4] * 4 + [5] * 9 + [6]
  assert (np.diff(blocks) >= 0).all()
  assert out["num_scales"].tolist() == [0, 0, 3] + [3] * 13 + [0]


def test_context_image_has_no_loss_and_optional_final_block():
  img = image(2, loss=False)
  plain = seq.build([img], seq.Layout(), codebook_size=K)
  assert plain["loss_weights"].sum() == 0
  full = seq.build([img], seq.Layout(context_final_block=True),
                   codebook_size=K)
  assert len(full["tokens"]) == len(plain["tokens"]) + 9
  last_block = slice(14, 23)
  np.testing.assert_array_equal(full["visual_codes"][last_block, 0],
                                img.inputs[2].ravel())
  assert not full["target_is_visual"][last_block].any()


@pytest.mark.parametrize("alpha", [0.0, 0.9])
def test_scale_reweighting(alpha):
  out = seq.build([image()], seq.Layout(alpha=alpha), codebook_size=K)
  w = out["loss_weights"][out["target_is_visual"]]
  np.testing.assert_allclose(w.sum(), 1 + 4 + 9, rtol=1e-5)
  if alpha == 0:
    np.testing.assert_allclose(w, 1.0)
  else:
    assert w[0] > w[1] > w[-1]
    k = np.array([1, 4, 9], np.float64) ** -alpha
    np.testing.assert_allclose(w[0] / w[-1], k[0] / k[2], rtol=1e-5)


def test_paper_share_of_the_first_eight_scales():
  """nextflow-method.md 5.2: alpha 0.9 gives the first 8 of 18 scales 35.9%."""
  schedule = scales.paper_schedule("1:1", 1024)
  w = seq.scale_weights(schedule, 0.9)
  n = np.array([h * w for h, w in schedule])
  share = (w * n)[:8].sum() / (w * n).sum()
  assert share == pytest.approx(0.359, abs=0.001)


def test_pad_and_errors():
  out = seq.pad(seq.build([seq.Text([2, 5, 3])], seq.Layout(),
                          codebook_size=K), 6)
  assert out["segment_ids"].tolist() == [1, 1, 1, 0, 0, 0]
  with pytest.raises(ValueError, match="more than seq_len=2"):
    seq.pad(seq.build([seq.Text([2, 5, 3])], seq.Layout(), codebook_size=K),
            2, "r9")
  bad = image()
  bad.targets[1][0, 0] = K
  with pytest.raises(ValueError, match=r"outside the codebook \[0, 50\)"):
    seq.build([bad], seq.Layout(), codebook_size=K)
  with pytest.raises(ValueError, match="'<bogus>', which is not a special"):
    seq.check_text("a <bogus> token", "r1")
  assert seq.check_text("a <boi> b", "r1") == "a <boi> b"


RASTER = seq.Layout(rope_range=12.0, image_order="raster")
GRID = (2, 3)


def raster_image(seed=0, loss=True):
  rng = np.random.default_rng(seed)
  targets = rng.integers(0, K, GRID)
  inputs = np.where(rng.random(GRID) < 0.5, rng.integers(0, K, GRID), targets)
  return seq.Image([inputs], [targets], loss)


def test_raster_layout_is_causal_per_cell_and_predicts_the_next_cell():
  img = raster_image()
  out = seq.build([seq.Text([vocab.BOS_ID, 20], loss=False), img,
                   seq.Text([30, vocab.EOS_ID])], RASTER, codebook_size=K)
  n = GRID[0] * GRID[1]
  boi, cells, eoi = 2, slice(3, 3 + n - 1), 3 + n - 1
  assert len(out["tokens"]) == 2 + 1 + (n - 1) + 1 + 2
  assert out["tokens"][boi] == vocab.BOI_ID and out["tokens"][eoi] == (
      vocab.EOI_ID)
  # <boi> predicts cell 0; cell i is fed its own code, predicts cell i + 1.
  assert out["targets"][boi] == img.targets[0][0, 0]
  assert out["targets"][1] == vocab.BOI_ID and out["loss_weights"][1] == 1
  np.testing.assert_array_equal(out["targets"][cells],
                                img.targets[0].ravel()[1:])
  np.testing.assert_array_equal(out["visual_codes"][cells, 0],
                                img.inputs[0].ravel()[:-1])
  np.testing.assert_array_equal(out["visual_weights"][cells, 0], 1.0)
  assert not out["visual_weights"][cells, 1:].any()
  assert out["is_visual"][cells].all() and out["target_is_visual"][cells].all()
  assert (out["target_scales"][boi:eoi] == 1).all()
  np.testing.assert_array_equal(out["loss_weights"][boi:eoi], 1.0)
  # One block per position: causal attention over the cells.
  assert out["block_ids"].tolist() == list(range(1, len(out["tokens"]) + 1))
  assert (out["scale_ids"][cells] == 1).all() and out["scale_ids"][boi] == 0
  assert (out["num_scales"][boi:eoi] == 1).all() and out["num_scales"][eoi] == 0
  # Time b + 1 + i, row/col of the fed cell; <eoi> at b + n.
  pos = out["positions"]
  np.testing.assert_array_equal(pos[cells, 0], boi + 1 + np.arange(n - 1))
  np.testing.assert_allclose(pos[cells, 1:], seq.image_positions(
      (GRID,), 0, 12.0)[:-1])
  assert (pos[eoi] == boi + n).all() and (pos[eoi + 1] == boi + n + 1).all()
  assert out["targets"][eoi] == 30 and out["loss_weights"][eoi] == 1


def test_raster_context_image_gets_every_cell():
  img = raster_image(1, loss=False)
  out = seq.build([img, seq.Text([30])], RASTER, codebook_size=K)
  n = GRID[0] * GRID[1]
  cells = slice(1, 1 + n)
  np.testing.assert_array_equal(out["visual_codes"][cells, 0],
                                img.inputs[0].ravel())
  assert out["loss_weights"][:1 + n].sum() == 0  # <eoi> predicts 30
  assert out["target_is_visual"][cells].tolist() == [True] * (n - 1) + [False]
  assert out["tokens"][1 + n] == vocab.EOI_ID
  assert out["positions"][1 + n, 0] == n + 1


def test_raster_order_errors():
  with pytest.raises(ValueError, match=r"raster image order needs "
                     r"single-scale codes.*extract.schedule=3x3"):
    seq.build([image()], RASTER, codebook_size=K)
  with pytest.raises(ValueError, match="image_order='zigzag' is unknown"):
    seq.Layout(image_order="zigzag")
  with pytest.raises(ValueError, match="context_final_block applies to "
                     "next-scale order only"):
    seq.Layout(image_order="raster", context_final_block=True)
