# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Grain input pipelines with checkpointable iterator state.

  source -> per-process shard -> seeded shuffle (new order every epoch)
         -> mixture over sources -> named transforms -> batch -> iterator

Each process reads a disjoint strided slice of every source (so a mixture
stays a mixture on every host) and batches its share of the global batch.
The returned iterator's `get_state()`/`set_state()` round-trips through the
checkpoint (`checkpoint.py`), so a resumed run yields exactly the batch that
would have come next.

Threads, not worker processes, are the default: on small CPU hosts they are
faster for cheap decoding (deps-report section 4). `num_workers > 0` uses
Grain's multiprocessing prefetch (transforms must be importable; absl flags
must be parsed, see `main.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import grain

from nextflow_jax.data import sources as sources_lib


def make_dataset(sources: Sequence[sources_lib.Source], *,
                 batch_size: int,
                 transforms: Sequence[grain.transforms.Map] = (),
                 weights: Sequence[float] | None = None,
                 seed: int = 0,
                 shuffle: bool = True,
                 num_epochs: int | None = None,
                 shard_index: int = 0,
                 shard_count: int = 1,
                 drop_remainder: bool = True) -> grain.MapDataset:
  """Builds the per-process `MapDataset` of batches.

  Args:
    sources: random-access sources (see `sources.open_source`).
    batch_size: this process's batch size (global batch / process count).
    transforms: per-example transforms, applied in order.
    weights: mixture weights, one per source (default: equal).
    seed: shuffle seed; the same on every process.
    shuffle: shuffle each epoch (off for evaluation).
    num_epochs: passes over the data; None repeats forever.
    shard_index: this process's index (`jax.process_index()`).
    shard_count: number of processes (`jax.process_count()`).
    drop_remainder: drop a final partial batch.

  Returns:
    A `grain.MapDataset` whose elements are batches (dicts of stacked numpy
    arrays; strings become numpy string arrays).
  """
  if not sources:
    raise ValueError("make_dataset needs at least one source.")
  if weights is not None and len(weights) != len(sources):
    raise ValueError(f"{len(weights)} weights for {len(sources)} sources.")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} not in [0, {shard_count}).")
  parts = []
  for i, source in enumerate(sources):
    if len(source) < shard_count:
      raise ValueError(f"source {getattr(source, 'name', i)} has "
                       f"{len(source)} records, fewer than the "
                       f"{shard_count} processes reading it.")
    ds = grain.MapDataset.source(source)[shard_index::shard_count]
    if shuffle:
      ds = ds.seed(seed + 1_000_003 * i).shuffle()
    parts.append(ds.repeat(num_epochs) if num_epochs != 1 else ds)
  if len(parts) == 1:
    ds = parts[0]
  else:
    ds = grain.MapDataset.mix(parts, list(weights) if weights else None)
  for t in transforms:
    ds = ds.map(t)
  return ds.batch(batch_size, drop_remainder=drop_remainder)


def make_iterator(dataset: grain.MapDataset, *, num_threads: int = 2,
                  prefetch: int = 4,
                  num_workers: int = 0) -> grain.DatasetIterator:
  """Turns a dataset of batches into a checkpointable, prefetching iterator."""
  ds = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=prefetch))
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)
