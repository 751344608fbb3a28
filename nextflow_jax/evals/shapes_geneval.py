# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""GenEval for the shapes dataset, exact: does an image show what its prompt
asks for?

GenEval (Ghosh et al.) detects the objects of a generated image and checks
them against the prompt; an image is right or wrong, a category's score is
the mean over its images, and overall is the unweighted mean of the six
categories (`shapes_grammar.CATEGORIES`). Our shapes are drawn by us with
known colours and hard edges, so detection needs no learned detector:

  1. background: the median colour of the image border;
  2. every pixel takes the nearest of the 8 object colours and the 3
     background colours (RGB distance), or none when all are farther than
     `color_threshold`; background-coloured pixels are background;
  3. seeds: connected components of each object colour; components
     smaller than `min_area` or thinner than `min_thickness` (the soft
     fringe a blur or JPEG leaves around an object, e.g. pink around red on
     white) are dropped;
  4. an object's outline: where its colour covers at least half of a pixel
     (unmixing pixel = a * colour + (1 - a) * background), connected to its
     seed and outside the other colours' seeds; a blur keeps a hard edge at
     a = 0.5, so the outline survives it;
  5. the shape, by analysis by synthesis: each class is rendered with hard
     edges into the outline's box, or into the box where the colour covers
     a quarter pixel (which keeps the thin tips a blur eats), blurred by
     0, 0.7, 1 or 1.4 px, and compared with the object's coverage (within
     the pixels nearer to its seed than to any other) by soft IoU; the
     best class wins if its score reaches `min_iou`, otherwise the shape is
     unknown. Modelling the blur is what makes 32 px images readable: there
     the thresholded outlines of a blurred cross and a blurred diamond are
     the same blob.

