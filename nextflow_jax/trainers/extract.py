# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Offline code extraction (`config.trainer = "extract"`).

Encodes a dataset once with a trained tokenizer and writes ArrayRecord
shards that the pretraining pipeline reads, as the paper does (section 5.3):
the tokenizer never runs inside the training step.

Per source record, one output record (see `data/records.py`) holds:
  * `<field>.targets`: top-1 codes of every scale, flattened in scale order
    (`scales.flatten_codes`), int16 (int32 for codebooks > 32767);
  * `<field>.inputs`: the self-correction input codes (a fraction
    `extract.rate` of each scale's cells resampled among the top-k, see
    `quantizer.encode_streams`);
  for each image field in `extract.image_fields` (`image`, and for shapes
  also `edited_image` and `frames`, the latter as (T, tokens));
  * `schedule`: the schedule of the codes as "1x1,2x2,..." and
    `codebook_size`;
  * the record's text and metadata fields (caption, questions, answers,
    edit instruction, scenes, ...) and `source_id`, the id of the source
    record ("shapes/64px:train:17").
Output: `extract.output_dir/<split>/` (default `workdir/codes/<split>/`),
written atomically; read it with `data.sources=array_record:<that folder>`.
On several processes each writes `<split>-p<k>/` with its share. The
manifest records `schedule` (the codes') and `tokenizer_schedule` (the one
the tokenizer was trained with).

Schedule (`extract.schedule`): "" codes the tokenizer's training schedule.
Any other schedule that ends at the tokenizer's latent grid works too: the
quantiser codes the latent residually at whichever scales it is given, and
`VisionTokenizer.decode(indices, schedule)` decodes codes of that schedule.
A single scale ("8" for an 8x8 grid) is plain VQ of the latent with the
same codebook: the codes of the raster-order baseline
(`layout.image_order = "raster"`), so both orders share one tokenizer. The
codebook was trained on multi-scale residuals, so single-scale codes may
reconstruct somewhat worse than the trained schedule.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from nextflow_jax import config_lib
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax import workdirs
from nextflow_jax.data import records
from nextflow_jax.data import sources as sources_lib
from nextflow_jax.data import transforms as transforms_lib
from nextflow_jax.trainers import common

