# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Benchmarks tokenizer decoding: indices of every scale -> pixels.

  python experiments/bench_tokenizer_decode.py [--repeats=5]

Decoding is the cost a user pays after every sample. For each shape below
the decoder is built with random weights, `decode(indices, schedule)` is
jitted once per batch size, and the median wall time of `--repeats` calls
(after a warm-up call) is reported as seconds per batch and images/s:

  cpu:   the configs/tokenizer.py:cpu tokenizer, 64 px, 7 scales (155 tokens)
  256:   the configs/tokenizer.py:256 tokenizer, 256 px, paper's 12 scales
  var16: a decoder of VAR's VQ-VAE size (ch 160, mults 1,1,2,2,4, 2 res
         blocks, attention), 256 px, VAR's 10 scales (680 tokens)

Writes experiments/results/decode_<time>.json with the machine.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from nextflow_jax import scales  # pylint: disable=g-import-not-at-top
from nextflow_jax.tokenizer import model as model_lib

_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per setting.")
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "Batch sizes.")
_SHAPES = flags.DEFINE_list("shapes", ["cpu", "256", "var16"], "Which shapes.")

SHAPES = {
    "cpu": dict(image_size=64, scales="1,2,3,4,5,6,8", kwargs=dict(
        codebook_size=1024, channels=32, channel_mults=(1, 2, 2, 4),
        num_res_blocks=1, attention=False, num_groups=16, vit_width=96,
        vit_depth=2, vit_heads=3, vit_mlp_dim=192, semantic_out_dim=96,
        semantic_decoder_depth=1)),
    "256": dict(image_size=256, scales="1,2,3,4,5,6,7,8,10,12,14,16",
                kwargs=dict(codebook_size=16384, channels=128,
                            channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2,
                            attention=True, num_groups=32, vit_width=96,
                            vit_depth=1, vit_heads=3, vit_mlp_dim=192,
                            semantic_out_dim=96, semantic_decoder_depth=1)),
    "var16": dict(image_size=256, scales="1,2,3,4,5,6,8,10,13,16",
                  kwargs=dict(codebook_size=4096, channels=160,
                              channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2,
                              attention=True, num_groups=32, pixel_dim=32,
                              use_semantic=False)),
}


def bench(name, spec, batch):
  model = model_lib.VisionTokenizer(**spec["kwargs"])
  schedule = scales.parse_schedule(spec["scales"])
  size = spec["image_size"]
  variables = jax.jit(lambda r: model.init(
      r, jnp.zeros((1, size, size, 3)), schedule))(jax.random.key(0))
  rng = np.random.default_rng(0)
  indices = [jnp.asarray(rng.integers(0, model.codebook_size, (batch, h, w)),
                         jnp.int32) for h, w in schedule]
  decode = jax.jit(lambda v, idx: model.apply(v, idx, schedule,
                                              method=model.decode))
  t0 = time.perf_counter()
  jax.block_until_ready(decode(variables, indices))
  compile_sec = time.perf_counter() - t0
  times = []
  for _ in range(_REPEATS.value):
    t0 = time.perf_counter()
    jax.block_until_ready(decode(variables, indices))
    times.append(time.perf_counter() - t0)
  sec = statistics.median(times)
  n_params = sum(x.size for x in jax.tree.leaves(
      variables["params"]["pixel_decoder"]))
  row = {"shape": name, "image_size": size, "batch": batch,
         "tokens_per_image": scales.token_count(schedule),
         "decoder_params_millions": round(n_params / 1e6, 2),
         "sec_per_batch": round(sec, 4), "sec_per_image": round(sec / batch, 4),
         "images_per_sec": round(batch / sec, 2),
         "compile_and_first_call_sec": round(compile_sec, 1)}
  print(f"{name:6s} {size:4d}px batch {batch:2d}: {sec:8.4f} s/batch  "
        f"{sec / batch:8.4f} s/image  {batch / sec:8.2f} images/s  "
        f"(decoder {row['decoder_params_millions']}M params)")
  return row


def main(argv):
  del argv
  rows = [bench(name, SHAPES[name], int(b)) for name in _SHAPES.value
          for b in _BATCHES.value]
  print("wrote", common.write_result("decode", {"rows": rows}))


if __name__ == "__main__":
  app.run(main)
