# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""A model before and after GRPO, on the same prompts and seeds.

  python experiments/grpo_gain.py --model=pretrained/shapes-cpu \
      --workdir=runs/grpo_gain --overrides="train.max_minutes=20"

1. scores `--model` on the shapes-GenEval prompts of `--split` (images per
   prompt, guidance and seeds fixed) and VQA on held-out images;
2. runs the GRPO job (`configs/grpo.py:<preset>` + `--overrides`, model =
   `--model`) into WORKDIR/grpo (skipped when it finished before);
3. scores the tuned bundle (WORKDIR/grpo/bundle) the same way;
4. writes results/grpo_gain_<time>.json (per category before / after, the
   GRPO report, the machine) and WORKDIR/side_by_side.png: per prompt, the
   image before and the image after, with ok / x.

The prompts GRPO trains on are the prompt set's seen part
(`prompts.source`); `--split=heldout` scores prompts it never saw.
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax import metrics
from nextflow_jax.evals import shapes_geneval
# pylint: enable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODEL = flags.DEFINE_string("model", "pretrained/shapes-cpu",
                             "Bundle or pretraining workdir to tune.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/grpo_gain", "Outputs.")
_PRESET = flags.DEFINE_string("preset", "cpu", "configs/grpo.py preset.")
_OVERRIDES = flags.DEFINE_list("overrides", [], "key=value items for the "
                               "GRPO config.")
_SPLIT = flags.DEFINE_enum("split", "all", ["all", "heldout", "seen"],
                           "Prompts scored.")
_IMAGES = flags.DEFINE_integer("images_per_prompt", 2, "Images per prompt.")
_GUIDANCE = flags.DEFINE_float("guidance", 3.0, "CFG of the scores.")
_VQA = flags.DEFINE_integer("vqa_images", 32, "Held-out images for VQA.")


def score(gen, prompts, out_dir):
  """shapes-GenEval and VQA of a generator (fixed seeds)."""
  return common.score_generator(gen, prompts, out_dir, _IMAGES.value,
                                _GUIDANCE.value, _VQA.value)


def main(argv):
  del argv
  workdir = _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  prompts = shapes_geneval.load_prompt_set(split=_SPLIT.value)
  before = score(common.load_generator(_MODEL.value), prompts,
                 os.path.join(workdir, "before"))
  grpo_dir = os.path.join(workdir, "grpo")
  if not os.path.exists(os.path.join(grpo_dir, "grpo_report.json")):
    arg = ",".join([_PRESET.value, f"model={_MODEL.value}",
                    *_OVERRIDES.value])
    subprocess.run([sys.executable, "-m", "nextflow_jax.main",
                    f"--config=configs/grpo.py:{arg}",
                    f"--workdir={grpo_dir}"], check=True, cwd=ROOT)
  with open(os.path.join(grpo_dir, "grpo_report.json")) as f:
    report = json.load(f)
  after = score(common.load_generator(os.path.join(grpo_dir, "bundle")), prompts,
                os.path.join(workdir, "after"))
  rows, labels = [], []
  for i, p in enumerate(prompts):
    marks = []
    row = []
    for name, result in (("before", before), ("after", after)):
      for k in range(_IMAGES.value):
        image = f"{i:03d}_{k}.png"
        row.append(np.asarray(Image.open(os.path.join(
            workdir, name, image)).convert("RGB")))
        ok = next(r["correct"] for r in result["images"]
                  if r["image"] == image)
        marks.append(("ok" if ok else "x"))
    rows.append(row)
    labels.append(f"{p['prompt']}: before {' '.join(marks[:_IMAGES.value])}"
                  f" | after {' '.join(marks[_IMAGES.value:])}")
  metrics.save_png(os.path.join(workdir, "side_by_side.png"),
                   metrics.labeled_grid(rows, labels))
  strip = lambda r: {k: v for k, v in r.items() if k != "images"}  # pylint: disable=unnecessary-lambda-assignment
  path = common.write_result("grpo_gain", {
      "model": _MODEL.value, "preset": _PRESET.value,
      "overrides": _OVERRIDES.value, "split": _SPLIT.value,
      "images_per_prompt": _IMAGES.value, "guidance": _GUIDANCE.value,
      "before": strip(before), "after": strip(after), "grpo": report})
  print(json.dumps({"before": before["overall"], "after": after["overall"],
                    "vqa_before": before["vqa_accuracy"],
                    "vqa_after": after["vqa_accuracy"]}, indent=2))
  print("wrote", path)


if __name__ == "__main__":
  app.run(main)
