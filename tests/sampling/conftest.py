# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A tiny NextFlow shared by the sampler tests (built and initialised once)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from nextflow_jax.data import sequences as seq
from nextflow_jax.model import nextflow
from nextflow_jax.text import vocab

TEXT_VOCAB, CODEBOOK = 64, 40


@pytest.fixture(scope="session")
def tiny():
  """(model, params): 2 layers, width 32, text vocabulary 64, 40 codes.

  Both heads are scaled up so that sampled distributions are peaked, not
  uniform noise.
  """
  model = nextflow.NextFlow(
      text_vocab_size=TEXT_VOCAB, codebook_size=CODEBOOK, code_dim=6,
      num_layers=2, width=32, num_heads=4, num_kv_heads=2, head_dim=8,
      mlp_dim=64, max_scales=4)
  example = {k: jnp.asarray(v)[None] for k, v in seq.pad(seq.build(
      [seq.Text([vocab.BOS_ID])], seq.Layout(), codebook_size=CODEBOOK),
                                                       16).items()}
  params = nn.unbox(jax.jit(model.init)(jax.random.key(1), example))[
      "params"]
  params["visual_head"] = params["visual_head"] * 8.0
  params["text_head"] = params["text_head"] * 8.0
  return model, params
