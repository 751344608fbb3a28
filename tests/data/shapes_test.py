# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for nextflow_jax.data.shapes.

Scene properties are checked against oracles written here from the documented
rules (box geometry, pixel colors, question templates), not against the
module's own helpers.
"""

import itertools
import re
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from nextflow_jax.data import shapes

SIZES = (32, 64)
_WORD_NUMBERS = {w: n for n, w in shapes.NUMBER_WORDS.items()}
_PLURAL_TO_SHAPE = {
    ("crosses" if s == "cross" else s + "s"): s for s in shapes.SHAPES
}
_MOVES = {
    "to the left": (0, -1),
    "to the right": (0, 1),
    "up": (-1, 0),
    "down": (1, 0),
}


def _scenes(image_size, n, seed=0):
  """Yields (scene, rng) for n seeded draws; rng continues after the scene."""
  for i in range(n):
    rng = np.random.default_rng([seed, i])
    yield shapes.sample_scene(rng, image_size), rng


def _obj(shape, color, y, x, side):
  return shapes.ShapeObject(shape, color, (y, x, y + side, x + side))


def _groups(scene):
  """{(shape, color): [objects]} built here, independent of Scene.groups."""
  out = {}
  for o in scene.objects:
    out.setdefault((o.shape, o.color), []).append(o)
  return out


def _shape_groups(scene):
  """{shape: [objects]}; sampled scenes have one group per shape."""
  out = {}
  for o in scene.objects:
    out.setdefault(o.shape, []).append(o)
  return out


def _gap_between(a, b):
  """Background pixels between boxes a and b along the separating axis."""
  return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


def _assert_layout(scene, gap=2):
  s = scene.image_size
  for o in scene.objects:
    y0, x0, y1, x1 = o.box
    assert 0 <= y0 < y1 <= s and 0 <= x0 < x1 <= s, o
  for a, b in itertools.combinations(scene.objects, 2):
    assert _gap_between(a.box, b.box) >= gap, (a, b)


def _oracle_relation(scene):
  """The documented relation rule, in floats."""
  groups = list(_groups(scene).values())
  if len(groups) != 2:
    return None
  a, b = groups
  ca = np.array([o.center for o in a])
  cb = np.array([o.center for o in b])
  dy, dx = cb.mean(0) - ca.mean(0)
  if abs(dx) > abs(dy):
    if dx > 0 and ca[:, 1].max() < cb[:, 1].min():
      return "left of"
    if dx < 0 and ca[:, 1].min() > cb[:, 1].max():
      return "right of"
  elif abs(dy) > abs(dx):
    if dy > 0 and ca[:, 0].max() < cb[:, 0].min():
      return "above"
    if dy < 0 and ca[:, 0].min() > cb[:, 0].max():
      return "below"
  return None


def _oracle_describe(objects):
  o = objects[0]
  if len(objects) == 1:
    article = "an" if o.color == "orange" else "a"
    return f"{article} {o.color} {o.shape}"
  plural = "crosses" if o.shape == "cross" else o.shape + "s"
  return f"{shapes.NUMBER_WORDS[len(objects)]} {o.color} {plural}"


def _assert_well_formed(scene):
  """The invariants sample_scene documents."""
  _assert_layout(scene)
  groups = _groups(scene)
  assert 1 <= len(scene.objects) <= shapes.MAX_OBJECTS
  assert 1 <= len(groups) <= 2
  assert len({k[0] for k in groups}) == len({k[1] for k in groups}) == len(
      groups
  )
  if len(groups) == 2:
    assert _oracle_relation(scene) is not None, scene


def _mask(image, rgb):
  return (np.asarray(image) == np.array(rgb, np.uint8)).all(-1)


# -- Constants and Scene -------------------------------------------------------


def test_palette_names_and_colors_are_distinct_and_separated():
  assert not set(shapes.COLORS) & set(shapes.BACKGROUNDS)
  rgbs = list(shapes.COLORS.values()) + list(shapes.BACKGROUNDS.values())
  assert len(set(rgbs)) == len(rgbs)
  distances = [
      np.linalg.norm(np.subtract(a, b))
      for a, b in itertools.combinations(rgbs, 2)
  ]
  assert min(distances) > 80
  assert len(shapes.COLORS) == 8 and len(shapes.SHAPES) == 5
  assert shapes.NUMBER_WORDS == {1: "one", 2: "two", 3: "three", 4: "four"}


def test_scene_json_round_trip_is_exact_and_stable():
  scene = shapes.Scene(
      "gray",
      (_obj("circle", "red", 1, 2, 9), _obj("cross", "blue", 20, 20, 10)),
      32,
  )
  text = scene.to_json()
  assert text == (
      '{"background":"gray","image_size":32,"objects":['
      '{"box":[1,2,10,11],"color":"red","shape":"circle"},'
      '{"box":[20,20,30,30],"color":"blue","shape":"cross"}]}'
  )
  assert shapes.Scene.from_json(text) == scene
  assert shapes.Scene.from_json(text.encode()) == scene
  frames = [scene, shapes.Scene("black", scene.objects[:1], 32)]
  assert shapes.scenes_from_json(shapes.scenes_to_json(frames)) == frames


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: shapes.ShapeObject("hexagon", "red", (0, 0, 8, 8)), "shape"),
        (lambda: shapes.ShapeObject("circle", "teal", (0, 0, 8, 8)), "color"),
        (lambda: shapes.ShapeObject("circle", "red", (8, 0, 8, 8)), "box"),
        (
            lambda: shapes.Scene("navy", (_obj("square", "red", 0, 0, 8),), 32),
            "background",
        ),
        (lambda: shapes.Scene("gray", (), 32), "objects"),
        (
            lambda: shapes.Scene(
                "gray", (_obj("square", "red", 30, 0, 8),), 32
            ),
            "objects",
        ),
    ],
)
def test_scene_rejects_bad_fields(make, name):
  with pytest.raises(ValueError, match=name):
    make()


# -- Sampling ------------------------------------------------------------------


@pytest.mark.parametrize("image_size", SIZES)
def test_sample_scene_invariants(image_size):
  lo, hi = shapes.object_size_range(image_size)
  assert lo >= 8 and hi <= image_size * 3 // 8
  seen = set()
  for scene, _ in _scenes(image_size, 400):
    assert scene.image_size == image_size
    assert scene.background in shapes.BACKGROUNDS
    _assert_well_formed(scene)
    _assert_layout(scene, gap=shapes.min_gap(image_size))
    for o in scene.objects:
      y0, x0, y1, x1 = o.box
      assert y1 - y0 == x1 - x0 and lo <= y1 - y0 <= hi
    counts = tuple(len(g) for g in _groups(scene).values())
    seen.add(counts)
    assert shapes.relation(scene) == _oracle_relation(scene)
  # Every split of 1-4 objects into one or two groups occurs.
  assert seen == {
      (1,), (2,), (3,), (4,), (1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (2, 2)
  }


@pytest.mark.parametrize("max_objects", [1, 2, 3])
def test_sample_scene_respects_max_objects(max_objects):
  for i in range(100):
    scene = shapes.sample_scene(np.random.default_rng(i), 32, max_objects)
    assert 1 <= len(scene.objects) <= max_objects
    _assert_well_formed(scene)


def test_grid_scenes_cover_whole_cells_and_keep_the_invariants():
  """grid=4 at 32 px: every box corner and side on multiples of 4 (whole
  cells of an 8x8 latent), both sides (8 and 12) drawn; grid=1 is the
  unchanged stream of the free layout."""
  sides = set()
  for i in range(200):
    scene = shapes.sample_scene(np.random.default_rng(i), 32, grid=4)
    _assert_well_formed(scene)
    for obj in scene.objects:
      assert all(v % 4 == 0 for v in obj.box), obj
      sides.add(obj.box[2] - obj.box[0])
  assert sides == {8, 12}
  free = shapes.sample_scene(np.random.default_rng(7), 32)
  assert shapes.sample_scene(np.random.default_rng(7), 32, grid=1) == free
  config = shapes.builder_config("32px_8k_grid4")
  scene = shapes.split_scenes(config, "test")[0]
  example = shapes.make_example(*shapes.split_indices(config, "test")[0],
                                32, 4, config.grid)
  assert shapes.Scene.from_json(example["scene"]) == scene
  assert all(v % 4 == 0 for o in scene.objects for v in o.box)
  # grid8: every object is one 8x8 cell of an 8-pixel grid.
  for scene in shapes.split_scenes(shapes.builder_config("32px_8k_grid8"),
                                   "test")[:100]:
    _assert_well_formed(scene)
    for o in scene.objects:
      assert o.box[2] - o.box[0] == 8 and all(v % 8 == 0 for v in o.box)


@pytest.mark.parametrize("image_size", SIZES)
@pytest.mark.parametrize(
    "counts", [(1,), (2,), (3,), (4,), (1, 1), (2, 1), (1, 3), (3, 1), (2, 2)]
)
def test_grid_fallback_layout_is_well_formed(image_size, counts):
  lo, _ = shapes.object_size_range(image_size)
  gap = shapes.min_gap(image_size)
  boxes = shapes._grid_layout(counts, lo, image_size, gap)
  kinds = [("circle", "red")] * counts[0]
  if len(counts) == 2:
    kinds += [("square", "blue")] * counts[1]
  scene = shapes.Scene(
      "gray",
      tuple(shapes.ShapeObject(s, c, b) for (s, c), b in zip(kinds, boxes)),
      image_size,
  )
  _assert_well_formed(scene)
  if len(counts) == 2:
    assert _oracle_relation(scene) == "above"


def test_make_example_is_deterministic_in_seed_and_index():
  a = shapes.make_example(3, 5, 32, 4)
  b = shapes.make_example(3, 5, 32, 4)
  assert a.keys() == b.keys()
  for key in a:
    if key in ("image", "edited_image"):
      assert a[key].tobytes() == b[key].tobytes()
    elif key == "frames":
      assert [f.tobytes() for f in a[key]] == [f.tobytes() for f in b[key]]
    else:
      assert a[key] == b[key]
  scenes = {shapes.make_example(i, 5, 32, 4)["scene"] for i in range(10)}
  assert len(scenes) == 10
  assert shapes.make_example(3, 6, 32, 4)["scene"] != a["scene"]


# -- Rendering -----------------------------------------------------------------


@pytest.mark.parametrize("image_size", SIZES)
def test_render_draws_exactly_the_scene(image_size):
  for scene, _ in _scenes(image_size, 100, seed=1):
    image = shapes.render(scene)
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.shape == (image_size,) * 2 + (3,)
    assert pixels.dtype == np.uint8
    background = _mask(pixels, shapes.BACKGROUNDS[scene.background])
    colors = {tuple(p) for p in pixels.reshape(-1, 3)}
    expected = {shapes.BACKGROUNDS[scene.background]}
    expected |= {shapes.COLORS[o.color] for o in scene.objects}
    assert colors == expected
    covered = np.zeros_like(background)
    for o in scene.objects:
      y0, x0, y1, x1 = o.box
      fill = _mask(pixels, shapes.COLORS[o.color])
      inside = fill[y0:y1, x0:x1]
      # Within its box, an object's pixels are its color or background.
      assert (inside | background[y0:y1, x0:x1]).all()
      assert inside[(y1 - y0) // 2, (x1 - x0) // 2]
      covered[y0:y1, x0:x1] |= inside
    # Every other pixel, the corners included, is background.
    assert (covered | background).all()


def _alone(shape, side, image_size=64):
  """Mask (side, side) of one rendered shape, checking nothing spills out."""
  scene = shapes.Scene(
      "black", (_obj(shape, "red", 5, 7, side),), image_size
  )
  fill = _mask(shapes.render(scene), shapes.COLORS["red"])
  box = fill[5 : 5 + side, 7 : 7 + side]
  assert box.sum() == fill.sum()
  return box


@pytest.mark.parametrize("side", range(8, 25))
def test_each_shape_has_its_form(side):
  masks = {s: _alone(s, side) for s in shapes.SHAPES}
  for shape, m in masks.items():
    # Touches all four box sides; left-right mirror symmetric.
    assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
    assert (m == m[:, ::-1]).all(), shape
  widths = {s: m.sum(1) for s, m in masks.items()}
  corners = lambda m: [m[0, 0], m[0, -1], m[-1, 0], m[-1, -1]]
  assert masks["square"].all()
  circle = masks["circle"]
  assert not any(corners(circle)) and 0.7 < circle.mean() < 0.85
  assert (circle == circle.T).all()
  triangle = widths["triangle"]
  assert triangle[0] <= 2 and triangle[-1] == side
  assert (np.diff(triangle) >= 0).all()
  diamond = masks["diamond"]
  assert not any(corners(diamond)) and (diamond == diamond.T).all()
  assert widths["diamond"][0] <= 2 and widths["diamond"].max() == side
  assert 0.45 < diamond.mean() < 0.65 and len(set(widths["diamond"])) > 2
  cross = masks["cross"]
  assert not any(corners(cross)) and (cross == cross.T).all()
  assert sorted(set(widths["cross"]))[-1] == side
  assert len(set(widths["cross"])) == 2
  arm = widths["cross"][0]
  assert abs(arm - side / 3) <= 1
  assert len({m.tobytes() for m in masks.values()}) == len(masks)


# -- Text ----------------------------------------------------------------------


def test_caption_examples():
  def caption(*objects):
    return shapes.caption(shapes.Scene("white", objects, 64))

  assert caption(_obj("triangle", "orange", 3, 3, 16)) == "an orange triangle"
  assert (
      caption(
          _obj("cross", "yellow", 0, 0, 16),
          _obj("cross", "yellow", 0, 30, 16),
          _obj("cross", "yellow", 30, 0, 16),
      )
      == "three yellow crosses"
  )
  assert (
      caption(
          _obj("circle", "red", 0, 0, 16),
          _obj("circle", "red", 40, 2, 16),
          _obj("square", "blue", 20, 40, 16),
      )
      == "two red circles left of a blue square"
  )
  top_square = _obj("square", "blue", 0, 10, 16)
  low_circle = _obj("circle", "green", 40, 14, 16)
  assert caption(top_square, low_circle) == "a blue square above a green circle"
  low_square = _obj("square", "blue", 40, 10, 16)
  top_circle = _obj("circle", "green", 0, 14, 16)
  assert caption(low_square, top_circle) == "a blue square below a green circle"
  # Interleaved groups have no relation.
  assert (
      caption(
          _obj("circle", "red", 0, 0, 12),
          _obj("circle", "red", 0, 40, 12),
          _obj("square", "blue", 0, 20, 12),
      )
      == "two red circles and a blue square"
  )


@pytest.mark.parametrize("image_size", SIZES)
def test_caption_matches_scene(image_size):
  for scene, _ in _scenes(image_size, 200, seed=2):
    groups = list(_groups(scene).values())
    parts = [_oracle_describe(g) for g in groups]
    expected = parts[0] if len(parts) == 1 else (
        f"{parts[0]} {_oracle_relation(scene)} {parts[1]}"
    )
    assert shapes.caption(scene) == expected


def _kind(question):
  if question == "what color is the background?":
    return "background"
  for prefix, kind in [
      ("how many", "count"),
      ("what color", "color"),
      ("what shape", "shape"),
      ("is there", "exists"),
      ("what is", "relation"),
  ]:
    if question.startswith(prefix):
      return kind
  raise AssertionError(question)


def _answer(scene, question):
  """Answers a templated question from the scene alone."""
  by_shape = _shape_groups(scene)
  if m := re.fullmatch(r"how many (\w+)\?", question):
    return shapes.NUMBER_WORDS[len(by_shape[_PLURAL_TO_SHAPE[m[1]]])]
  if question == "what color is the background?":
    return scene.background
  if m := re.fullmatch(r"what color (is|are) the (\w+)\?", question):
    shape = _PLURAL_TO_SHAPE.get(m[2], m[2])
    group = by_shape[shape]
    assert (m[1] == "is") == (len(group) == 1) == (m[2] == shape)
    return group[0].color
  if m := re.fullmatch(r"what shape is (\w+)\?", question):
    (shape,) = {o.shape for o in scene.objects if o.color == m[1]}
    return shape
  if m := re.fullmatch(r"is there a (\w+)\?", question):
    return "yes" if m[1] in by_shape else "no"
  m = re.fullmatch(r"what is (left of|right of|above|below) the (\w+) (\w+)\?",
                   question)
  assert m, question
  subject = [o for o in scene.objects if o.color == m[2]]
  others = [o for o in scene.objects if o.color != m[2]]
  noun = subject[0].shape if len(subject) == 1 else (
      {v: k for k, v in _PLURAL_TO_SHAPE.items()}[subject[0].shape]
  )
  assert noun == m[3]
  # The asked relation holds for the other group relative to the subject.
  pair = shapes.Scene(
      scene.background, tuple(others + subject), scene.image_size
  )
  assert _oracle_relation(pair) == m[1]
  other_noun = others[0].shape if len(others) == 1 else (
      {v: k for k, v in _PLURAL_TO_SHAPE.items()}[others[0].shape]
  )
  return f"{others[0].color} {other_noun}"


@pytest.mark.parametrize("image_size", SIZES)
def test_questions_are_answered_correctly(image_size):
  kinds = set()
  answers = set()
  for scene, rng in _scenes(image_size, 200, seed=3):
    pairs = shapes.questions(scene, rng)
    assert len(pairs) == shapes.NUM_QUESTIONS
    assert len({_kind(q) for q, _ in pairs}) == len(pairs)
    for question, answer in pairs:
      assert answer == _answer(scene, question), (scene, question)
      kinds.add(_kind(question))
      answers.add(answer)
  assert kinds == {
      "count", "color", "shape", "exists", "background", "relation"
  }
  assert {"yes", "no", "one", "two", "three", "four"} <= answers


# -- Edits and motion ----------------------------------------------------------


@pytest.mark.parametrize("image_size", SIZES)
def test_edits_are_exactly_consistent_with_the_instruction(image_size):
  lo, hi = shapes.object_size_range(image_size)
  verbs = set()
  for scene, rng in _scenes(image_size, 300, seed=4):
    instruction, edited = shapes.edit(scene, rng)
    _assert_well_formed(edited)
    assert edited.background == scene.background
    by_shape = _shape_groups(scene)
    before, after = scene.objects, edited.objects
    verbs.add(instruction.split()[0])
    if m := re.fullmatch(r"make the (\w+) (\w+)", instruction):
      shape = _PLURAL_TO_SHAPE.get(m[1], m[1])
      assert m[2] not in {o.color for o in before}
      assert len(after) == len(before)
      for old, new in zip(before, after):
        assert new.box == old.box and new.shape == old.shape
        assert new.color == (m[2] if old.shape == shape else old.color)
    elif m := re.fullmatch(r"remove the (\w+)", instruction):
      shape = _PLURAL_TO_SHAPE.get(m[1], m[1])
      assert len(by_shape) == 2 and shape in by_shape
      assert after == tuple(o for o in before if o.shape != shape)
    elif m := re.fullmatch(r"add (a|an) (\w+) (\w+)", instruction):
      assert (m[1] == "an") == (m[2] == "orange")
      assert after[:-1] == before and len(after) <= shapes.MAX_OBJECTS
      new = after[-1]
      assert (new.color, new.shape) == (m[2], m[3])
      y0, x0, y1, x1 = new.box
      assert y1 - y0 == x1 - x0 and lo <= y1 - y0 <= hi
    else:
      m = re.fullmatch(r"move the (\w+) (to the left|to the right|up|down)",
                       instruction)
      assert m, instruction
      shape = _PLURAL_TO_SHAPE.get(m[1], m[1])
      unit = np.array(_MOVES[m[2]])
      shifts = set()
      for old, new in zip(before, after):
        assert (new.shape, new.color) == (old.shape, old.color)
        delta = np.subtract(new.box[:2], old.box[:2])
        if old.shape == shape:
          assert (np.subtract(new.box[2:], old.box[2:]) == delta).all()
          amount = int(delta @ unit)
          assert (delta == amount * unit).all() and amount >= image_size // 8
          shifts.add(amount)
        else:
          assert new == old
      assert len(shifts) == 1
  assert verbs == {"make", "remove", "add", "move"}


@pytest.mark.parametrize("image_size, num_frames", [(32, 1), (32, 4), (64, 8)])
def test_motion_moves_one_group_monotonically_in_bounds(image_size, num_frames):
  pattern = r"(a|an|two|three|four) (\w+) (\w+) moving (left|right|up|down)"
  every_frame = 0
  for scene, rng in _scenes(image_size, 150, seed=5):
    text, frames = shapes.motion(scene, rng, num_frames)
    m = re.fullmatch(pattern, text)
    assert m, text
    assert len(frames) == num_frames and frames[0] == scene
    color, noun = m[2], m[3]
    shape = _PLURAL_TO_SHAPE.get(noun, noun)
    moving = [i for i, o in enumerate(scene.objects) if o.color == color]
    assert all(scene.objects[i].shape == shape for i in moving)
    count = 1 if m[1] in ("a", "an") else _WORD_NUMBERS[m[1]]
    assert len(moving) == count
    unit = np.array(shapes.DIRECTIONS[m[4]])
    amounts = []
    for frame in frames:
      _assert_layout(frame, gap=shapes.min_gap(image_size))
      assert frame.background == scene.background
      per_object = set()
      for i, (old, new) in enumerate(zip(scene.objects, frame.objects)):
        delta = np.subtract(new.box, old.box)
        if i in moving:
          amount = int(delta[:2] @ unit)
          assert (delta == np.tile(amount * unit, 2)).all()
          per_object.add(amount)
        else:
          assert new == old
      (amount,) = per_object
      amounts.append(amount)
    assert amounts[0] == 0 and (np.diff(amounts) >= 0).all()
    if num_frames > 1:
      total = amounts[-1]
      assert total >= 1
      assert amounts == [
          int(np.floor(t * total / (num_frames - 1) + 0.5))
          for t in range(num_frames)
      ]
      every_frame += total >= num_frames - 1
      # A whole group moves instead of a single object only to move every
      # frame, or when there is no single object.
      if count > 1 and any(len(g) == 1 for g in _groups(scene).values()):
        assert total >= num_frames - 1
  # Only crowded scenes leave less room than one pixel per frame.
  if num_frames > 1:
    assert every_frame >= 0.95 * 150


def test_motion_falls_back_to_the_first_object_when_nothing_can_move():
  # Four squares filling the corners: the group spans the image both ways.
  scene = shapes.Scene(
      "black",
      tuple(_obj("square", "red", y, x, 15) for y in (0, 17) for x in (0, 17)),
      32,
  )
  text, frames = shapes.motion(scene, np.random.default_rng(0), 3)
  assert re.fullmatch(r"a red square moving (right|down)", text)
  assert [f.objects[0].box != scene.objects[0].box for f in frames] == [
      False, True, True
  ]
  assert all(len(f.objects) == 1 for f in frames)


# -- Bad arguments -------------------------------------------------------------


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda r: shapes.sample_scene(r, 16), r"image_size.*16"),
        (lambda r: shapes.sample_scene(r, 32, 0), r"max_objects.*0"),
        (lambda r: shapes.sample_scene(r, 32, 5), r"max_objects.*5"),
        (
            lambda r: shapes.motion(shapes.sample_scene(r, 32), r, 0),
            r"num_frames.*0",
        ),
        (lambda r: shapes.make_example(0, 0, 32, 0), r"num_frames.*0"),
        (lambda r: shapes.make_example(0, 0, 31, 4), r"image_size.*31"),
        (lambda r: shapes.sample_scene(r, 32, grid=0), r"grid.*0"),
        (lambda r: shapes.sample_scene(r, 32, grid=7), r"grid.*\[8, 12\].*7"),
        (
            lambda r: shapes.ShapesConfig(name="x", image_size=32, grid=16),
            r"grid.*16",
        ),
        (lambda r: shapes.make_example(-1, 0, 32, 4), r"index.*-1"),
        (lambda r: shapes.make_example(0, -2, 32, 4), r"seed.*-2"),
        (
            lambda r: shapes.ShapesConfig(name="x", image_size=8),
            r"image_size.*8",
        ),
        (lambda r: shapes.ShapesConfig(name="x", num_train=0), r"num_train.*0"),
        (
            lambda r: shapes.questions(
                shapes.Scene(
                    "gray",
                    (
                        _obj("circle", "red", 0, 0, 8),
                        _obj("circle", "blue", 20, 20, 8),
                    ),
                    32,
                ),
                r,
            ),
            r"scene.*distinct",
        ),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, pattern):
  with pytest.raises(ValueError, match=pattern):
    call(np.random.default_rng(0))


# -- TFDS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  builder = shapes.Shapes(
      config="32px", data_dir=path, file_format="array_record"
  )
  builder.download_and_prepare()
  return path


def test_tfds_records_decode_to_their_scenes(data_dir):
  config = shapes.Shapes.builder_configs["32px"]
  train = tfds.data_source("shapes/32px", data_dir=data_dir, split="train")
  test = tfds.data_source("shapes/32px", data_dir=data_dir, split="test")
  assert len(train) == config.num_train and len(test) == config.num_test
  for record in (train[0], test[5]):
    image = record["image"]
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    scene = shapes.Scene.from_json(record["scene"])
    np.testing.assert_array_equal(image, np.asarray(shapes.render(scene)))
    assert record["caption"].decode() == shapes.caption(scene)
    edited = shapes.Scene.from_json(record["edited_scene"])
    np.testing.assert_array_equal(
        record["edited_image"], np.asarray(shapes.render(edited))
    )
    frames = np.stack(record["frames"])
    assert frames.dtype == np.uint8 and frames.shape == (4, 32, 32, 3)
    frame_scenes = shapes.scenes_from_json(record["frame_scenes"])
    assert frame_scenes[0] == scene
    np.testing.assert_array_equal(
        frames, np.stack([np.asarray(shapes.render(s)) for s in frame_scenes])
    )
    assert len(record["questions"]) == len(record["answers"]) == 4
    assert all(isinstance(q, bytes) for q in record["questions"])
    assert record["motion_caption"].decode().split()[-2] == "moving"


def test_tfds_splits_share_no_scene(data_dir):
  train = tfds.data_source("shapes/32px", data_dir=data_dir, split="train")
  test = tfds.data_source("shapes/32px", data_dir=data_dir, split="test")
  train_scenes = {train[i]["scene"] for i in range(len(train))}
  test_scenes = {test[i]["scene"] for i in range(len(test))}
  assert not train_scenes & test_scenes
  # Records equal make_example with the documented split seeds.
  first = lambda seed: {
      shapes.make_example(i, seed, 32, 4)["scene"].encode() for i in range(4)
  }
  train_first, test_first = first(0), first(1)
  assert train_first <= train_scenes and not train_first & test_first


def test_tfds_custom_config_and_no_tensorflow(tmp_path, data_dir):
  del data_dir  # Only makes sure the 32px build ran in this process.
  config = shapes.ShapesConfig(
      name="tiny", image_size=40, num_train=6, num_test=3, num_frames=2, seed=7
  )
  builder = shapes.Shapes(
      config=config, data_dir=tmp_path, file_format="array_record"
  )
  builder.download_and_prepare()
  source = builder.as_data_source(split="test")
  assert len(source) == 3
  record = source[0]
  assert record["image"].shape == (40, 40, 3)
  assert np.stack(record["frames"]).shape == (2, 40, 40, 3)
  assert "tensorflow" not in sys.modules
