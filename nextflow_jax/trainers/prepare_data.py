# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The data-preparation job (`config.trainer = "prepare_data"`).

1. Builds the embedded datasets among `data.sources` into `data.data_dir`
   (TFDS ArrayRecord; skipped when already prepared).
2. Trains the sentencepiece text tokenizer on the text of every source's
   train split into `workdir/text_tokenizer.model` (kept if it exists).
3. Streams `prepare.num_batches` batches through the Grain pipeline onto the
   device mesh and measures images/s.
4. Writes `workdir/data_report.json` (dataset sizes, build times, tokenizer,
   token-length statistics, images/s), `workdir/preview.png` with
   `preview_captions.txt`, and TensorBoard events.

Later stages (tokenizer training, pretraining) read the same datasets and
the same text tokenizer.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from nextflow_jax import metrics
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax.data import pipeline
from nextflow_jax.data import sources as sources_lib
from nextflow_jax.data import transforms as transforms_lib
from nextflow_jax.text import tokenizer as text_tokenizer

TEXT_TOKENIZER_FILE = "text_tokenizer.model"
REPORT_FILE = "data_report.json"
# Fields whose text trains the text tokenizer (str or list of str).
TEXT_FIELDS = ("caption", "questions", "answers", "edit_instruction",
               "motion_caption", "text")


def resolve_data_dir(data_dir: str) -> str:
  """"" -> TFDS's default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)


def iter_texts(source: sources_lib.Source) -> Iterator[str]:
  """Every text string of every record of a source."""
  for i in range(len(source)):
    example = source[i]
    for field in TEXT_FIELDS:
      value = example.get(field)
      if isinstance(value, str):
        yield value
      elif isinstance(value, (list, tuple)):
        yield from (v for v in value if isinstance(v, str))


def transform_spec(data: ml_collections.ConfigDict) -> str:
  """`data.transforms` with `{field}` placeholders filled from `data`."""
  return data.transforms.format(**data.to_dict())


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the job; returns the report that is also written to the workdir."""
  tfds.disable_progress_bar()
  data = config.data
  data_dir = resolve_data_dir(data.data_dir)
  report: dict[str, Any] = {"data_dir": data_dir, "sources": {}}

  # 1. Datasets.
  opened = []
  for spec in data.sources:
    t0 = time.perf_counter()
    source = sources_lib.open_source(spec, data.split, data_dir)
    seconds = time.perf_counter() - t0
    opened.append(source)
    report["sources"][spec] = {"records": len(source),
                               "open_or_build_sec": round(seconds, 2)}
    logging.info("source %s: %d records (%.1f s)", spec, len(source), seconds)

  # 2. Text tokenizer.
  tok_path = os.path.join(workdir, TEXT_TOKENIZER_FILE)
  if os.path.exists(tok_path):
    tokenizer = text_tokenizer.TextTokenizer.load(tok_path)
    logging.info("reusing text tokenizer %s", tok_path)
  else:
    t0 = time.perf_counter()
    texts = [t for s in opened for t in iter_texts(s)]
    tokenizer = text_tokenizer.train_sentencepiece(
        texts, tok_path, config.text.vocab_size,
        model_type=config.text.model_type)
    report["text_tokenizer_train_sec"] = round(time.perf_counter() - t0, 2)
    report["text_tokenizer_sentences"] = len(texts)
  report["text_tokenizer"] = {"path": tok_path,
                              "vocab_size": tokenizer.vocab_size}

  # 3. Pipeline throughput onto the mesh.
  mesh = sharding.make_mesh(config.sharding.mesh)
  transforms = transforms_lib.parse(transform_spec(data),
                                    context={"text_tokenizer": tok_path})
  dataset = pipeline.make_dataset(
      opened, batch_size=data.global_batch_size // jax.process_count(),
      transforms=transforms, weights=data.weights or None, seed=config.seed,
      shard_index=jax.process_index(), shard_count=jax.process_count())
  iterator = pipeline.make_iterator(dataset, num_threads=data.num_threads,
                                    prefetch=data.prefetch,
                                    num_workers=data.num_workers)
  first = next(iterator)
  lengths = [first["tokens_mask"].sum(-1)] if "tokens_mask" in first else []
  t0 = time.perf_counter()
  for _ in range(config.prepare.num_batches):
    batch = next(iterator)
    if "tokens_mask" in batch:
      lengths.append(batch["tokens_mask"].sum(-1))
    arrays = {k: v for k, v in batch.items() if v.dtype.kind in "fiub"}
    jax.block_until_ready(sharding.shard_batch(arrays, mesh))
  seconds = time.perf_counter() - t0
  images_per_sec = config.prepare.num_batches * data.global_batch_size / seconds
  report["pipeline"] = {"batches": config.prepare.num_batches,
                        "global_batch_size": data.global_batch_size,
                        "images_per_sec": round(images_per_sec, 1),
                        "mesh": dict(mesh.shape)}
  if hasattr(iterator, "close"):
    iterator.close()

  # 4. Report: token budget per example and previews.
  schedule = scales.parse_schedule(config.tokenizer.scales)
  if lengths:
    lengths = np.concatenate(lengths)
    report["text_tokens"] = {"mean": round(float(lengths.mean()), 2),
                             "p95": int(np.percentile(lengths, 95)),
                             "max": int(lengths.max())}
  report["image_tokens"] = {"scales": config.tokenizer.scales,
                            "tokens_per_image": scales.token_count(schedule)}
  _write_preview(workdir, first, config.prepare.num_preview)
  writer = metrics.Writer(workdir)
  writer.write_scalars(0, {"data/images_per_sec": images_per_sec})
  if "image" in first:
    writer.write_images(0, {"data/preview": metrics.image_grid(
        first["image"][:config.prepare.num_preview])})
  writer.close()
  if jax.process_index() == 0:
    tmp = os.path.join(workdir, REPORT_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
    os.replace(tmp, os.path.join(workdir, REPORT_FILE))
  logging.info("data report: %s", json.dumps(report))
  return report


def _write_preview(workdir: str, batch: dict[str, np.ndarray], n: int) -> None:
  if jax.process_index() or "image" not in batch:
    return
  metrics.save_png(os.path.join(workdir, "preview.png"),
                   metrics.image_grid(batch["image"][:n]))
  if "caption" in batch:
    with open(os.path.join(workdir, "preview_captions.txt"), "w",
              encoding="utf-8") as f:
      f.write("\n".join(str(c) for c in batch["caption"][:n]) + "\n")
