# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Next-scale sampler: cached logits == one full forward, CFG, seeds."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax.data import sequences as seq
from nextflow_jax.sampling import next_scale
from nextflow_jax.sampling import state as state_lib
from nextflow_jax.text import vocab

K, V = 40, 64
SCHEDULE = ((1, 1), (2, 2), (3, 3), (4, 6))
LAYOUT = seq.Layout(rope_range=16.0)
PROMPTS = [[vocab.BOS_ID, 10, 11, 12], [vocab.BOS_ID, 13]]
UNCOND = [vocab.BOS_ID]
PROMPT_LEN = 8
# Full forward vs cached steps: the same float32 math in other groupings.
ATOL = 2e-4


def _doc(prompt, image=None, eos=False):
  parts = [seq.Text(prompt, loss=False)]
  if image is not None:
    parts.append(seq.Image(image, image))
  if eos:
    parts.append(seq.Text([vocab.EOS_ID]))
  return seq.build(parts, LAYOUT, codebook_size=K)


@pytest.fixture(scope="module")
def setup(tiny):
  model, params = tiny
  forward = jax.jit(lambda p, b: model.apply(
      {"params": p}, model.apply({"params": p}, b),
      method=model.visual_logits))
  gens = {cfg: next_scale.make_generate(
      model, schedule=SCHEDULE, layout=LAYOUT, top_k=(None, 5, None, 10), cfg=cfg,
      return_logits=True) for cfg in (False, True)}
  return types.SimpleNamespace(model=model, params=params, forward=forward,
                               gens=gens)


def _knobs(guidance=(0.0, 1.0, 2.0, 3.0), temperature=1.0, top_p=0.9):
  n = len(SCHEDULE)
  return {"temperature": jnp.full((n,), temperature, jnp.float32),
          "top_p": jnp.full((n,), top_p, jnp.float32),
          "guidance": jnp.asarray(guidance, jnp.float32)}


def _run(setup, cfg, knobs, seed=0):
  prompts = PROMPTS + ([UNCOND] * len(PROMPTS) if cfg else [])
  fields, time, block = state_lib.stack_prompts(
      [_doc(p) for p in prompts], PROMPT_LEN)
  keys = state_lib.row_keys(seed, 0, len(PROMPTS))
  return setup.gens[cfg](setup.params, fields, time, block, keys, knobs)


def _full_logits(setup, prompt, codes_row):
  doc = _doc(prompt, [np.asarray(c) for c in codes_row], eos=True)
  batch = {k: jnp.asarray(v)[None] for k, v in seq.pad(doc, 64).items()}
  logits = np.asarray(setup.forward(setup.params, batch))[0]
  return logits[np.asarray(seq.pad(doc, 64)["target_is_visual"])]


@pytest.mark.parametrize("cfg", [False, True], ids=["plain", "cfg"])
def test_cached_scale_steps_equal_one_full_forward(setup, cfg):
  knobs = _knobs()
  codes, logits = _run(setup, cfg, knobs)
  assert [c.shape for c in codes] == [(2,) + s for s in SCHEDULE]
  cached = np.concatenate([np.asarray(l) for l in logits], axis=1)
  for r, prompt in enumerate(PROMPTS):
    row = [c[r] for c in codes]
    full = _full_logits(setup, prompt, row)
    if cfg:
      uncond = _full_logits(setup, UNCOND, row)
      w = np.repeat(np.asarray(knobs["guidance"]),
                    [h * w for h, w in SCHEDULE])[:, None]
      full = full + w * (full - uncond)
    np.testing.assert_allclose(cached[r], full, atol=ATOL, rtol=1e-4)


def test_guidance_weight_zero_is_the_conditional_branch(setup):
  knobs = _knobs(guidance=(0.0,) * len(SCHEDULE))
  codes_plain, logits_plain = _run(setup, False, knobs)
  codes_cfg, logits_cfg = _run(setup, True, knobs)
  for a, b in zip(logits_plain, logits_cfg):
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=1e-4)
  for a, b in zip(codes_plain, codes_cfg):
    np.testing.assert_array_equal(a, b)


def test_a_seed_gives_the_same_image_twice_and_seeds_differ(setup):
  knobs = _knobs()
  first, _ = _run(setup, True, knobs, seed=3)
  again, _ = _run(setup, True, knobs, seed=3)
  other, _ = _run(setup, True, knobs, seed=4)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert any((np.asarray(a) != np.asarray(b)).any()
             for a, b in zip(first, other))


def test_greedy_sampling_takes_the_arg_max(setup):
  codes, logits = _run(setup, True, _knobs(temperature=0.0))
  for c, l in zip(codes, logits):
    np.testing.assert_array_equal(np.asarray(c).reshape(2, -1),
                                  np.argmax(np.asarray(l), -1))


def test_scale_steps_read_only_the_filled_cache_prefix(setup):
  """The filled length is static through prefill and the scale loop, so each
  scale's attention reads that prefix, not the whole cache."""
  fields, time, block = state_lib.stack_prompts(
      [_doc(p) for p in PROMPTS], PROMPT_LEN)
  max_len = PROMPT_LEN + next_scale.cache_length(0, SCHEDULE) + 16

  def run(params, fields, time, block):
    state, _ = state_lib.prefill(setup.model, params, fields, time, block,
                                 max_len)
    prefilled = state.filled
    state, codes, _, _ = next_scale.sample_image(
        setup.model, params, state, schedule=SCHEDULE, layout=LAYOUT,
        keys=state_lib.row_keys(0, 0, len(PROMPTS)), top_k=(None,) * 4,
        temperature=jnp.ones(4), top_p=jnp.ones(4), guidance=jnp.zeros(4),
        cfg=False, active=jnp.ones((len(PROMPTS),), bool))
    assert prefilled == PROMPT_LEN  # static: checked while tracing
    return state, codes

  state, codes = jax.jit(run)(setup.params, fields, time, block)
  assert state.filled == PROMPT_LEN + next_scale.cache_length(0, SCHEDULE)
  assert int(state.length) == state.filled
  assert codes[-1].shape == (len(PROMPTS),) + SCHEDULE[-1]
