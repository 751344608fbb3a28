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
import functools

import grain

from nextflow_jax.data import sources as sources_lib


def mix_sources(sources: Sequence[sources_lib.Source], *,
                weights: Sequence[float] | None = None, seed: int = 0,
                shuffle: bool = True, num_epochs: int | None = None,
                shard_index: int = 0, shard_count: int = 1
                ) -> grain.MapDataset:
  """The per-process `MapDataset` of records (before transforms).

  Args:
    sources: random-access sources (see `sources.open_source`).
    weights: mixture weights, one per source (default: equal).
    seed: shuffle seed; the same on every process.
    shuffle: shuffle each epoch (off for evaluation).
    num_epochs: passes over the data; None repeats forever.
    shard_index: this process's index (`jax.process_index()`).
    shard_count: number of processes (`jax.process_count()`).
  """
  if not sources:
    raise ValueError("a dataset needs at least one source.")
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
    return parts[0]
  return grain.MapDataset.mix(parts, list(weights) if weights else None)


def make_dataset(sources: Sequence[sources_lib.Source], *,
                 batch_size: int,
                 transforms: Sequence[grain.transforms.Map] = (),
                 drop_remainder: bool = True,
                 **mix_kwargs) -> grain.MapDataset:
  """Builds the per-process `MapDataset` of batches.

  Args:
    sources: random-access sources (see `sources.open_source`).
    batch_size: this process's batch size (global batch / process count).
    transforms: per-example transforms, applied in order.
    drop_remainder: drop a final partial batch.
    **mix_kwargs: weights, seed, shuffle, num_epochs, shard_index,
      shard_count (see `mix_sources`).

  Returns:
    A `grain.MapDataset` whose elements are batches (dicts of stacked numpy
    arrays; strings become numpy string arrays).
  """
  ds = mix_sources(sources, **mix_kwargs)
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


def make_sequence_dataset(sources: Sequence[sources_lib.Source], *,
                          build: grain.transforms.RandomMap, seq_len: int,
                          batch_size: int, packing: str = "first_fit",
                          num_packing_bins: int = 8,
                          weights: Sequence[float] | None = None,
                          seed: int = 0, shuffle: bool = True,
                          num_epochs: int | None = None,
                          shard_index: int = 0, shard_count: int = 1,
                          num_threads: int = 2, prefetch: int = 4,
                          num_workers: int = 0) -> grain.IterDataset:
  """Records -> laid-out sequences -> packed/padded rows -> batches.

  Args:
    sources: random-access sources of records (e.g. extracted codes).
    build: a RandomMap from a record to an unpadded sequence
      (`tasks.BuildSequence`).
    seq_len: length of every row.
    batch_size: rows per batch on this process.
    packing: "first_fit" (several documents per row, `segment_ids` 1, 2,
      ...; Grain's first-fit packer) or "none" (one document per row,
      padded).
    num_packing_bins: rows the first-fit packer fills at a time.
    weights, seed, shuffle, num_epochs, shard_index, shard_count: as in
      `make_dataset`.
    num_threads, prefetch: Grain read options.
    num_workers: > 0 lays out and packs in that many Grain worker processes
      (`build` must be picklable; absl flags must be parsed).

  Returns:
    An `IterDataset` of dicts of (batch, seq_len, ...) arrays with the
    fields of `sequences.FIELDS` plus `segment_ids`.

  Raises:
    ValueError: a document longer than `seq_len` (naming the record).
  """
  from nextflow_jax.data import sequences  # pylint: disable=g-import-not-at-top
  if packing not in ("first_fit", "none"):
    raise ValueError(f"packing={packing!r}; use 'first_fit' or 'none'.")
  ds = mix_sources(sources, weights=weights, seed=seed, shuffle=shuffle,
                   num_epochs=num_epochs, shard_index=shard_index,
                   shard_count=shard_count)
  ds = ds.random_map(build, seed=seed)
  ds = ds.map(functools.partial(_check_length, seq_len=seq_len))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                            prefetch_buffer_size=prefetch))
  if packing == "none":
    it = it.map(lambda x: sequences.pad(x, seq_len))
  else:
    it = grain.experimental.FirstFitPackIterDataset(
        it, length_struct={f: seq_len for f in sequences.FIELDS},
        num_packing_bins=num_packing_bins, seed=seed, shuffle_bins=shuffle)
    it = it.map(_rename_packed)
  it = it.batch(batch_size, drop_remainder=True)
  if num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


def _check_length(example: dict, seq_len: int) -> dict:
  n = len(example["tokens"])
  if n > seq_len:
    raise ValueError(f"a laid-out document has {n} positions, more than "
                     f"seq_len={seq_len}; raise data.seq_len or use a smaller "
                     "schedule.")
  return example


def _rename_packed(row: dict) -> dict:
  """Keeps one `segment_ids` (Grain adds `<field>_segment_ids/_positions`)."""
  out = {k: v for k, v in row.items()
         if not k.endswith(("_segment_ids", "_positions"))}
  out["segment_ids"] = row["tokens_segment_ids"].astype("int32")
  return out
