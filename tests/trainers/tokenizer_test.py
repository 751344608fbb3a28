# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tokenizer trainer and code extraction on the `mu` preset (32 px)."""

import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from nextflow_jax import checkpoint
from nextflow_jax import config_lib
from nextflow_jax import metrics
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax import trainers
from nextflow_jax import workdirs
from nextflow_jax.data import sources
from nextflow_jax.tokenizer import model as tokenizer_model
from nextflow_jax.tokenizer import networks
from nextflow_jax.tokenizer import quantizer
from nextflow_jax.trainers import extract
from nextflow_jax.trainers import tokenizer as tokenizer_trainer
from nextflow_jax.trainers import tokenizer_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def load_config(name, arg):
  return config_lib.load_config(os.path.join(ROOT, "configs",
                                             f"{name}.py:{arg}"))


def mu_config(tfds_dir, **overrides):
  config = load_config("tokenizer", "mu")
  config.data.data_dir = tfds_dir
  config.train.num_steps = 10
  config.train.log_every_steps = 1
  config.train.ckpt_every_steps = 5
  config.train.eval_every_steps = 10
  config.loss.gan_start_step = 5
  config.eval.num_batches = 1
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config


@pytest.fixture(scope="module")
def trained(tfds_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("tok"))
  # Three autoencoder warm-up steps, then the codebook is seeded.
  config = mu_config(tfds_dir, **{"codes.autoencoder_steps": 3})
  trainers.validate(config, workdir)
  report = tokenizer_trainer.run(config, workdir)
  return workdir, config, report


def test_short_run_lowers_the_loss_and_writes_outputs(trained):
  workdir, _, report = trained
  recon = [v for _, v in metrics.read_scalars(workdir)["loss/recon"]]
  assert len(recon) == 10
  assert np.mean(recon[-3:]) < np.mean(recon[:3])
  scalars = metrics.read_scalars(workdir)
  assert "loss/gan_d" in scalars and "loss/perceptual" in scalars  # GAN on
  assert scalars["loss/gan_d"][0][0] == 6  # from gan_start_step on
  # The warm-up: no quantiser terms in steps 1-3, quantised from step 4 on.
  codebook = dict(scalars["loss/codebook"])
  assert [codebook[s] for s in (1, 2, 3)] == [0.0, 0.0, 0.0]
  assert all(codebook[s] > 0 for s in range(4, 11))
  assert min(s for s, _ in scalars["codes/batch_perplexity"]) == 4
  assert report["steps"] == 10
  ev = report["eval"]
  assert set(ev) == {"shapes/32px", "twemoji/32px", "all"}
  for spec in ("shapes/32px", "twemoji/32px"):
    assert set(ev[spec]) >= {"psnr", "ssim", "codebook_usage", "perplexity",
                             "psnr_scale_1", "psnr_scale_3"}
    assert 0 < ev[spec]["codebook_usage"] <= 1
    assert ev[spec]["num_images"] == 8
  assert min(ev["shapes/32px"]["psnr"], ev["twemoji/32px"]["psnr"]) <= (
      ev["all"]["psnr"]) <= max(ev["shapes/32px"]["psnr"],
                                ev["twemoji/32px"]["psnr"])
  assert os.path.getsize(os.path.join(workdir, "samples_10.png")) > 0


def test_resume_continues_from_the_checkpoint(trained, tfds_dir):
  workdir, _, _ = trained
  report = tokenizer_trainer.run(mu_config(tfds_dir, **{
      "train.num_steps": 12}), workdir)
  assert report["steps"] == 12
  steps = [s for s, _ in metrics.read_scalars(workdir)["loss/recon"]]
  assert steps.count(11) == 1 and steps.count(12) == 1 and 10 in steps


