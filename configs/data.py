# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Prepares the data: embedded datasets, text tokenizer, input pipeline.

Builds the embedded datasets (shapes and Twemoji) as TFDS ArrayRecord
datasets in `data.data_dir`, trains the sentencepiece text tokenizer on their
text into `workdir/text_tokenizer.model`, then streams batches through the
Grain pipeline onto the device mesh and reports images/s, a preview grid and
token-length statistics in `workdir/data_report.json`.

  # 2-core CPU demo (64 px): ~30 s on a 2-core CPU.
  python -m nextflow_jax.main --config=configs/data.py:cpu --workdir=runs/demo
  # unit-test size (32 px), a few seconds.
  python -m nextflow_jax.main --config=configs/data.py:mu --workdir=/tmp/mu

Override anything: `configs/data.py:cpu,data.global_batch_size=64` or
`--config.data.sources=twemoji/64px`. Your own images:
`python -m nextflow_jax.data.convert --input_dir=... --output_dir=DIR`, then
`--config.data.sources=array_record:DIR`. Tuples are `;`-separated inside
the arg string: `data.sources=shapes/64px;twemoji/64px`.
"""

import ml_collections

from nextflow_jax import config_lib


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "prepare_data"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.sources = ("shapes/64px", "twemoji/64px")
  c.data.weights = (1.0, 1.0)
  c.data.data_dir = ""  # "" = TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
  c.data.split = "train"
  c.data.image_size = 64
  c.data.max_text_len = 32  # tokens incl. <bos>/<eos>; longer text is an error
  c.data.global_batch_size = 32
  # `{...}` fields are filled from this section by the trainer.
  c.data.transforms = ("check_image|resize({image_size})|to_float|"
                       "tokenize(max_len={max_text_len})|"
                       "keep('image','tokens','tokens_mask','caption')")
  c.data.num_threads = 2
  c.data.num_workers = 0  # Grain worker processes; 0 = threads only
  c.data.prefetch = 4

  c.text = ml_collections.ConfigDict()
  c.text.vocab_size = 1024  # upper bound: small corpora give fewer pieces
  c.text.model_type = "bpe"

  # The image tokenizer the data is prepared for: used here for token counts.
  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.downsample = 16
  c.tokenizer.scales = "1,2,3,4"

  c.sharding = ml_collections.ConfigDict()
  c.sharding.mesh = (-1, 1, 1)
  c.sharding.rules = "dp"
  c.sharding.rule_overrides = ()

  c.prepare = ml_collections.ConfigDict()
  c.prepare.num_batches = 40  # batches streamed to measure throughput
  c.prepare.num_preview = 16  # images in the preview grid
  return c


def _mu(c):
  c.data.sources = ("shapes/32px", "twemoji/32px")
  c.data.image_size = 32
  c.data.global_batch_size = 8
  c.text.vocab_size = 512
  c.tokenizer.downsample = 8
  c.tokenizer.scales = "1,2,4"
  c.prepare.num_batches = 4
  c.prepare.num_preview = 8


def _cpu(c):
  del c  # The base is the CPU demo.


PRESETS = {"mu": _mu, "cpu": _cpu}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.from_presets(arg, _base, PRESETS, default="cpu")
