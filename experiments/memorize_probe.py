# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Can the model memorise a few scenes and draw them back? A sanity check.

  python experiments/memorize_probe.py --codes=runs/g4codes \
      --runs=runs/memorize --variants=interleaved,contiguous

Takes the first `--num` training records of an extraction workdir (the
codes of `configs/extract.py:shapes32_grid`, say) as both the training and
the evaluation split, trains the `--preset` model on their text-to-image
documents alone for `--steps` steps (one run per variant of the RoPE
frequency layout, `model.mrope_interleaved`), then samples every training
caption and scores the images against their own scenes
(`shapes_geneval.score_scenes`): twice at guidance 3 with temperature 1,
once with arg-max. The true codes decoded are the ceiling. A model that
reaches a low training loss but cannot draw its training scenes back has a
bug between training and sampling, not a lack of data or steps.

It also reports, for the 2x2 scale given the true 1x1 code, the L1
distance between the predicted distributions of two cells in one row and
of two cells in one column: a model that cannot tell columns apart gives
the cells of a row the same distribution (what found the contiguous RoPE
layout's blind spot, `model/rope.py`).

Writes experiments/results/memorize_probe_<time>.json and, per variant,
RUNS/<variant>/grid.png (true codes, two samples, arg-max per caption).
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from nextflow_jax import metrics  # pylint: disable=g-import-not-at-top,g-bad-import-order
from nextflow_jax import scales
from nextflow_jax.data import records
from nextflow_jax.data import sequences
from nextflow_jax.data import shapes
from nextflow_jax.data import sources
from nextflow_jax.data import tasks
from nextflow_jax.evals import shapes_geneval
from nextflow_jax.sampling import generator
from nextflow_jax.sampling import next_scale
from nextflow_jax.sampling import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"interleaved": True, "contiguous": False}

_CODES = flags.DEFINE_string("codes", None, "Extraction workdir (its "
                             "codes/train split is read).", required=True)
_RUNS = flags.DEFINE_string("runs", "runs/memorize", "Workdirs go here.")
_NUM = flags.DEFINE_integer("num", 32, "Training scenes.")
_STEPS = flags.DEFINE_integer("steps", 300, "Training steps per variant.")
_PRESET = flags.DEFINE_string("preset", "shapes32_grid",
                              "configs/nextflow.py preset.")
_TEXT_TOKENIZER = flags.DEFINE_string(
    "text_tokenizer", "pretrained/shapes-cpu/text_tokenizer.model",
    "Sentencepiece model of the captions.")
_VARIANTS = flags.DEFINE_list("variants", ["interleaved", "contiguous"],
                              f"RoPE layouts to train: {list(VARIANTS)}.")


def _subset(codes_dir: str, out: str, num: int) -> list[dict]:
  """The first `num` train records, written as RUNS/codes/{train,test}."""
  folder = os.path.join(codes_dir, "codes", "train")
  source = sources.ArrayRecordSource(folder)
  manifest = source.manifest
  recs = [source[i] for i in range(num)]
  extra = {k: v for k, v in manifest.items()
           if k not in ("format", "shards", "num_records", "keys")}
  for split in ("train", "test"):
    path = os.path.join(out, "codes", split)
    if not os.path.exists(path):
      with records.ShardedWriter(path, prefix="codes", **extra) as writer:
        for record in recs:
          writer.write(record)
  return recs


def _train(codes: str, workdir: str, interleaved: bool) -> None:
  if os.path.exists(os.path.join(workdir, "pretrain_report.json")):
    return
  subprocess.run([
      sys.executable, "-m", "nextflow_jax.main",
      f"--config=configs/nextflow.py:{_PRESET.value}", f"--workdir={workdir}",
      f"--config.data.codes_dir={codes}",
      f"--config.data.text_tokenizer={_TEXT_TOKENIZER.value}",
      "--config.data.tasks=('t2i',)", "--config.data.task_weights=(1.0,)",
      "--config.data.prompt_variants=0.0", "--config.eval.num_batches=0",
      "--config.optim.warmup_steps=50",
      f"--config.train.num_steps={_STEPS.value}",
      f"--config.model.mrope_interleaved={interleaved}"],
                 check=True, cwd=ROOT)


