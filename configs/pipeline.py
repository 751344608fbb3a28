# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""The whole pipeline as one job: the README's main job
(nextflow_jax/trainers/pipeline.py).

  # the demo on the embedded data (2-core CPU, about 30 minutes):
  python -m nextflow_jax.main --config=configs/pipeline.py:demo \
      --workdir=runs/demo
  # every stage at unit-test size (seconds each; the test suite runs it):
  python -m nextflow_jax.main --config=configs/pipeline.py:mu \
      --workdir=/tmp/pipeline
  # change one stage like its own --config flags would:
  python -m nextflow_jax.main --config=configs/pipeline.py:demo \
      --workdir=runs/demo \
      --config.stages.pretrain.overrides='train.max_minutes=30;optim.lr=2e-3'

Stages run in order, each the library's own job in `workdir/<stage>`:
tokenizer (builds the datasets and the text tokenizer first), extract,
pretrain, grpo, sample, evaluate. Rerunning with the same workdir skips the
finished stages and resumes a half-finished one from its checkpoints. The
paths between stages (extract's tokenizer_workdir, pretrain's
data.codes_dir, grpo's model, sample's model_workdir) are set by the
pipeline. Outputs: report.md (numbers and PNGs) and report.json.
"""

import ml_collections

from nextflow_jax import config_lib

STAGES = ("tokenizer", "extract", "pretrain", "grpo", "sample")


def _stage(spec: str, *overrides: str) -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.config = spec  # "configs/<file>.py:<preset>", relative to the repo root
  # "key=value" items, applied like --config.key=value to that config.
  s.overrides = tuple(overrides) if overrides else ("",)
  s.skip = False
  return s


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "pipeline"
  c.stages = ml_collections.ConfigDict()
  # 8 minutes of the shapes32 tokenizer (about 850 steps on 2 cores), so
  # a shorter autoencoder warm-up than the preset's 600 of 4000 steps.
  c.stages.tokenizer = _stage("configs/tokenizer.py:shapes32",
                              "train.max_minutes=8",
                              "codes.autoencoder_steps=250")
  c.stages.extract = _stage("configs/extract.py:shapes32")
  c.stages.pretrain = _stage("configs/nextflow.py:shapes32",
                             "train.max_minutes=11")
  c.stages.grpo = _stage("configs/grpo.py:cpu", "train.max_minutes=3",
                         "train.eval_every_steps=10")
  c.stages.sample = _stage("configs/sample.py")

  c.evaluate = ml_collections.ConfigDict()
  c.evaluate.skip = False
  c.evaluate.prompt_split = "all"  # shapes-GenEval prompts: all|heldout|seen
  c.evaluate.prompts_per_category = 0  # 0 = every prompt of the split
  c.evaluate.images_per_prompt = 2
  c.evaluate.guidance = 3.0
  c.evaluate.understanding = 32  # held-out images for caption/VQA/edit
  c.evaluate.batch_size = 32  # rows per sampler call (also the speed batch)
  return c


def _demo(c):
  del c  # The base is the demo.


def _mu(c):
  """Every stage at unit-test size: the datasets, then seconds per stage."""
  c.stages.tokenizer = _stage("configs/tokenizer.py:mu")
  c.stages.extract = _stage("configs/extract.py:mu")
  c.stages.pretrain = _stage("configs/nextflow.py:mu")
  c.stages.grpo = _stage("configs/grpo.py:mu")
  c.stages.sample = _stage("configs/sample.py:mu")
  c.evaluate.prompts_per_category = 1
  c.evaluate.images_per_prompt = 1
  c.evaluate.understanding = 2
  c.evaluate.batch_size = 8


PRESETS = {"demo": _demo, "mu": _mu}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.from_presets(arg, _base, PRESETS, default="demo")
