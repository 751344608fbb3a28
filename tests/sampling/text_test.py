# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Text decoding: cached == uncached, stop tokens, vocabulary limits."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax.data import sequences as seq
from nextflow_jax.sampling import state as state_lib
from nextflow_jax.sampling import text
from nextflow_jax.text import vocab

K, V, VOCAB = 40, 64, 50  # the tokenizer has 50 ids, the head 64
PROMPTS = [[vocab.BOS_ID, 20, 21, 22, 23], [vocab.BOS_ID, 30]]
PROMPT_LEN, NEW, FULL = 8, 10, 32
LAYOUT = seq.Layout()


@pytest.fixture(scope="module")
def setup(tiny):
  model, params = tiny
  forward = jax.jit(lambda p, b: model.apply(
      {"params": p}, model.apply({"params": p}, b), method=model.text_logits))
  gen = {}

  def generate(stops):
    if stops not in gen:
      gen[stops] = text.make_generate(
          model, max_new_tokens=NEW, vocab_size=VOCAB, stop_tokens=stops,
          top_k=None, return_logits=True)
    return gen[stops]

  return types.SimpleNamespace(model=model, params=params, forward=forward,
                               generate=generate)


def _padded(ids):
  doc = seq.build([seq.Text(ids, loss=False)], LAYOUT, codebook_size=K)
  return {k: jnp.asarray(v)[None] for k, v in seq.pad(doc, FULL).items()}


def _run(setup, stops=(), temperature=0.0, top_p=1.0, seed=0):
  fields, time, block = state_lib.stack_prompts(
      [seq.build([seq.Text(p, loss=False)], LAYOUT, codebook_size=K)
       for p in PROMPTS], PROMPT_LEN)
  knobs = {"temperature": jnp.float32(temperature),
           "top_p": jnp.float32(top_p)}
  return setup.generate(stops)(setup.params, fields, time, block,
                          state_lib.row_keys(seed, 0, len(PROMPTS)), knobs)


def _uncached_greedy(setup, prompt):
  ids = list(prompt)
  for _ in range(NEW):
    logits = np.asarray(setup.forward(setup.params, _padded(ids)))[0]
    step = logits[len(ids) - 1].copy()
    step[list(text.NEVER_SAMPLED) + [vocab.BOI_ID]] = -np.inf
    step[VOCAB:] = -np.inf
    ids.append(int(np.argmax(step)))
  return ids[len(prompt):]


def test_cached_greedy_decoding_equals_uncached_decoding(setup):
  result = _run(setup)
  tokens = np.asarray(result["tokens"])
  np.testing.assert_array_equal(result["lengths"], [NEW, NEW])
  for r, prompt in enumerate(PROMPTS):
    assert tokens[r].tolist() == _uncached_greedy(setup, prompt)
    ids = list(prompt) + tokens[r].tolist()
    full = np.asarray(setup.forward(setup.params, _padded(ids)))[0]
    np.testing.assert_allclose(
        np.asarray(result["logits"])[r],
        full[len(prompt) - 1:len(prompt) - 1 + NEW], atol=2e-4, rtol=1e-4)


def test_sampling_respects_the_vocabulary_and_is_seeded(setup):
  a = np.asarray(_run(setup, temperature=1.5, seed=1)["tokens"])
  b = np.asarray(_run(setup, temperature=1.5, seed=1)["tokens"])
  c = np.asarray(_run(setup, temperature=1.5, seed=2)["tokens"])
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
  assert a.max() < VOCAB
  assert not np.isin(a, text.NEVER_SAMPLED + (vocab.BOI_ID,)).any()


def test_a_stop_token_ends_its_row_only(setup):
  free = np.asarray(_run(setup)["tokens"])
  stop = int(free[0, 3])
  result = _run(setup, stops=(stop,))
  tokens, lengths = np.asarray(result["tokens"]), np.asarray(result["lengths"])
  assert lengths[0] <= 4
  for r in range(len(PROMPTS)):
    row = free[r].tolist()
    n = row.index(stop) + 1 if stop in row else NEW
    assert lengths[r] == n
    assert tokens[r, :n].tolist() == row[:n]
    assert (tokens[r, n:] == vocab.PAD_ID).all()
    assert result["stop"][r] == (stop if stop in row else -1)
