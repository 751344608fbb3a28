# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Validates the shapes-GenEval evaluator itself, and measures tokenizer
ceilings.

  # the evaluator on renders, blurred / JPEG renders, and on wrong images
  # (blank; every colour, or every shape, changed) of the held-out
  # shapes/64px scenes (--image_size=32: of shapes/32px_8k):
  python experiments/shapes_geneval_validate.py
  # plus the ceiling of tokenizers: shapes-GenEval of their reconstructions
  # of the same held-out images (no generator can beat it):
  python experiments/shapes_geneval_validate.py \
      --tokenizers=runs/tokA,runs/tokB [--name=tokenizers]

Every image is scored against the prompt of each category its scene
satisfies (`shapes_geneval.score_scenes`). Writes
experiments/results/shapes_geneval_<name>_<time>.json (with the machine)
and, per tokenizer, a PNG of held-out images over their reconstructions.
"""

import dataclasses
import io
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageFilter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax import bundle
from nextflow_jax import checkpoint
from nextflow_jax import metrics
from nextflow_jax import scales
from nextflow_jax import workdirs
from nextflow_jax.data import shapes
from nextflow_jax.evals import reconstruction
from nextflow_jax.evals import shapes_geneval
# pylint: enable=g-import-not-at-top,wrong-import-position

_NUM = flags.DEFINE_integer("num_images", 500, "Held-out scenes to use.")
_TOKENIZERS = flags.DEFINE_list("tokenizers", [], "Tokenizer workdirs whose "
                                "reconstructions to score.")
_NAME = flags.DEFINE_string("name", "validation", "Result file name.")
_SIZE = flags.DEFINE_enum("image_size", "64", ["32", "64"], "Which shapes "
                          "config's held-out scenes (px).")
_DATASET = flags.DEFINE_string("dataset", "", "Shapes config of the held-out "
                               "scenes ('': the image size's default, e.g. "
                               "32px_8k; or 32px_8k_grid4).")
_SCHEDULE = flags.DEFINE_string("schedule", "", "Reconstruct from the codes "
                                "of this schedule instead of the "
                                "tokenizer's own (e.g. 1,2,4,8).")
_JPEG = flags.DEFINE_integer("jpeg_quality", 75, "JPEG quality (PIL's "
                             "default 75, 4:2:0 chroma subsampling).")


def variants(image: Image.Image) -> dict[str, np.ndarray]:
  def jpeg(im):
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=_JPEG.value)
    return Image.open(buffer).convert("RGB")
  blurred = image.filter(ImageFilter.GaussianBlur(1.0))
  return {"renders": image, "blur_sigma1": blurred, "jpeg": jpeg(image),
          "blur_sigma1_jpeg": jpeg(blurred)}


def permuted(scene: shapes.Scene, field: str, shift: int = 3) -> shapes.Scene:
  """The scene with every object's colour (or shape) moved `shift` places
  along `COLORS` (or `SHAPES`): the same layout, all of them wrong."""
  names = list(shapes.COLORS if field == "color" else shapes.SHAPES)
  return shapes.Scene(scene.background, tuple(
      dataclasses.replace(o, **{field: names[(names.index(getattr(o, field))
                                              + shift) % len(names)]})
      for o in scene.objects), scene.image_size)


def tokenizer_ceiling(workdir: str, scenes, renders) -> dict:
  model, params, schedule, saved = workdirs.load_tokenizer(workdir)
  if _SCHEDULE.value:
    schedule = scales.parse_schedule(_SCHEDULE.value)
  if saved["data"]["image_size"] != renders.shape[1]:
    raise ValueError(f"{workdir} reads {saved['data']['image_size']} px "
                     f"images, these are {renders.shape[1]} px.")
  reconstruct = reconstruction.make_reconstruct_fn(model, schedule)
  images = renders.astype(np.float32) / 127.5 - 1.0
  t0 = time.perf_counter()
  recons = np.concatenate([np.asarray(reconstruct(params, images[i:i + 50]))
                           for i in range(0, len(images), 50)])
  seconds = time.perf_counter() - t0
  recons = metrics.to_uint8(recons)
  result = shapes_geneval.score_scenes(recons, scenes)
  step = ("bundle" if bundle.is_bundle(workdir) else checkpoint.Checkpointer(
      os.path.join(workdir, "checkpoints")).latest_step())
  grid = metrics.image_grid(np.concatenate([renders[:12], recons[:12]]),
                            num_cols=12)
  name = os.path.basename(os.path.normpath(workdir))
  path = os.path.join(common.RESULTS_DIR, f"ceiling_{_NAME.value}_{name}_"
                      f"{step}.png")
  metrics.save_png(path, grid)
  psnr = float(np.mean(np.asarray(reconstruction.psnr(
      recons.astype(np.float32) / 127.5 - 1, images))))
  return {"workdir": name, "step": step, "psnr": psnr,
          "schedule": scales.format_schedule(schedule),
          "seconds": round(seconds, 2), "grid": os.path.basename(path),
          **result}


def main(argv):
  del argv
  config = shapes.builder_config(_DATASET.value or shapes_geneval.held_out_dataset(
      int(_SIZE.value)))
  scenes = shapes.split_scenes(config, "test")[:_NUM.value]
  images = [shapes.render(s) for s in scenes]
  results = {}
  by_kind = {}
  for image in images:
    for kind, variant in variants(image).items():
      by_kind.setdefault(kind, []).append(np.asarray(variant))
  for kind, arrays in by_kind.items():
    results[kind] = shapes_geneval.score_scenes(arrays, scenes)
  blank = [np.full_like(by_kind["renders"][0], v) for v in (0, 128, 255)]
  results["blank"] = shapes_geneval.score_scenes(
      [blank[i % 3] for i in range(len(scenes))], scenes)
  for field in ("color", "shape"):
    results[f"permuted_{field}s"] = shapes_geneval.score_scenes(
        [np.asarray(shapes.render(permuted(s, field))) for s in scenes],
        scenes)
  renders = np.stack(by_kind["renders"])
  for workdir in _TOKENIZERS.value:
    results[f"tokenizer:{workdir}"] = tokenizer_ceiling(workdir, scenes,
                                                        renders)
  print(f"{'images':<40} overall  " + "  ".join(
      f"{c[:9]:>9}" for c in (*shapes_geneval.grammar.CATEGORIES, "full")))
  for kind, r in results.items():
    cats = "  ".join(f"{r['categories'].get(c, float('nan')):9.3f}" for c in
                     (*shapes_geneval.grammar.CATEGORIES, "full"))
    print(f"{kind[-40:]:<40} {r['overall']:7.3f}  {cats}")
  print("wrote", common.write_result(f"shapes_geneval_{_NAME.value}", {
      "image_size": int(_SIZE.value), "dataset": config.name,
      "num_scenes": len(scenes),
      "jpeg_quality": _JPEG.value,
      "results": results}))


if __name__ == "__main__":
  app.run(main)
