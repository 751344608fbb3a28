# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Orbax checkpoints of train state, data iterator position and config.

The only module that imports orbax. One `Checkpointer` per workdir wraps a
`CheckpointManager`:

  * items per step: `state` (any pytree of arrays, stored unboxed), `data`
    (the Grain iterator state, so resume continues with the next batch) and
    `config` (JSON, to see what produced a checkpoint);
  * saves are asynchronous and atomic: Orbax writes into a temporary folder
    and renames it when complete, so a crash mid-save leaves the previous
    checkpoint as the latest one;
  * keeps the newest `max_to_keep` steps;
  * restores against an abstract target whose leaves carry shardings, so a
    checkpoint saved on one mesh restores onto another (resharding on load);
  * checks shapes and structure against the target first and names every
    mismatching entry, instead of failing deep inside Orbax;
  * an unreadable newest step (a truncated or corrupt file: a disk filled
    up, a copy cut short) is moved aside to `<step>.unreadable` with a
    warning, and the restore falls back to the step before it.

  ckpt = Checkpointer(f"{workdir}/checkpoints")
  ckpt.save(step, state, data_iterator=it, config=config)
  state, step = ckpt.restore(abstract_state, data_iterator=it)

`save_tree` / `load_tree` store one pytree of arrays in a folder of its own
(no steps, no iterator): the parameters of a model bundle (`bundle.py`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """The checkpoint does not fit the target (another model or config)."""


class CheckpointCorruptError(ValueError):
  """A checkpoint step cannot be read (truncated or corrupt files)."""


class Checkpointer:
  """Saves and restores (state, data iterator, config) per step."""

  def __init__(self, directory: str, *, max_to_keep: int = 3,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, *,
           data_iterator: grain.DatasetIterator | None = None,
           config: ml_collections.ConfigDict | dict | None = None) -> None:
    """Starts an asynchronous save of `step` (returns before it is written)."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if config is not None:
      items["config"] = ocp.args.JsonSave(_config_to_json(config))
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, target: Any, *, step: int | None = None,
              data_iterator: grain.DatasetIterator | None = None,
              config: ml_collections.ConfigDict | dict | None = None
              ) -> tuple[Any, int]:
    """Restores `state` (and the iterator position, in place) of a step.

    Args:
      target: the state's structure: concrete arrays or
        `jax.ShapeDtypeStruct`s whose `.sharding` says where each leaf goes
        (this is how a restore reshards onto a new mesh).
      step: which step (default: the latest).
      data_iterator: a freshly built iterator of the same pipeline; its
        position is set to the saved one.
      config: the config of this run; on a mismatch, the message names the
        fields that differ from the config saved with the step (e.g.
        `model.width: 64 -> 96`).

    Returns:
      (state, step).

    Raises:
      FileNotFoundError: no (readable) checkpoint exists.
      CheckpointMismatchError: shapes or structure differ from `target`.
      CheckpointCorruptError: the `step` asked for is unreadable (with
        `step=None`, an unreadable newest step is moved aside instead).
    """
    if step is not None:
      if step not in self.all_steps():
        raise FileNotFoundError(f"no checkpoint {step} in {self.directory}; "
                                f"steps: {self.all_steps()}")
      return self._restore_step(step, target, data_iterator, config), step
    while (latest := self.latest_step()) is not None:
      try:
        return self._restore_step(latest, target, data_iterator,
                                  config), latest
      except CheckpointCorruptError as e:
        moved = self._move_aside(latest)
        logging.warning("%s; moved it to %s and falling back to the step "
                        "before it.", e, moved)
    raise FileNotFoundError(f"no checkpoint in {self.directory}.")

  def _restore_step(self, step: int, target: Any,
                    data_iterator: grain.DatasetIterator | None,
                    config: ml_collections.ConfigDict | dict | None) -> Any:
    try:
      self._check_compatible(step, target, config)
      abstract = jax.tree.map(_abstract_leaf, target)
      items = {"state": ocp.args.StandardRestore(abstract)}
      if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      restored = self._manager.restore(step,
                                       args=ocp.args.Composite(**items))
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
      raise CheckpointCorruptError(
          f"checkpoint step {step} in {self.directory} is unreadable "
          f"({reason[:300]})") from e
    return restored["state"]

  def _move_aside(self, step: int) -> str:
    """Renames an unreadable step folder so Orbax no longer lists it."""
    source = os.path.join(self.directory, str(step))
    moved = f"{source}.unreadable"
    if jax.process_index() == 0:
      suffix = 1
      while os.path.exists(moved):
        moved, suffix = f"{source}.unreadable{suffix}", suffix + 1
      os.rename(source, moved)
    self._manager.reload()
    return moved

  def restore_raw(self, step: int | None = None) -> Any:
    """The saved state as host numpy arrays, with no target.

    For partial loads into another model (`init_from`): the caller copies
    what matches.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}.")
    metadata = self._manager.item_metadata(step)["state"]
    target = jax.tree.map(
        lambda m: np.empty(m.shape, m.dtype) if hasattr(m, "shape") else m,
        metadata)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
    return restored["state"]

  def restore_config(self, step: int | None = None) -> dict:
    """The config saved with a step, as a dict."""
    step = self.latest_step() if step is None else step
    restored = self._manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return restored["config"]

  def _saved_config_differences(self, step: int, config: Any) -> list[str]:
    try:
      saved = self.restore_config(step)
    except Exception:  # pylint: disable=broad-except
      return []  # Saved without a config.
    return config_differences(saved, _config_to_json(config))

  def _check_compatible(self, step: int, target: Any,
                        config: Any = None) -> None:
    metadata = self._manager.item_metadata(step)["state"]
    problems = shape_differences(_shapes(metadata), _shapes(target))
    if problems:
      shown = "\n  ".join(problems[:20])
      more = f"\n  ... and {len(problems) - 20} more" if len(
          problems) > 20 else ""
      changed = (self._saved_config_differences(step, config)
                 if config is not None else [])
      hint = ("The config differs from the one saved with it: " +
              "; ".join(changed[:12]) + (" ..." if len(changed) > 12 else "")
              + ". Use another --workdir, or restore those values." if changed
              else "Was it written with another config? Compare with "
              "`Checkpointer.restore_config()`.")
      raise CheckpointMismatchError(
          f"checkpoint step {step} in {self.directory} does not match this "
          f"model/config ({len(problems)} differences):\n  {shown}{more}\n"
          f"{hint}")

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _abstract_leaf(x: Any) -> Any:
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return x


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{"params/dense/kernel": shape}; attribute, dict and index keys alike
  (Orbax metadata turns namedtuples such as optimizer states into dicts)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): tuple(
      getattr(leaf, "shape", np.shape(leaf))) for path, leaf in leaves}


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def config_differences(saved: dict, current: dict, prefix: str = ""
                       ) -> list[str]:
  """'key: saved -> current' for every leaf that differs (dotted keys)."""
  out = []
  for key in sorted(set(saved) | set(current)):
    name = f"{prefix}{key}"
    a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      out.extend(config_differences(a, b, f"{name}."))
    elif a != b:
      out.append(f"{name}: {a!r} -> {b!r}")
  return out