Checks, for a prompt parsed by the grammar (`shapes_grammar.parse`); only
what the prompt states is checked, other objects are allowed:
  * per group: present (at least one object of its shape, and colour if
    stated) and count (exactly `count` such objects; "a" means one);
  * with a relation: the first group stands in it to the second
    (`relation_holds`: GenEval's 60-degree cone on the mean centres).
An image is correct when every check passes; `fraction` (checks passed /
checks) is a dense reward for RL.

The same grammar scores understanding exactly: `caption_matches` parses a
generated caption and compares it with the true scene; `answer_matches`
compares a VQA answer with the dataset's; an edit is scored by checking the
edited image against the target scene's full caption.

Command line:

  # score a folder of PNGs written as <prompt index>_<k>.png:
  python -m nextflow_jax.evals.shapes_geneval --images=DIR [--prompts=FILE]
  # generate the prompt set with a model (bundle or pretrain workdir) and
  # score it; writes DIR/geneval.json, DIR/grid.png and the PNGs; with
  # --understanding=N also captions, VQA and edits of N held-out images:
  python -m nextflow_jax.evals.shapes_geneval --model=pretrained/shapes-cpu \
      --out=DIR [--images_per_prompt=4] [--split=heldout] [--guidance=3] \
      [--understanding=64]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import dataclasses
import functools
import json
import os
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from nextflow_jax import cli
from nextflow_jax.data import shapes
from nextflow_jax.data import shapes_grammar as grammar

PROMPTS_FILE = os.path.join(os.path.dirname(__file__),
                            "shapes_geneval_prompts.json")
PROMPT_SET_VERSION = 1
_OBJECT_NAMES = tuple(shapes.COLORS)
_PALETTE = np.array([*shapes.COLORS.values(), *shapes.BACKGROUNDS.values()],
                    np.float32)  # object colours first, then backgrounds


@dataclasses.dataclass(frozen=True)
class Detection:
  """One object found in an image.

  Attributes:
    color: a name in `shapes.COLORS`.
    shape: a name in `shapes.SHAPES`, or None when no shape fits.
    box: (y0, x0, y1, x1), half-open, in pixels.
    area: pixels of the object.
    iou: overlap of its mask with the best shape template.
  """
  color: str
  shape: str | None
  box: tuple[int, int, int, int]
  area: int
  iou: float

  @property
  def center(self) -> tuple[float, float]:
    y0, x0, y1, x1 = self.box
    return (y0 + y1) / 2, (x0 + x1) / 2


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
  """Detection thresholds (defaults validated in `experiments/`).

  Attributes:
    color_threshold: largest RGB distance at which a pixel still takes
      the nearest palette colour.
    min_area_fraction: smallest object, as a fraction of the image area
      (the smallest drawn object covers about 1/32 of it).
    min_thickness: smallest inscribed radius (pixels) of an object; thin
      fringes are dropped (an 8 px cross of a 32 px image has 2 px arms,
      radius 1.41).
    min_iou: smallest template overlap (soft IoU) for a shape to be named.
  """
  color_threshold: float = 90.0
  min_area_fraction: float = 1 / 160
  min_thickness: float = 1.4
  min_iou: float = 0.55


def _as_uint8(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"an image has shape (H, W, 3); got {image.shape}.")
  if image.dtype != np.uint8:
    if not np.issubdtype(image.dtype, np.floating):
      raise ValueError(f"images are uint8 or floats in [-1, 1]; got "
                       f"{image.dtype}.")
    image = np.clip(np.round((image + 1.0) * 127.5), 0, 255).astype(np.uint8)
  return image


@functools.lru_cache(maxsize=4096)
def _template(shape: str, height: int, width: int) -> np.ndarray:
  """(height, width) bool mask of `shape` drawn into its whole box."""
  size = max(height, width, shapes.MIN_IMAGE_SIZE)
  scene = shapes.Scene("black", (shapes.ShapeObject(
      shape, "red", (0, 0, height, width)),), size)
  return np.asarray(shapes.render(scene))[:height, :width, 0] > 0


# Blurs (Gaussian sigma, pixels) that templates are compared under.
_TEMPLATE_BLURS = (0.0, 0.7, 1.0, 1.4)


def _shape_of(coverage: np.ndarray, support: np.ndarray,
              boxes: Sequence[tuple[int, int, int, int]]
              ) -> tuple[str, float]:
  """(best shape, its score in [0, 1]) of one object, by analysis by
  synthesis.

  Each shape's hard-edged template is drawn into each candidate box (the
  box where the object covers half a pixel, and the one where it covers a
  quarter, which keeps the thin tips a blur eats), blurred by each of
  `_TEMPLATE_BLURS`, and compared with the object's coverage (its colour's
  share of each pixel, within `support`) by soft IoU, sum(min) / sum(max);
  the best triple wins. Modelling the blur keeps a blurred cross a cross
  and a blurred diamond a diamond on 32 px images, where their thresholded
  outlines are nearly the same blob.

  Args:
    coverage: (H, W) in [0, 1], `_coverage` of the object's colour.
    support: (H, W) bool, the pixels that may belong to the object.
    boxes: candidate (y0, x0, y1, x1) boxes, half-open.
  """
  pad = 3
  height, width = coverage.shape
  wy0 = max(min(b[0] for b in boxes) - pad, 0)
  wx0 = max(min(b[1] for b in boxes) - pad, 0)
  wy1 = min(max(b[2] for b in boxes) + pad, height)
  wx1 = min(max(b[3] for b in boxes) + pad, width)
  target = (coverage * support)[wy0:wy1, wx0:wx1]
  best, best_score = shapes.SHAPES[0], -1.0
  for y0, x0, y1, x1 in dict.fromkeys(boxes):
    for shape in shapes.SHAPES:
      hard = np.zeros(target.shape, np.float32)
      hard[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0] = _template(shape, y1 - y0,
                                                            x1 - x0)
      for sigma in _TEMPLATE_BLURS:
        template = ndimage.gaussian_filter(hard, sigma) if sigma else hard
        score = float(np.minimum(target, template).sum() / max(
            np.maximum(target, template).sum(), 1e-6))
        if score > best_score:
          best, best_score = shape, score
  return best, best_score


def _grow(region: np.ndarray, seed: np.ndarray,
          others: np.ndarray) -> np.ndarray:
  """The components of `region` (outside `others`) that touch `seed`, and
  the seed."""
  components, _ = ndimage.label(region & ~others)
  ids = np.unique(components[seed])
  return np.isin(components, ids[ids > 0]) | seed


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
  """(y0, x0, y1, x1), half-open, of a non-empty mask."""
  (y0, y1), (x0, x1) = [(int(np.min(i)), int(np.max(i)) + 1)
                        for i in np.nonzero(mask)]
  return y0, x0, y1, x1


def _coverage(image: np.ndarray, color: np.ndarray,
              background: np.ndarray) -> np.ndarray:
  """(H, W) in [0, 1]: how much of each pixel the object colour covers,
  unmixing pixel = a * color + (1 - a) * background. A blur keeps a hard
  edge where a = 0.5, so the mask a >= 0.5 keeps an object's true outline
  (nearest-colour labels lose the soft fringe, and thin tips with it)."""
  direction = color - background
  a = (image - background) @ direction / max(float(direction @ direction),
                                            1.0)
  return np.clip(a, 0.0, 1.0)


def label_pixels(image: np.ndarray, threshold: float
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(labels, background colour). labels (H, W) int: index into `COLORS`
  for object pixels, -1 for background, -2 for pixels far from every
  palette colour."""
  pixels = image.astype(np.float32)
  border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0],
                           pixels[:, -1]])
  background = np.median(border, axis=0)
  palette = np.concatenate([_PALETTE, background[None]])
  dist = np.linalg.norm(pixels[..., None, :] - palette, axis=-1)
  nearest = np.argmin(dist, axis=-1)
  labels = np.where(nearest < len(_OBJECT_NAMES), nearest, -1)
  return np.where(np.min(dist, axis=-1) > threshold, -2, labels), background


def detect(image: np.ndarray,
           settings: DetectorSettings = DetectorSettings()
           ) -> list[Detection]:
  """The objects of one image (H, W, 3), uint8 or floats in [-1, 1]."""
  image = _as_uint8(image)
  labels, background = label_pixels(image, settings.color_threshold)
  pixels = image.astype(np.float32)
  min_area = settings.min_area_fraction * image.shape[0] * image.shape[1]
  # Seeds: components of each object colour that are large and thick
  # enough to be objects (a blur's fringe, e.g. pink around red, is not).
  seeds = []
  for color_index in np.unique(labels[labels >= 0]):
    components, _ = ndimage.label(labels == color_index)
    for index, box in enumerate(ndimage.find_objects(components), start=1):
      seed = components == index
      if seed.sum() < min_area:
        continue
      if ndimage.distance_transform_edt(np.pad(seed[box], 1)).max() < (
          settings.min_thickness):
        continue
      seeds.append((int(color_index), seed))
  # Each pixel's owner: the nearest seed (a Voronoi split), so that a
  # neighbour's blurred edge does not count as part of an object's shape.
  seed_ids = np.zeros(labels.shape, np.int32)
  for number, (_, seed) in enumerate(seeds, start=1):
    seed_ids[seed] = number
  if seeds:
    _, (rows, cols) = ndimage.distance_transform_edt(seed_ids == 0,
                                                     return_indices=True)
    owner = seed_ids[rows, cols]
  found = []
  for number, (color_index, seed) in enumerate(seeds, start=1):
    # The outline: where the object colour covers at least half a pixel,
    # outside the other colours' objects.
    others = np.zeros_like(seed)
    for other_index, other in seeds:
      if other_index != color_index:
        others |= other
    coverage = _coverage(pixels, _PALETTE[color_index], background)
    mask = _grow(coverage >= 0.5, seed, others)
    faint = _grow(coverage >= 0.25, mask, others)
    box = _box(mask)
    support = ndimage.binary_dilation(faint, iterations=2) & (
        owner == number)
    shape, iou = _shape_of(coverage, support, (box, _box(faint)))
    found.append(Detection(
        color=_OBJECT_NAMES[color_index],
        shape=shape if iou >= settings.min_iou else None,
        box=box, area=int(mask.sum()), iou=iou))
  return found


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The checks of one image against one prompt."""
  correct: bool
  passed: int
  total: int
  failed: tuple[str, ...]

  @property
  def fraction(self) -> float:
    return self.passed / self.total


def _matches(group: grammar.Group,
             detections: Sequence[Detection]) -> list[Detection]:
  return [d for d in detections if d.shape == group.shape and (
      group.color is None or d.color == group.color)]


def check(request: grammar.Request,
          detections: Sequence[Detection]) -> Verdict:
  """Checks detections against a request (see the module docstring)."""
  failed = []
  total = 0
  matched = []
  for group in request.groups:
    found = _matches(group, detections)
    matched.append(found)
    name = grammar.render(grammar.Request((group,)))
    total += 2
    if not found:
      failed.append(f"no {name}")
    if len(found) != group.count:
      failed.append(f"{len(found)} x {name}")
  if request.relation is not None:
    total += 1
    if not all(matched) or not relation_holds(*matched, request.relation):
      failed.append(f"not {request.relation}")
  return Verdict(correct=not failed, passed=total - len(failed), total=total,
                 failed=tuple(failed))


def relation_holds(first: Sequence[Detection], second: Sequence[Detection],
                   relation: str) -> bool:
  """Whether the first group stands in `relation` to the second: the offset
  of their mean centres lies within 60 degrees of the relation's direction
  (its normalised component along it exceeds 0.5), GenEval's cone. GenEval
  also shrinks the offset by 0.1 x the objects' sizes; we do not, because
  the dataset draws relations with a stricter rule (`shapes.relation`:
  within 45 degrees, every centre on its side), which every rendered scene
  must pass."""
  ya, xa = np.mean([d.center for d in first], axis=0)
  yb, xb = np.mean([d.center for d in second], axis=0)
  offset = np.array([xa - xb, ya - yb], np.float64)
  norm = np.linalg.norm(offset)
  if norm == 0:
    return False
  direction = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1),
               "below": (0, 1)}[relation]
  return float(np.dot(offset / norm, direction)) > 0.5


