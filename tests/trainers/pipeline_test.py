# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The whole pipeline at mu size: every stage runs, the report has every
section, a rerun skips what is done, bad stage overrides are named."""

import json
import os

import pytest

from nextflow_jax import config_lib
from nextflow_jax import trainers
from nextflow_jax.evals import report as report_lib
from nextflow_jax.trainers import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _config(tfds_dir, **overrides):
  config = config_lib.load_config(os.path.join(ROOT, "configs",
                                               "pipeline.py:mu"))
  data = f"data.data_dir={tfds_dir}"
  config.stages.tokenizer.overrides = (data, "train.num_steps=2",
                                       "eval.num_batches=1")
  config.stages.extract.overrides = (data,)
  config_lib.apply_overrides(config, overrides)
  return config


@pytest.fixture(scope="module")
def finished(tfds_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("pipeline"))
  config = _config(tfds_dir)
  trainers.validate(config, workdir)
  return workdir, pipeline.run(config, workdir)


def test_every_stage_runs_and_the_report_has_every_section(finished):
  workdir, report = finished
  with open(os.path.join(workdir, pipeline.STATE_FILE)) as f:
    assert list(json.load(f)) == list(pipeline.ALL_STAGES)
  for key in ("tokenizer", "pretrain", "grpo", "sample", "evaluate"):
    assert report[key], key
  assert set(report["evaluate"]["models"]) == {"pretrain", "grpo"}
  geneval = report["evaluate"]["models"]["grpo"]["geneval"]
  assert len(geneval["categories"]) == 7  # the six and full captions
  with open(os.path.join(workdir, report_lib.JSON_FILE)) as f:
    assert json.load(f)["minutes"] == report["minutes"]
  with open(os.path.join(workdir, report_lib.MARKDOWN_FILE)) as f:
    text = f.read()
  for heading in ("## Vision tokenizer", "## Pretraining", "## GRPO",
                  "## Prompt following: shapes-GenEval",
                  "## Understanding and speed", "## Samples"):
    assert heading in text, heading
  # Every image the report shows exists, at its relative path.
  images = [line.split("](")[1][:-1] for line in text.splitlines()
            if line.startswith("![")]
  assert report_lib.PRETRAIN_PLOT in images and report_lib.GRPO_PLOT in images
  for path in images:
    assert os.path.exists(os.path.join(workdir, path)), path


def test_a_rerun_skips_the_finished_stages(finished, tfds_dir):
  workdir, report = finished
  with open(os.path.join(workdir, pipeline.STATE_FILE)) as f:
    before = json.load(f)
  again = pipeline.run(_config(tfds_dir), workdir)
  with open(os.path.join(workdir, pipeline.STATE_FILE)) as f:
    assert json.load(f) == before
  assert again["minutes"] == report["minutes"]


@pytest.mark.parametrize("key,value,match", [
    ("stages.pretrain.overrides", "train.num_steps", r"each item is key="),
    ("stages.grpo.overrides", "model=/elsewhere", r"set by the pipeline"),
    ("stages.extract.config", "configs/none.py:mu", r"no such config file"),
    ("evaluate.prompt_split", "train", r"choose all, heldout or seen"),
])
def test_bad_input_pipeline_values(tfds_dir, tmp_path, key, value, match):
  config = _config(tfds_dir, **{key: value})
  with pytest.raises(config_lib.ConfigError, match=match):
    trainers.validate(config, str(tmp_path))


def test_bad_input_a_stage_config_of_another_trainer(tfds_dir, tmp_path):
  config = _config(tfds_dir, **{"stages.extract.config":
                                "configs/nextflow.py:mu"})
  with pytest.raises(config_lib.ConfigError, match=r"is a 'pretrain' config; "
                     r"this stage runs 'extract'"):
    pipeline.stage_config(config, "extract", str(tmp_path))
