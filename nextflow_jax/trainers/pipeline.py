# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The whole pipeline as one job (`config.trainer = "pipeline"`).

Runs the library's own jobs in order, each in its own sub-workdir of
`workdir`, each configured by its own config file (`stages.<name>.config`,
"configs/<file>.py:<preset>") plus `stages.<name>.overrides` ("key=value"
items, applied like `--config.key=value`):

  tokenizer  configs/tokenizer.py -> W/tokenizer (builds the embedded
             datasets and trains the text tokenizer first)
  extract    configs/extract.py   -> W/extract   (tokenizer_workdir =
                                                   W/tokenizer)
  pretrain   configs/nextflow.py  -> W/pretrain  (data.codes_dir = W/extract)
  grpo       configs/grpo.py      -> W/grpo      (model = W/pretrain)
  sample     configs/sample.py    -> W/sample    (sample.model_workdir = the
                                                   GRPO bundle, or W/pretrain)
  evaluate   this module          -> W/evaluate  shapes-GenEval before and
             after GRPO, caption / VQA / edit accuracy, sampling speed

then `report.json` and `report.md` (`evals/report.py`). The paths between
stages are the pipeline's: overriding them is an error. A stage may be
skipped (`stages.<name>.skip`); the stages after it then use what there is
(sample and evaluate take the pretrained model when GRPO is skipped).

Resumable: a finished stage is recorded in W/stages.json (with its minutes)
and skipped when the job is rerun with the same workdir; a half-finished
one resumes from its own checkpoints, as every trainer does.

Every stage's config is loaded and validated when it starts (an override of
a later stage that names no key fails only there, after the earlier stages
have saved their work); the overrides of all stages are parsed up front.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from absl import logging
import ml_collections

from nextflow_jax import config_lib
from nextflow_jax import trainers
from nextflow_jax.evals import report as report_lib
from nextflow_jax.evals import shapes_geneval

STAGES = ("tokenizer", "extract", "pretrain", "grpo", "sample")
ALL_STAGES = STAGES + ("evaluate",)
STATE_FILE = "stages.json"
EVAL_FILE = "evaluation.json"
# The config key each stage's input path goes to (set by the pipeline).
WIRED_KEYS = {"extract": "tokenizer_workdir", "pretrain": "data.codes_dir",
              "grpo": "model", "sample": "sample.model_workdir"}
