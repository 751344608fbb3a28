# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""shapes-GenEval: exact on renders, robust to blur, zero on wrong images."""

import io
import json

import numpy as np
from PIL import Image
from PIL import ImageFilter
import pytest

from nextflow_jax.data import shapes
from nextflow_jax.data import shapes_grammar as grammar
from nextflow_jax.evals import shapes_geneval as geneval

SIZE = 64


@pytest.fixture(scope="module")
def scenes():
  rng = np.random.default_rng(7)
  return [shapes.sample_scene(rng, SIZE) for _ in range(40)]


def renders(scenes, blur=0.0, jpeg=None):
  out = []
  for scene in scenes:
    image = shapes.render(scene)
    if blur:
      image = image.filter(ImageFilter.GaussianBlur(blur))
    if jpeg:
      buffer = io.BytesIO()
      image.save(buffer, "JPEG", quality=jpeg)
      image = Image.open(buffer).convert("RGB")
    out.append(np.asarray(image))
  return out


def test_renders_score_one_in_every_category(scenes):
  result = geneval.score_scenes(renders(scenes), scenes)
  assert result["overall"] == 1.0 and result["correct_images"] == 1.0
  assert set(result["categories"]) == {*grammar.CATEGORIES, "full"}


def test_detections_of_a_render_are_its_objects(scenes):
  for scene in scenes[:10]:
    found = geneval.detect(renders([scene])[0])
    want = sorted((o.shape, o.color, o.box) for o in scene.objects)
    assert sorted((d.shape, d.color, d.box) for d in found) == want


@pytest.mark.parametrize("blur,jpeg,floor", [(1.0, None, 0.95),
                                             (0.0, 75, 0.90),
                                             (1.0, 75, 0.85)])
def test_robust_to_blur_and_jpeg(scenes, blur, jpeg, floor):
  """The committed validation (experiments/) measures these on 1000
  scenes; this is a smaller, fixed sample."""
  result = geneval.score_scenes(renders(scenes, blur, jpeg), scenes)
  assert result["overall"] >= floor, result


def test_small_images_exact_and_robust_to_blur():
  """At 32 px a shape is 8-16 px wide: thresholded outlines of a blurred
  cross and a blurred diamond are the same blob (the detector without the
  blurred templates scored 0.50 here), and 8 px crosses are 2 px thick."""
  rng = np.random.default_rng(11)
  small = [shapes.sample_scene(rng, 32) for _ in range(40)]
  assert geneval.score_scenes(renders(small), small)["overall"] == 1.0
  result = geneval.score_scenes(renders(small, blur=1.0), small)
  assert result["overall"] >= 0.9, result


def test_blank_and_recoloured_images_score_zero(scenes):
  blank = [np.full((SIZE, SIZE, 3), 255, np.uint8)] * len(scenes)
  assert geneval.score_scenes(blank, scenes)["overall"] == 0.0
  names = list(shapes.COLORS)
  shifted = [shapes.Scene(s.background, tuple(
      shapes.ShapeObject(o.shape, names[(names.index(o.color) + 3) % 8], o.box)
      for o in s.objects), s.image_size) for s in scenes]
  recoloured = geneval.score_scenes(renders(shifted), scenes)
  # Only prompts that name no colour can still pass.
  assert recoloured["categories"]["colors"] == 0.0
  assert recoloured["categories"]["color_attr"] == 0.0
  assert recoloured["categories"]["full"] == 0.0


