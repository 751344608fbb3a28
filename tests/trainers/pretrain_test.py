# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Pretraining on extracted codes: loss falls, resume is exact, raster order."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax import checkpoint
from nextflow_jax import config_lib
from nextflow_jax import metrics
from nextflow_jax import sharding
from nextflow_jax import trainers
from nextflow_jax import workdirs
from nextflow_jax.data import sources
from nextflow_jax.trainers import extract
from nextflow_jax.trainers import pretrain
from nextflow_jax.trainers import pretrain_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def load_config(name, arg):
  return config_lib.load_config(os.path.join(ROOT, "configs",
                                             f"{name}.py:{arg}"))


def extract_codes(tok_dir, tfds_dir, workdir, source):
  ext = load_config("extract", "mu")
  ext.tokenizer_workdir = tok_dir
  ext.data.data_dir = tfds_dir
  ext.data.sources = (source,)
  trainers.validate(ext, workdir)
  extract.run(ext, workdir)
  return workdir


@pytest.fixture(scope="module")
def codes_dir(tok_dir, tfds_dir, tmp_path_factory):
  """The codes of shapes/32px (all tasks)."""
  return extract_codes(tok_dir, tfds_dir, str(tmp_path_factory.mktemp("codes")),
                       "shapes/32px")


@pytest.fixture(scope="module")
def two_process_codes_dir(codes_dir, tmp_path_factory):
  """The same codes laid out as two extraction processes write them:
  codes/<split>-p0 and codes/<split>-p1."""
  root = tmp_path_factory.mktemp("codes_two_processes")
  for split in ("train", "test"):
    for k in (0, 1):
      shutil.copytree(os.path.join(codes_dir, "codes", split),
                      root / "codes" / f"{split}-p{k}")
  return str(root)


@pytest.fixture(scope="module")
def model_dir(two_process_codes_dir, tmp_path_factory):
  """A 2-step mu model trained on the codes of two extraction processes."""
  workdir = str(tmp_path_factory.mktemp("model"))
  pretrain.run(mu_config(two_process_codes_dir, **{
      "train.num_steps": 2, "eval.num_batches": 0}), workdir)
  return workdir


def mu_config(codes_dir, **overrides):
  config = load_config("nextflow", "mu")
  config.data.codes_dir = codes_dir
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config


def test_loss_falls_and_reports_tasks_and_scales(codes_dir, tmp_path):
  config = mu_config(codes_dir, **{"train.num_steps": 8})
  trainers.validate(config, str(tmp_path))
  report = pretrain.run(config, str(tmp_path))
  assert report["steps"] == 8
  scalars = metrics.read_scalars(str(tmp_path))
  total = [v for _, v in scalars["loss/total_loss"]]
  assert np.mean(total[-3:]) < np.mean(total[:3])
  assert {"scale_ce/01", "scale_ce/02", "scale_ce/03"} <= set(scalars)
  assert any(k.startswith("task_ce/") for k in scalars)
  assert scalars["tokens_per_sec"][-1][1] > 0
  assert "eval/loss/visual_loss" in scalars


@pytest.mark.slow  # a second dataset through the same trainer
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


