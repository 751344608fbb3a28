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
import numpy as np

from nextflow_jax.evals import report
from nextflow_jax.evals import shapes_geneval
from nextflow_jax.sampling import generator

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


def load_generator(path: str):
  """A Generator from a bundle folder or a pretraining workdir."""
  if os.path.exists(os.path.join(path, "bundle.json")):
    return generator.Generator.from_pretrained(path)
  return generator.Generator.from_workdir(path)


def score_generator(gen, prompts, out_dir: str, images_per_prompt: int,
                    guidance: float, vqa_images: int) -> dict:
  """shapes-GenEval of `prompts` (seed 0, `guidance`) and VQA accuracy on
  `vqa_images` held-out images: the evaluator's result dict plus
  "vqa_accuracy"."""
  result = shapes_geneval.evaluate_generator(
      gen, prompts, images_per_prompt=images_per_prompt,
      config=generator.SamplingConfig(seed=0, guidance=guidance),
      out_dir=out_dir)
  examples = shapes_geneval.held_out_examples(
      vqa_images, shapes_geneval.held_out_dataset(gen.image_size[0]))
  pairs = [(e["image"], q, a) for e in examples
           for q, a in zip(e["questions"], e["answers"])]
  answers = gen.answer(np.stack([p[0] for p in pairs]), [p[1] for p in pairs])
  result["vqa_accuracy"] = float(np.mean([
      shapes_geneval.answer_matches(a, p[2]) for a, p in zip(answers,
                                                            pairs)]))
  return result


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
