# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The shipped models do what they did when they were recorded.

`pretrained/<name>/check.json` (written by experiments/bundle_check.py), for
the pretrained model `shapes-cpu` and its GRPO-tuned twin `shapes-cpu-rl`,
holds one number per path through the bundle: the tokenizer's
reconstruction score, the model's likelihood of held-out codes, VQA
accuracy, and the shapes-GenEval of a fixed prompt spread. Recomputing them
must give the same numbers up to the margins below: a change that breaks the
sampler, the tokenizer or the parameter layout (without re-exporting the
bundle) fails here.
"""

import functools
import importlib.util
import json
import os

import pytest

from nextflow_jax import bundle
from nextflow_jax.sampling import generator as generator_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(ROOT, "pretrained", "shapes-cpu")
SHIPPED = ("shapes-cpu", "shapes-cpu-rl")
# Float differences between machines may flip a borderline image or two.
MARGINS = {"reconstruction": 0.08, "vqa_accuracy": 0.1}
GENERATION_MARGINS = {"overall": 0.15, "correct_images": 0.1,
                      "mean_check_fraction": 0.08}
NLL_RELATIVE = 0.01


@functools.cache  # once: the script defines absl flags at import
def _bundle_check():
  spec = importlib.util.spec_from_file_location(
      "bundle_check", os.path.join(ROOT, "experiments", "bundle_check.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundle_is_small_and_self_contained(name):
  folder = os.path.join(ROOT, "pretrained", name)
  size = sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(folder) for f in files)
  assert size <= 40 * 2**20, f"{folder} is {size / 2**20:.1f} MiB"
  config = bundle.read_config(folder)
  assert config["schedule"] and config["provenance"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundle_measures_as_recorded(name):
  folder = os.path.join(ROOT, "pretrained", name)
  with open(os.path.join(folder, "check.json")) as f:
    recorded = json.load(f)
  now = _bundle_check().measure(generator_lib.Generator.from_pretrained(
      folder), recorded["settings"])
  for key, margin in MARGINS.items():
    assert abs(now[key] - recorded[key]) <= margin, (key, now[key],
                                                     recorded[key])
  assert abs(now["code_nll"] - recorded["code_nll"]) <= (
      NLL_RELATIVE * recorded["code_nll"]), (now["code_nll"],
                                             recorded["code_nll"])
  for key, margin in GENERATION_MARGINS.items():
    got, want = now["generation"][key], recorded["generation"][key]
    assert abs(got - want) <= margin, (key, got, want)


def test_the_bundle_is_a_tokenizer_for_extraction(tfds_dir, tmp_path):
  """A bundle's vision tokenizer codes new images (e.g. your own data for a
  new model): `load_tokenizer` reads it like a tokenizer workdir, and the
  extraction job takes the bundle as `tokenizer_workdir`."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from nextflow_jax import config_lib  # pylint: disable=g-import-not-at-top
  from nextflow_jax import scales  # pylint: disable=g-import-not-at-top
  from nextflow_jax import trainers  # pylint: disable=g-import-not-at-top
  from nextflow_jax import workdirs  # pylint: disable=g-import-not-at-top
  from nextflow_jax.trainers import extract  # pylint: disable=g-import-not-at-top
  model, params, schedule, saved = workdirs.load_tokenizer(BUNDLE)
  whole = bundle.load(BUNDLE)
  assert model == whole.tokenizer and schedule == whole.schedule
  assert saved["data"]["image_size"] == 32
  for a, b in zip(jax.tree.leaves(params),
                  jax.tree.leaves(whole.tokenizer_params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  ext = config_lib.load_config(os.path.join(ROOT, "configs",
                                            "extract.py:shapes32"))
  ext.tokenizer_workdir = BUNDLE
  ext.data.data_dir = tfds_dir
  ext.data.sources = ("shapes/32px",)
  ext.data.splits = ("test",)
  ext.extract.schedule = "1,2,4,8"
  trainers.validate(ext, str(tmp_path))
  manifest = extract.run(ext, str(tmp_path))["test"]
  assert manifest["num_records"] == 64
  assert manifest["schedule"] == scales.format_schedule(
      scales.parse_schedule("1,2,4,8"))

  ext.tokenizer_workdir = str(tmp_path)  # Neither checkpoints nor a bundle.
  with pytest.raises(config_lib.ConfigError, match=r"model bundle"):
    trainers.validate(ext, str(tmp_path / "again"))
