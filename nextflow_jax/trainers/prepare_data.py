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
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from nextflow_jax import metrics
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax.trainers import common

REPORT_FILE = "data_report.json"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the job; returns the report that is also written to the workdir."""
  data = config.data
  report: dict[str, Any] = {"data_dir": common.resolve_data_dir(data.data_dir),
                            "sources": {}}

  # 1. Datasets (built on first use).
  t0 = time.perf_counter()
  opened = common.open_sources(data, data.split)
  report["open_or_build_sec"] = round(time.perf_counter() - t0, 2)
  for spec, source in zip(data.sources, opened):
    report["sources"][spec] = {"records": len(source)}
    logging.info("source %s: %d records", spec, len(source))

  # 2. Text tokenizer.
  t0 = time.perf_counter()
  tokenizer, trained = common.ensure_text_tokenizer(workdir, opened,
                                                    config.text)
  if trained:
    report["text_tokenizer_train_sec"] = round(time.perf_counter() - t0, 2)
  report["text_tokenizer"] = {"path": tokenizer.source,
                              "vocab_size": tokenizer.vocab_size}

  # 3. Pipeline throughput onto the mesh.
  mesh = sharding.make_mesh(config.sharding.mesh)
  iterator = common.make_iterator(config, opened, tokenizer.source)
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