def test_raster_order_trains_on_single_scale_codes(tok_dir, tfds_dir,
                                                   tmp_path):
  ext = load_config("extract", "mu")
  ext.tokenizer_workdir = tok_dir
  ext.data.data_dir = tfds_dir
  ext.data.sources = ("shapes/32px",)
  ext.data.splits = ("train",)
  ext.extract.image_fields = ("image", "edited_image")
  ext.extract.schedule = "4"  # One 4x4 scale: plain VQ of the latent.
  ext.extract.rate = 0.0
  trainers.validate(ext, str(tmp_path / "codes"))
  manifest = extract.run(ext, str(tmp_path / "codes"))["train"]
  assert manifest["schedule"] == "4x4"
  assert manifest["tokenizer_schedule"] == "1x1,2x2,4x4"
  # The tokenizer decodes the codes with their own schedule.
  record = sources.open_source(
      f"array_record:{tmp_path / 'codes' / 'codes' / 'train'}", "train",
      "")[0]
  assert record["schedule"] == "4x4" and record["image.targets"].shape == (
      16,)
  tok_model, tok_params, _, _ = workdirs.load_tokenizer(
      tok_dir, sharding.make_mesh((-1, 1, 1)), sharding.get_rules("dp"))
  pixels = tok_model.apply(
      {"params": tok_params},
      [jnp.asarray(record["image.targets"], jnp.int32).reshape(1, 4, 4)],
      ((4, 4),), method=tok_model.decode)
  assert pixels.shape == (1, 32, 32, 3) and jnp.isfinite(pixels).all()

  config = mu_config(str(tmp_path / "codes"), **{
      "layout.image_order": "raster", "data.eval_split": "train",
      "train.num_steps": 3, "eval.num_batches": 0})
  trainers.validate(config, str(tmp_path / "run"))
  assert pretrain.run(config, str(tmp_path / "run"))["steps"] == 3
  scalars = metrics.read_scalars(str(tmp_path / "run"))
  assert np.isfinite([v for _, v in scalars["loss/visual_loss"]]).all()
  assert "scale_ce/01" in scalars and "scale_ce/02" not in scalars


def test_raster_order_refuses_multi_scale_codes(codes_dir, tmp_path):
  config = mu_config(codes_dir, **{"layout.image_order": "raster"})
  with pytest.raises(ValueError, match=r"raster image order needs "
                     r"single-scale codes, but the schedule is 1x1,2x2,4x4"):
    pretrain.run(config, str(tmp_path))


def test_code_schedule_checks():
  trained = ((1, 1), (2, 2), (4, 4))
  assert extract.codes_schedule("", trained) == trained
  assert extract.codes_schedule("4", trained) == ((4, 4),)
  with pytest.raises(ValueError, match=r"extract.schedule='1,2' ends at 2x2 "
                     r"but the tokenizer's latent grid is 4x4"):
    extract.codes_schedule("1,2", trained)
  manifest = {"schedule": "4x4", "tokenizer_schedule": "1x1,2x2,4x4",
              "tokenizer_workdir": "/tok"}
  assert pretrain.check_codes_schedule(manifest, trained, "raster") == (
      (4, 4),)
  with pytest.raises(ValueError, match=r"extracted with a tokenizer of "
                     r"schedule 1x1,2x2,4x4 but the tokenizer in /tok now has "
                     r"1x1,4x4"):
    pretrain.check_codes_schedule(manifest, ((1, 1), (4, 4)), "raster")


def test_kill_and_resume_equals_an_uninterrupted_run(codes_dir, tmp_path):
  """Also after the newest checkpoint turns out to be truncated."""
  straight = str(tmp_path / "straight")
  pretrain.run(mu_config(codes_dir, **{"eval.num_batches": 0}), straight)
  resumed = str(tmp_path / "resumed")
  pretrain.run(mu_config(codes_dir, **{"eval.num_batches": 0,
                                       "train.num_steps": 3}), resumed)
  # A RoPE layout other than the run's would restore (same shapes) and
  # train on as another model: refused, naming the flag that continues it.
  with pytest.raises(ValueError, match=r"model.mrope_interleaved is False "
                     r"here but the run trained with True.*"
                     r"--config.model.mrope_interleaved=True"):
    pretrain.run(mu_config(codes_dir, **{"eval.num_batches": 0,
                                         "model.mrope_interleaved": False}),
                 resumed)
  pretrain.run(mu_config(codes_dir, **{"eval.num_batches": 0}), resumed)
  a = checkpoint.Checkpointer(os.path.join(straight, "checkpoints"))
  b = checkpoint.Checkpointer(os.path.join(resumed, "checkpoints"))
  assert a.latest_step() == b.latest_step() == 6
  jax.tree.map(np.testing.assert_array_equal, a.restore_raw()["params"],
               b.restore_raw()["params"])
  b.close()
  # The newest step cut short (disk full): the rerun moves it aside, resumes
  # from step 3 and ends with the same parameters again.
  sharding_file = os.path.join(resumed, "checkpoints", "6", "state",
                               "_sharding")
  with open(sharding_file, "rb") as f:
    head = f.read()[:40]
  with open(sharding_file, "wb") as f:
    f.write(head)
  pretrain.run(mu_config(codes_dir, **{"eval.num_batches": 0}), resumed)
  assert os.path.isdir(os.path.join(resumed, "checkpoints", "6.unreadable"))
  b = checkpoint.Checkpointer(os.path.join(resumed, "checkpoints"))
  assert b.latest_step() == 6
  jax.tree.map(np.testing.assert_array_equal, a.restore_raw()["params"],
               b.restore_raw()["params"])


