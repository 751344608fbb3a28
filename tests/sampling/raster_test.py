# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Raster sampler: cached steps == one full forward, CFG, <eoi>, seeds."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax.data import sequences as seq
from nextflow_jax.sampling import raster
from nextflow_jax.sampling import state as state_lib
from nextflow_jax.text import vocab

K, V = 40, 64
GRID = (3, 4)
LAYOUT = seq.Layout(rope_range=16.0, image_order="raster")
PROMPTS = [[vocab.BOS_ID, 10, 11, 12], [vocab.BOS_ID, 13]]
UNCOND = [vocab.BOS_ID]
PROMPT_LEN = 8
DOC_LEN = 32
# Full forward vs cached steps: the same float32 math in other groupings.
ATOL = 2e-4


def _doc(prompt, codes=None, eos=False):
  parts = [seq.Text(prompt, loss=False)]
  if codes is not None:
    parts.append(seq.Image([codes], [codes]))
  if eos:
    parts.append(seq.Text([vocab.EOS_ID]))
  return seq.build(parts, LAYOUT, codebook_size=K)


@pytest.fixture(scope="module")
def setup(tiny):
  model, params = tiny
  forward = jax.jit(lambda p, b: model.apply({"params": p}, b))
  gens = {cfg: raster.make_generate(model, grid=GRID, layout=LAYOUT,
                                    top_k=5, cfg=cfg, return_logits=True)
          for cfg in (False, True)}
  return types.SimpleNamespace(model=model, params=params, forward=forward,
                               gens=gens)


def _knobs(guidance=2.0, temperature=1.0, top_p=0.9):
  return {"temperature": jnp.float32(temperature),
          "top_p": jnp.float32(top_p), "guidance": jnp.float32(guidance)}


def _prompts(cfg):
  prompts = PROMPTS + ([UNCOND] * len(PROMPTS) if cfg else [])
  return state_lib.stack_prompts([_doc(p) for p in prompts], PROMPT_LEN)


def _run(setup, cfg, knobs, seed=0):
  fields, time, block = _prompts(cfg)
  keys = state_lib.row_keys(seed, 0, len(PROMPTS))
  return setup.gens[cfg](setup.params, fields, time, block, keys, knobs)


def _full(setup, prompt, codes):
  """(visual logits at the image's target positions, hidden states, doc)."""
  doc = seq.pad(_doc(prompt, np.asarray(codes), eos=True), DOC_LEN)
  batch = {k: jnp.asarray(v)[None] for k, v in doc.items()}
  hidden = setup.forward(setup.params, batch)
  logits = setup.model.apply({"params": setup.params}, hidden,
                             method=setup.model.visual_logits)
  return np.asarray(logits)[0][doc["target_is_visual"]], hidden[0], doc


@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "cfg"])
def test_cached_cell_steps_equal_one_full_forward(setup, cfg):
  knobs = _knobs()
  codes, logits = _run(setup, cfg, knobs)
  assert codes.shape == (2,) + GRID
  n = GRID[0] * GRID[1]
  assert logits.shape == (2, n, K)
  for r, prompt in enumerate(PROMPTS):
    full, _, _ = _full(setup, prompt, codes[r])
    assert full.shape == (n, K)
    if cfg:
      uncond, _, _ = _full(setup, UNCOND, codes[r])
      full = full + float(knobs["guidance"]) * (full - uncond)
    np.testing.assert_allclose(logits[r], full, atol=ATOL, rtol=1e-4)


def test_eoi_hidden_state_and_counters_match_the_full_forward(setup):
  fields, time, block = _prompts(False)
  keys = state_lib.row_keys(0, 0, len(PROMPTS))
  knobs = _knobs()
  model = setup.model

  @jax.jit
  def generate(params):
    state, _ = state_lib.prefill(model, params, fields, time, block,
                                 raster.cache_length(PROMPT_LEN, GRID))
    state, codes, hidden, _ = raster.sample_image(
        model, params, state, grid=GRID, layout=LAYOUT, keys=keys, top_k=5,
        temperature=knobs["temperature"], top_p=knobs["top_p"],
        guidance=knobs["guidance"], cfg=False,
        active=jnp.ones((len(PROMPTS),), bool))
    return state, codes, hidden

  state, codes, hidden = generate(setup.params)
  assert int(state.length) == state.max_len  # cache_length is exact
  for r, prompt in enumerate(PROMPTS):
    _, full_hidden, doc = _full(setup, prompt, codes[r])
    eoi = int(np.nonzero(doc["tokens"] == vocab.EOI_ID)[0][0])
    np.testing.assert_allclose(hidden[r], full_hidden[eoi], atol=ATOL,
                               rtol=1e-4)
    # The next text token continues the document's counters.
    assert int(state.time[r]) == int(doc["positions"][eoi + 1, 0])
    assert int(state.block[r]) == int(doc["block_ids"][eoi])


def test_guidance_weight_zero_is_the_conditional_branch(setup):
  knobs = _knobs(guidance=0.0)
  codes_plain, logits_plain = _run(setup, False, knobs)
  codes_cfg, logits_cfg = _run(setup, True, knobs)
  np.testing.assert_allclose(logits_plain, logits_cfg, atol=ATOL, rtol=1e-4)
  np.testing.assert_array_equal(codes_plain, codes_cfg)


def test_a_seed_gives_the_same_image_twice_and_seeds_differ(setup):
  knobs = _knobs()
  first, _ = _run(setup, True, knobs, seed=3)
  again, _ = _run(setup, True, knobs, seed=3)
  other, _ = _run(setup, True, knobs, seed=4)
  np.testing.assert_array_equal(first, again)
  assert (np.asarray(first) != np.asarray(other)).any()


def test_greedy_sampling_takes_the_arg_max(setup):
  codes, logits = _run(setup, True, _knobs(temperature=0.0))
  np.testing.assert_array_equal(np.asarray(codes).reshape(2, -1),
                                np.argmax(np.asarray(logits), -1))


def test_bad_arguments_fail_clearly(setup):
  with pytest.raises(ValueError, match="image_order='next_scale'"):
    raster.make_generate(setup.model, grid=GRID, layout=seq.Layout(),
                         top_k=None, cfg=False)
  with pytest.raises(ValueError, match=r"grid=\(0, 4\) must have positive"):
    raster.make_generate(setup.model, grid=(0, 4), layout=LAYOUT, top_k=None,
                         cfg=False)
