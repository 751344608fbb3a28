# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""shapes-GenEval of one model under several sampling settings.

Loads the model once and scores the prompt set under each named setting
(guidance, per-scale temperature, top-k, top-p), so the knobs that only
change sampling are compared on the same weights and seeds:

  python experiments/sampling_sweep.py --model=runs/k128/nextflow \
      --images_per_prompt=2 --settings=base,cold_fine,greedy_fine

Writes results/sampling_sweep_<date>.json (per setting: per-category and
overall scores) and, with --out, each setting's grid.png under out/<name>/.
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from nextflow_jax.evals import shapes_geneval  # pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax.sampling import generator as generator_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_string("model", None, "Model bundle or workdir.",
                             required=True)
_OUT = flags.DEFINE_string("out", None, "Write each setting's images here.")
_SPLIT = flags.DEFINE_enum("split", "all", ["all", "heldout", "seen"],
                           "Which prompts.")
_IMAGES = flags.DEFINE_integer("images_per_prompt", 2, "Images per prompt.")
_SETTINGS = flags.DEFINE_list("settings", None, "Names from SETTINGS "
                              "(default: all).")

# name -> SamplingConfig fields. A per-scale field is a function of the
# number of scales n (coarse to fine), so one setting fits any schedule.
def _ramp(start, end):
  return lambda n: tuple(float(v) for v in np.linspace(start, end, n))


def _coarse_then(coarse, fine, num_coarse=2):
  return lambda n: tuple([coarse] * min(num_coarse, n) +
                         [fine] * max(0, n - num_coarse))


SETTINGS = {
    "base": dict(guidance=3.0, temperature=1.0, top_p=0.95),
    "no_guidance": dict(guidance=0.0, temperature=1.0, top_p=0.95),
    "guidance1.5": dict(guidance=1.5, temperature=1.0, top_p=0.95),
    "guidance6": dict(guidance=6.0, temperature=1.0, top_p=0.95),
    "cold": dict(guidance=3.0, temperature=0.5, top_p=0.95),
    "cold_fine": dict(guidance=3.0, top_p=0.95, temperature=_ramp(1.0, 0.2)),
    "cold_fine_g6": dict(guidance=6.0, top_p=0.95,
                         temperature=_ramp(1.0, 0.2)),
    "greedy_fine": dict(guidance=3.0, top_p=1.0,
                        temperature=_coarse_then(1.0, 0.0)),
    "top_k4": dict(guidance=3.0, temperature=1.0, top_p=1.0, top_k=4),
    "greedy": dict(guidance=3.0, temperature=0.0, top_p=1.0),
}


def resolve(setting: dict, num_scales: int) -> dict:
  """A SETTINGS entry with its per-scale functions evaluated."""
  return {k: v(num_scales) if callable(v) else v for k, v in setting.items()}


def main(argv):
  del argv
  names = _SETTINGS.value or list(SETTINGS)
  unknown = sorted(set(names) - set(SETTINGS))
  if unknown:
    raise app.UsageError(f"unknown settings {unknown}; known: {list(SETTINGS)}")
  gen = (generator_lib.Generator.from_pretrained(_MODEL.value)
         if os.path.exists(os.path.join(_MODEL.value, "bundle.json")) else
         generator_lib.Generator.from_workdir(_MODEL.value))
  prompts = shapes_geneval.load_prompt_set(split=_SPLIT.value)
  results = {}
  for name in names:
    setting = resolve(SETTINGS[name], len(gen.schedule))
    config = generator_lib.SamplingConfig(seed=0, **setting)
    result = shapes_geneval.evaluate_generator(
        gen, prompts, images_per_prompt=_IMAGES.value, config=config,
        out_dir=os.path.join(_OUT.value, name) if _OUT.value else None)
    result.pop("images")
    results[name] = {"setting": setting,
                     **result}
    print(name, f"overall {result['overall']:.3f}",
          {k: round(v, 3) for k, v in result["categories"].items()},
          flush=True)
  path = common.write_result("sampling_sweep", {
      "model": _MODEL.value, "split": _SPLIT.value,
      "images_per_prompt": _IMAGES.value, "results": results})
  print("wrote", path)


if __name__ == "__main__":
  app.run(main)