def test_too_long_sequences_fail_clearly(codes_dir, tmp_path):
  config = mu_config(codes_dir, **{"data.seq_len": 16, "loss.chunk_size": 16})
  with pytest.raises(ValueError, match=r"more than seq_len=16"):
    pretrain.run(config, str(tmp_path))


def test_an_eval_split_smaller_than_a_batch_fails_before_training(
    codes_dir, tmp_path):
  """64 test records pack into fewer than 64 rows: refused up front, not
  after the first eval_every_steps steps of training."""
  config = mu_config(codes_dir, **{"data.global_batch_size": 64})
  with pytest.raises(ValueError, match=r"data.eval_split='test' .* does not "
                     r"fill one batch of data.global_batch_size=64"):
    pretrain.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


def test_a_diverging_run_keeps_its_newest_checkpoint_finite(codes_dir,
                                                            tmp_path):
  """Two good steps, then a learning rate that overflows: the run stops
  before saving non-finite parameters, and the newest checkpoint (2) still
  restores to finite parameters although keep_checkpoints=1."""
  pretrain.run(mu_config(codes_dir, **{"train.num_steps": 2,
                                       "eval.num_batches": 0}), str(tmp_path))
  diverging = mu_config(codes_dir, **{
      "optim.lr": 1e39, "optim.warmup_steps": 0, "eval.num_batches": 0,
      "train.ckpt_every_steps": 1, "train.keep_checkpoints": 1})
  with pytest.raises(FloatingPointError, match=r"at step 3; the newest "
                     r"checkpoint, step 2, holds finite parameters"):
    pretrain.run(diverging, str(tmp_path))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.all_steps() == [2]
  assert all(np.isfinite(x).all()
             for x in jax.tree.leaves(ckpt.restore_raw()["params"]))


def test_gradient_accumulation_updates_every_k_steps():
  config = load_config("nextflow", "mu")
  config.optim.grad_accum_steps = 2
  config.optim.warmup_steps = 0
  tx = pretrain_step.make_optimizer(config.optim, 10)
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


