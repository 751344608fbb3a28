# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Benchmarks the data layer: dataset build time and Grain images/s.

  python experiments/bench_data.py [--image_size=64] [--batches=60]

Builds shapes and Twemoji at the given size into a fresh temporary data dir
(timing each), trains the text tokenizer, then measures images/s of the
training pipeline (decode, check, to_float, tokenize, batch 32) with Grain
threads only and with 2 worker processes. Prints a table and writes
experiments/results/data_<time>.json with the machine it ran on.
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from nextflow_jax.data import pipeline  # pylint: disable=g-import-not-at-top
from nextflow_jax.data import sources
from nextflow_jax.data import transforms
from nextflow_jax.text import tokenizer as text_tokenizer
from nextflow_jax.trainers import common as trainer_common

_SIZE = flags.DEFINE_integer("image_size", 64, "32 or 64.")
_BATCHES = flags.DEFINE_integer("batches", 60, "Batches per measurement.")
BATCH = 32


def images_per_sec(ds, batches, num_workers):
  it = pipeline.make_iterator(ds, num_workers=num_workers)
  next(it)  # Start-up (worker processes, first reads) is not counted.
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - t0
  it.close()
  return batches * BATCH / seconds


def main(argv):
  del argv
  tfds.disable_progress_bar()
  size = _SIZE.value
  result = {"image_size": size, "batch_size": BATCH, "build_sec": {},
            "records": {}, "images_per_sec": {}}
  with tempfile.TemporaryDirectory() as data_dir:
    opened = []
    for name in ("shapes", "twemoji"):
      spec = f"{name}/{size}px"
      t0 = time.perf_counter()
      sources.prepare_embedded(spec, data_dir)
      result["build_sec"][spec] = round(time.perf_counter() - t0, 2)
      opened.append(sources.open_source(spec, "train", data_dir, prepare=False))
      result["records"][spec] = len(opened[-1])
    t0 = time.perf_counter()
    texts = [t for s in opened for t in trainer_common.iter_texts(s)]
    tok_path = os.path.join(data_dir, "text.model")
    text_tokenizer.train_sentencepiece(texts, tok_path, 1024)
    result["text_tokenizer_sec"] = round(time.perf_counter() - t0, 2)
    spec = (f"check_image({size})|to_float|tokenize(max_len=32)|"
            "keep('image','tokens','tokens_mask')")
    for label, srcs in (("shapes", opened[:1]), ("twemoji", opened[1:]),
                        ("mixture", opened)):
      ds = pipeline.make_dataset(
          srcs, batch_size=BATCH, seed=0,
          transforms=transforms.parse(spec, {"text_tokenizer": tok_path}))
      for workers in (0, 2):
        key = f"{label}, {'threads' if not workers else f'{workers} workers'}"
        result["images_per_sec"][key] = round(
            images_per_sec(ds, _BATCHES.value, workers), 1)
        print(f"{key:28s} {result['images_per_sec'][key]:9.1f} images/s")
  for spec, sec in result["build_sec"].items():
    print(f"build {spec:20s} {sec:7.2f} s ({result['records'][spec]} train "
          "records)")
  print(f"text tokenizer (read all text + train): "
        f"{result['text_tokenizer_sec']} s")
  print("wrote", common.write_result(f"data_{size}px", result))


if __name__ == "__main__":
  app.run(main)
