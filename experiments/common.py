# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Shared by the benchmark scripts: machine description, result files and
timing of compiled programs."""

import datetime
import json
import os
import statistics
import subprocess
import time

import jax

from nextflow_jax.evals import report

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "results")


def machine() -> dict:
  """CPU model, core count, memory, accelerator, software versions and the
  commit."""
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(__file__)).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = None
  return {**report.machine(), "commit": commit}


def write_result(name: str, result: dict) -> str:
  """Writes results/<name>_<UTC date-time>.json with the machine; returns path."""
  os.makedirs(RESULTS_DIR, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M")
  path = os.path.join(RESULTS_DIR, f"{name}_{stamp}.json")
  with open(path, "w") as f:
    json.dump({"machine": machine(), **result}, f, indent=2)
  return path


def time_program(fn, args, repeats: int) -> tuple[float, float]:
  """(compile seconds, median execution seconds) of a jitted fn, compiled
  ahead of time so that the timed calls measure execution only."""
  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t)
  return compile_s, statistics.median(times)
