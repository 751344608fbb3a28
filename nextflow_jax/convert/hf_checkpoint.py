# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A Hugging Face checkpoint folder, read lazily tensor by tensor and slice
by slice.

  ckpt = HFCheckpoint("Qwen2.5-7B-Instruct/")
  ckpt.config["hidden_size"]
  ckpt.shape("model.norm.weight")
  ckpt.read("model.embed_tokens.weight", (slice(0, 1024), slice(None)))

The folder holds `config.json` and safetensors weights: one
`model.safetensors`, or shards listed by `model.safetensors.index.json`
(every shard it names must be there), or shards without an index (their
headers are read). Only safetensors are read, with the `safetensors`
package: a pickle (`.bin`) checkpoint could run code when loaded, so it is
refused with a pointer to converting it. A slice read touches only the bytes
it needs (memory-mapped), which is what lets each host of a pod read just
its own shards of a 7B model.
"""

from __future__ import annotations

from collections.abc import Sequence
import glob
import json
import os
from typing import Any

import jax
import numpy as np

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def _safe_open():
  try:
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reading Hugging Face checkpoints needs the "
                      "`safetensors` package: pip install safetensors (or "
                      "nextflow_jax[convert]).") from e
  return safe_open


class HFCheckpoint:
  """Tensors and config of a Hugging Face checkpoint folder.

  Attributes:
    folder: the folder.
    config: `config.json` as a dict.
  """

  def __init__(self, folder: str):
    self.folder = folder
    path = os.path.join(folder, CONFIG)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{folder} has no {CONFIG}; pass the folder of "
                              "a Hugging Face checkpoint (save_pretrained).")
    with open(path) as f:
      self.config: dict[str, Any] = json.load(f)
    self._open: dict[str, Any] = {}
    self._where = self._tensor_files()

  def _tensor_files(self) -> dict[str, str]:
    """Tensor name -> the safetensors file that holds it."""
    index = os.path.join(self.folder, INDEX)
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f).get("weight_map")
      if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index} has no weight_map.")
      missing = sorted({name for name in weight_map.values() if
                        not os.path.exists(os.path.join(self.folder, name))})
      if missing:
        raise FileNotFoundError(
            f"{self.folder}: shard(s) {missing} listed in {INDEX} are "
            "missing; download or copy the whole checkpoint.")
      return {t: os.path.join(self.folder, f) for t, f in weight_map.items()}
    files = sorted(glob.glob(os.path.join(self.folder, "*.safetensors")))
    if not files:
      pickles = glob.glob(os.path.join(self.folder, "*.bin")) + glob.glob(
          os.path.join(self.folder, "*.pt"))
      hint = (" It has pickle weights, which are never loaded here (they can "
              "run code): re-save them with save_pretrained("
              "safe_serialization=True)." if pickles else "")
      raise FileNotFoundError(f"{self.folder} has no safetensors weights "
                              f"({SINGLE} or shards).{hint}")
    where = {}
    for path in files:
      for name in self._file(path).keys():
        if name in where:
          raise ValueError(f"tensor {name!r} is in both {where[name]} and "
                           f"{path}.")
        where[name] = path
    return where

  def _file(self, path: str):
    if path not in self._open:
      self._open[path] = _safe_open()(path, framework="flax")
    return self._open[path]

  def names(self) -> list[str]:
    return sorted(self._where)

  def has(self, name: str) -> bool:
    return name in self._where

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._slice(name).get_shape())

  def _slice(self, name: str):
    if name not in self._where:
      raise KeyError(f"{self.folder} has no tensor {name!r}.")
    return self._file(self._where[name]).get_slice(name)

  def read(self, name: str, index: Sequence[slice] | None = None
           ) -> np.ndarray:
    """The tensor `name`, or the part of it `index` (one slice per dim)
    selects, as a host numpy array in its stored dtype (bf16 included)."""
    tensor = self._slice(name)
    # Read on the host, whatever accelerator the process has.
    with jax.default_device(jax.devices("cpu")[0]):
      value = tensor[tuple(index)] if index is not None else tensor[:]
    return np.asarray(value)