def score(image: np.ndarray, prompt: str,
          settings: DetectorSettings = DetectorSettings()) -> Verdict:
  """Checks one image against one prompt of the grammar."""
  return check(grammar.parse(prompt), detect(image, settings))


def summarize(categories: Sequence[str],
              verdicts: Sequence[Verdict]) -> dict[str, Any]:
  """Per-category accuracy, overall (the unweighted mean of the six
  categories present), % correct images and the mean check fraction."""
  if len(categories) != len(verdicts):
    raise ValueError(f"{len(categories)} categories for {len(verdicts)} "
                     "verdicts.")
  per = {}
  for name in (*grammar.CATEGORIES, grammar.FULL):
    chosen = [v.correct for c, v in zip(categories, verdicts) if c == name]
    if chosen:
      per[name] = float(np.mean(chosen))
  six = [per[c] for c in grammar.CATEGORIES if c in per]
  return {
      "overall": float(np.mean(six)) if six else float("nan"),
      "categories": per,
      "correct_images": float(np.mean([v.correct for v in verdicts])),
      "mean_check_fraction": float(np.mean([v.fraction for v in verdicts])),
      "num_images": len(verdicts),
  }


# ------------------------------------------------------------ understanding


def caption_matches(caption: str, scene: shapes.Scene) -> bool:
  """Whether a generated caption states exactly the scene: every group's
  count, colour and shape, and the relation (a caption outside the grammar
  does not match)."""
  try:
    request = grammar.parse(caption)
  except ValueError:
    return False
  want = grammar.scene_request(scene)
  return (sorted(request.groups, key=str) == sorted(want.groups, key=str)
          and _same_relation(request, want))