# Fields copied as they are (when a record has them).
TEXT_FIELDS = ("caption", "questions", "answers", "edit_instruction",
               "motion_caption", "scene", "edited_scene", "frame_scenes",
               "text", "codepoints", "file")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Up-front checks of the `extract` section (run by `trainers.validate`).

  Raises:
    config_lib.ConfigError: naming the key, the value and what is allowed.
  """
  ext = config.extract
  if ext.temperature <= 0:
    raise config_lib.ConfigError("extract.temperature", ext.temperature,
                                 "must be > 0.")
  if not 0.0 <= ext.rate <= 1.0:
    raise config_lib.ConfigError("extract.rate", ext.rate,
                                 "must be in [0, 1].")
  if ext.top_k < 2:
    raise config_lib.ConfigError("extract.top_k", ext.top_k, "must be >= 2.")
  if ext.residual_from not in ("inputs", "targets"):
    raise config_lib.ConfigError("extract.residual_from", ext.residual_from,
                                 "choose 'inputs' or 'targets'.")
  if ext.schedule:  # Its last scale is checked against the tokenizer's.
    try:
      scales.validate_schedule(scales.parse_schedule(ext.schedule),
                               name="extract.schedule")
    except ValueError as e:
      raise config_lib.ConfigError("extract.schedule", ext.schedule, str(e))


def codes_schedule(spec: str, trained: scales.Schedule) -> scales.Schedule:
  """The schedule to extract: `spec`, or the tokenizer's `trained` if "".

  Raises:
    ValueError: `spec` is not a valid schedule or does not end at the
      tokenizer's latent grid (the last scale of `trained`).
  """
  if not spec:
    return trained
  schedule = scales.parse_schedule(spec)
  scales.validate_schedule(schedule, name="extract.schedule")
  if tuple(schedule[-1]) != tuple(trained[-1]):
    h, w = trained[-1]
    raise ValueError(
        f"extract.schedule={spec!r} ends at {schedule[-1][0]}x"
        f"{schedule[-1][1]} but the tokenizer's latent grid is {h}x{w} (it "
        f"was trained with {scales.format_schedule(trained)}); end the "
        f"schedule there, e.g. '{h}x{w}' for single-scale codes.")
  return schedule


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Extracts codes for every split; returns {split: manifest}."""
  # Extraction needs no communication between processes: each process
  # encodes its share of the records on its own devices.
  mesh = jax.make_mesh((jax.local_device_count(), 1, 1), sharding.MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=jax.local_devices())
  rules = sharding.get_rules(config.sharding.rules,
                             config.sharding.get("rule_overrides", ()))
  model, params, trained, saved = workdirs.load_tokenizer(
      config.tokenizer_workdir, mesh, rules)
  size = saved["data"]["image_size"]
  ext = config.extract
  schedule = codes_schedule(ext.schedule, trained)
  code_dtype = np.int16 if model.codebook_size <= 32768 else np.int32
  prepare = transforms_lib.parse(f"check_image|resize({size})|to_float")

  @jax.jit
  def encode(params, images, rng):
    return model.apply({"params": params}, images, schedule, rng,
                       rate=ext.rate, top_k=ext.top_k,
                       temperature=ext.temperature,
                       residual_from=ext.residual_from,
                       method=model.encode_streams)

  batch = config.data.global_batch_size // jax.process_count()
  out_root = ext.output_dir or os.path.join(workdir, "codes")
  suffix = f"-p{jax.process_index()}" if jax.process_count() > 1 else ""
  rng = jax.random.key(config.seed)
  manifests = {}
  for split in config.data.splits:
    opened = common.open_sources(config.data, split)
    folder = os.path.join(out_root, split + suffix)
    t0, n = time.perf_counter(), 0
    with records.ShardedWriter(
        folder, num_shards=ext.num_shards, prefix="codes",
        schedule=scales.format_schedule(schedule),
        codebook_size=model.codebook_size, image_size=size,
        tokenizer_workdir=os.path.abspath(config.tokenizer_workdir),
        tokenizer_schedule=scales.format_schedule(trained),
        rate=ext.rate, top_k=ext.top_k,
        residual_from=ext.residual_from) as writer:
      for source in opened:
        for chunk in _chunks(source, batch):
          examples = [source[i] for i in chunk]
          fields = {}
          for field in ext.image_fields:
            if field not in examples[0]:
              continue
            images, counts = _images(examples, field, prepare)
            rng, sub = jax.random.split(rng)
            inputs, targets = _encode_padded(encode, params, images, sub,
                                             batch, mesh)
            fields[field] = (counts, scales.flatten_codes(inputs),
                             scales.flatten_codes(targets))
          for j, example in enumerate(examples):
            record = {k: example[k] for k in TEXT_FIELDS if k in example}
            record.update(source_id=example["id"],
                          schedule=scales.format_schedule(schedule),
                          codebook_size=model.codebook_size)
            for field, (counts, inp, tgt) in fields.items():
              start, stop = sum(counts[:j]), sum(counts[:j + 1])
              shape = (-1,) if field != "frames" else (counts[j], -1)
              record[f"{field}.inputs"] = inp[start:stop].reshape(
                  shape).astype(code_dtype)
              record[f"{field}.targets"] = tgt[start:stop].reshape(
                  shape).astype(code_dtype)
            writer.write(record)
            n += 1
    manifests[split] = records.read_manifest(folder)
    logging.info("extracted %d records of split %s to %s (%.1f records/s)",
                 n, split, folder, n / (time.perf_counter() - t0))
  return manifests


def _chunks(source: sources_lib.Source, batch: int):
  """Index lists of at most `batch` over this process's share of a source."""
  indices = list(range(jax.process_index(), len(source), jax.process_count()))
  for start in range(0, len(indices), batch):
    yield indices[start:start + batch]


def _images(examples: list[dict], field: str,
            prepare) -> tuple[np.ndarray, list[int]]:
  """Stacks one image field of a list of records into (N, H, W, 3) floats.

  `frames` (a list of T images per record) contributes T images each.
  Returns the stack and how many images each record contributed.
  """
  images, counts = [], []
  for example in examples:
    value = example[field]
    frames = list(value) if isinstance(value, (list, tuple)) or np.ndim(
        value) == 4 else [value]
    for frame in frames:
      images.append(transforms_lib.apply(
          prepare, {"image": np.asarray(frame), "id": example["id"]})["image"])
    counts.append(len(frames))
  return np.stack(images), counts


def _encode_padded(encode, params, images: np.ndarray, rng, batch: int, mesh):
  """Encodes in fixed-size batches (one compilation), dropping the padding."""
  inputs, targets = [], []
  for start in range(0, len(images), batch):
    part = images[start:start + batch]
    padded = np.concatenate([part, np.repeat(part[-1:], batch - len(part), 0)])
    rng, sub = jax.random.split(rng)
    inp, tgt = encode(params, sharding.shard_batch(padded, mesh), sub)
    inputs.append([np.asarray(x)[:len(part)] for x in inp])
    targets.append([np.asarray(x)[:len(part)] for x in tgt])
  return ([np.concatenate(s) for s in zip(*inputs)],
          [np.concatenate(s) for s in zip(*targets)])
