# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Entry point: runs the job named by `config.trainer`.

  python -m nextflow_jax.main --config=configs/data.py:cpu --workdir=runs/demo \
      [--config.data.global_batch_size=64] [--multihost]

The config is validated before anything runs; a bad value (in the file's
arg, a `--config.` flag or the loaded config) stops with one line naming the
key, the value and what is allowed, and exit code 2. During the run, bad
input the job finds (a data file, a checkpoint of another config) is one
line and exit code 2, a diverged run one line and exit code 1; `--verbose`
shows their tracebacks. Logs go to stderr and
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

from nextflow_jax import cli
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
    config.get("trainer")
  except OSError:  # ml_collections defers a failed load to the first use.
    path = flags.FLAGS["config"].config_filename.partition(":")[0]
    _bad_input(f"config file {path!r} does not exist or failed to load "
               "(give a path such as configs/nextflow.py:cpu).")
  try:
    trainers.validate(config, workdir)
  except config_lib.ConfigError as e:
    _bad_input(str(e))
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


def _bad_input(message: str) -> None:
  """A bad config: one line on stderr, exit code 2."""
  cli.exit_with("Invalid config", message, 2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, but a bad `--config` is one line and exit code 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if not str(e).startswith("flag --config"):
      sys.stderr.write(f"{e}\nPass --helpshort or --helpfull to see help "
                       "on flags.\n")
      sys.exit(2)
    _bad_input(config_lib.command_line_error(argv, e))
  except Exception as e:  # pylint: disable=broad-except
    # ml_collections raises e.g. a bare AttributeError for --config.a.nope.
    _bad_input(config_lib.command_line_error(argv, e))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(cli.one_line_errors(main), flags_parser=parse_flags)
