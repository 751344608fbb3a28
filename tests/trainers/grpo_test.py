# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The GRPO trainer on a tiny bundle: it learns from a plug-in reward,
resumes exactly, and exports the tuned model."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax import bundle
from nextflow_jax import checkpoint
from nextflow_jax import config_lib
from nextflow_jax import metrics
from nextflow_jax import trainers
from nextflow_jax import workdirs
from nextflow_jax.data import sequences as seq
from nextflow_jax.evals import shapes_geneval
from nextflow_jax.model import nextflow
from nextflow_jax.rl import rewards
from nextflow_jax.sampling import generator as generator_lib
from nextflow_jax.text import tokenizer as text_tokenizer
from nextflow_jax.tokenizer import model as tokenizer_model
from nextflow_jax.trainers import grpo as grpo_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
SCHEDULE = ((1, 1), (2, 2), (4, 4))


@rewards.register("test_redness")
def redness(images, prompts, **record):
  """Plug-in reward: how much redder than green and blue an image is."""
  del prompts, record
  x = np.asarray(images, np.float32) / 255.0
  return (x[..., 0] - 0.5 * (x[..., 1] + x[..., 2])).mean(axis=(1, 2))


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
  """A randomly initialised 32 px model as a bundle (no training needed)."""
  folder = tmp_path_factory.mktemp("grpo_bundle")
  texts = [p["prompt"] for p in shapes_geneval.load_prompt_set()]
  text_tok = text_tokenizer.train_sentencepiece(
      texts * 3, str(folder / "text.model"), 512)
  tok = tokenizer_model.VisionTokenizer(
      codebook_size=32, channels=8, channel_mults=(1, 2), patch_size=4,
      num_res_blocks=1, attention=False, num_groups=4, use_semantic=False)
  tok_params = nn.unbox(tok.init({"params": jax.random.key(1),
                                  "dropout": jax.random.key(2)},
                                 jnp.zeros((1, 32, 32, 3)), SCHEDULE))[
                                     "params"]
  model = nextflow.NextFlow(
      text_vocab_size=512, codebook_size=32, code_dim=8, num_layers=2,
      width=32, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
      max_scales=4)
  example = {k: jnp.asarray(v)[None] for k, v in seq.pad(seq.build(
      [seq.Text([1])], seq.Layout(), codebook_size=32), 16).items()}
  params = nn.unbox(model.init(jax.random.key(0), example))["params"]
  params["visual_head"] = params["visual_head"] * 4.0
  trained = workdirs.TrainedModel(
      model=model, params=params, tokenizer=tok, tokenizer_params=tok_params,
      text_tokenizer=text_tok, schedule=SCHEDULE, layout=seq.Layout())
  return bundle.export(trained, str(folder / "bundle"))


def grpo_config(model, **overrides):
  config = config_lib.load_config(os.path.join(ROOT, "configs",
                                               "grpo.py:mu"))
  config.model = model
  config.grpo.rewards = ("test_redness",)
  config.grpo.max_prompt_len = 16
  config.optim.lr = 3e-3
  config.optim.weight_decay = 0.0  # every change comes from the gradient
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config


def _params(workdir, step):
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return ckpt.restore_raw(step)["params"]
  finally:
    ckpt.close()


@pytest.fixture(scope="module")
def tuned(tiny_bundle, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("grpo"))
  config = grpo_config(tiny_bundle)
  trainers.validate(config, workdir)
  report = grpo_trainer.run(config, workdir)
  return workdir, report


def test_three_updates_change_the_policy_and_export_a_bundle(tiny_bundle,
                                                             tuned):
  workdir, report = tuned
  assert report["updates"] == 3 and report["prefix_scales"] == 2
  start = bundle.load(tiny_bundle).params
  after = _params(workdir, 3)
  changed = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) -
                                                   np.asarray(b)).max()),
                         start, after)
  assert changed["visual_head"] > 0
  scalars = metrics.read_scalars(workdir)
  for key in ("reward/mean", "reward/std", "kl", "clip_fraction",
              "entropy/scale_1", "entropy/scale_3", "grad_norm",
              "eval/reward_mean"):
    assert key in scalars, sorted(scalars)
  assert [s for s, _ in scalars["kl"]] == [1, 2, 3]
  # The first update starts at the reference (up to float rounding).
  assert abs(scalars["kl"][0][1]) < 1e-6
  assert os.path.exists(os.path.join(workdir, "samples_3.png"))
  gen = generator_lib.Generator.from_pretrained(
      os.path.join(workdir, grpo_trainer.BUNDLE_DIR))
  np.testing.assert_array_equal(np.asarray(gen.params["visual_head"]),
                                np.asarray(after["visual_head"]))