def test_a_corrupt_newest_checkpoint_resumes_from_the_one_before(
    trained, tfds_dir, tmp_path):
  """The newest step was cut short (disk full): the trainer moves it aside,
  resumes from the step before and trains the lost steps again."""
  workdir = str(tmp_path / "copy")
  shutil.copytree(trained[0], workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  newest, before = steps[-1], steps[-2]
  sharding_file = os.path.join(ckpt_dir, str(newest), "state", "_sharding")
  with open(sharding_file, "rb") as f:
    head = f.read()[:40]
  with open(sharding_file, "wb") as f:
    f.write(head)
  report = tokenizer_trainer.run(mu_config(tfds_dir, **{
      "train.num_steps": newest}), workdir)
  assert report["steps"] == newest
  assert os.path.isdir(os.path.join(ckpt_dir, f"{newest}.unreadable"))
  logged = [s for s, _ in metrics.read_scalars(workdir)["loss/recon"]]
  assert logged.count(before + 1) == 2  # trained again after the fallback


@pytest.mark.slow  # cold: over a minute of compilation
def test_a_diverging_run_keeps_its_newest_checkpoint_finite(
    trained, tfds_dir, tmp_path):
  """A learning rate that overflows after a resume: the run stops before
  saving non-finite parameters and names the newest (finite) checkpoint."""
  workdir = str(tmp_path / "copy")
  shutil.copytree(trained[0], workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  newest = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  diverging = mu_config(tfds_dir, **{
      "optim.lr": 1e39, "optim.warmup_steps": 0, "eval.num_batches": 0,
      "train.num_steps": newest + 3, "train.ckpt_every_steps": 1,
      "train.keep_checkpoints": 1})
  with pytest.raises(FloatingPointError, match=rf"the newest checkpoint, "
                     rf"step {newest}, holds finite parameters"):
    tokenizer_trainer.run(diverging, workdir)
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  assert ckpt.latest_step() == newest
  assert all(np.isfinite(x).all()
             for x in jax.tree.leaves(ckpt.restore_raw()["params"]))


def test_checkpoint_of_another_config_is_refused(trained, tfds_dir):
  workdir, _, _ = trained
  other = mu_config(tfds_dir, **{"tokenizer.codebook_size": 32,
                                 "train.num_steps": 20})
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"quantizer/codebook: checkpoint \(64, 40\) vs "
                     r"model \(32, 40\)"):
    tokenizer_trainer.run(other, workdir)


def test_extraction_matches_the_tokenizer(trained, tfds_dir, tmp_path):
  tok_workdir, _, _ = trained
  config = load_config("extract", "mu")
  config.tokenizer_workdir = tok_workdir
  config.data.data_dir = tfds_dir
  config.data.sources = ("shapes/32px",)
  config.data.splits = ("test",)
  config.data.global_batch_size = 16
  # Targets then equal plain encoding exactly (with the default "inputs",
  # later scales follow the resampled codes; see quantizer_test).
  config.extract.residual_from = "targets"
  trainers.validate(config, str(tmp_path))
  manifests = extract.run(config, str(tmp_path))
  test_src = sources.open_source("shapes/32px", "test", tfds_dir)
  assert manifests["test"]["num_records"] == len(test_src)
  assert manifests["test"]["schedule"] == "1x1,2x2,4x4"
  codes = sources.open_source(
      f"array_record:{tmp_path / 'codes' / 'test'}", "test", "")
  model, params, schedule, _ = workdirs.load_tokenizer(
      tok_workdir, sharding.make_mesh((-1, 1, 1)), sharding.get_rules("dp"))
  by_id = {codes[i]["source_id"]: codes[i] for i in range(len(codes))}
  example = test_src[3]
  record = by_id[example["id"]]
  image = np.asarray(example["image"], np.float32)[None] / 127.5 - 1.0
  expected = scales.flatten_codes(jax.device_get(model.apply(
      {"params": params}, jnp.asarray(image), schedule, method=model.encode)))
  np.testing.assert_array_equal(record["image.targets"], expected[0])
  assert record["image.targets"].dtype == np.int16
  assert record["caption"] == example["caption"]
  assert record["frames.targets"].shape == (4, 21)
  assert record["edited_image.inputs"].shape == (21,)
  changed = np.mean([np.mean(r["image.inputs"] != r["image.targets"])
                     for r in by_id.values()])
  assert changed == pytest.approx(0.6, abs=0.05)


def test_seeding_makes_every_code_a_residual_of_the_batch():
  model = tokenizer_model.VisionTokenizer(
      codebook_size=16, channels=8, channel_mults=(1, 2), num_res_blocks=1,
      attention=False, num_groups=4, patch_size=4, use_semantic=False)
  schedule = ((1, 1), (2, 2), (4, 4))
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3),
                              minval=-1, maxval=1)
  params = nn.unbox(model.init({"params": jax.random.key(1),
                                "dropout": jax.random.key(2)}, images,
                               schedule)["params"])
  state = tokenizer_step.TrainState(
      step=jnp.zeros((), jnp.int32), params={"tokenizer": params},
      opt_state=None, disc_params=None, disc_opt_state=None,
      code_ema=jnp.full((16,), 5.0), code_sum=jnp.zeros((16, 8)))
  seed = tokenizer_step.make_seed_codebook(model, schedule, 0.03)
  seeded = seed(state, {"image": images}, jax.random.key(3))
  rows = np.asarray(model.apply({"params": params}, images,
                                schedule)["residual_rows"])
  codebook = np.asarray(seeded.params["tokenizer"]["quantizer"]["codebook"])
  matches = [int(np.argmin(np.abs(rows - c).sum(-1))) for c in codebook]
  for code, row in zip(codebook, matches):
    np.testing.assert_allclose(code, rows[row], rtol=1e-6)
  assert len(set(matches)) == 16  # distinct rows (2 * 21 of them)
  np.testing.assert_allclose(seeded.code_ema, 0.03, rtol=1e-6)
  np.testing.assert_allclose(seeded.code_sum, codebook * 0.03, rtol=1e-6)


