# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Trainer registry: `config.trainer` -> module with `run(config, workdir)`.

Modules are imported only when chosen, so `main` stays fast and a trainer's
heavy imports never slow down another.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TRAINERS = {
    "prepare_data": "nextflow_jax.trainers.prepare_data",
    "tokenizer": "nextflow_jax.trainers.tokenizer",
    "extract": "nextflow_jax.trainers.extract",
    "pretrain": "nextflow_jax.trainers.pretrain",
    "sample": "nextflow_jax.trainers.sample",
}


def get(name: str) -> ModuleType:
  if name not in TRAINERS:
    raise ValueError(f"config.trainer={name!r} is not a trainer; choose one of "
                     f"{sorted(TRAINERS)}.")
  return importlib.import_module(TRAINERS[name])
