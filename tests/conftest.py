# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Test set-up: 4 fake CPU devices (before JAX is imported), LLVM without
optimisation (compilation is most of a cold run: -O0 made it 28 minutes ->
16; float rounding may differ from an optimised build, so tests compare
programs compiled alike; notebooks and subprocesses inherit XLA_FLAGS), a persistent compilation cache, parsed absl flags (Grain
workers read them), and the embedded datasets prepared once per session at
32 px."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=4"
                           " --xla_backend_optimization_level=0")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache"))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import jax
import pytest

jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
  del config
  flags.FLAGS.mark_as_parsed()  # google/grain#1355: workers read absl flags.
  assert jax.device_count() == 4, "conftest must run before JAX is imported"


@pytest.fixture(scope="session")
def tok_dir(tfds_dir, tmp_path_factory):
  """A 2-step mu vision tokenizer workdir (shared by the trainer tests)."""
  from nextflow_jax import config_lib
  from nextflow_jax.trainers import tokenizer as tokenizer_trainer
  workdir = str(tmp_path_factory.mktemp("tok"))
  tok = config_lib.load_config(os.path.join(ROOT, "configs",
                                            "tokenizer.py:mu"))
  tok.data.data_dir = tfds_dir
  tok.train.num_steps = 2
  tok.eval.num_batches = 0
  tok.loss.gan_start_step = 100
  tokenizer_trainer.run(tok, workdir)
  return workdir


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """A TFDS data dir with shapes/32px and twemoji/32px prepared."""
  import tensorflow_datasets as tfds
  from nextflow_jax.data import sources
  tfds.disable_progress_bar()
  path = str(tmp_path_factory.mktemp("tfds"))
  for spec in ("shapes/32px", "twemoji/32px"):
    sources.prepare_embedded(spec, path)
  return path