def test_kmeans_codebook_follows_the_residuals_not_the_gradient():
  model = tokenizer_model.VisionTokenizer(
      codebook_size=16, channels=8, channel_mults=(1, 2), num_res_blocks=1,
      attention=False, num_groups=4, patch_size=4, use_semantic=False,
      normalize=False)
  schedule = ((1, 1), (2, 2), (4, 4))
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3),
                              minval=-1, maxval=1)
  params = {"tokenizer": nn.unbox(model.init(
      {"params": jax.random.key(1), "dropout": jax.random.key(2)}, images,
      schedule)["params"])}
  weights = tokenizer_step.LossWeights(
      recon_kind="l1", recon=1.0, perceptual=0.0, gan=0.0, codebook=1.0,
      entropy=0.0, semantic=0.0, ema_decay=0.5, dead_threshold=0.0,
      restart_every_steps=0, codebook_update="kmeans")
  tx = optax.adam(1e-3)
  codebook = params["tokenizer"]["quantizer"]["codebook"]
  state = tokenizer_step.TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      opt_state=tx.init(params), disc_params={}, disc_opt_state=(),
      code_ema=jnp.ones((16,)), code_sum=codebook)
  step = tokenizer_step.make_train_step(
      model, None, None, None, schedule, weights, tx, tx, use_gan=False,
      scale_dropout=False)
  new_state, metrics_out = jax.jit(step)(state, {"image": images},
                                         jax.random.key(3))
  out = model.apply({"params": params["tokenizer"]}, images, schedule)
  expected, _ = quantizer.kmeans_update(
      codebook, codebook, new_state.code_ema, out["residual_rows"],
      out["indices"], out["keep"], 0.5)
  new_codebook = new_state.params["tokenizer"]["quantizer"]["codebook"]
  np.testing.assert_allclose(new_codebook, expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(new_codebook, codebook)
  # The codebook loss is reported but not optimised.
  total = metrics_out["loss/recon"] + metrics_out["loss/commit"]
  np.testing.assert_allclose(metrics_out["loss/total"], total, rtol=1e-6)


def test_previous_stage_is_copied_into_the_dual_codebook():
  fresh = {"pixel_encoder": {"k": jnp.zeros((3, 3))},
           "semantic_encoder": {"k": jnp.zeros((2,))},
           "quantizer": {"codebook": jnp.zeros((4, 5))}}
  previous = {"pixel_encoder": {"k": np.ones((3, 3))},
              "quantizer": {"codebook": np.full((4, 2), 7.0)},
              "other": {"x": np.ones(1)}}
  merged, copied = tokenizer_trainer.merge_previous_stage(
      fresh, previous, semantic_dim=3, use_semantic=True)
  assert (merged["pixel_encoder"]["k"] == 1).all()
  assert (merged["semantic_encoder"]["k"] == 0).all()
  np.testing.assert_array_equal(merged["quantizer"]["codebook"][:, 3:], 7.0)
  np.testing.assert_array_equal(merged["quantizer"]["codebook"][:, :3], 0.0)
  assert len(copied) == 2


def test_bad_input_init_from_with_another_codebook_size():
  fresh = {"quantizer": {"codebook": jnp.zeros((8, 2))},
           "pixel_decoder": {"k": jnp.zeros((3, 6))}}
  previous = {"quantizer": {"codebook": np.ones((4, 2))},
              "pixel_decoder": {"k": np.ones((3, 3))}}  # widened: fine
  with pytest.raises(ValueError, match=r"1 parameters of the previous stage "
                     r"have other shapes \(\['quantizer'\]\['codebook'\]: "
                     r"previous \(4, 2\) vs this \(8, 2\)\); .* and its "
                     r"codebook_size unless codes.autoencoder_steps > 0"):
    tokenizer_trainer.merge_previous_stage(fresh, previous, semantic_dim=3,
                                           use_semantic=False)


def test_a_reseeded_codebook_may_change_size():
  fresh = {"quantizer": {"codebook": jnp.zeros((8, 2))},
           "pixel_encoder": {"k": jnp.zeros((3, 3))}}
  previous = {"quantizer": {"codebook": np.ones((4, 2))},
              "pixel_encoder": {"k": np.ones((3, 3))}}
  merged, copied = tokenizer_trainer.merge_previous_stage(
      fresh, previous, semantic_dim=3, use_semantic=False,
      reseed_codebook=True)
  assert copied == ["['pixel_encoder']['k']"]
  assert (merged["pixel_encoder"]["k"] == 1).all()
  assert merged["quantizer"]["codebook"].shape == (8, 2)


def test_decoder_stage_trains_only_the_pixel_decoder():
  config = load_config("tokenizer", "mu")
  params = {"tokenizer": {"pixel_decoder": {"w": jnp.ones(3)},
                          "pixel_encoder": {"w": jnp.ones(3)},
                          "quantizer": {"codebook": jnp.ones((2, 2))}}}
  tx = tokenizer_step.make_optimizer(config.optim, 10, params, "decoder")
  grads = jax.tree.map(jnp.ones_like, params)
  new, opt_state = params, tx.init(params)
  for _ in range(2):  # The warmup schedule's first step has lr 0.
    updates, opt_state = tx.update(grads, opt_state, new)
    new = optax.apply_updates(new, updates)
  assert (new["tokenizer"]["pixel_decoder"]["w"] != 1).all()
  assert (new["tokenizer"]["pixel_encoder"]["w"] == 1).all()
  assert (new["tokenizer"]["quantizer"]["codebook"] == 1).all()


@pytest.mark.slow  # cold: over a minute of compilation
def test_teacher_objective_and_pixel_only_stage(tfds_dir, tmp_path):
  teacher = networks.ViTEncoder(patch_size=8, width=32, depth=1, num_heads=2,
                                mlp_dim=64)
  teacher_params = nn.unbox(teacher.init(jax.random.key(0),
                                         jnp.zeros((1, 32, 32, 3)))["params"])
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(str(tmp_path / "teacher"), teacher_params)
  checkpointer.wait_until_finished()
  overrides = {"train.num_steps": 2, "loss.gan_start_step": 100,
               "eval.num_batches": 0, "semantic.objective": "teacher",
               "semantic.teacher_checkpoint": str(tmp_path / "teacher")}
  config = mu_config(tfds_dir, **overrides)
  trainers.validate(config, str(tmp_path / "run"))
  tokenizer_trainer.run(config, str(tmp_path / "run"))
  semantic = metrics.read_scalars(str(tmp_path / "run"))["loss/semantic"]
  assert len(semantic) == 2 and all(0 < v < 2 for _, v in semantic)

  pixel = mu_config(tfds_dir, **{"train.num_steps": 2, "stage": "pixel",
                                 "tokenizer.use_semantic": False,
                                 "loss.gan_start_step": 100,
                                 "eval.num_batches": 0})
  tokenizer_trainer.run(pixel, str(tmp_path / "pixel"))
  joint = mu_config(tfds_dir, **{"train.num_steps": 1, "eval.num_batches": 0,
                                 "loss.gan_start_step": 100,
                                 "init_from": str(tmp_path / "pixel")})
  tokenizer_trainer.run(joint, str(tmp_path / "joint"))
  scalars = metrics.read_scalars(str(tmp_path / "joint"))
  assert "loss/semantic" in scalars and "loss/semantic" not in (
      metrics.read_scalars(str(tmp_path / "pixel")))


def test_bad_teacher_checkpoint(tfds_dir, tmp_path):
  config = mu_config(tfds_dir, **{"semantic.objective": "teacher",
                                  "semantic.teacher_checkpoint": str(
                                      tmp_path / "nope")})
  with pytest.raises(FileNotFoundError, match="is not a folder"):
    tokenizer_trainer.run(config, str(tmp_path / "run"))


def test_decoder_stage_needs_a_trained_tokenizer(tfds_dir, tmp_path):
  config = mu_config(tfds_dir, stage="decoder")
  with pytest.raises(ValueError, match=r"set config.init_from to the workdir "
                     r"of the joint stage"):
    tokenizer_trainer.run(config, str(tmp_path / "run"))
