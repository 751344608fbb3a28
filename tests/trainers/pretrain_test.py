# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Pretraining on extracted codes: loss falls, kill + resume is exact."""

import os

import jax
import numpy as np
import pytest

from nextflow_jax import checkpoint
from nextflow_jax import config_lib
from nextflow_jax import metrics
from nextflow_jax import trainers
from nextflow_jax.trainers import extract
from nextflow_jax.trainers import pretrain
from nextflow_jax.trainers import tokenizer as tokenizer_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def load_config(name, arg):
  return config_lib.load_config(os.path.join(ROOT, "configs",
                                             f"{name}.py:{arg}"))


@pytest.fixture(scope="module")
def tok_dir(tfds_dir, tmp_path_factory):
  """A 2-step mu tokenizer."""
  workdir = str(tmp_path_factory.mktemp("tok"))
  tok = load_config("tokenizer", "mu")
  tok.data.data_dir = tfds_dir
  tok.train.num_steps = 2
  tok.eval.num_batches = 0
  tok.loss.gan_start_step = 100
  tokenizer_trainer.run(tok, workdir)
  return workdir


def extract_codes(tok_dir, tfds_dir, workdir, source):
  ext = load_config("extract", "mu")
  ext.tokenizer_workdir = tok_dir
  ext.data.data_dir = tfds_dir
  ext.data.sources = (source,)
  config_lib.validate(ext, workdir, trainers.TRAINERS)
  extract.run(ext, workdir)
  return workdir


@pytest.fixture(scope="module")
def codes_dir(tok_dir, tfds_dir, tmp_path_factory):
  """The codes of shapes/32px (all tasks)."""
  return extract_codes(tok_dir, tfds_dir, str(tmp_path_factory.mktemp("codes")),
                       "shapes/32px")


def mu_config(codes_dir, **overrides):
  config = load_config("nextflow", "mu")
  config.data.codes_dir = codes_dir
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config


def test_loss_falls_and_reports_tasks_and_scales(codes_dir, tmp_path):
  config = mu_config(codes_dir, **{"train.num_steps": 8})
  config_lib.validate(config, str(tmp_path), trainers.TRAINERS)
  report = pretrain.run(config, str(tmp_path))
  assert report["steps"] == 8
  scalars = metrics.read_scalars(str(tmp_path))
  total = [v for _, v in scalars["loss/total_loss"]]
  assert np.mean(total[-3:]) < np.mean(total[:3])
  assert {"scale_ce/01", "scale_ce/02", "scale_ce/03"} <= set(scalars)
  assert any(k.startswith("task_ce/") for k in scalars)
  assert scalars["tokens_per_sec"][-1][1] > 0
  assert "eval/loss/visual_loss" in scalars


def test_loss_falls_on_twemoji_too(tok_dir, tfds_dir, tmp_path):
  codes = extract_codes(tok_dir, tfds_dir, str(tmp_path / "codes"),
                        "twemoji/32px")
  config = mu_config(codes, **{"train.num_steps": 8, "eval.num_batches": 0})
  pretrain.run(config, str(tmp_path / "run"))
  scalars = metrics.read_scalars(str(tmp_path / "run"))
  total = [v for _, v in scalars["loss/total_loss"]]
  assert np.mean(total[-3:]) < np.mean(total[:3])
  tasks = {k for k in scalars if k.startswith("task_ce/")}
  assert tasks <= {"task_ce/t2i", "task_ce/caption", "task_ce/text"}


def test_schedule_longer_than_the_scale_embeddings(codes_dir, tmp_path):
  config = mu_config(codes_dir, **{"model.max_scales": 2})
  with pytest.raises(ValueError, match=r"the schedule has 3 scales but "
                     r"model.max_scales=2"):
    pretrain.run(config, str(tmp_path))


def test_kill_and_resume_equals_an_uninterrupted_run(codes_dir, tmp_path):
  straight = str(tmp_path / "straight")
  pretrain.run(mu_config(codes_dir, **{"eval.num_batches": 0}), straight)
  resumed = str(tmp_path / "resumed")
  pretrain.run(mu_config(codes_dir, **{"eval.num_batches": 0,
                                       "train.num_steps": 3}), resumed)
  pretrain.run(mu_config(codes_dir, **{"eval.num_batches": 0}), resumed)
  a = checkpoint.Checkpointer(os.path.join(straight, "checkpoints"))
  b = checkpoint.Checkpointer(os.path.join(resumed, "checkpoints"))
  assert a.latest_step() == b.latest_step() == 6
  jax.tree.map(np.testing.assert_array_equal, a.restore_raw()["params"],
               b.restore_raw()["params"])


def test_too_long_sequences_fail_clearly(codes_dir, tmp_path):
  config = mu_config(codes_dir, **{"data.seq_len": 16, "loss.chunk_size": 16})
  with pytest.raises(ValueError, match=r"more than seq_len=16"):
    pretrain.run(config, str(tmp_path))


def test_non_finite_loss_stops_with_the_last_checkpoint_intact(codes_dir,
                                                                tmp_path):
  config = mu_config(codes_dir, **{"optim.lr": 1e30, "optim.warmup_steps": 0,
                                   "train.ckpt_every_steps": 1,
                                   "eval.num_batches": 0})
  with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at step "
                     r"\d+; the last checkpoint \(\d+\) is intact"):
    pretrain.run(config, str(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.latest_step() is not None


def test_gradient_accumulation_updates_every_k_steps():
  config = load_config("nextflow", "mu")
  config.optim.grad_accum_steps = 2
  config.optim.warmup_steps = 0
  tx = pretrain.make_optimizer(config.optim, 10)
  params = {"w": jax.numpy.ones(3)}
  state = tx.init(params)
  grads = {"w": jax.numpy.ones(3)}
  seen = []
  for _ in range(4):
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    seen.append(float(params["w"][0]))
  assert seen[0] == 1.0 and seen[1] < 1.0 and seen[2] == seen[1]
  assert seen[3] < seen[2]
