# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Prefix tuning against full GRPO, with and without VMR, at one budget.

  python experiments/grpo_prefix_sweep.py --model=pretrained/shapes-cpu \
      --workdir=runs/prefix_sweep \
      --settings="m1:grpo.prefix_scales=1" \
      --settings="m3:grpo.prefix_scales=3" \
      --settings="all:grpo.prefix_scales=0" \
      --settings="m3_vmr:grpo.prefix_scales=3;grpo.vmr_continuations=2" \
      --overrides="train.num_steps=60,optim.lr=1e-4"

1. scores `--model` once (shapes-GenEval of `--split`, `--images_per_prompt`
   images per prompt at guidance `--guidance`, seed 0; VQA on held-out
   images);
2. for every setting NAME:k=v;k=v, runs the GRPO job
   (`configs/grpo.py:<preset>` + `--overrides` + the setting, model =
   `--model`) into WORKDIR/NAME (skipped when it finished before), so every
   setting has the same updates, rollouts and learning rate: an equal
   budget in samples (not in seconds: VMR samples K continuations more);
3. scores each tuned bundle the same way and reads its training reward
   curve from the event files;
4. writes results/grpo_prefix_sweep_<time>.json (per setting: scores per
   category, VQA, minutes, the reward curve) and WORKDIR/reward_curves.png.
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax import metrics
from nextflow_jax.evals import shapes_geneval
# pylint: enable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODEL = flags.DEFINE_string("model", "pretrained/shapes-cpu",
                             "Bundle or pretraining workdir to tune.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/prefix_sweep", "Outputs.")
_PRESET = flags.DEFINE_string("preset", "cpu", "configs/grpo.py preset.")
_SETTINGS = flags.DEFINE_multi_string(
    "settings", ["m1:grpo.prefix_scales=1", "m3:grpo.prefix_scales=3",
                 "all:grpo.prefix_scales=0"],
    "NAME:key=value;key=value, one GRPO run each.")
_OVERRIDES = flags.DEFINE_list("overrides", ["train.num_steps=60"],
                               "key=value items shared by every run.")
_SPLIT = flags.DEFINE_enum("split", "all", ["all", "heldout", "seen"],
                           "Prompts scored.")
_IMAGES = flags.DEFINE_integer("images_per_prompt", 2, "Images per prompt.")
_GUIDANCE = flags.DEFINE_float("guidance", 3.0, "CFG of the scores.")
_VQA = flags.DEFINE_integer("vqa_images", 32, "Held-out images for VQA.")


def parse_setting(text: str) -> tuple[str, list[str]]:
  """'NAME:k=v;k=v' -> (NAME, ['k=v', 'k=v'])."""
  name, sep, items = text.partition(":")
  if not sep or not name or any("=" not in i for i in items.split(";") if i):
    raise app.UsageError(f"--settings={text!r}: write NAME:key=value;"
                         "key=value (e.g. m3:grpo.prefix_scales=3).")
  return name, [i for i in items.split(";") if i]


def _summary(result: dict) -> dict:
  return {k: v for k, v in result.items() if k != "images"}


def main(argv):
  del argv
  settings = [parse_setting(s) for s in _SETTINGS.value]
  workdir = _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  prompts = shapes_geneval.load_prompt_set(split=_SPLIT.value)
  score = lambda gen, out: _summary(common.score_generator(  # pylint: disable=unnecessary-lambda-assignment
      gen, prompts, out, _IMAGES.value, _GUIDANCE.value, _VQA.value))
  before = score(common.load_generator(_MODEL.value),
                 os.path.join(workdir, "before"))
  print("before:", before["overall"], "VQA", before["vqa_accuracy"])
  runs = {}
  for name, items in settings:
    run_dir = os.path.join(workdir, name)
    if not os.path.exists(os.path.join(run_dir, "grpo_report.json")):
      arg = ",".join([_PRESET.value, f"model={_MODEL.value}",
                      *_OVERRIDES.value, *items])
      subprocess.run([sys.executable, "-m", "nextflow_jax.main",
                      f"--config=configs/grpo.py:{arg}",
                      f"--workdir={run_dir}"], check=True, cwd=ROOT)
    with open(os.path.join(run_dir, "grpo_report.json")) as f:
      report = json.load(f)
    curve = metrics.read_scalars(run_dir).get("reward/mean", [])
    after = score(common.load_generator(os.path.join(run_dir, "bundle")),
                  os.path.join(run_dir, "scored"))
    runs[name] = {"overrides": items, "grpo": report, "after": after,
                  "reward_curve": curve}
    print(name, "after:", after["overall"], "VQA", after["vqa_accuracy"],
          f"({report['minutes']} min)")

  fig, ax = plt.subplots(figsize=(6, 4))
  for name, run in runs.items():
    steps = [s for s, _ in run["reward_curve"]]
    values = [v for _, v in run["reward_curve"]]
    window = 10
    smooth = [sum(values[max(0, i - window + 1):i + 1]) /
              len(values[max(0, i - window + 1):i + 1])
              for i in range(len(values))]
    ax.plot(steps, smooth, label=f"{name} ({run['after']['overall']:.3f})")
  ax.set_xlabel("update")
  ax.set_ylabel(f"training reward (mean of {window} updates)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "reward_curves.png"), dpi=100)
  path = common.write_result("grpo_prefix_sweep", {
      "model": _MODEL.value, "preset": _PRESET.value,
      "overrides": _OVERRIDES.value, "split": _SPLIT.value,
      "images_per_prompt": _IMAGES.value, "guidance": _GUIDANCE.value,
      "before": before, "runs": runs})
  print(json.dumps({"before": before["overall"], **{
      n: r["after"]["overall"] for n, r in runs.items()}}, indent=2))
  print("wrote", path)


if __name__ == "__main__":
  app.run(main)
