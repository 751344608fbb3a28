# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Device mesh, logical-axis vocabulary and named sharding rule sets.

This is the only module that knows how logical axis names map onto the mesh.
Modules name axes (`nn.with_logical_partitioning(init, ("embed", "mlp"))`),
configs pick a rule set by name, trainers apply it.

Mesh axes, in order: `data` (pure data parallel), `fsdp` (data parallel with
parameters and optimizer state sharded), `tensor` (tensor parallel).

Logical axes (every name must have a rule in every rule set):

  Weights: `vocab`, `embed`, `mlp`, `heads`, `kv_heads`, `head_dim`, `layers`,
    `codebook`, `code_dim`, `conv_in`, `conv_out`, `norm`.
  Activations: `act_batch`, `act_len`, `act_embed`, `act_heads`, `act_kv_heads`,
    `act_head_dim`, `act_mlp`, `act_vocab`, `act_height`, `act_width`,
    `act_channels`.

Rule sets:

  `dp`: parameters replicated, batch split over every mesh axis.
  `fsdp`: batch split over (`data`, `fsdp`); weights' `embed` (or their
    largest non-`tensor` dimension) sharded over `fsdp`.
  `fsdp_tp`: `fsdp` plus Megatron-style tensor parallelism: `mlp`, `heads`,
    `kv_heads` and `vocab` split over `tensor`.

Meshes use `AxisType.Auto`: linen's logical constraints assert under the
`Explicit` axes that `jax.make_mesh` defaults to (see deps-report).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

WEIGHT_AXES = (
    "vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", "layers",
    "codebook", "code_dim", "conv_in", "conv_out", "norm",
)
ACTIVATION_AXES = (
    "act_batch", "act_len", "act_embed", "act_heads", "act_kv_heads",
    "act_head_dim", "act_mlp", "act_vocab", "act_height", "act_width",
    "act_channels",
)
LOGICAL_AXES = WEIGHT_AXES + ACTIVATION_AXES

Rules = tuple[tuple[str, Any], ...]


def _complete(rules: Mapping[str, Any]) -> Rules:
  """Returns rules for every logical axis, `None` (replicated) by default."""
  return tuple((name, rules.get(name)) for name in LOGICAL_AXES)


RULE_SETS: dict[str, Rules] = {
    "dp": _complete({"act_batch": MESH_AXES}),
    "fsdp": _complete({
        "act_batch": BATCH_AXES,
        "embed": "fsdp",
        "codebook": "fsdp",
        "conv_out": "fsdp",
    }),
    "fsdp_tp": _complete({
        "act_batch": BATCH_AXES,
        "embed": "fsdp",
        "codebook": "fsdp",
        "conv_out": "fsdp",
        "vocab": "tensor",
        "mlp": "tensor",
        "heads": "tensor",
        "kv_heads": "tensor",
        "act_heads": "tensor",
        "act_kv_heads": "tensor",
        "act_mlp": "tensor",
        "act_vocab": "tensor",
    }),
}


def get_rules(name: str,
              overrides: Sequence[tuple[str, Any]] = ()) -> Rules:
  """Returns the named rule set with `overrides` applied.

  Args:
    name: one of `RULE_SETS` (`dp`, `fsdp`, `fsdp_tp`).
    overrides: (logical axis, mesh axes or None) pairs replacing the rule of
      that logical axis.

  Raises:
    ValueError: unknown rule set, unknown logical axis or mesh axis.
  """
  if name not in RULE_SETS:
    raise ValueError(f"sharding.rules={name!r} is not a rule set; choose one "
                     f"of {sorted(RULE_SETS)}.")
  rules = dict(RULE_SETS[name])
  for logical, mesh_axes in overrides:
    if logical not in rules:
      raise ValueError(f"sharding.rule_overrides names logical axis "
                       f"{logical!r}, which is not one of {LOGICAL_AXES}.")
    targets = () if mesh_axes is None else (
        (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes))
    for axis in targets:
      if axis not in MESH_AXES:
        raise ValueError(f"sharding.rule_overrides maps {logical!r} to mesh "
                         f"axis {axis!r}; mesh axes are {MESH_AXES}.")
    rules[logical] = mesh_axes if mesh_axes is None or isinstance(
        mesh_axes, str) else tuple(mesh_axes)
  return tuple(rules.items())


def resolve_mesh_shape(mesh_shape: Sequence[int],
                       num_devices: int) -> tuple[int, ...]:
  """Fills in the one `-1` entry of a (data, fsdp, tensor) mesh shape.

  Args:
    mesh_shape: three ints; at most one may be -1 ("all remaining devices").
    num_devices: devices the mesh must cover exactly.

  Returns:
    The concrete mesh shape whose product is `num_devices`.

  Raises:
    ValueError: wrong length, more than one -1, non-positive entries, or a
      product that does not match `num_devices`.
  """
  shape = tuple(int(s) for s in mesh_shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"sharding.mesh={list(shape)} must have one size per mesh "
                     f"axis {MESH_AXES}, e.g. [-1, 1, 1].")
  if shape.count(-1) > 1:
    raise ValueError(f"sharding.mesh={list(shape)} has more than one -1; at "
                     "most one axis may take the remaining devices.")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"sharding.mesh={list(shape)} has an entry that is not a "
                     "positive int or -1.")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"sharding.mesh={list(shape)}: {num_devices} devices are "
                       f"not divisible by the fixed axes' product {known}.")
    shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ValueError(f"sharding.mesh={list(shape)} covers {math.prod(shape)} "
                     f"devices but {num_devices} are available; use -1 on one "
                     "axis to take the remaining devices.")
  return shape


def make_mesh(mesh_shape: Sequence[int],
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh with `AxisType.Auto` axes.

  Args:
    mesh_shape: sizes of (data, fsdp, tensor); one may be -1.
    devices: devices to use (default: all of `jax.devices()`). A subset makes
      a smaller mesh in the same process, e.g. to restore a checkpoint saved
      on 4 devices onto 2.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(mesh_shape, len(devices))
  return jax.make_mesh(shape, MESH_AXES,
                       axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def data_parallel_size(mesh: Mesh) -> int:
  """Number of batch shards: the product of the `data` and `fsdp` axes."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch array: leading dim split over (data, fsdp)."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """Maps a tree that carries logical names (boxed params) to shardings.

  Args:
    abstract_tree: e.g. `jax.eval_shape(model.init, ...)` output, whose leaves
      are `nn.LogicallyPartitioned` boxes (or plain arrays: replicated).
    mesh: the device mesh.
    rules: a rule set from `get_rules`.

  Returns:
    A tree of `NamedSharding` with the structure of `nn.unbox(abstract_tree)`.
  """
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Assembles this process's slice of a batch into global sharded arrays.

  Each process passes its own local batch (leading dim = global batch /
  process count); the result is a global `jax.Array` sharded over the batch
  axes. On one process this is a plain `device_put`.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      batch)


def maybe_initialize_distributed(enabled: bool) -> None:
  """Calls `jax.distributed.initialize()` once when the launch asks for it.

  On TPU pods and SLURM/GPU clusters JAX discovers the coordinator from the
  environment; `enabled` comes from `--multihost` (or is True when
  `JAX_COORDINATOR_ADDRESS` is set).
  """
  if enabled and not jax.distributed.is_initialized():
    jax.distributed.initialize()