def test_resume_after_a_checkpoint_equals_an_uninterrupted_run(
    tiny_bundle, tuned, tmp_path):
  workdir, _ = tuned
  resumed = str(tmp_path / "resumed")
  grpo_trainer.run(grpo_config(tiny_bundle, **{"train.num_steps": 2}),
                   resumed)
  grpo_trainer.run(grpo_config(tiny_bundle), resumed)
  want, got = _params(workdir, 3), _params(resumed, 3)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_vmr_values_each_prefix_by_its_own_continuations(tiny_bundle):
  gen = generator_lib.Generator.from_pretrained(tiny_bundle)
  texts = ["a red circle", "a blue square"]
  prefix = gen.text_to_image(texts, generator_lib.SamplingConfig(
      seed=3, guidance=0.0)).codes[:2]
  knobs = generator_lib.SamplingConfig(seed=9, guidance=0.0, top_p=1.0)
  reward_fn = rewards.combined(("test_redness",), (1.0,))
  # The continuations, drawn here as the trainer draws them.
  many = [t for t in texts for _ in range(3)]
  continued = gen.text_to_image(many, knobs, prefix_codes=[
      np.repeat(c, 3, axis=0) for c in prefix])
  for got, given in zip(continued.codes[:2], prefix):
    np.testing.assert_array_equal(got, np.repeat(given, 3, axis=0))
  r, _ = reward_fn(continued.pixels, many)
  r = np.reshape(r, (2, 3))
  assert (r.max(1) > r.min(1)).any()  # continuations of a prefix differ
  # Large eta: the mean of a prefix's own three rewards (up to
  # var / (2 eta)); eta -> 0: their max.
  mean = grpo_trainer.prefix_values(gen, reward_fn, texts, prefix, knobs, 3,
                                    100.0)
  best = grpo_trainer.prefix_values(gen, reward_fn, texts, prefix, knobs, 3,
                                    1e-4)
  np.testing.assert_allclose(mean, r.mean(1), atol=1e-4)
  np.testing.assert_allclose(best, r.max(1), atol=1e-3)


def test_a_vmr_run_updates_the_policy(tiny_bundle, tmp_path):
  config = grpo_config(tiny_bundle, **{
      "train.num_steps": 1, "grpo.vmr_continuations": 2,
      "train.eval_every_steps": 1, "train.ckpt_every_steps": 1})
  trainers.validate(config, str(tmp_path))
  report = grpo_trainer.run(config, str(tmp_path))
  assert report["vmr_continuations"] == 2
  scalars = metrics.read_scalars(str(tmp_path))
  assert "vmr/value_mean" in scalars, sorted(scalars)
  start = bundle.load(tiny_bundle).params
  after = _params(str(tmp_path), 1)
  assert np.abs(np.asarray(after["visual_head"]) -
                np.asarray(start["visual_head"])).max() > 0


@pytest.mark.parametrize("key,value,match", [
    ("grpo.vmr_continuations", -1, r"must be >= 0 \(0 = VMR off\)"),
    ("grpo.vmr_eta", 0.0, r"must be > 0"),
    ("grpo.group_size", 1, r"must be >= 2"),
    ("grpo.ratio", "token", r"choose 'scale' or 'cell'"),
    ("grpo.rewards", ("ocr",), r"no reward named 'ocr'"),
    ("grpo.clip_eps", 0.0, r"must be in \(0, 1\)"),
    ("prompts.source", "/nonexistent.txt", r"is not a file"),
    ("grpo.group_size", 3, r"multiple of the data-parallel size"),
])
def test_bad_input_grpo_values(tiny_bundle, key, value, match, tmp_path):
  config = grpo_config(tiny_bundle, **{key: value})
  with pytest.raises(config_lib.ConfigError, match=match):
    trainers.validate(config, str(tmp_path))


def test_bad_input_grpo_vmr_needs_a_prefix(tiny_bundle, tmp_path):
  config = grpo_config(tiny_bundle, **{"grpo.prefix_scales": 0,
                                       "grpo.vmr_continuations": 2})
  with pytest.raises(config_lib.ConfigError,
                     match=r"VMR values a prefix of the scales"):
    trainers.validate(config, str(tmp_path))


def test_bad_input_grpo_needs_a_model(tmp_path):
  config = grpo_config(str(tmp_path))
  with pytest.raises(config_lib.ConfigError, match=r"give a model bundle"):
    trainers.validate(config, str(tmp_path / "out"))