def _cells_alike(gen, captions, first_code) -> dict:
  """L1 distances between the 2x2 scale's cell distributions, 1x1 given."""
  schedule = gen.schedule
  fn = next_scale.make_generate(
      gen.model, schedule=schedule[:2], layout=gen.layout,
      top_k=(None, None), cfg=False, return_logits=True)
  docs = [sequences.build(tasks.t2i_prompt(gen.text_tokenizer.encode(c)),
                          gen.layout, codebook_size=gen.model.codebook_size)
          for c in captions]
  fields, time, block = state_lib.stack_prompts(
      docs, max(len(d["tokens"]) for d in docs))
  knobs = next_scale.knobs_from_config(
      generator.SamplingConfig(guidance=1.0), 2)
  _, logits = fn(gen.params, fields, time, block,
                 state_lib.row_keys(0, 0, len(captions)), knobs,
                 (first_code,))
  p = np.asarray(jax.nn.softmax(logits[1], -1)).reshape(
      len(captions), 2, 2, -1)
  return {"same_row": float(np.abs(p[:, 0, 0] - p[:, 0, 1]).sum(-1).mean()),
          "same_column": float(np.abs(p[:, 0, 0] - p[:, 1, 0]).sum(-1).mean())}


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _score(workdir: str, recs: list[dict]) -> dict:
  gen = generator.Generator.from_workdir(workdir)
  captions = [_text(r["caption"]) for r in recs]
  scenes = [shapes.Scene.from_json(r["scene"]) for r in recs]
  schedule = scales.parse_schedule(recs[0]["schedule"])
  per = [scales.split_codes(np.asarray(r["image.targets"]), schedule)
         for r in recs]
  true = [np.stack([p[k] for p in per]) for k in range(len(schedule))]
  columns = {"true codes": gen.decode(true, schedule)}
  for name, config in (
      ("seed 1", generator.SamplingConfig(seed=1, guidance=3.0)),
      ("seed 2", generator.SamplingConfig(seed=2, guidance=3.0)),
      ("arg-max", generator.SamplingConfig(guidance=3.0, temperature=0.0))):
    columns[name] = gen.text_to_image(captions, config).pixels
  result = {name: shapes_geneval.score_scenes(list(images), scenes)["overall"]
            for name, images in columns.items()}
  result["cells_l1"] = _cells_alike(gen, captions, true[0])
  metrics.save_png(os.path.join(os.path.dirname(workdir), "grid.png"),
                   metrics.labeled_grid(
                       [[c[i] for c in columns.values()]
                        for i in range(min(16, len(recs)))], captions[:16]))
  return result


def main(argv):
  del argv
  recs = _subset(_CODES.value, _RUNS.value, _NUM.value)
  results = {}
  for variant in _VARIANTS.value:
    if variant not in VARIANTS:
      raise app.UsageError(f"--variants: {variant!r} is not one of "
                           f"{list(VARIANTS)}.")
    workdir = os.path.join(_RUNS.value, variant, "model")
    _train(_RUNS.value, workdir, VARIANTS[variant])
    with open(os.path.join(workdir, "pretrain_report.json")) as f:
      report = json.load(f)
    scalars = metrics.read_scalars(workdir)
    results[variant] = {"final_loss": scalars["loss/total_loss"][-1][1],
                        "report": report, **_score(workdir, recs)}
    print(variant, results[variant], flush=True)
  print("wrote", common.write_result("memorize_probe", {
      "codes": _CODES.value, "num": _NUM.value, "steps": _STEPS.value,
      "preset": _PRESET.value, "results": results}))


if __name__ == "__main__":
  app.run(main)
