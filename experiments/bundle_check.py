# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Records what a shipped bundle draws, for its regression test.

  python experiments/bundle_check.py --bundle=pretrained/shapes-cpu

Generates one image for each of `--num_prompts` prompts spread over the
shipped shapes-GenEval prompt set (fixed seed and guidance), scores them and
writes `<bundle>/check.json`: the prompts, the sampling knobs, the overall
score and each image's verdict. `tests/pretrained_test.py` regenerates the
same images and asserts the score stays within a stated margin of this one,
so a change that breaks the sampler, the tokenizer or the parameter layout
fails CI. Rerun this script whenever the bundle is re-exported.
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax.evals import shapes_geneval
from nextflow_jax.sampling import generator as generator_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

CHECK_FILE = "check.json"

_BUNDLE = flags.DEFINE_string("bundle", "pretrained/shapes-cpu", "Bundle.")
_NUM = flags.DEFINE_integer("num_prompts", 64, "Prompts (one image each).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_GUIDANCE = flags.DEFINE_float("guidance", 3.0, "CFG scale.")


def check_prompts(num: int) -> list[dict]:
  """`num` prompts spread evenly over the prompt set (every category)."""
  prompts = shapes_geneval.load_prompt_set()
  return prompts[::max(1, len(prompts) // num)][:num]


def main(argv):
  del argv
  prompts = check_prompts(_NUM.value)
  gen = generator_lib.Generator.from_pretrained(_BUNDLE.value)
  knobs = generator_lib.SamplingConfig(seed=_SEED.value,
                                       guidance=_GUIDANCE.value)
  result = shapes_geneval.evaluate_generator(gen, prompts, images_per_prompt=1,
                                             config=knobs)
  check = {"num_prompts": _NUM.value, "seed": _SEED.value,
           "guidance": _GUIDANCE.value, "overall": result["overall"],
           "correct_images": result["correct_images"],
           "correct": [r["correct"] for r in result["images"]],
           "machine": common.machine()}
  path = os.path.join(_BUNDLE.value, CHECK_FILE)
  with open(path, "w") as f:
    json.dump(check, f, indent=2)
  print(json.dumps({k: v for k, v in check.items() if k != "correct"},
                   indent=2))
  print("wrote", path)


if __name__ == "__main__":
  app.run(main)