# The trainer each stage's config must name.
STAGE_TRAINERS = {"tokenizer": "tokenizer", "extract": "extract",
                  "pretrain": "pretrain", "grpo": "grpo", "sample": "sample"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def parse_overrides(stage: str, items: tuple[str, ...]) -> dict[str, str]:
  """("a.b=1", "c=x") -> {"a.b": "1", "c": "x"}; empty items are dropped."""
  out = {}
  for item in items:
    if not item:
      continue
    key, eq, value = item.partition("=")
    if not eq or not key:
      raise config_lib.ConfigError(
          f"stages.{stage}.overrides", item,
          "each item is key=value, e.g. train.max_minutes=5 (separate items "
          "with ';' on the command line).")
    if key == WIRED_KEYS.get(stage):
      raise config_lib.ConfigError(
          f"stages.{stage}.overrides", item,
          f"{key} is set by the pipeline (the previous stage's workdir); "
          "run the stage on its own to point it elsewhere.")
    out[key] = value
  return out


def check_config(config: ml_collections.ConfigDict) -> None:
  """Up-front checks: stage names, config files, override syntax."""
  for name in config.stages:
    if name not in STAGES:
      raise config_lib.ConfigError("stages", name,
                                   f"stages are {list(STAGES)}.")
  for name in STAGES:
    stage = config.stages[name]
    spec = stage.config
    path = spec.partition(":")[0]
    if not os.path.exists(_resolve(path)):
      raise config_lib.ConfigError(
          f"stages.{name}.config", spec,
          "no such config file; give configs/<file>.py:<preset>.")
    parse_overrides(name, tuple(stage.overrides))
  e = config.evaluate
  if e.prompt_split not in ("all", "heldout", "seen"):
    raise config_lib.ConfigError("evaluate.prompt_split", e.prompt_split,
                                 "choose all, heldout or seen.")
  for key in ("prompts_per_category", "understanding"):
    if e[key] < 0:
      raise config_lib.ConfigError(f"evaluate.{key}", e[key],
                                   "must be >= 0.")
  for key in ("images_per_prompt", "batch_size"):
    if e[key] < 1:
      raise config_lib.ConfigError(f"evaluate.{key}", e[key],
                                   "must be >= 1.")


def _resolve(path: str) -> str:
  """Config paths are relative to the working directory or the repo."""
  return path if os.path.exists(path) else os.path.join(ROOT, path)


def stage_config(config: ml_collections.ConfigDict, name: str,
                 workdir: str) -> ml_collections.ConfigDict:
  """The stage's config: its file and preset, its overrides, and the
  pipeline's paths between stages."""
  stage = config.stages[name]
  path, colon, arg = stage.config.partition(":")
  sub = config_lib.load_config(_resolve(path) + colon + arg)
  if sub.get("trainer") != STAGE_TRAINERS[name]:
    raise config_lib.ConfigError(
        f"stages.{name}.config", stage.config,
        f"is a {sub.get('trainer')!r} config; this stage runs "
        f"{STAGE_TRAINERS[name]!r}.")
  config_lib.apply_overrides(sub, parse_overrides(name,
                                                  tuple(stage.overrides)))
  wired = _stage_inputs(config, workdir).get(name)
  if wired is not None:
    config_lib.apply_overrides(sub, {WIRED_KEYS[name]: wired})
  return sub


def _stage_inputs(config, workdir: str) -> dict[str, str]:
  """Each stage's input path (the workdir of the stage it reads)."""
  model = (os.path.join(workdir, "grpo", "bundle")
           if not config.stages.grpo.skip else os.path.join(workdir,
                                                            "pretrain"))
  return {"extract": os.path.join(workdir, "tokenizer"),
          "pretrain": os.path.join(workdir, "extract"),
          "grpo": os.path.join(workdir, "pretrain"),
          "sample": model}


def _read_state(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, STATE_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, data: dict[str, Any]) -> None:
  """Atomic JSON write."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2)
  os.replace(tmp, path)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the stages that are not done yet, then writes the report."""
  state = _read_state(workdir)
  todo = [n for n in ALL_STAGES if not (
      config.evaluate.skip if n == "evaluate" else config.stages[n].skip)]
  start = time.perf_counter()
  for i, name in enumerate(todo):
    if name in state:
      logging.info("stage %d/%d %s: done already (%.1f min), skipped", i + 1,
                   len(todo), name, state[name]["minutes"])
      continue
    logging.info("stage %d/%d %s: starting", i + 1, len(todo), name)
    t0 = time.perf_counter()
    stage_dir = os.path.join(workdir, name)
    if name == "evaluate":
      evaluate(config.evaluate, workdir, stage_dir)
    else:
      sub = stage_config(config, name, workdir)
      trainers.validate(sub, stage_dir)
      trainers.get(sub.trainer).run(sub, stage_dir)
    minutes = (time.perf_counter() - t0) / 60
    state[name] = {"minutes": round(minutes, 2)}
    _write_json(os.path.join(workdir, STATE_FILE), state)
    logging.info("stage %d/%d %s: done in %.1f min (pipeline %.1f min so "
                 "far)", i + 1, len(todo), name, minutes,
                 (time.perf_counter() - start) / 60)
  report = report_lib.collect(workdir, state)
  _write_json(os.path.join(workdir, report_lib.JSON_FILE), report)
  report_lib.write_markdown(report, workdir)
  logging.info("report: %s", os.path.join(workdir, report_lib.MARKDOWN_FILE))
  return report


# ----------------------------------------------------------------- evaluate


def _prompts(e: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """The prompt split, at most `prompts_per_category` of each category."""
  prompts = shapes_geneval.load_prompt_set(split=e.prompt_split)
  if not e.prompts_per_category:
    return prompts
  kept, count = [], {}
  for p in prompts:
    count[p["category"]] = count.get(p["category"], 0) + 1
    if count[p["category"]] <= e.prompts_per_category:
      kept.append(p)
  return kept


def _models(workdir: str) -> dict[str, str]:
  """The models to score: the pretrained one, and the GRPO-tuned one."""
  out = {}
  if os.path.isdir(os.path.join(workdir, "pretrain", "checkpoints")):
    out["pretrain"] = os.path.join(workdir, "pretrain")
  bundle_dir = os.path.join(workdir, "grpo", "bundle")
  if os.path.isdir(bundle_dir):
    out["grpo"] = bundle_dir
  return out


def _seconds_per_image(gen, texts: list[str], config) -> float:
  """Text-to-image seconds per image of one batch, compiled beforehand."""
  gen.text_to_image(texts, config)
  start = time.perf_counter()
  gen.text_to_image(texts, dataclasses.replace(config, seed=config.seed + 1))
  return (time.perf_counter() - start) / len(texts)


def evaluate(e: ml_collections.ConfigDict, workdir: str,
             out_dir: str) -> dict[str, Any]:
  """shapes-GenEval, understanding and speed of each model of the run.

  Writes `out_dir/evaluation.json` and `out_dir/<model>/grid.png`.
  """
  # pylint: disable=g-import-not-at-top
  from nextflow_jax.sampling import generator as generator_lib
  # pylint: enable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  prompts = _prompts(e)
  results = {"prompt_split": e.prompt_split, "num_prompts": len(prompts),
             "images_per_prompt": e.images_per_prompt,
             "guidance": e.guidance, "models": {}}
  for name, path in _models(workdir).items():
    gen = (generator_lib.Generator.from_pretrained(path) if name == "grpo"
           else generator_lib.Generator.from_workdir(path))
    config = generator_lib.SamplingConfig(seed=0, guidance=e.guidance)
    scores = shapes_geneval.evaluate_generator(
        gen, prompts, images_per_prompt=e.images_per_prompt, config=config,
        batch_size=e.batch_size, out_dir=os.path.join(out_dir, name))
    scores.pop("images")
    entry = {"geneval": scores}
    if e.understanding:
      understanding = shapes_geneval.evaluate_understanding(
          gen, shapes_geneval.held_out_examples(
              e.understanding,
              shapes_geneval.held_out_dataset(gen.image_size[0])),
          batch_size=e.batch_size)
      entry["understanding"] = {k: v for k, v in understanding.items()
                                if k != "rows"}
    texts = [p["prompt"] for p in prompts][:e.batch_size]
    texts += texts[-1:] * (e.batch_size - len(texts))
    entry["seconds_per_image"] = _seconds_per_image(gen, texts, config)
    entry["batch_size"] = e.batch_size
    results["models"][name] = entry
    logging.info("evaluate %s: shapes-GenEval %.3f, %.3f s/image", name,
                 scores["overall"], entry["seconds_per_image"])
  _write_json(os.path.join(out_dir, EVAL_FILE), results)
  return results
