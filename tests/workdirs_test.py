# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Building models from config sections; finding what an extraction wrote."""

import os

import pytest

from nextflow_jax import config_lib
from nextflow_jax import trainers
from nextflow_jax import workdirs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nextflow_config(arg="mu"):
  return config_lib.load_config(os.path.join(ROOT, "configs",
                                             f"nextflow.py:{arg}"))


def test_build_model_passes_every_key_and_the_data_sizes():
  config = nextflow_config()
  model = workdirs.build_model(config.model, text_vocab_size=600,
                               codebook_size=32, code_dim=8)
  assert (model.text_vocab_size, model.codebook_size, model.code_dim) == (
      600, 32, 8)
  assert model.num_layers == config.model.num_layers
  assert model.width == config.model.width
  assert model.mrope_sections is None  # () in the config = the default


def test_an_unknown_model_key_is_named():
  section = dict(nextflow_config().model.to_dict(), num_layer=3)
  with pytest.raises(ValueError, match=r"config.model has unknown key\(s\) "
                     r"\['num_layer'\]; the keys it may have are .*"
                     r"'num_layers'"):
    workdirs.build_model(section, text_vocab_size=64, codebook_size=8,
                         code_dim=4)


def test_an_unknown_model_key_in_a_config_file_fails_up_front(tmp_path):
  """A config file whose `model` section has a mistyped key stops before
  anything runs, naming the key."""
  config = nextflow_config()
  (tmp_path / "codes" / "codes").mkdir(parents=True)
  config.data.codes_dir = str(tmp_path / "codes")
  with config.model.unlocked():
    config.model.num_head = 8
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.model.num_head=8 is invalid: NextFlow has "
                     r"no such field"):
    trainers.validate(config, str(tmp_path / "run"))


def test_resuming_needs_the_rope_the_run_trained_with():
  current = nextflow_config().model.to_dict()
  workdirs.check_resumable_model(dict(current), current, "W")
  # A run saved before the field existed trained with contiguous RoPE.
  saved = {k: v for k, v in current.items() if k != "mrope_interleaved"}
  with pytest.raises(ValueError, match=r"cannot resume W: "
                     r"model.mrope_interleaved is True here but the run "
                     r"trained with False.*--config.model.mrope_interleaved"
                     r"=False"):
    workdirs.check_resumable_model(saved, current, "W")
  workdirs.check_resumable_model(saved, {**current,
                                         "mrope_interleaved": False}, "W")
  # Saved configs store tuples as lists; other knobs may change freely.
  workdirs.check_resumable_model(
      {**current, "mrope_sections": list(current["mrope_sections"]),
       "remat_policy": "full"}, current, "W")
  with pytest.raises(ValueError, match=r"model.rope_theta"):
    workdirs.check_resumable_model({**current, "rope_theta": 1e4}, current,
                                   "W")


def test_an_unknown_tokenizer_key_is_named():
  with pytest.raises(ValueError, match=r"config.tokenizer has unknown "
                     r"key\(s\) \['chanels'\]"):
    workdirs.build_tokenizer({"scales": "1,2", "chanels": 8})


def test_code_folders_of_one_and_of_several_processes(tmp_path):
  one = tmp_path / "one" / "codes"
  (one / "train").mkdir(parents=True)
  (one / "test").mkdir()
  assert workdirs.code_folders(str(tmp_path / "one"), "train") == [
      str(one / "train")]
  several = tmp_path / "several" / "codes"
  for name in ("train-p1", "train-p0", "test-p0", "trainx"):
    (several / name).mkdir(parents=True)
  assert workdirs.code_folders(str(tmp_path / "several"), "train") == [
      str(several / "train-p0"), str(several / "train-p1")]
  with pytest.raises(FileNotFoundError, match=r"no split 'eval'"):
    workdirs.code_folders(str(tmp_path / "several"), "eval")
  with pytest.raises(FileNotFoundError, match=r"run configs/extract.py"):
    workdirs.code_folders(str(tmp_path / "none"), "train")