def _same_relation(a: grammar.Request, b: grammar.Request) -> bool:
  if a.relation is None or b.relation is None:
    return a.relation == b.relation
  inverse = {"left of": "right of", "right of": "left of", "above": "below",
             "below": "above"}
  if a.groups[0] == b.groups[0]:
    return a.relation == b.relation
  return a.relation == inverse[b.relation]


def answer_matches(answer: str, reference: str) -> bool:
  """VQA: the answer equals the dataset's (case and spaces ignored)."""
  def norm(text):
    return " ".join(str(text).lower().strip().rstrip(".?!").split())
  return norm(answer) == norm(reference)


def scene_verdict(image: np.ndarray, scene: shapes.Scene,
                  settings: DetectorSettings = DetectorSettings()
                  ) -> Verdict:
  """An image (an edit's result, a reconstruction) against a whole scene:
  its full caption's checks."""
  return check(grammar.scene_request(scene), detect(image, settings))


def score_scenes(images: Sequence[np.ndarray],
                 scenes: Sequence[shapes.Scene],
                 settings: DetectorSettings = DetectorSettings()
                 ) -> dict[str, Any]:
  """GenEval of images that should show known scenes (reconstructions of
  held-out images, the dataset's renders): each image is checked against
  the prompt of every category its scene satisfies
  (`shapes_grammar.scene_prompts`, its full caption included).

  Returns:
    `summarize`'s dict over all (image, prompt) pairs.
  """
  if len(images) != len(scenes):
    raise ValueError(f"{len(images)} images for {len(scenes)} scenes.")
  categories, verdicts = [], []
  for image, scene in zip(images, scenes):
    found = detect(image, settings)
    for category, prompt in grammar.scene_prompts(scene).items():
      categories.append(category)
      verdicts.append(check(grammar.parse(prompt), found))
  return summarize(categories, verdicts)


