# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Entry point: runs the job named by `config.trainer`.

  python -m nextflow_jax.main --config=configs/data.py:cpu --workdir=runs/demo \
      [--config.data.global_batch_size=64] [--multihost]

The config is validated before anything runs; a bad value stops with one
message naming the key, the value and what is allowed. Logs go to stderr and
to `workdir/log.txt`.
"""

from __future__ import annotations

from collections.abc import Sequence
import logging as py_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from nextflow_jax import config_lib
from nextflow_jax import sharding
from nextflow_jax import trainers

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file and arg, e.g. configs/data.py:cpu.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where outputs go.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", "JAX_COORDINATOR_ADDRESS" in os.environ,
    "Call jax.distributed.initialize() (TPU pods, multi-node GPU).")


class _QuietLibraries(py_logging.Filter):
  """Drops INFO records of Orbax and Grain (every save logs dozens)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or not any(
        f"/{lib}/" in record.pathname for lib in ("orbax", "grain"))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sharding.maybe_initialize_distributed(_MULTIHOST.value)
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    trainers.validate(config, workdir)
  except config_lib.ConfigError as e:
    logging.error("%s", e)
    sys.exit(f"Invalid config: {e}")
  handler = py_logging.FileHandler(os.path.join(workdir, "log.txt"))
  handler.setFormatter(py_logging.Formatter("%(asctime)s %(message)s"))
  handler.addFilter(_QuietLibraries())
  logging.get_absl_handler().addFilter(_QuietLibraries())
  logging.get_absl_logger().addHandler(handler)
  logging.info("process %d/%d, %d devices (%s)", jax.process_index(),
               jax.process_count(), jax.device_count(),
               jax.devices()[0].platform)
  logging.info("config:\n%s", config)
  trainers.get(config.trainer).run(config, workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
