# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The record format of our plain ArrayRecord shards.

A record is a flat dict of str keys to str, bytes, int, float, bool, lists of
those, or numpy arrays, serialized with msgpack (numpy arrays as an extension
type holding dtype, shape and raw bytes). Unlike pickle, decoding a file a
user hands us never runs code. Images are stored encoded (PNG bytes) under
`image`; per-scale code arrays written by code extraction are int arrays.

A folder of shards carries a `manifest.json` (written last, so a folder
without it is an unfinished write) listing shards, record count and keys.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from array_record.python import array_record_module
import msgpack
import numpy as np

_NDARRAY_EXT = 1
MANIFEST = "manifest.json"
FORMAT = "nextflow_jax.records.v1"


def _default(obj: Any) -> Any:
  if isinstance(obj, np.ndarray):
    if obj.dtype == object:
      raise TypeError("object arrays cannot be stored in a record.")
    header = msgpack.packb([obj.dtype.str, list(obj.shape)])
    return msgpack.ExtType(_NDARRAY_EXT,
                           header + np.ascontiguousarray(obj).tobytes())
  if isinstance(obj, np.generic):
    return obj.item()
  raise TypeError(f"cannot store a {type(obj).__name__} in a record.")


def _ext_hook(code: int, data: bytes) -> Any:
  if code != _NDARRAY_EXT:
    raise ValueError(f"unknown msgpack extension type {code} in record.")
  unpacker = msgpack.Unpacker()
  unpacker.feed(data)
  dtype, shape = unpacker.unpack()
  offset = unpacker.tell()
  return np.frombuffer(data[offset:], dtype=np.dtype(dtype)).reshape(shape)


def encode(record: dict[str, Any]) -> bytes:
  """Serializes a record dict to bytes."""
  return msgpack.packb(record, default=_default, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
  """Inverse of `encode`; raises ValueError on bytes that are not a record."""
  try:
    record = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False,
                             strict_map_key=True)
  except (msgpack.UnpackException, ValueError, TypeError) as e:
    raise ValueError(f"not a nextflow_jax record ({e}).") from e
  if not isinstance(record, dict):
    raise ValueError(f"not a nextflow_jax record (a {type(record).__name__}, "
                     "not a dict).")
  return record


def write_manifest(folder: str, shards: list[str], num_records: int,
                   keys: list[str], **extra: Any) -> None:
  """Writes `manifest.json` atomically into `folder`."""
  manifest = dict(format=FORMAT, shards=shards, num_records=num_records,
                  keys=sorted(keys), **extra)
  tmp = os.path.join(folder, MANIFEST + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(folder, MANIFEST))


def read_manifest(folder: str) -> dict[str, Any]:
  """Reads and checks a folder's manifest."""
  path = os.path.join(folder, MANIFEST)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{folder} has no {MANIFEST}: it is not a finished nextflow_jax "
        "ArrayRecord folder (was the conversion interrupted?). Re-run "
        "`python -m nextflow_jax.data.convert`.")
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path} has format {manifest.get('format')!r}, "
                     f"expected {FORMAT!r}.")
  return manifest


class ShardedWriter:
  """Writes records round-robin into shards of a new folder, atomically.

  Records go into a hidden temporary folder next to `folder`; `close()`
  writes the manifest and renames it to `folder`. On an exception inside
  the `with` block the temporary folder is deleted, so a failed or
  interrupted write never leaves a folder that looks finished.

    with ShardedWriter(out, num_shards=4, prefix="codes") as w:
      w.write({"caption": "...", "image.targets": codes})
  """

  def __init__(self, folder: str, *, num_shards: int = 1,
               prefix: str = "data", **manifest_extra: Any):
    if num_shards < 1:
      raise ValueError(f"num_shards={num_shards} must be >= 1.")
    if os.path.exists(folder):
      raise ValueError(f"output folder {folder!r} already exists; choose a "
                       "new folder or delete it.")
    self.folder = folder
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    self._tmp = tempfile.mkdtemp(prefix=".incomplete-", dir=parent)
    self._names = [f"{prefix}.array_record-{i:05d}-of-{num_shards:05d}"
                   for i in range(num_shards)]
    self._writers = [array_record_module.ArrayRecordWriter(
        os.path.join(self._tmp, n), "group_size:1") for n in self._names]
    self._keys: set[str] = set()
    self._count = 0
    self._extra = manifest_extra

  def write(self, record: dict[str, Any]) -> None:
    self._writers[self._count % len(self._writers)].write(encode(record))
    self._keys.update(record)
    self._count += 1

  def close(self) -> dict[str, Any]:
    """Finishes the folder; returns its manifest."""
    for w in self._writers:
      w.close()
    write_manifest(self._tmp, self._names, self._count, sorted(self._keys),
                   **self._extra)
    os.rename(self._tmp, self.folder)
    return read_manifest(self.folder)

  def abort(self) -> None:
    for w in self._writers:
      w.close()
    shutil.rmtree(self._tmp, ignore_errors=True)

  def __enter__(self) -> "ShardedWriter":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()
