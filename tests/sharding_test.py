# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Mesh construction, rule sets and logical-name shardings on 4 devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from nextflow_jax import sharding


def test_resolve_mesh_shape():
  assert sharding.resolve_mesh_shape((-1, 1, 1), 4) == (4, 1, 1)
  assert sharding.resolve_mesh_shape((1, -1, 2), 4) == (1, 2, 2)
  assert sharding.resolve_mesh_shape((2, 2, 1), 4) == (2, 2, 1)
  with pytest.raises(ValueError, match="not divisible"):
    sharding.resolve_mesh_shape((3, -1, 1), 4)
  with pytest.raises(ValueError, match="one size per mesh axis"):
    sharding.resolve_mesh_shape((4, 1), 4)


@pytest.mark.parametrize("name", sorted(sharding.RULE_SETS))
def test_every_rule_set_names_every_logical_axis(name):
  rules = dict(sharding.get_rules(name))
  assert set(rules) == set(sharding.LOGICAL_AXES)
  for target in rules.values():
    targets = () if target is None else (
        (target,) if isinstance(target, str) else target)
    assert set(targets) <= set(sharding.MESH_AXES)


def test_rule_overrides():
  rules = dict(sharding.get_rules("fsdp", [("mlp", "tensor"),
                                           ("embed", None)]))
  assert rules["mlp"] == "tensor" and rules["embed"] is None
  with pytest.raises(ValueError, match="logical axis 'mlpp'"):
    sharding.get_rules("fsdp", [("mlpp", "tensor")])
  with pytest.raises(ValueError, match="mesh axis 'model'"):
    sharding.get_rules("fsdp", [("mlp", "model")])


class TwoLayer(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.with_logical_constraint(x, ("act_batch", "act_embed"))
    h = nn.Dense(32, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("embed", "mlp")))(x)
    y = nn.Dense(16, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("mlp", "embed")))(nn.relu(h))
    return nn.with_logical_constraint(y, ("act_batch", "act_embed"))


@pytest.mark.parametrize("mesh_shape,rules,kernel0", [
    ((-1, 1, 1), "dp", P(None, None)),
    ((1, -1, 1), "fsdp", P("fsdp", None)),
    ((1, 2, 2), "fsdp_tp", P("fsdp", "tensor")),
])
def test_params_are_sharded_by_logical_names(mesh_shape, rules, kernel0):
  mesh = sharding.make_mesh(mesh_shape)
  rule_set = sharding.get_rules(rules)
  model, x = TwoLayer(), jnp.ones((8, 16))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rule_set):
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    shardings = sharding.logical_shardings(abstract, mesh, rule_set)
    variables = jax.jit(lambda r: nn.unbox(model.init(r, x)),
                        out_shardings=shardings)(jax.random.key(0))
    batch = sharding.shard_batch(np.ones((8, 16), np.float32), mesh)
    y = jax.jit(model.apply)(variables, batch)
  kernel = variables["params"]["Dense_0"]["kernel"]
  assert kernel.sharding.spec == kernel0
  assert batch.sharding.spec == P(sharding.BATCH_AXES)
  reference = model.apply(jax.device_get(variables), np.ones((8, 16)))
  np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-6)


def test_mesh_on_a_subset_of_devices():
  mesh = sharding.make_mesh((1, -1, 1), jax.devices()[:2])
  assert mesh.shape == {"data": 1, "fsdp": 2, "tensor": 1}
  assert sharding.data_parallel_size(mesh) == 2
