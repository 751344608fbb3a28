# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Config presets load and validate; every bad value fails with its message."""

import importlib.util
import os

import jax
import pytest

from nextflow_jax import config_lib
from nextflow_jax import trainers
from nextflow_jax.data import records

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
CONFIG_FILES = sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".py"))


def load(name):
  spec = importlib.util.spec_from_file_location(
      name[:-3], os.path.join(CONFIG_DIR, name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name,preset", [
    (f, p) for f in CONFIG_FILES for p in load(f).PRESETS])
def test_every_preset_loads_and_validates(name, preset, tmp_path):
  config = load(name).get_config(preset)
  if "tokenizer_workdir" in config:  # Needs a trained tokenizer's workdir.
    (tmp_path / "tok" / "checkpoints").mkdir(parents=True)
    config.tokenizer_workdir = str(tmp_path / "tok")
  if "sample" in config:  # Needs a pretrained model's workdir.
    (tmp_path / "model" / "checkpoints").mkdir(parents=True)
    config.sample.model_workdir = str(tmp_path / "model")
  if config.get("trainer") == "grpo":  # Needs a model to start from.
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "bundle.json").write_text("{}")
    config.model = str(tmp_path / "bundle")
  if "codes_dir" in config.get("data", {}):  # Needs an extraction's workdir.
    (tmp_path / "codes" / "codes").mkdir(parents=True)
    config.data.codes_dir = str(tmp_path / "codes")
  trainers.validate(config, str(tmp_path))


def data_config(arg="mu"):
  return load("data.py").get_config(arg)


def test_arg_overrides_are_coerced_to_the_existing_type():
  c = data_config("mu,data.global_batch_size=16,data.sources=shapes/32px;"
                  "twemoji/32px,data.weights=1;3,text.model_type=unigram")
  assert c.data.global_batch_size == 16
  assert c.data.sources == ("shapes/32px", "twemoji/32px")
  assert c.data.weights == (1.0, 3.0)
  assert c.text.model_type == "unigram"


def test_tuple_overrides_may_be_bracketed_literals():
  c = load("tokenizer.py").get_config(
      "mu,tokenizer.channel_mults=(1,2),data.sources=['shapes/32px'],"
      "tokenizer.patch_size=4")
  assert c.tokenizer.channel_mults == (1, 2)
  assert c.data.sources == ("shapes/32px",)
  assert c.tokenizer.patch_size == 4


