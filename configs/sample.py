# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Samples from a pretrained NextFlow: text->image, editing, captions, VQA,
video frames and interleaved documents, written as PNG grids with their
prompts (see nextflow_jax/trainers/sample.py).

  python -m nextflow_jax.main --config=configs/sample.py \
      --workdir=runs/samples --config.sample.model_workdir=runs/nextflow
  # own prompts, more guidance, a 2:1 schedule of the paper's table:
  python -m nextflow_jax.main --config=configs/sample.py --workdir=runs/s2 \
      --config.sample.model_workdir=runs/nextflow \
      --config.sample.prompts='("two red circles","a blue square")' \
      --config.sample.sampling.guidance=5.0

Without prompts / images, every task reads its inputs (captions, edit
instructions, questions, source images) from the first `num_examples`
records of the model's evaluation code split. Every knob of
`config.sample.sampling` is a field of `sampling.config.SamplingConfig`
(per-scale knobs as tuples, `top_k=()` for no top-k) and is written to
`<workdir>/sampling.json` next to the images.
"""

import ml_collections

from nextflow_jax import config_lib
from nextflow_jax.sampling import config as sampling_config
from nextflow_jax.trainers import sample as sample_trainer


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "sample"
  c.sample = ml_collections.ConfigDict()
  # required: --workdir of configs/nextflow.py, or a model bundle folder
  # (e.g. pretrained/shapes-cpu)
  c.sample.model_workdir = ""
  c.sample.tokenizer_workdir = ""  # "" = the one the model's codes name
  c.sample.step = -1  # -1 = latest checkpoint
  c.sample.tasks = ("t2i", "edit", "caption", "vqa")  # + video, interleaved
  c.sample.num_examples = 8
  c.sample.split = "test"  # code split the default inputs come from
  c.sample.prompts = ()  # t2i / interleaved prompts; () = eval captions
  c.sample.image_files = ()  # PNGs to edit / caption / ask about
  c.sample.instructions = ()  # edit instructions, one per image
  c.sample.questions = ()  # VQA questions, one per image
  c.sample.video_frames = 2  # frames to generate after the first
  c.sample.max_images = 2  # images per interleaved document
  c.sample.max_prompt_len = 0  # 0 = pad prompts to a multiple of 64
  # SamplingConfig's fields; per-scale knobs are tuples (one value = every
  # scale) and top-k () means off.
  c.sample.sampling = sample_trainer.to_config_dict(
      sampling_config.SamplingConfig())
  return c


def _mu(c):
  c.sample.num_examples = 2
  c.sample.sampling.text_max_new_tokens = 8


def _cpu(c):
  del c  # The base samples the CPU demo model.


PRESETS = {"mu": _mu, "cpu": _cpu}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.from_presets(arg, _base, PRESETS, default="cpu")
