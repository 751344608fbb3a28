# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Shared by the benchmark scripts: machine description and result files."""

import datetime
import json
import os
import platform
import subprocess

import jax

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "results")


def machine() -> dict:
  """CPU model, core count, memory, accelerator and software versions."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f
                 if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  try:
    with open("/proc/meminfo") as f:
      mem_gib = int(f.readline().split()[1]) / 2**20
  except OSError:
    mem_gib = None
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(__file__)).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = None
  return {"cpu": cpu, "cores": os.cpu_count(),
          "memory_gib": round(mem_gib, 1) if mem_gib else None,
          "devices": [str(d.device_kind) for d in jax.devices()],
          "jax": jax.__version__, "python": platform.python_version(),
          "commit": commit}


def write_result(name: str, result: dict) -> str:
  """Writes results/<name>_<UTC date-time>.json with the machine; returns path."""
  os.makedirs(RESULTS_DIR, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M")
  path = os.path.join(RESULTS_DIR, f"{name}_{stamp}.json")
  with open(path, "w") as f:
    json.dump({"machine": machine(), **result}, f, indent=2)
  return path