@pytest.mark.parametrize("arg,match", [
    ("huge", r"config.preset='huge' is invalid: choose one of \['cpu', 'mu'\]"),
    ("mu,data.nope=3", r"config.data.nope='3' is invalid: no such key"),
    ("mu,nosection.x=3", r"'nosection' is not a section"),
    ("mu,data.global_batch_size=eight", r"expected a int"),
    ("mu,junk", r"overrides are 'dotted.key=value' items"),
    ("mu,data.weights=(1,", r"expected a sequence such as \(1,2,4\)"),
])
def test_bad_input_arg_strings(arg, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    data_config(arg)


@pytest.mark.parametrize("key,value,match", [
    ("data.global_batch_size", 6,
     r"config.data.global_batch_size=6 .* multiple of the data-parallel size 4"),
    ("data.global_batch_size", 0, r"positive multiple"),
    ("tokenizer.scales", "1,4,2", r"not increasing at step 2 \(4x4 -> 2x2\)"),
    ("tokenizer.scales", "1,2,3", r"ends at 3x3 but image_size=32 with "
     r"downsample=8 needs a final grid of 4x4"),
    ("tokenizer.scales", "1,2,x", r"'x' in schedule"),
    ("data.image_size", 36, r"config.data.image_size=36 .* multiple of "
     r"the tokenizer's downsampling 8"),
    ("tokenizer.downsample", 2, r"factor of 2; it must be 4, 8 or 16"),
    ("data.sources", ("shapes/99px",), r"unknown dataset 'shapes/99px'; "
     r"shapes has configs \['32px', '32px_8k', .*'64px'\]"),
    ("data.sources", ("imagenet",), r"unknown dataset 'imagenet'; use an "
     r"embedded dataset"),
    ("data.sources", ("tfds:",), r"give a TFDS name"),
    ("data.weights", (1.0,), r"one positive weight per source \(2\)"),
    ("sharding.mesh", (-1, -1, 1), r"more than one -1"),
    ("sharding.mesh", (3, 1, 1), r"covers 3 devices but 4 are available"),
    ("sharding.rules", "zero3", r"not a rule set; choose one of"),
    ("trainer", "pretrain_everything",
     r"choose one of \['extract', 'grpo', 'pipeline', 'prepare_data', "
     r"'pretrain', 'sample', 'tokenizer'\]"),
])
def test_bad_input_shared_values(key, value, match, tmp_path):
  config = data_config()
  section, _, leaf = key.rpartition(".")
  (config[section] if section else config)[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    trainers.validate(config, str(tmp_path))


def test_workdir_that_cannot_be_created(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  with pytest.raises(config_lib.ConfigError,
                     match=r"--workdir=.* cannot create or write to it"):
    trainers.validate(data_config(), str(blocker / "run"))


@pytest.mark.parametrize("key,value,match", [
    ("tokenizer.channel_mults", (1, 2), r"factor of 2; it must be 4, 8 or 16"),
    ("tokenizer.patch_size", 3, r"must be a power of two"),
    ("tokenizer.scales", "1,2,3", r"needs a final grid of 4x4"),
    ("tokenizer.codebook_size", 1, r"must be >= 2"),
    ("stage", "warmup", r"choose one of \['decoder', 'joint', 'pixel'\]"),
    ("semantic.objective", "siglip", r"choose 'contrastive' or 'teacher'"),
    ("semantic.objective", "teacher", r"give the folder of the teacher"),
    ("tokenizer.scale_drop_prob", 1.5, r"must be in \[0, 1\]"),
    ("loss.entropy_weight", 0.1, r"unless tokenizer.use_entropy_loss=True"),
    ("codes.ema_decay", 1.0, r"must be in \[0, 1\)"),
    ("codes.codebook_update", "ema", r"choose 'gradient' \(codebook loss\) "
     r"or 'kmeans'"),
    ("codes.autoencoder_steps", -3, r"must be >= 0, and 0 in the decoder "
     r"stage"),
    ("eval.batch_size", 6, r"multiple of the data-parallel size 4"),
    ("train.eval_every_steps", 0, r"must be a positive integer"),
    ("init_from", "/nonexistent", r"must be the --workdir of a previous "
     r"stage"),
    ("optim.lr", -1e-3, r"config.optim.lr=-0.001 is invalid: must be > 0"),
    ("disc_optim.b2", 1.0, r"config.disc_optim.b2=1.0 .* in \[0, 1\)"),
    ("optim.end_lr_ratio", 2.0, r"the final learning rate over the peak"),
    ("optim.warmup_steps", -5, r"must be >= 0"),
])
def test_bad_input_tokenizer_values(key, value, match, tmp_path):
  config = load("tokenizer.py").get_config("mu")
  assert config.stage == "joint"
  section, _, leaf = key.rpartition(".")
  (config[section] if section else config)[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    trainers.validate(config, str(tmp_path))


@pytest.mark.parametrize("key,value,match", [
    ("tokenizer_workdir", "", r"give the --workdir of a trained tokenizer"),
    ("extract.rate", 1.5, r"must be in \[0, 1\]"),
    ("extract.top_k", 1, r"must be >= 2"),
    ("extract.temperature", 0.0, r"must be > 0"),
    ("extract.schedule", "4,2", r"extract.schedule=4x4,2x2 is not "
     r"increasing"),
])
def test_bad_input_extract_values(key, value, match, tmp_path):
  config = load("extract.py").get_config("mu")
  (tmp_path / "tok" / "checkpoints").mkdir(parents=True)
  config.tokenizer_workdir = str(tmp_path / "tok")
  section, _, leaf = key.rpartition(".")
  (config[section] if section else config)[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    trainers.validate(config, str(tmp_path))


def test_pixel_stage_needs_the_semantic_branch_off(tmp_path):
  config = load("tokenizer.py").get_config("mu,stage=pixel")
  with pytest.raises(config_lib.ConfigError,
                     match=r"stage='pixel' trains the pixel branch alone"):
    trainers.validate(config, str(tmp_path))


@pytest.mark.parametrize("key,value,match", [
    ("data.codes_dir", "", r"give the --workdir of configs/extract.py"),
    ("data.seq_len", 100, r"multiple of loss.chunk_size=64"),
    ("data.tasks", ("t2i", "dance"), r"choose from \['t2i'"),
    ("data.task_weights", (1.0,), r"one positive weight per task"),
    ("data.packing", "best", r"choose 'first_fit' or 'none'"),
    ("model.num_kv_heads", 3, r"must divide model.num_heads=4"),
    ("model.attention", "flash", r"choose one of \['xla', 'blocked', "
     r"'cudnn', 'pallas'\]"),
    ("model.attention_block", 0, r"must be positive"),
    ("layout.image_order", "zigzag", r"choose one of \['next_scale', "
     r"'raster'\]"),
    ("optim.grad_accum_steps", 0, r"config.optim.grad_accum_steps=0 .* >= 1"),
    ("optim.weight_decay", -0.1, r"must be >= 0"),
])
def test_bad_input_pretrain_values(key, value, match, tmp_path):
  config = load("nextflow.py").get_config("mu")
  (tmp_path / "codes" / "codes").mkdir(parents=True)
  config.data.codes_dir = str(tmp_path / "codes")
  section, _, leaf = key.rpartition(".")
  (config[section] if section else config)[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    trainers.validate(config, str(tmp_path))


def test_the_pallas_kernel_needs_blocks_of_128(tmp_path):
  config = load("nextflow.py").get_config(
      "mu,model.attention=pallas,model.attention_block=100")
  (tmp_path / "codes" / "codes").mkdir(parents=True)
  config.data.codes_dir = str(tmp_path / "codes")
  with pytest.raises(config_lib.ConfigError, match=(
      r"config.model.attention_block=100 is invalid: .*pallas kernel needs a "
      r"multiple of 128")):
    trainers.validate(config, str(tmp_path))


def test_the_pallas_kernel_is_refused_on_a_gpu(tmp_path, monkeypatch):
  config = load("nextflow.py").get_config("mu,model.attention=pallas,"
                                          "model.attention_block=128")
  (tmp_path / "codes" / "codes").mkdir(parents=True)
  config.data.codes_dir = str(tmp_path / "codes")
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  with pytest.raises(config_lib.ConfigError, match=(
      r"config.model.attention='pallas' is invalid: .*no GPU lowering; on a "
      r"GPU use 'cudnn'")):
    trainers.validate(config, str(tmp_path))


@pytest.mark.parametrize("schedule,match", [
    ("1x1,2x2,4x4", r"config.layout.image_order='raster' is invalid: the "
     r"codes in .*: raster image order needs single-scale codes.*"
     r"extract.schedule=4x4"),
    ("4x4", None),
])
def test_raster_order_needs_single_scale_codes(schedule, match, tmp_path):
  config = load("nextflow.py").get_config("mu,layout.image_order=raster")
  folder = tmp_path / "codes" / "codes" / "train"
  folder.mkdir(parents=True)
  records.write_manifest(str(folder), [], 0, [], schedule=schedule)
  config.data.codes_dir = str(tmp_path / "codes")
  if match is None:
    trainers.validate(config, str(tmp_path))
  else:
    with pytest.raises(config_lib.ConfigError, match=match):
      trainers.validate(config, str(tmp_path))
  config.layout.context_final_block = True
  with pytest.raises(config_lib.ConfigError, match=r"context_final_block="
                     r"True is invalid: applies to next-scale order only"):
    trainers.validate(config, str(tmp_path))


def sample_config(arg="mu"):
  return load("sample.py").get_config(arg)


@pytest.mark.parametrize("arg,key,match", [
    ("sample.sampling.top_p=1.5;0.9", "sample.sampling",
     r"top-p must be in \(0, 1\]"),
    ("sample.sampling.top_k=0", "sample.sampling", "top-k must be a positive"),
    ("sample.sampling.guidance_schedule=cosine", "sample.sampling",
     "guidance_schedule='cosine'"),
    ("sample.tasks=t2i;paint", "sample.tasks", "choose from"),
    ("sample.sampling.aspect_ratio=16:9", "sample.sampling.aspect_ratio",
     "not in the paper's table"),
    ("sample.sampling.resolution=300,sample.sampling.aspect_ratio=1:1",
     "sample.sampling.resolution", "not a level of the paper's schedules"),
])
def test_bad_input_sampling_values(arg, key, match, tmp_path):
  (tmp_path / "model" / "checkpoints").mkdir(parents=True)
  config = sample_config(f"mu,{arg},sample.model_workdir={tmp_path}/model")
  with pytest.raises(config_lib.ConfigError, match=match) as e:
    trainers.validate(config, str(tmp_path / "out"))
  assert key in str(e.value)


def test_bad_input_sampling_guidance_list_of_another_length(tmp_path):
  (tmp_path / "model" / "checkpoints").mkdir(parents=True)
  config = sample_config(f"mu,sample.model_workdir={tmp_path}/model")
  config.sample.sampling.schedule = "1,2,4"
  config.sample.sampling.guidance_schedule = "list"
  config.sample.sampling.guidance_list = (1.0, 2.0)
  with pytest.raises(config_lib.ConfigError,
                     match=r"sample.sampling.guidance_list.*has 2 weights but "
                     r"the schedule has 3 scales"):
    trainers.validate(config, str(tmp_path / "out"))


def test_bad_input_sampling_model_is_neither_workdir_nor_bundle(tmp_path):
  (tmp_path / "empty").mkdir()
  config = sample_config(f"mu,sample.model_workdir={tmp_path}/empty")
  with pytest.raises(config_lib.ConfigError,
                     match=r"sample.model_workdir.*or a model bundle"):
    trainers.validate(config, str(tmp_path / "out"))
  (tmp_path / "bundle").mkdir()
  (tmp_path / "bundle" / "bundle.json").write_text("{}")
  config.sample.model_workdir = str(tmp_path / "bundle")
  trainers.validate(config, str(tmp_path / "out"))


def test_sampling_overrides_round_trip_into_the_dataclass():
  from nextflow_jax.trainers import sample  # pylint: disable=g-import-not-at-top
  config = sample_config("mu,sample.sampling.top_k=5,"
                         "sample.sampling.temperature=1;0.5;0.2,"
                         "sample.sampling.guidance_list=1;2;3")
  knobs = sample.from_config_dict(config.sample.sampling)
  assert knobs.top_k == 5 and knobs.temperature == (1.0, 0.5, 0.2)
  assert knobs.guidance_list == (1, 2, 3)
  assert sample.from_config_dict(sample.to_config_dict(knobs)) == knobs
