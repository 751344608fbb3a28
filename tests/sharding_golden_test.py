# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Golden parameter shardings per NextFlow preset (MaxText's sharding_info).

For each preset of configs/nextflow.py, the parameters are eval_shape'd (the
7b preset is never allocated) on this 4-device test mesh with the preset's
rule set, and {parameter path: PartitionSpec} is compared with
tests/golden/sharding/<preset>.json. An intended change is recorded with
`UPDATE_GOLDENS=1 python -m pytest tests/sharding_golden_test.py`.
"""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from nextflow_jax import config_lib
from nextflow_jax import sharding
from nextflow_jax.data import sequences
from nextflow_jax.trainers import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_DIR = os.path.join(ROOT, "tests", "golden", "sharding")


def param_specs(preset: str) -> dict[str, str]:
  config = config_lib.load_config(os.path.join(ROOT, "configs",
                                               f"nextflow.py:{preset}"))
  model = pretrain.model_from_config(
      config.model, text_vocab_size=config.model.text_vocab_size,
      codebook_size=16384 if preset in ("1b", "7b") else 1024, code_dim=40)
  batch = {k: jnp.zeros((1, 8) + v.shape[1:], v.dtype) for k, v in
           sequences.pad(sequences.build([sequences.Text([1])],
                                         sequences.Layout(),
                                         codebook_size=2), 8).items()}
  mesh = sharding.make_mesh(config.sharding.mesh)
  rules = sharding.get_rules(config.sharding.rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(model.init, jax.random.key(0), batch)["params"]
    shardings = sharding.logical_shardings(abstract, mesh, rules)
  flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
  shapes = {jax.tree_util.keystr(p): s.shape for p, s in
            jax.tree_util.tree_flatten_with_path(nn.unbox(abstract))[0]}
  return {jax.tree_util.keystr(p): f"{tuple(shapes[jax.tree_util.keystr(p)])} "
          f"{s.spec}" for p, s in flat}


@pytest.mark.parametrize("preset", ["mu", "cpu", "1b", "7b"])
def test_parameter_shardings_match_the_golden_file(preset):
  got = param_specs(preset)
  path = os.path.join(GOLDEN_DIR, f"{preset}.json")
  if os.environ.get("UPDATE_GOLDENS"):
    with open(path, "w") as f:
      json.dump(got, f, indent=1, sort_keys=True)
  with open(path) as f:
    want = json.load(f)
  changed = {k: (want.get(k), got.get(k)) for k in set(want) | set(got)
             if want.get(k) != got.get(k)}
  assert not changed, (f"parameter shardings of preset {preset!r} changed "
                       f"(golden, now): {changed}. If intended, rerun with "
                       "UPDATE_GOLDENS=1.")