def test_checks_count_colour_and_relation():
  def det(shape, color, y, x, side=16):
    return geneval.Detection(color, shape, (y, x, y + side, x + side),
                             side * side, 1.0)
  two = [det("circle", "red", 10, 2), det("circle", "red", 10, 40)]
  assert geneval.check(grammar.parse("two circles"), two).correct
  assert geneval.check(grammar.parse("two red circles"), two).correct
  verdict = geneval.check(grammar.parse("a circle"), two)
  assert not verdict.correct and verdict.failed == ("2 x a circle",)
  assert verdict.fraction == 0.5
  assert not geneval.check(grammar.parse("two blue circles"), two).correct
  scene = [det("circle", "red", 24, 2), det("square", "blue", 24, 40)]
  assert geneval.check(grammar.parse("a circle left of a square"),
                       scene).correct
  wrong = geneval.check(grammar.parse("a circle right of a square"), scene)
  assert wrong.failed == ("not right of",) and wrong.passed == 4
  # Other objects than the prompt's are allowed.
  assert geneval.check(grammar.parse("a square"), scene).correct


def test_relation_cone():
  def det(y, x):
    return geneval.Detection("red", "circle", (y, x, y + 10, x + 10), 100, 1.)
  a, b = [det(30, 0)], [det(30, 40)]
  assert geneval.relation_holds(a, b, "left of")
  assert geneval.relation_holds(b, a, "right of")
  assert not geneval.relation_holds(a, b, "above")
  # 45 degrees holds both; 70 degrees off the axis holds neither.
  assert geneval.relation_holds([det(0, 0)], [det(30, 30)], "left of")
  assert geneval.relation_holds([det(0, 0)], [det(30, 30)], "above")
  assert not geneval.relation_holds([det(0, 0)], [det(30, 11)], "left of")


def test_understanding_scores():
  scene = shapes.Scene("white", (
      shapes.ShapeObject("circle", "red", (20, 2, 36, 18)),
      shapes.ShapeObject("circle", "red", (40, 2, 56, 18)),
      shapes.ShapeObject("square", "blue", (20, 40, 36, 56))), SIZE)
  assert geneval.caption_matches(shapes.caption(scene), scene)
  assert geneval.caption_matches("a blue square right of two red circles",
                                 scene)
  assert not geneval.caption_matches("two red circles", scene)
  assert not geneval.caption_matches("three red circles left of a blue "
                                     "square", scene)
  assert not geneval.caption_matches("red circles everywhere", scene)
  assert geneval.answer_matches(" Two.", "two")
  assert not geneval.answer_matches("three", "two")
  assert geneval.scene_verdict(renders([scene])[0], scene).correct


def test_shipped_prompt_set():
  prompts = geneval.load_prompt_set()
  by_category = {}
  for p in prompts:
    by_category.setdefault(p["category"], []).append(p)
    assert grammar.parse(p["prompt"]).category == p["category"]
  assert {c: len(v) for c, v in by_category.items()} == {
      **{c: 16 for c in grammar.CATEGORIES}, "full": 16}
  held_out = geneval.load_prompt_set(split="heldout")
  assert held_out and all(p["held_out"] for p in held_out)
  assert len(held_out) + len(geneval.load_prompt_set(split="seen")) == len(
      prompts)


@pytest.mark.slow
def test_held_out_prompts_are_no_training_caption():
  """Regenerates the 8000 training scenes of shapes/64px (about 4 s)."""
  train = shapes.split_scenes(shapes.builder_config("64px"), "train")
  seen = {p for s in train for p in grammar.scene_prompts(s).values()}
  for p in geneval.load_prompt_set(split="heldout"):
    assert p["prompt"] not in seen


def test_score_folder_reads_what_a_model_run_writes(scenes, tmp_path):
  prompts = [{"prompt": grammar.scene_prompts(s)["full"], "category": "full",
              "held_out": False} for s in scenes[:3]]
  for i, image in enumerate(renders(scenes[:3])):
    Image.fromarray(image).save(tmp_path / f"{i:03d}_0.png")
  Image.fromarray(renders(scenes[:1])[0]).save(tmp_path / "002_1.png")
  result = geneval.score_folder(str(tmp_path), prompts)
  assert result["num_images"] == 4
  assert [r["correct"] for r in result["images"]] == [True, True, True, False]
  json.dumps(result)
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match=r"has no <prompt index>"):
    geneval.score_folder(str(tmp_path / "empty"), prompts)
