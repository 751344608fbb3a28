# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Random-access data sources, opened from one-line specs.

Spec grammar (`config.data.sources` entries):

  shapes/32px, shapes/32px_8k, shapes/32px_8k_grid{4,8}, shapes/64px
                                 embedded procedural shapes (built locally)
  twemoji/32px, twemoji/64px     embedded Twemoji (built locally)
  tfds:NAME[/CONFIG][:VERSION]   any TFDS dataset already prepared in
                                 ArrayRecord format under the data dir,
                                 read with `tfds.data_source`
  array_record:FOLDER            plain ArrayRecord shards in our record format
                                 (see `records.py`), e.g. the output of
                                 `python -m nextflow_jax.data.convert`

Every source yields dicts with decoded images (uint8 HxWxC numpy arrays),
text as `str`, and an `id` string ("twemoji/64px:train:17") that errors use
to name the record. Embedded datasets are built into the data dir on first
use (`prepare=True`); nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any, Protocol

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from nextflow_jax.data import images
from nextflow_jax.data import records

EMBEDDED = ("shapes", "twemoji")
KINDS = ("embedded", "tfds", "array_record")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """A parsed source spec: `kind` in KINDS, `name` (TFDS name or folder)."""
  kind: str
  name: str


def parse_source_spec(spec: str) -> SourceSpec:
  """Parses a spec string; raises ValueError saying what is allowed."""
  embedded_help = ("shapes/{32px,32px_8k,32px_8k_grid4,32px_64k_grid4,"
                   "32px_8k_grid8,64px}, twemoji/{32px,64px}")
  if spec.startswith("tfds:"):
    name = spec[len("tfds:"):]
    if not name:
      raise ValueError(f"source {spec!r}: give a TFDS name after 'tfds:'.")
    return SourceSpec("tfds", name)
  if spec.startswith("array_record:"):
    folder = spec[len("array_record:"):]
    if not folder:
      raise ValueError(f"source {spec!r}: give a folder after "
                       "'array_record:'.")
    return SourceSpec("array_record", folder)
  dataset, _, config = spec.partition("/")
  if dataset not in EMBEDDED or not config:
    raise ValueError(
        f"unknown dataset {spec!r}; use an embedded dataset ({embedded_help}), "
        "'tfds:NAME[/CONFIG]' or 'array_record:FOLDER'.")
  builder_cls = _embedded_builder(dataset)
  configs = [c.name for c in builder_cls.BUILDER_CONFIGS]
  if config not in configs:
    raise ValueError(f"unknown dataset {spec!r}; {dataset} has configs "
                     f"{configs}.")
  return SourceSpec("embedded", spec)


def _embedded_builder(dataset: str):
  # Imported lazily: building the shapes module is only needed when used.
  if dataset == "shapes":
    from nextflow_jax.data import shapes  # pylint: disable=g-import-not-at-top
    return shapes.Shapes
  from nextflow_jax.data import twemoji  # pylint: disable=g-import-not-at-top
  return twemoji.Twemoji


def prepare_embedded(spec: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Builds an embedded dataset into `data_dir` unless already prepared."""
  dataset, _, config = parse_source_spec(spec).name.partition("/")
  builder = _embedded_builder(dataset)(config=config, data_dir=data_dir,
                                       file_format="array_record")
  builder.download_and_prepare()
  return builder


def open_source(spec: str, split: str, data_dir: str, *,
                prepare: bool = True) -> Source:
  """Opens a spec as a random-access `Source`.

  Args:
    spec: a source spec (see module docstring).
    split: "train", "test", ... (ignored for `array_record:` folders, which
      are one split each).
    data_dir: TFDS data dir (embedded datasets are built there).
    prepare: build embedded datasets that are not prepared yet.
  """
  parsed = parse_source_spec(spec)
  if parsed.kind == "array_record":
    return ArrayRecordSource(parsed.name)
  if parsed.kind == "embedded":
    if prepare:
      prepare_embedded(spec, data_dir)
  name = parsed.name
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir)
  except (tfds.core.registered.DatasetNotFoundError, FileNotFoundError,
          AssertionError, ValueError) as e:
    raise ValueError(
        f"cannot open TFDS dataset {name!r} split {split!r} in {data_dir}: "
        f"{e}. Prepare it first in ArrayRecord format "
        "(`builder.download_and_prepare(file_format='array_record')`).") from e
  return TfdsSource(source, f"{spec}:{split}")


class Source(Protocol):
  """Random-access source (what Grain's `MapDataset.source` needs)."""

  name: str

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> dict[str, Any]:
    ...


class TfdsSource:
  """Wraps `tfds.data_source`: text bytes -> str, adds `id`."""

  def __init__(self, source, name: str):
    self._source = source
    self.name = name

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    example = _bytes_to_str(self._source[index])
    example["id"] = f"{self.name}:{index}"
    return example

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, {len(self)} records)"


def _bytes_to_str(tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _bytes_to_str(v) for k, v in tree.items()}
  if isinstance(tree, bytes):
    return tree.decode("utf-8")
  if isinstance(tree, (list, tuple)) or (isinstance(tree, np.ndarray) and
                                         tree.dtype == object):
    return [_bytes_to_str(v) for v in tree]
  return tree


class ArrayRecordSource:
  """Plain ArrayRecord shards in our record format; decodes `image` PNG/JPEG.

  Args:
    folder: a folder with `manifest.json` and the shards it lists.
  """

  def __init__(self, folder: str):
    import grain  # pylint: disable=g-import-not-at-top
    manifest = records.read_manifest(folder)
    paths = [os.path.join(folder, s) for s in manifest["shards"]]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
      raise FileNotFoundError(f"{folder}/manifest.json lists shards that do "
                              f"not exist: {missing}.")
    try:
      self._source = grain.sources.ArrayRecordDataSource(paths)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(_unreadable_shards(folder, paths, e)) from e
    if len(self._source) != manifest["num_records"]:
      raise ValueError(f"{folder}: shards hold {len(self._source)} records but "
                       f"the manifest says {manifest['num_records']}.")
    self.name = f"array_record:{folder}"
    self.manifest = manifest

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    rid = f"{self.name}:{index}"
    try:
      example = records.decode(self._source[index])
    except ValueError as e:
      raise ValueError(f"record {rid}: {e}") from e
    if "image" in example:
      example["image"] = decode_image(example["image"], rid)
    example["id"] = rid
    return example

  def __repr__(self) -> str:
    return f"ArrayRecordSource({self.name!r}, {len(self)} records)"


def _unreadable_shards(folder: str, paths: list[str], error: Exception) -> str:
  """Which shards of a folder ArrayRecord cannot open, and why."""
  import grain  # pylint: disable=g-import-not-at-top
  bad = []
  for path in paths:
    try:
      grain.sources.ArrayRecordDataSource([path])
    except Exception as e:  # pylint: disable=broad-except
      reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
      bad.append(f"{os.path.basename(path)} ({reason[:200]})")
  if not bad:
    return f"{folder}: the shards do not open together ({error})."
  return (f"{folder}: unreadable shard(s), truncated or not ArrayRecord: "
          f"{', '.join(bad)}; write the folder again (the converter or the "
          "extraction that made it).")


def decode_image(data: bytes, rid: str) -> np.ndarray:
  """Decodes encoded image bytes to uint8 HxWxC; errors name the record."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      return np.asarray(images.to_rgb(im))
  except (OSError, ValueError) as e:
    raise ValueError(f"record {rid}: image bytes do not decode ({e}).") from e