def test_sample_job_writes_every_task_and_regenerates_exactly(model_dir,
                                                              tmp_path):
  """The CLI sampling job on a 2-step model: PNGs, results, sampling.json;
  the saved sampling.json regenerates the same images."""
  import json  # pylint: disable=g-import-not-at-top
  from nextflow_jax.sampling import config as sampling_config  # pylint: disable=g-import-not-at-top
  from nextflow_jax.trainers import sample  # pylint: disable=g-import-not-at-top
  job = load_config("sample", "mu,sample.tasks=t2i;edit;caption;vqa;video;"
                    "interleaved,sample.sampling.seed=5")
  job.sample.model_workdir = model_dir
  trainers.validate(job, str(tmp_path / "out"))
  report = sample.run(job, str(tmp_path / "out"))
  assert set(report["seconds"]) == set(sample.TASKS)
  out = tmp_path / "out"
  for task in sample.TASKS:
    assert (out / task / "results.json").exists(), task
  for task in ("t2i", "edit", "caption", "vqa", "video"):
    assert (out / task / "grid.png").exists(), task
  first = np.asarray(metrics.Image.open(out / "t2i" / "000.png"))
  assert first.shape == (32, 32, 3)
  results = json.loads((out / "caption" / "results.json").read_text())
  assert len(results) == 2 and all("reference" in r for r in results)
  saved = sampling_config.SamplingConfig.from_json(
      (out / "sampling.json").read_text())
  assert saved == sample.from_config_dict(job.sample.sampling)
  assert saved.seed == 5
  # Regenerate from the saved knobs only.
  again = load_config("sample", "mu,sample.tasks=t2i")
  again.sample.model_workdir = model_dir
  again.sample.sampling = sample.to_config_dict(saved)
  sample.run(again, str(tmp_path / "again"))
  np.testing.assert_array_equal(
      np.asarray(metrics.Image.open(tmp_path / "again" / "t2i" / "000.png")),
      first)


def test_a_bundle_moves_and_samples_like_its_workdir(model_dir, tok_dir,
                                                     tmp_path):
  """The run's codes came from two extraction processes. Its exported
  bundle (the CLI), moved to another folder, samples the same PNG for the
  same seed as the workdir itself, and names no absolute path."""
  from nextflow_jax import bundle  # pylint: disable=g-import-not-at-top
  from nextflow_jax.sampling import generator as generator_lib  # pylint: disable=g-import-not-at-top
  knobs = generator_lib.SamplingConfig(seed=3, guidance=2.0)
  prompts = ["a red circle", "two blue squares"]
  want = generator_lib.Generator.from_workdir(model_dir).text_to_image(
      prompts, knobs)
  first = tmp_path / "exported"
  subprocess.run([sys.executable, "-m", "nextflow_jax.bundle",
                  f"--workdir={model_dir}", f"--output={first}"],
                 check=True, cwd=ROOT, capture_output=True)
  moved = tmp_path / "elsewhere" / "bundle"
  moved.parent.mkdir()
  shutil.move(str(first), str(moved))
  for folder, _, names in os.walk(moved):
    for name in names:
      data = (open(os.path.join(folder, name), "rb").read())
      for path in (str(tmp_path), model_dir, tok_dir):
        assert path.encode() not in data, (name, path)
  gen = generator_lib.Generator.from_pretrained(str(moved))
  got = gen.text_to_image(prompts, knobs)
  np.testing.assert_array_equal(got.pixels, want.pixels)
  assert bundle.read_config(str(moved))["provenance"]["step"] == "latest"
  assert bundle.read_config(str(moved))["trained_seq_len"] == 128  # mu
  assert gen.trained_seq_len == 128
  # The sampling job takes the bundle; its default inputs are held-out
  # shapes scenes of the bundle's image size.
  from nextflow_jax.evals import shapes_geneval  # pylint: disable=g-import-not-at-top
  from nextflow_jax.trainers import sample  # pylint: disable=g-import-not-at-top
  job = load_config("sample", "mu,sample.tasks=t2i;vqa")
  job.sample.model_workdir = str(moved)
  sample.check_config(job)
  report = sample.run(job, str(tmp_path / "samples"))
  assert set(report["seconds"]) == {"t2i", "vqa"}
  held_out = shapes_geneval.held_out_examples(job.sample.num_examples,
                                              "32px_8k")
  with open(tmp_path / "samples" / "t2i" / "results.json") as f:
    assert [r["prompt"] for r in json.load(f)] == [e["caption"]
                                                   for e in held_out]
  assert (tmp_path / "samples" / "vqa" / "grid.png").exists()
  with pytest.raises(FileNotFoundError, match=r"is not a model bundle"):
    generator_lib.Generator.from_pretrained(str(tmp_path))