# --------------------------------------------------------------- prompt sets


def make_prompt_set(*, seed: int = 0, per_category: int = 16,
                    train_scenes: Iterable[shapes.Scene] = (),
                    full_prompts: int = 16) -> dict[str, Any]:
  """A fixed prompt set: `per_category` prompts of each GenEval category
  and `full_prompts` full captions, drawn by a seeded generator (without
  replacement, except in categories with fewer prompts than that).

  A prompt is `held_out` when no training scene yields it (as any of its
  category prompts or its caption, `shapes_grammar.scene_prompts`); where
  a category has enough such prompts, half of its prompts are held out.

  Returns:
    {"version", "seed", "prompts": [{"prompt", "category", "held_out"}]}.
  """
  rng = np.random.default_rng(seed)
  seen = set()
  for scene in train_scenes:
    seen.update(grammar.scene_prompts(scene).values())
  prompts = []
  for category in grammar.CATEGORIES:
    texts = sorted({grammar.render(r) for r in grammar.all_requests(
        (category,))})
    prompts += _draw(rng, texts, seen, per_category, category)
  requests = (grammar.scene_request(shapes.sample_scene(rng, 64))
              for _ in range(50 * full_prompts))
  full = sorted({grammar.render(r) for r in requests
                 if r.category == grammar.FULL})
  prompts += _draw(rng, full, seen, full_prompts, grammar.FULL)
  return {"version": PROMPT_SET_VERSION, "seed": seed, "prompts": prompts}


