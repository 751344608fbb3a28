# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Golden shardings of the pretraining state per preset (MaxText's
sharding_info).

For each preset of configs/nextflow.py, the state the trainer builds
(`pretrain_step.make_init_state`: parameters with the code table taken from
a tokenizer, and the optimizer state) is eval_shape'd (the 7b preset is
never allocated) on this 4-device test mesh with the preset's rule set, and
{state path: shape PartitionSpec} is compared with
tests/golden/sharding/<preset>.json. An intended change is recorded with
`UPDATE_GOLDENS=1 python -m pytest tests/sharding_golden_test.py`.
"""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from nextflow_jax import config_lib
from nextflow_jax import sharding
from nextflow_jax import workdirs
from nextflow_jax.data import sequences
from nextflow_jax.trainers import pretrain_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_DIR = os.path.join(ROOT, "tests", "golden", "sharding")
CODE_DIM = 40


def state_specs(preset: str) -> dict[str, str]:
  config = config_lib.load_config(os.path.join(ROOT, "configs",
                                               f"nextflow.py:{preset}"))
  codebook_size = 16384 if preset in ("1b", "7b") else 1024
  model = workdirs.build_model(
      config.model, text_vocab_size=config.model.text_vocab_size,
      codebook_size=codebook_size, code_dim=CODE_DIM)
  config.optim.grad_accum_steps = 2  # The accumulator is state too.
  tx = pretrain_step.make_optimizer(config.optim, config.train.num_steps)
  init_state = pretrain_step.make_init_state(
      model, tx, sequences.example_batch(sequences.Layout(),
                                             codebook_size, 8),
      np.zeros((codebook_size, CODE_DIM), np.float32))
  mesh = sharding.make_mesh(config.sharding.mesh)
  rules = sharding.get_rules(config.sharding.rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init_state, jax.random.key(0))
    shardings = sharding.logical_shardings(abstract, mesh, rules)
  flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
  shapes = {jax.tree_util.keystr(p): s.shape for p, s in
            jax.tree_util.tree_flatten_with_path(nn.unbox(abstract))[0]}
  return {jax.tree_util.keystr(p): f"{tuple(shapes[jax.tree_util.keystr(p)])} "
          f"{s.spec}" for p, s in flat}


@pytest.mark.parametrize("preset", ["mu", "cpu", "1b", "7b"])
def test_train_state_shardings_match_the_golden_file(preset):
  got = state_specs(preset)
  path = os.path.join(GOLDEN_DIR, f"{preset}.json")
  if os.environ.get("UPDATE_GOLDENS"):
    with open(path, "w") as f:
      json.dump(got, f, indent=1, sort_keys=True)
  with open(path) as f:
    want = json.load(f)
  changed = {k: (want.get(k), got.get(k)) for k in set(want) | set(got)
             if want.get(k) != got.get(k)}
  assert not changed, (f"train-state shardings of preset {preset!r} changed "
                       f"(golden, now): {changed}. If intended, rerun with "
                       "UPDATE_GOLDENS=1.")


def test_code_table_and_its_moments_keep_their_sharding():
  """The tokenizer's codebook replaces the initial code table without
  losing its logical names: under FSDP it and both Adam moments are
  sharded over `fsdp`, not replicated."""
  specs = state_specs("7b")
  code = {k: v for k, v in specs.items() if "code_embed" in k}
  assert len(code) == 4, code  # params, accumulator, mu, nu
  assert all(v == "(16384, 40) P('fsdp', None)"
             for v in code.values()), code
