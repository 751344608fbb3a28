# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Evaluates a trained tokenizer on the full held-out split of each source.

  python experiments/eval_tokenizer.py --tokenizer_workdir=runs/tok \
      --sources=twemoji/64px,shapes/64px [--data_dir=...] [--name=dual]

Prints PSNR, SSIM, per-scale-prefix PSNR and codebook usage per source and
writes experiments/results/tokenizer_eval_<name>_<time>.json with the
machine and the tokenizer's step.
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from nextflow_jax import checkpoint  # pylint: disable=g-import-not-at-top
from nextflow_jax import sharding
from nextflow_jax.data import sources as sources_lib
from nextflow_jax.data import transforms
from nextflow_jax import workdirs
from nextflow_jax.evals import reconstruction

_WORKDIR = flags.DEFINE_string("tokenizer_workdir", None, "Tokenizer workdir.")
_SOURCES = flags.DEFINE_list("sources", ["twemoji/64px", "shapes/64px"],
                             "Source specs to evaluate (test split).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data dir.")
_NAME = flags.DEFINE_string("name", "tokenizer", "Name of the result file.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Eval batch size.")


def main(argv):
  del argv
  mesh = sharding.make_mesh((-1, 1, 1))
  model, params, schedule, saved = workdirs.load_tokenizer(
      _WORKDIR.value, mesh, sharding.get_rules("dp"))
  step = checkpoint.Checkpointer(
      os.path.join(_WORKDIR.value, "checkpoints")).latest_step()
  size = saved["data"]["image_size"]
  prepare = transforms.parse(f"check_image|resize({size})|to_float")
  eval_fn = reconstruction.make_eval_fn(model, schedule)
  data_dir = os.path.expanduser(_DATA_DIR.value or "~/tensorflow_datasets")
  results = {}
  for spec in _SOURCES.value:
    source = sources_lib.open_source(spec, "test", data_dir)
    images = np.stack([transforms.apply(prepare, source[i])["image"]
                       for i in range(len(source))])
    usable = len(images) - len(images) % _BATCH.value
    batches = ({"image": sharding.shard_batch(images[i:i + _BATCH.value],
                                              mesh)}
               for i in range(0, usable, _BATCH.value))
    results[spec] = reconstruction.evaluate(eval_fn, params, batches)
    r = results[spec]
    print(f"{spec}: PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f}  "
          f"codebook usage {r['codebook_usage']:.1%}  "
          f"({r['num_images']} held-out images)")
    print("  PSNR by number of scales: " + ", ".join(
        f"{k}: {r[f'psnr_scale_{k}']:.2f}" for k in range(1, len(schedule) + 1)))
  print("wrote", common.write_result(f"tokenizer_eval_{_NAME.value}", {
      "tokenizer_workdir": os.path.abspath(_WORKDIR.value), "step": step,
      "tokenizer_config": saved.tokenizer.to_dict(), "results": results}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["tokenizer_workdir"])
  app.run(main)