def _draw(rng, texts, seen, n, category):
  """n prompts of a category, half of them unseen where possible; a
  category with fewer than n prompts repeats them (each repeat gets other
  seeds), so every category weighs the same number of images."""
  unseen = [t for t in texts if t not in seen]
  known = [t for t in texts if t in seen]
  n_unseen = min(len(unseen), n // 2) if known else min(len(unseen), n)
  chosen = [(t, True) for t in rng.permutation(unseen)[:n_unseen]]
  pool = list(rng.permutation(known))
  while pool and len(chosen) < n:
    chosen += [(t, False) for t in pool[:n - len(chosen)]]
  return [{"prompt": str(t), "category": category, "held_out": bool(h)}
          for t, h in chosen]


def write_prompt_set(path: str = PROMPTS_FILE, *, seed: int = 0,
                     per_category: int = 16, full_prompts: int = 16,
                     dataset: str = "64px") -> None:
  """Writes the prompt set shipped in the package: held out against the
  training scenes of shapes/<dataset>."""
  train = shapes.split_scenes(shapes.builder_config(dataset), "train")
  data = make_prompt_set(seed=seed, per_category=per_category,
                         train_scenes=train, full_prompts=full_prompts)
  data["held_out_against"] = f"shapes/{dataset} train"
  with open(path, "w") as f:
    json.dump(data, f, indent=1)


def load_prompt_set(path: str = PROMPTS_FILE,
                    split: str = "all") -> list[dict[str, Any]]:
  """The prompts of a prompt-set file: "all", "heldout" or "seen"."""
  with open(path) as f:
    data = json.load(f)
  if data.get("version") != PROMPT_SET_VERSION:
    raise ValueError(f"{path} is prompt-set version {data.get('version')}; "
                     f"this library reads version {PROMPT_SET_VERSION}.")
  if split not in ("all", "heldout", "seen"):
    raise ValueError(f"split={split!r}; choose 'all', 'heldout' or 'seen'.")
  return [p for p in data["prompts"] if split == "all" or (
      p["held_out"] == (split == "heldout"))]


def score_folder(folder: str, prompts: Sequence[dict[str, Any]],
                 settings: DetectorSettings = DetectorSettings()
                 ) -> dict[str, Any]:
  """Scores `<prompt index>_<k>.png` images of a folder against `prompts`.

  Raises:
    FileNotFoundError: the folder has no such PNG.
  """
  categories, verdicts, rows = [], [], []
  names = sorted(f for f in os.listdir(folder) if f.endswith(".png")
                 and f.split("_")[0].isdigit())
  if not names:
    raise FileNotFoundError(f"{folder} has no <prompt index>_<k>.png images.")
  for name in names:
    index = int(name.split("_")[0])
    if index >= len(prompts):
      raise ValueError(f"{name}: prompt index {index} but the prompt set has "
                       f"{len(prompts)} prompts.")
    with Image.open(os.path.join(folder, name)) as im:
      verdict = score(np.asarray(im.convert("RGB")), prompts[index]["prompt"],
                      settings)
    categories.append(prompts[index]["category"])
    verdicts.append(verdict)
    rows.append({"image": name, **prompts[index],
                 "correct": verdict.correct, "failed": list(verdict.failed)})
  return {**summarize(categories, verdicts), "images": rows}


def evaluate_generator(gen: Any, prompts: Sequence[dict[str, Any]], *,
                       images_per_prompt: int = 4, config: Any = None,
                       batch_size: int = 32, out_dir: str | None = None
                       ) -> dict[str, Any]:
  """Generates `images_per_prompt` images per prompt and scores them.

  Args:
    gen: a `sampling.generator.Generator`.
    prompts: a prompt set (`load_prompt_set`).
    images_per_prompt: GenEval uses 4.
    config: the `SamplingConfig` (its seed is offset per image so the
      images of one prompt differ).
    batch_size: images per sampler call (one compiled program).
    out_dir: if given, writes `<prompt index>_<k>.png`, `grid.png` (each
      prompt's images with ok/x under each) and `geneval.json`.

  Returns:
    `summarize`'s dict plus `images`: one row per image.
  """
  # pylint: disable=g-import-not-at-top
  from nextflow_jax import metrics
  from nextflow_jax.sampling import config as sampling_config
  # pylint: enable=g-import-not-at-top
  config = config or sampling_config.SamplingConfig()
  jobs = [(i, k) for i in range(len(prompts))
          for k in range(images_per_prompt)]
  pixels = {}
  for start in range(0, len(jobs), batch_size):
    chunk = jobs[start:start + batch_size]
    texts = [prompts[i]["prompt"] for i, _ in chunk]
    texts += texts[-1:] * (batch_size - len(chunk))  # one program shape
    out = gen.text_to_image(texts, dataclasses.replace(
        config, seed=config.seed + start))
    for (i, k), image in zip(chunk, out.pixels):
      pixels[i, k] = image
  categories, verdicts, rows = [], [], []
  for (i, k) in jobs:
    verdict = score(pixels[i, k], prompts[i]["prompt"])
    categories.append(prompts[i]["category"])
    verdicts.append(verdict)
    rows.append({"image": f"{i:03d}_{k}.png", **prompts[i],
                 "correct": verdict.correct, "failed": list(verdict.failed)})
  result = {**summarize(categories, verdicts), "images": rows}
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    for (i, k), image in pixels.items():
      metrics.save_png(os.path.join(out_dir, f"{i:03d}_{k}.png"), image)
    labels = []
    for i, prompt in enumerate(prompts):
      marks = " ".join("ok" if r["correct"] else "x" for r in rows
                       if r["image"].startswith(f"{i:03d}_"))
      labels.append(f"{prompt['prompt']} [{prompt['category']}]: {marks}")
    metrics.save_png(os.path.join(out_dir, "grid.png"), metrics.labeled_grid(
        [[pixels[i, k] for k in range(images_per_prompt)]
         for i in range(len(prompts))], labels))
    with open(os.path.join(out_dir, "geneval.json"), "w") as f:
      json.dump(result, f, indent=2)
  return result


# The shapes config whose test split holds the held-out scenes of a size:
# the largest one (32 px recipes train on 32px_8k).
HELD_OUT_DATASETS = {32: "32px_8k", 64: "64px"}


def held_out_dataset(image_size: int) -> str:
  """The shapes config of held-out scenes for `image_size` px models."""
  if image_size not in HELD_OUT_DATASETS:
    raise ValueError(f"shapes has held-out scenes of {sorted(HELD_OUT_DATASETS)}"
                     f" px, not {image_size} px.")
  return HELD_OUT_DATASETS[image_size]


def held_out_examples(num: int, dataset: str = "64px") -> list[dict]:
  """The first `num` records of the shapes test split, regenerated (no data
  folder needed): images as uint8 arrays, scenes as `Scene`s."""
  config = shapes.builder_config(dataset)
  out = []
  for index, seed in shapes.split_indices(config, "test")[:num]:
    example = shapes.make_example(index, seed, config.image_size,
                                  config.num_frames, config.grid)
    out.append({
        "image": np.asarray(example["image"]),
        "scene": shapes.Scene.from_json(example["scene"]),
        "caption": example["caption"], "questions": example["questions"],
        "answers": example["answers"],
        "edit_instruction": example["edit_instruction"],
        "edited_scene": shapes.Scene.from_json(example["edited_scene"])})
  return out


def evaluate_understanding(gen: Any, examples: Sequence[dict], *,
                           config: Any = None, batch_size: int = 32
                           ) -> dict[str, Any]:
  """Captioning, VQA and editing of held-out images, scored exactly.

  Args:
    gen: a `sampling.generator.Generator`.
    examples: `held_out_examples(...)`.
    config: the `SamplingConfig` (greedy text by default).
    batch_size: rows per sampler call.

  Returns:
    {"caption_scene_match", "vqa_accuracy", "edit_accuracy", "rows"}: the
    fraction of captions that state the scene exactly, of answers equal to
    the dataset's (every question of every image), of edited images that
    show the target scene; `rows` holds what was generated.
  """
  from nextflow_jax.sampling import config as sampling_config  # pylint: disable=g-import-not-at-top
  config = config or sampling_config.SamplingConfig()

  def batched(fn, *columns):
    out = []
    for start in range(0, len(columns[0]), batch_size):
      parts = [c[start:start + batch_size] for c in columns]
      pad = batch_size - len(parts[0])
      parts = [np.concatenate([p, np.repeat(p[-1:], pad, 0)]) if isinstance(
          p, np.ndarray) else list(p) + [p[-1]] * pad for p in parts]
      result = fn(*parts)
      out += list(result)[:batch_size - pad]
    return out

  images = np.stack([e["image"] for e in examples])
  captions = batched(lambda im: gen.caption(im, config), images)
  pairs = [(i, q, a) for i, e in enumerate(examples)
           for q, a in zip(e["questions"], e["answers"])]
  answers = batched(lambda im, q: gen.answer(im, q, config),
                    images[[i for i, _, _ in pairs]], [q for _, q, _ in pairs])
  edited = batched(lambda im, t: gen.edit(im, t, config).pixels, images,
                   [e["edit_instruction"] for e in examples])
  caption_ok = [caption_matches(c, e["scene"])
                for c, e in zip(captions, examples)]
  answer_ok = [answer_matches(a, ref) for a, (_, _, ref) in zip(answers,
                                                                pairs)]
  edit_ok = [scene_verdict(im, e["edited_scene"]).correct
             for im, e in zip(edited, examples)]
  return {
      "caption_scene_match": float(np.mean(caption_ok)),
      "vqa_accuracy": float(np.mean(answer_ok)),
      "edit_accuracy": float(np.mean(edit_ok)),
      "num_images": len(examples), "num_questions": len(pairs),
      "rows": [{"caption": c, "reference": e["caption"], "match": bool(ok)}
               for c, e, ok in zip(captions, examples, caption_ok)] + [
                   {"question": q, "answer": a, "reference": r,
                    "match": bool(ok)}
                   for (_, q, r), a, ok in zip(pairs, answers, answer_ok)],
  }


def _main(argv: Sequence[str]) -> None:
  """The command line (module docstring)."""
  # pylint: disable=g-import-not-at-top
  from absl import app
  from absl import flags
  # pylint: enable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  if values.write_prompt_set:
    write_prompt_set(values.write_prompt_set)
    print(f"wrote {values.write_prompt_set}")
    return
  prompts = load_prompt_set(values.prompts, values.split)
  if values.images:
    result = score_folder(values.images, load_prompt_set(values.prompts))
  else:
    from nextflow_jax.sampling import generator as generator_lib  # pylint: disable=g-import-not-at-top
    if not os.path.isdir(values.model):
      raise app.UsageError(f"--model={values.model} is not a folder.")
    gen = (generator_lib.Generator.from_pretrained(values.model)
           if os.path.exists(os.path.join(values.model, "bundle.json")) else
           generator_lib.Generator.from_workdir(values.model))
    result = evaluate_generator(
        gen, prompts, images_per_prompt=values.images_per_prompt,
        config=generator_lib.SamplingConfig(
            seed=values.seed, guidance=values.guidance,
            temperature=values.temperature, top_p=values.top_p),
        batch_size=values.batch_size, out_dir=values.out)
    if values.understanding:
      result["understanding"] = evaluate_understanding(
          gen, held_out_examples(values.understanding,
                                 held_out_dataset(gen.image_size[0])),
          batch_size=values.batch_size)
      with open(os.path.join(values.out, "geneval.json"), "w") as f:
        json.dump(result, f, indent=2)
  shown = {k: v for k, v in result.items() if k != "images"}
  if "understanding" in shown:
    shown["understanding"] = {k: v for k, v in shown["understanding"].items()
                              if k != "rows"}
  print(json.dumps(shown, indent=2))


def _define_flags() -> None:
  # pylint: disable=g-import-not-at-top
  from absl import flags
  # pylint: enable=g-import-not-at-top
  flags.DEFINE_string("images", None, "Score this folder of <prompt index>_"
                      "<k>.png images (written by --model runs).")
  flags.DEFINE_string("model", None, "Generate with this model bundle or "
                      "pretraining workdir, then score.")
  flags.DEFINE_string("out", None, "With --model: where PNGs, grid.png and "
                      "geneval.json go.")
  flags.DEFINE_string("prompts", PROMPTS_FILE, "Prompt-set file.")
  flags.DEFINE_enum("split", "all", ["all", "heldout", "seen"],
                    "With --model: which prompts to generate.")
  flags.DEFINE_integer("images_per_prompt", 4, "Images per prompt.")
  flags.DEFINE_integer("batch_size", 32, "Images per sampler call.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_float("guidance", 3.0, "Classifier-free guidance weight.")
  flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
  flags.DEFINE_float("top_p", 0.95, "Nucleus sampling mass.")
  flags.DEFINE_integer("understanding", 0, "With --model: also caption, "
                       "question and edit this many held-out images.")
  flags.DEFINE_string("write_prompt_set", None, "Write the prompt set "
                      "(seed 0, shapes/64px train scenes) to this file.")
  flags.register_multi_flags_validator(
      ["images", "model", "out", "write_prompt_set"],
      lambda v: v["write_prompt_set"] or (
          bool(v["images"]) != bool(v["model"]) and (
              not v["model"] or bool(v["out"]))),
      "give --images=DIR, or --model=PATH with --out=DIR, or "
      "--write_prompt_set=FILE.")


if __name__ == "__main__":
  from absl import app as _app  # pylint: disable=g-import-not-at-top
  _define_flags()
  _app.run(cli.one_line_errors(_main))
