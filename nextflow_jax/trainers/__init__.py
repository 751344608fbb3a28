# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Trainer registry: `config.trainer` -> module with `run(config, workdir)`.

A trainer module may also define `check_config(config)`, the up-front checks
of its own config sections (raising `config_lib.ConfigError`); `validate`
runs them after the checks every job shares, so a new trainer adds its
validation without touching `config_lib`. Modules are imported only when
chosen, so `main` stays fast and a trainer's heavy imports never slow down
another.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import ml_collections

from nextflow_jax import config_lib

TRAINERS = {
    "prepare_data": "nextflow_jax.trainers.prepare_data",
    "tokenizer": "nextflow_jax.trainers.tokenizer",
    "extract": "nextflow_jax.trainers.extract",
    "pretrain": "nextflow_jax.trainers.pretrain",
    "sample": "nextflow_jax.trainers.sample",
    "grpo": "nextflow_jax.trainers.grpo",
    "pipeline": "nextflow_jax.trainers.pipeline",
}


def get(name: str) -> ModuleType:
  if name not in TRAINERS:
    raise ValueError(f"config.trainer={name!r} is not a trainer; choose one of "
                     f"{sorted(TRAINERS)}.")
  return importlib.import_module(TRAINERS[name])


def validate(config: ml_collections.ConfigDict, workdir: str | None) -> None:
  """All up-front checks of a job's config: the trainer's name, the shared
  sections (`config_lib.validate`), then the trainer's `check_config`.

  Raises:
    config_lib.ConfigError: the first invalid value, named.
  """
  name = config.get("trainer")
  if name not in TRAINERS:
    raise config_lib.ConfigError("trainer", name,
                                 f"choose one of {sorted(TRAINERS)}.")
  config_lib.validate(config, None)
  check = getattr(get(name), "check_config", None)
  if check is not None:
    check(config)
  if workdir is not None:
    config_lib.check_workdir(workdir)
