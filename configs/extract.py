# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Extracts per-scale codes of a dataset with a trained tokenizer.

Writes `workdir/codes/<split>/` ArrayRecord shards with, per image, the
top-1 `targets` and the self-corrected `inputs` of every scale (the paper's
offline pre-tokenization); the pretraining pipeline reads them.

  python -m nextflow_jax.main --config=configs/extract.py:cpu \
      --workdir=runs/codes --config.tokenizer_workdir=runs/tok

The image size comes from the tokenizer's saved config; `data.sources`
should be the data the tokenizer was trained for.
"""

import ml_collections

from nextflow_jax import config_lib


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "extract"
  c.seed = 0
  # required: a workdir of configs/tokenizer.py, or a model bundle (its
  # vision tokenizer, e.g. pretrained/shapes-cpu)
  c.tokenizer_workdir = ""

  c.data = ml_collections.ConfigDict()
  c.data.sources = ("shapes/64px", "twemoji/64px")
  c.data.data_dir = ""
  c.data.splits = ("train", "test")
  c.data.global_batch_size = 64  # images encoded per step

  c.extract = ml_collections.ConfigDict()
  c.extract.rate = 0.6  # paper: 60% of each scale's cells
  c.extract.top_k = 8  # not given by the paper
  c.extract.temperature = 1.0
  c.extract.residual_from = "inputs"  # or "targets"
  # "" = the tokenizer's training schedule. Any schedule ending at the
  # tokenizer's latent grid works, e.g. "8" (64 px): one 8x8 scale, plain VQ
  # of the latent, the codes of a raster-order baseline.
  c.extract.schedule = ""
  # Add "frames" for the video task (the cpu pretraining preset has none:
  # 8 frames of 155 tokens do not fit its 512-token rows).
  c.extract.image_fields = ("image", "edited_image")
  c.extract.num_shards = 4
  c.extract.output_dir = ""  # "" = workdir/codes

  c.sharding = ml_collections.ConfigDict()
  c.sharding.mesh = (-1, 1, 1)
  c.sharding.rules = "dp"
  c.sharding.rule_overrides = ()
  return c


def _mu(c):
  c.data.sources = ("shapes/32px", "twemoji/32px")
  c.extract.image_fields = ("image", "edited_image", "frames")
  c.data.global_batch_size = 64
  c.extract.num_shards = 2


def _cpu(c):
  del c  # The base is the CPU demo.


def _shapes32(c):
  """Codes for the shapes32 recipe (experiments/shapes_pipeline.py)."""
  c.data.sources = ("shapes/32px_8k",)
  c.extract.image_fields = ("image",)  # its tasks: t2i, caption, vqa


def _shapes32_grid(c):
  """Codes for the shapes32_grid recipe: shapes on a 4-px grid (whole
  latent cells), the tokenizer's 8x8 grid reached in four aligned scales
  (1, 2, 4, 8: 85 codes, against 155 for the tokenizer's seven), and
  self-correction on 20 % of the cells (experiments/README.md). The
  tokenizer is the shapes32 one; `tokenizer_workdir` may be the shipped
  bundle pretrained/shapes-cpu, which holds it."""
  c.data.sources = ("shapes/32px_8k_grid4",)
  c.extract.image_fields = ("image",)
  c.extract.schedule = "1,2,4,8"
  c.extract.rate = 0.2


PRESETS = {"mu": _mu, "cpu": _cpu, "shapes32": _shapes32,
           "shapes32_grid": _shapes32_grid}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.from_presets(arg, _base, PRESETS, default="cpu")
