# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""A shapes recipe end to end: tokenizer -> codes -> pretraining -> scores.

  python experiments/shapes_pipeline.py --recipe=shapes32 --runs=runs/shapes32

Runs the four stages of a named recipe, each the library's own command
(the recipe is the preset name of `configs/tokenizer.py`, `extract.py` and
`nextflow.py`), with `--overrides_<stage>` appended to a stage's config arg:

  1. `configs/tokenizer.py:<recipe>`  -> RUNS/tokenizer
  2. `configs/extract.py:<recipe>`    -> RUNS/codes
  3. `configs/nextflow.py:<recipe>`   -> RUNS/nextflow
  4. `python -m nextflow_jax.evals.shapes_geneval --model=RUNS/nextflow`
     on the whole prompt set (4 images per prompt; GenEval's overall needs
     all six categories, and the grammar is small enough that most short
     prompts are training captions too), plus captions, VQA and edits of
     `--understanding` held-out images -> RUNS/geneval; then on the
     held-out prompts alone (colour attribution and full captions that no
     training caption states) -> RUNS/geneval_heldout

A stage whose output exists is not run again (delete its folder to redo
it), so a stopped pipeline picks up where it was; the trainers resume from
their checkpoints. Each stage logs to RUNS/<stage>.log. Writes
experiments/results/shapes_pipeline_<recipe>_<time>.json with the minutes
of every stage, the tokenizer's ceiling and the scores.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RECIPE = flags.DEFINE_string("recipe", "shapes32", "Preset name shared by "
                              "the tokenizer, extract and nextflow configs.")
_RUNS = flags.DEFINE_string("runs", "runs/shapes32", "Workdirs go here.")
_TOKENIZER = flags.DEFINE_string("tokenizer_workdir", "", "Use this trained "
                                 "tokenizer instead of stage 1.")
_OVERRIDES = {stage: flags.DEFINE_list(
    f"overrides_{stage}", [], f"key=value items for the {stage} config.")
              for stage in ("tokenizer", "extract", "nextflow")}
_UNDERSTANDING = flags.DEFINE_integer("understanding", 64, "Held-out images "
                                      "for captions, VQA and edits.")
_GUIDANCE = flags.DEFINE_float("guidance", 3.0, "CFG scale of the scores.")


def _main_job(stage: str, config: str, workdir: str, *flags_) -> list[str]:
  arg = ",".join([_RECIPE.value, *_OVERRIDES[stage].value])
  return [sys.executable, "-m", "nextflow_jax.main",
          f"--config=configs/{config}.py:{arg}", f"--workdir={workdir}",
          *flags_]


def _run(name: str, command: list[str], done: str) -> float | None:
  """Runs `command` unless `done` exists; returns its minutes (None if
  skipped)."""
  if os.path.exists(done):
    print(f"{name}: done already ({done})", flush=True)
    return None
  print(f"{name}: {' '.join(command)}", flush=True)
  start = time.perf_counter()
  with open(os.path.join(_RUNS.value, f"{name}.log"), "a") as log:
    subprocess.run(command, check=True, cwd=ROOT, stdout=log,
                   stderr=subprocess.STDOUT)
  minutes = (time.perf_counter() - start) / 60
  print(f"{name}: {minutes:.1f} min", flush=True)
  return minutes


def _last_eval(workdir: str) -> dict:
  steps = [int(f[5:-5]) for f in os.listdir(workdir)
           if f.startswith("eval_") and f.endswith(".json")]
  if not steps:
    return {}
  with open(os.path.join(workdir, f"eval_{max(steps)}.json")) as f:
    return {"step": max(steps), **json.load(f)}


def main(argv):
  del argv
  runs = _RUNS.value
  os.makedirs(runs, exist_ok=True)
  tok = _TOKENIZER.value or os.path.join(runs, "tokenizer")
  codes, model = os.path.join(runs, "codes"), os.path.join(runs, "nextflow")
  out = os.path.join(runs, "geneval")
  out_heldout = os.path.join(runs, "geneval_heldout")
  minutes = {}
  if not _TOKENIZER.value:
    minutes["tokenizer"] = _run("tokenizer", _main_job(
        "tokenizer", "tokenizer", tok), os.path.join(
            tok, "tokenizer_report.json"))
  minutes["extract"] = _run("extract", _main_job(
      "extract", "extract", codes, f"--config.tokenizer_workdir={tok}"),
                            # The last split's manifest is written last.
                            os.path.join(codes, "codes", "test",
                                         "manifest.json"))
  minutes["nextflow"] = _run("nextflow", _main_job(
      "nextflow", "nextflow", model, f"--config.data.codes_dir={codes}"),
                             os.path.join(model, "pretrain_report.json"))
  minutes["geneval"] = _run("geneval", [
      sys.executable, "-m", "nextflow_jax.evals.shapes_geneval",
      f"--model={model}", f"--out={out}", "--split=all",
      f"--guidance={_GUIDANCE.value}",
      f"--understanding={_UNDERSTANDING.value}"],
                            os.path.join(out, "geneval.json"))
  minutes["geneval_heldout"] = _run("geneval_heldout", [
      sys.executable, "-m", "nextflow_jax.evals.shapes_geneval",
      f"--model={model}", f"--out={out_heldout}", "--split=heldout",
      f"--guidance={_GUIDANCE.value}"],
                                    os.path.join(out_heldout, "geneval.json"))
  with open(os.path.join(out, "geneval.json")) as f:
    scores = json.load(f)
  with open(os.path.join(out_heldout, "geneval.json")) as f:
    heldout = json.load(f)
  understanding = {k: v for k, v in scores.get("understanding", {}).items()
                   if k != "rows"}
  result = {
      "recipe": _RECIPE.value,
      "overrides": {k: v.value for k, v in _OVERRIDES.items()},
      "tokenizer_workdir": tok, "minutes": minutes,
      "tokenizer_eval": _last_eval(tok),
      "geneval_overall": scores["overall"],
      "geneval": scores["categories"],
      "correct_images": scores["correct_images"],
      "heldout_prompts": heldout["categories"], "understanding": understanding}
  print(json.dumps({k: v for k, v in result.items()
                    if k != "tokenizer_eval"}, indent=2))
  print("wrote", common.write_result(f"shapes_pipeline_{_RECIPE.value}",
                                     result))


if __name__ == "__main__":
  app.run(main)
