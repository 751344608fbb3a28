# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Tokenizer recipe ablations: which knobs make shapes reconstructable?

  python experiments/tokenizer_recipes.py --recipes=base,l2 --steps=800 \
      --runs=runs/recipes

Each recipe is a list of `configs/tokenizer.py` overrides (`RECIPES` below)
on top of `--preset`. Every run trains for `--steps` steps (a step count,
not a time budget, so runs compare whatever else shares the machine),
evaluates every `--eval_every` steps, and records PSNR and the
prompt-following ceiling (shapes-GenEval of reconstructed held-out shapes
images, `eval.geneval_images` of them) at each evaluation, with the
seconds per step. A run whose workdir already has `--steps` steps is only
read back. Writes experiments/results/tokenizer_recipes_<name>_<time>.json.
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
# Shapes only, pixel branch, no GAN, no scale dropout: what each recipe
# changes is listed in it.
BASE = ("data.sources=shapes/64px", "data.weights=1.0",
        "tokenizer.scale_drop_prob=0.0", "loss.gan_start_step=1000000")
P4 = ("tokenizer.patch_size=4", "tokenizer.channel_mults=(1,2)",
      "tokenizer.channels=64")
P2_32 = ("data.sources=shapes/32px", "data.image_size=32",
         "tokenizer.patch_size=2", "tokenizer.channel_mults=(1,2)",
         "tokenizer.channels=64")
RECIPES = {
    "base": ("optim.lr=1e-3",),
    "lr3e-4": ("optim.lr=3e-4",),
    "l2": ("optim.lr=1e-3", "loss.recon_kind=l2"),
    "plain_vq": ("optim.lr=1e-3", "tokenizer.normalize=False"),
    "wide": ("optim.lr=1e-3", "tokenizer.channels=48"),
    "scale_drop": ("optim.lr=1e-3", "tokenizer.scale_drop_prob=0.5"),
    "gan": ("optim.lr=1e-3", "loss.gan_start_step=400"),
    "k4096": ("optim.lr=1e-3", "tokenizer.codebook_size=4096"),
    # Space-to-depth stem + pixel-shuffle head: no conv at 64x64 (9x faster
    # per step on the 2-core CPU).
    "p4": ("optim.lr=1e-3",) + P4,
    "p4_plain": ("optim.lr=1e-3", "tokenizer.normalize=False") + P4,
    # 32 px, 4x: the same 8x8 final grid, each token covers 4x4 pixels.
    "p2_32px": ("optim.lr=1e-3",) + P2_32,
    # The probe's winner in the trainer: 600 autoencoder steps, codebook
    # seeded from residuals, then k-means (EMA) codes on plain L2.
    "p2_32px_kmeans": ("optim.lr=1e-3", "tokenizer.normalize=False",
                       "codes.codebook_update=kmeans",
                       "codes.autoencoder_steps=600") + P2_32,
}

_RECIPES = flags.DEFINE_list("recipes", ["base"], f"From {sorted(RECIPES)}.")
_PRESET = flags.DEFINE_string("preset", "cpu_pixel", "configs/tokenizer.py "
                              "preset.")
_STEPS = flags.DEFINE_integer("steps", 800, "Steps per run.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 200, "Steps between evals.")
_RUNS = flags.DEFINE_string("runs", "runs/recipes", "Workdirs go here.")
_NAME = flags.DEFINE_string("name", "shapes", "Result file name.")


def run_recipe(name: str) -> dict:
  overrides = (*BASE, *RECIPES[name], f"train.num_steps={_STEPS.value}",
               "train.max_minutes=0", f"train.eval_every_steps="
               f"{_EVAL_EVERY.value}", f"train.ckpt_every_steps="
               f"{_EVAL_EVERY.value}", "train.log_every_steps=50")
  workdir = os.path.join(_RUNS.value, name)
  arg = ",".join((_PRESET.value, *overrides))
  command = [sys.executable, "-m", "nextflow_jax.main",
             f"--config=configs/tokenizer.py:{arg}", f"--workdir={workdir}"]
  report = os.path.join(workdir, "tokenizer_report.json")
  seconds = None
  if not os.path.exists(report) or json.load(open(report))["steps"] < (
      _STEPS.value):
    start = time.perf_counter()
    with open(os.path.join(_RUNS.value, f"{name}.log"), "w") as log:
      subprocess.run(command, check=True, cwd=ROOT, stdout=log,
                     stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
  evals = {}
  for step in range(_EVAL_EVERY.value, _STEPS.value + 1, _EVAL_EVERY.value):
    path = os.path.join(workdir, f"eval_{step}.json")
    if os.path.exists(path):
      shapes = next(v for k, v in json.load(open(path)).items()
                    if k.startswith("shapes/"))
      evals[step] = {"psnr": shapes["psnr"], "ssim": shapes["ssim"],
                     "geneval_overall": shapes.get("geneval_overall"),
                     "geneval": shapes.get("geneval", {}).get("categories"),
                     "codebook_usage": shapes["codebook_usage"]}
  return {"recipe": name, "overrides": list(overrides),
          "command": " ".join(command), "wall_seconds": seconds,
          "seconds_per_step": seconds / _STEPS.value if seconds else None,
          "evals": evals}


def main(argv):
  del argv
  os.makedirs(_RUNS.value, exist_ok=True)
  rows = []
  for name in _RECIPES.value:
    rows.append(run_recipe(name))
    last = rows[-1]["evals"].get(_STEPS.value, {})
    print(f"{name:<12} psnr {last.get('psnr', float('nan')):6.2f}  "
          f"geneval {last.get('geneval_overall') or float('nan'):.3f}  "
          f"s/step {rows[-1]['seconds_per_step'] or float('nan'):.2f}",
          flush=True)
  print("wrote", common.write_result(f"tokenizer_recipes_{_NAME.value}",
                                     {"preset": _PRESET.value,
                                      "steps": _STEPS.value, "runs": rows}))


if __name__ == "__main__":
  app.run(main)
