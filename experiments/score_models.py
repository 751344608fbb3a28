# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Several models scored side by side on the same prompts and seeds.

  python experiments/score_models.py --models=pretrained/shapes-cpu,runs/il6k \
      --images_per_prompt=4 --vqa_images=250

Each model (a bundle folder or a pretraining workdir, whose newest
checkpoint is used) gets shapes-GenEval on the prompt set's `--split` (seed
0, guidance `--guidance`) and VQA on `--vqa_images` held-out images, exactly
as `grpo_gain.py` scores before and after. Writes
results/score_models_<time>.json (per model: per-category scores, check
fraction, VQA) with the machine; `--out` keeps each model's images.
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from nextflow_jax.evals import shapes_geneval  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODELS = flags.DEFINE_list("models", None, "Bundles or pretraining workdirs.",
                            required=True)
_OUT = flags.DEFINE_string("out", "", "Write model k's images to out/k/.")
_SPLIT = flags.DEFINE_enum("split", "all", ["all", "heldout", "seen"],
                           "Prompts scored.")
_IMAGES = flags.DEFINE_integer("images_per_prompt", 4, "Images per prompt.")
_GUIDANCE = flags.DEFINE_float("guidance", 3.0, "CFG of the scores.")
_VQA = flags.DEFINE_integer("vqa_images", 250, "Held-out images for VQA.")


def main(argv):
  del argv
  prompts = shapes_geneval.load_prompt_set(split=_SPLIT.value)
  results = {}
  for k, path in enumerate(_MODELS.value):
    out_dir = os.path.join(_OUT.value, str(k)) if _OUT.value else None
    result = common.score_generator(common.load_generator(path), prompts,
                                    out_dir, _IMAGES.value, _GUIDANCE.value,
                                    _VQA.value)
    result.pop("images")
    results[path] = result
    print(path, f"overall {result['overall']:.3f}",
          {c: round(v, 3) for c, v in result["categories"].items()},
          f"check fraction {result['mean_check_fraction']:.3f}",
          f"VQA {result['vqa_accuracy']:.3f}", flush=True)
  path = common.write_result("score_models", {
      "split": _SPLIT.value, "images_per_prompt": _IMAGES.value,
      "guidance": _GUIDANCE.value, "vqa_images": _VQA.value,
      "results": results})
  print("wrote", path)


if __name__ == "__main__":
  app.run(main)