def _config_to_json(config: ml_collections.ConfigDict | dict) -> dict:
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=str))


def save_tree(directory: str, tree: Any) -> None:
  """Writes a pytree of arrays into `directory` (must not exist yet).

  Synchronous and atomic: Orbax writes a temporary folder and renames it.
  """
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(directory), tree)
  checkpointer.wait_until_finished()
  checkpointer.close()


def load_tree(directory: str, target: Any = None) -> Any:
  """Reads what `save_tree` wrote.

  Args:
    directory: the folder `save_tree` wrote.
    target: None: host numpy arrays as saved. Else the tree's structure as
      arrays or `jax.ShapeDtypeStruct`s with shardings: each process reads
      only its shards, cast to the target's dtypes.

  Raises:
    FileNotFoundError: no such folder.
    CheckpointMismatchError: the saved tree's paths or shapes differ from
      `target` (every difference named).
  """
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory} does not exist.")
  checkpointer = ocp.StandardCheckpointer()
  try:
    metadata = checkpointer.metadata(directory)
    metadata = getattr(metadata, "item_metadata", metadata)
    if target is None:
      target = jax.tree.map(
          lambda m: np.empty(m.shape, m.dtype) if hasattr(m, "shape") else m,
          metadata)
    else:
      problems = shape_differences(_shapes(metadata), _shapes(target))
      if problems:
        raise CheckpointMismatchError(
            f"{directory} does not match the model ({len(problems)} "
            "differences):\n  " + "\n  ".join(problems[:20]) +
            (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20
             else ""))
      target = jax.tree.map(_abstract_leaf, target)
    return checkpointer.restore(directory, target)
  finally:
    checkpointer.close()


def shape_differences(saved: dict[str, tuple[int, ...]],
                      wanted: dict[str, tuple[int, ...]]) -> list[str]:
  """Paths missing on either side or with other shapes, one line each."""
  problems = []
  for path in sorted(set(saved) | set(wanted)):
    if path not in saved:
      problems.append(f"{path}: missing in the checkpoint")
    elif path not in wanted:
      problems.append(f"{path}: in the checkpoint but not in the model")
    elif saved[path] != wanted[path]:
      problems.append(f"{path}: checkpoint {saved[path]} vs model "
                      f"{wanted[path]}")
  return problems
