# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Procedural shapes: colored shapes on plain backgrounds, described exactly.

Every image is drawn from a `Scene`, a plain description (background, and for
each object its shape, color and pixel box) that is stored next to the image.
Later code can therefore check a generated image against the scene it was asked
for: object count, color, shape class and relative position.

Scenes made by `sample_scene` keep captions unambiguous:

* one or two groups; a group is the objects sharing one (shape, color). The two
  groups of a scene differ in shape and in color, so "the square" or "what shape
  is red?" name one group.
* 1 to 4 objects in all; boxes are squares, inside the image, and at least
  `min_gap(image_size)` pixels apart, so objects never touch.
* with two groups, `relation` is defined: along the dominant axis of the
  difference of the groups' mean box centres, every centre of the first group
  lies strictly on one side of every centre of the second.

From a scene, `caption`, `questions`, `edit` and `motion` derive text and
further scenes, and `render` draws any scene with hard edges (no antialiasing),
so each object's pixels have exactly its `COLORS` value. `make_example` bundles
all of it for one record; `Shapes` is the TFDS builder that writes the records:

  builder = Shapes(config="32px", data_dir=d, file_format="array_record")
  builder.download_and_prepare()
  source = tfds.data_source("shapes/32px", data_dir=d, split="train")

Read without TensorFlow, `Text` features come back as bytes and `frames` as a
list of `num_frames` uint8 arrays of shape (S, S, 3); `np.stack` them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import json
from typing import Any

import numpy as np
from PIL import Image
from PIL import ImageDraw
import tensorflow_datasets as tfds

Rgb = tuple[int, int, int]
Box = tuple[int, int, int, int]

SHAPES = ("circle", "square", "triangle", "diamond", "cross")

# Object colors, name -> RGB. The order is part of the API (indices are stable).
COLORS: dict[str, Rgb] = {
    "red": (220, 20, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 240),
    "yellow": (250, 230, 20),
    "purple": (130, 40, 210),
    "orange": (250, 120, 0),
    "cyan": (30, 200, 220),
    "pink": (245, 120, 190),
}

# Background colors, name -> RGB; none of them is an object color.
BACKGROUNDS: dict[str, Rgb] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "white": (255, 255, 255),
}

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}

# Unit steps (dy, dx) of the motion directions, in image coordinates.
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}

MIN_IMAGE_SIZE = 32
MAX_OBJECTS = 4
NUM_QUESTIONS = 4

_MIN_OBJECT_SIZE = 8
_MAX_TRIES = 20
_PLURALS = {"cross": "crosses"}
_INVERSE_RELATION = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}
_MOVE_WORDS = {
    "left": "to the left",
    "right": "to the right",
    "up": "up",
    "down": "down",
}


@dataclasses.dataclass(frozen=True)
class ShapeObject:
  """One drawn object.

  Attributes:
    shape: a name in `SHAPES`.
    color: a name in `COLORS`.
    box: (y0, x0, y1, x1) in pixels of the rendered image, half-open like a
      NumPy slice: the object covers rows y0..y1-1 and columns x0..x1-1.
  """

  shape: str
  color: str
  box: Box

  def __post_init__(self):
    if self.shape not in SHAPES:
      raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}.")
    if self.color not in COLORS:
      raise ValueError(
          f"color must be one of {tuple(COLORS)}, got {self.color!r}."
      )
    box = tuple(int(v) for v in self.box)
    if len(box) != 4 or box[0] >= box[2] or box[1] >= box[3]:
      raise ValueError(
          f"box must be (y0, x0, y1, x1) with y0 < y1 and x0 < x1, got"
          f" {self.box!r}."
      )
    object.__setattr__(self, "box", box)

  @property
  def center(self) -> tuple[float, float]:
    """The box centre (y, x) in pixels."""
    y0, x0, y1, x1 = self.box
    return (y0 + y1) / 2, (x0 + x1) / 2

  def shifted(self, dy: int, dx: int) -> ShapeObject:
    """Returns this object moved by dy rows and dx columns."""
    y0, x0, y1, x1 = self.box
    return dataclasses.replace(self, box=(y0 + dy, x0 + dx, y1 + dy, x1 + dx))


@dataclasses.dataclass(frozen=True)
class Scene:
  """What one image shows.

  Attributes:
    background: a name in `BACKGROUNDS`.
    objects: at least one object, each box inside the image.
    image_size: side S of the square image, in pixels.
  """

  background: str
  objects: tuple[ShapeObject, ...]
  image_size: int

  def __post_init__(self):
    if self.background not in BACKGROUNDS:
      raise ValueError(
          f"background must be one of {tuple(BACKGROUNDS)}, got"
          f" {self.background!r}."
      )
    size = self.image_size
    if not isinstance(size, (int, np.integer)) or size < 1:
      raise ValueError(
          f"image_size must be a positive integer, got {self.image_size!r}."
      )
    objects = tuple(self.objects)
    if not objects:
      raise ValueError("objects must hold at least one ShapeObject, got none.")
    for obj in objects:
      y0, x0, y1, x1 = obj.box
      if min(y0, x0) < 0 or max(y1, x1) > self.image_size:
        raise ValueError(
            f"objects must lie inside the {self.image_size}x{self.image_size}"
            f" image, got box {obj.box}."
        )
    object.__setattr__(self, "objects", objects)
    object.__setattr__(self, "image_size", int(self.image_size))

  def groups(self) -> tuple[tuple[ShapeObject, ...], ...]:
    """Objects grouped by (shape, color), in order of first appearance."""
    by_kind: dict[tuple[str, str], list[ShapeObject]] = {}
    for obj in self.objects:
      by_kind.setdefault((obj.shape, obj.color), []).append(obj)
    return tuple(tuple(group) for group in by_kind.values())

  def to_dict(self) -> dict[str, Any]:
    """Returns the scene as JSON-compatible Python values."""
    return {
        "background": self.background,
        "image_size": self.image_size,
        "objects": [
            {"shape": o.shape, "color": o.color, "box": list(o.box)}
            for o in self.objects
        ],
    }

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> Scene:
    """Inverse of `to_dict`."""
    objects = tuple(
        ShapeObject(o["shape"], o["color"], tuple(o["box"]))
        for o in data["objects"]
    )
    return cls(data["background"], objects, data["image_size"])

  def to_json(self) -> str:
    """Returns compact JSON, keys sorted: equal scenes give equal strings."""
    return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

  @classmethod
  def from_json(cls, text: str | bytes) -> Scene:
    """Inverse of `to_json`; accepts bytes as read back from TFDS."""
    return cls.from_dict(json.loads(text))


def scenes_to_json(scenes: Sequence[Scene]) -> str:
  """Encodes a list of scenes (e.g. motion frames) as one JSON list."""
  return json.dumps(
      [s.to_dict() for s in scenes], sort_keys=True, separators=(",", ":")
  )


def scenes_from_json(text: str | bytes) -> list[Scene]:
  """Inverse of `scenes_to_json`."""
  return [Scene.from_dict(d) for d in json.loads(text)]


def object_size_range(image_size: int) -> tuple[int, int]:
  """Returns the (smallest, largest) box side that `sample_scene` draws.

  About 1/4 to 3/8 of the image side, and never below 8 pixels: 8-12 px at
  32 px, 16-24 px at 64 px.

  Args:
    image_size: side of the image in pixels.
  """
  lo = max(_MIN_OBJECT_SIZE, (image_size + 2) // 4)
  return lo, max(lo, (3 * image_size + 4) // 8)


def min_gap(image_size: int) -> int:
  """Returns the smallest number of background pixels between two boxes."""
  return max(2, image_size // 32)


def layout_ok(scene: Scene) -> bool:
  """Whether all boxes of `scene` are at least `min_gap` pixels apart."""
  gap = min_gap(scene.image_size)
  boxes = [o.box for o in scene.objects]
  return all(
      _apart(a, b, gap) for i, a in enumerate(boxes) for b in boxes[i + 1 :]
  )


def relation(scene: Scene) -> str | None:
  """Where the first group of `scene` is relative to the second.

  The axis is the larger component of the difference of the groups' mean box
  centres; the relation holds only if every centre of the first group lies
  strictly on its side of every centre of the second group.

  Args:
    scene: any scene.

  Returns:
    "left of", "right of", "above" or "below"; None when the scene does not have
    exactly two groups, when both axes tie, or when the groups interleave.
  """
  groups = scene.groups()
  if len(groups) != 2:
    return None
  first, second = groups
  # Doubled centres keep everything in integers.
  ys_a = [o.box[0] + o.box[2] for o in first]
  xs_a = [o.box[1] + o.box[3] for o in first]
  ys_b = [o.box[0] + o.box[2] for o in second]
  xs_b = [o.box[1] + o.box[3] for o in second]
  # Mean differences, both scaled by len(first) * len(second).
  dy = sum(ys_b) * len(first) - sum(ys_a) * len(second)
  dx = sum(xs_b) * len(first) - sum(xs_a) * len(second)
  if abs(dx) > abs(dy):
    if dx > 0 and max(xs_a) < min(xs_b):
      return "left of"
    if dx < 0 and min(xs_a) > max(xs_b):
      return "right of"
  elif abs(dy) > abs(dx):
    if dy > 0 and max(ys_a) < min(ys_b):
      return "above"
    if dy < 0 and min(ys_a) > max(ys_b):
      return "below"
  return None


def sample_scene(
    rng: np.random.Generator, image_size: int, max_objects: int = MAX_OBJECTS,
    *, grid: int = 1,
) -> Scene:
  """Draws a random scene that a caption describes unambiguously.

  One or two groups with distinct shapes and colors, 1 to `max_objects` objects,
  box sides in `object_size_range(image_size)`. Each object is placed uniformly
  among the positions that keep `min_gap` to the objects already placed; a
  layout that leaves no room, or two groups without a `relation`, is redrawn
  with boxes shrunk by one more pixel (`grid` pixels), up to 20 times. After
  that the objects (at the smallest size) are laid out on a fixed grid: one
  group in a 2x2 grid, or the first group in a row above the second.

  With `grid` > 1 every box side and corner coordinate is a multiple of
  `grid` pixels (sides: the multiples inside `object_size_range`), so that
  with `grid` = the vision tokenizer's downsampling each object covers whole
  latent cells and a shape is always the same pattern of codes; the fixed
  fallback layout is kept as it is (rarely aligned).

  Args:
    rng: source of randomness; the scene is a function of its state.
    image_size: side S of the image in pixels, at least `MIN_IMAGE_SIZE`.
    max_objects: most objects in the scene, 1 to `MAX_OBJECTS`.
    grid: the pixel pitch of box corners and sides (1: anywhere).

  Returns:
    A scene satisfying `layout_ok`, with `relation` defined if it has two
    groups.
  """
  _check_image_size(image_size)
  if (
      not isinstance(max_objects, (int, np.integer))
      or not 1 <= max_objects <= MAX_OBJECTS
  ):
    raise ValueError(
        f"max_objects must be an integer in [1, {MAX_OBJECTS}], got"
        f" {max_objects!r}."
    )
  background = _pick(rng, tuple(BACKGROUNDS))
  num_groups = 1 if max_objects == 1 else int(rng.integers(1, 3))
  if num_groups == 1:
    counts = [int(rng.integers(1, max_objects + 1))]
  else:
    total = int(rng.integers(2, max_objects + 1))
    first = int(rng.integers(1, total))
    counts = [first, total - first]
  shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), num_groups, False)]
  names = tuple(COLORS)
  colors = [names[i] for i in rng.choice(len(names), num_groups, False)]
  kinds = [
      (shape, color)
      for shape, color, count in zip(shapes, colors, counts)
      for _ in range(count)
  ]
  lo, hi = object_size_range(image_size)
  _check_grid(grid, lo, hi)
  smallest = -(-lo // grid) * grid
  sides = np.arange(smallest, hi + 1, grid)
  sizes = sides[rng.integers(len(sides), size=len(kinds))]
  gap = min_gap(image_size)
  for attempt in range(_MAX_TRIES):
    shrunk = np.maximum(sizes - attempt * grid, smallest)
    boxes = _place(rng, shrunk, [], image_size, gap, grid)
    if boxes is None:
      continue
    scene = _make_scene(background, kinds, boxes, image_size)
    if num_groups == 1 or relation(scene) is not None:
      return scene
  boxes = _grid_layout(counts, lo, image_size, gap)
  return _make_scene(background, kinds, boxes, image_size)


def render(scene: Scene) -> Image.Image:
  """Draws `scene` with hard edges: every pixel is a background or object color.

  Each shape touches all four sides of its box: a circle (ellipse), a square
  filling the box, a triangle pointing up, a diamond with its corners at the
  midpoints of the box sides, a cross with arms about a third of the box thick.
  Shapes are mirror symmetric left-right (all but the triangle also up-down)
  and cover the box's centre pixel (y0 + h // 2, x0 + w // 2).

  Args:
    scene: the scene to draw.

  Returns:
    An RGB image of size (S, S); as an array, uint8 of shape (S, S, 3).
  """
  size = scene.image_size
  image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
  draw = ImageDraw.Draw(image)
  for obj in scene.objects:
    fill = COLORS[obj.color]
    y0, x0, y1, x1 = obj.box
    # PIL boxes and vertices are inclusive pixel coordinates. An even side has
    # two middle pixels, so apexes are two pixels wide and shapes stay mirror
    # symmetric.
    right, bottom = x1 - 1, y1 - 1
    mid_left, mid_right = x0 + (x1 - x0 - 1) // 2, x0 + (x1 - x0) // 2
    mid_top, mid_bottom = y0 + (y1 - y0 - 1) // 2, y0 + (y1 - y0) // 2
    if obj.shape == "circle":
      draw.ellipse((x0, y0, right, bottom), fill=fill)
    elif obj.shape == "square":
      draw.rectangle((x0, y0, right, bottom), fill=fill)
    elif obj.shape == "triangle":
      draw.polygon(
          [(x0, bottom), (right, bottom), (mid_right, y0), (mid_left, y0)],
          fill=fill,
      )
    elif obj.shape == "diamond":
      draw.polygon(
          [
              (mid_left, y0), (mid_right, y0), (right, mid_top),
              (right, mid_bottom), (mid_right, bottom), (mid_left, bottom),
              (x0, mid_bottom), (x0, mid_top),
          ],
          fill=fill,
      )
    else:  # cross
      arm_h, arm_w = _arm(y1 - y0), _arm(x1 - x0)
      top = y0 + (y1 - y0 - arm_h) // 2
      left = x0 + (x1 - x0 - arm_w) // 2
      draw.rectangle((x0, top, right, top + arm_h - 1), fill=fill)
      draw.rectangle((left, y0, left + arm_w - 1, bottom), fill=fill)
  return image


def caption(scene: Scene) -> str:
  """Describes the objects of `scene` in a short phrase.

  E.g. "a green triangle", "three yellow crosses", "two red circles left of a
  blue square". Two groups without a `relation` are joined by "and".

  Args:
    scene: any scene.

  Returns:
    The caption, lower case, without final period.
  """
  groups = scene.groups()
  parts = [_describe(group) for group in groups]
  where = relation(scene)
  if where is not None:
    return f"{parts[0]} {where} {parts[1]}"
  if len(parts) == 1:
    return parts[0]
  return ", ".join(parts[:-1]) + " and " + parts[-1]


def questions(
    scene: Scene, rng: np.random.Generator
) -> list[tuple[str, str]]:
  """Draws `NUM_QUESTIONS` question/answer pairs of distinct kinds.

  Kinds: "how many circles?" -> "two"; "what color is the square?" -> "blue"
  ("what color are the squares?" for several); "what shape is red?" ->
  "circle"; "is there a triangle?" -> "yes"/"no"; "what color is the
  background?" -> "gray"; and with two groups "what is left of the blue
  square?" -> "red circles" (or the inverse relation about the first group).

  Args:
    scene: a scene whose groups have distinct shapes and distinct colors.
    rng: source of randomness.

  Returns:
    A list of (question, answer) pairs.
  """
  groups = _distinct_groups(scene)
  kinds = [_ask_count, _ask_color, _ask_shape, _ask_exists, _ask_background]
  if relation(scene) is not None:
    kinds.append(_ask_relation)
  chosen = rng.choice(len(kinds), min(NUM_QUESTIONS, len(kinds)), False)
  return [kinds[i](scene, groups, rng) for i in chosen]


def edit(scene: Scene, rng: np.random.Generator) -> tuple[str, Scene]:
  """Draws an edit instruction and the scene that carries it out exactly.

  Edits, drawn uniformly among those that apply:
  * "make the square green": that group gets a color no group has.
  * "remove the circles": that whole group goes (needs two groups).
  * "add a blue triangle": one object of a new group (if there is one group),
    or of an existing group, placed at a free position (needs < 4 objects).
  * "move the square to the right" (or "to the left", "up", "down"): every
    object of that group shifts by the same amount, at least S // 8 pixels.
  Nothing else changes. An add or move that finds no room becomes a recolor.
  The edited scene satisfies the same invariants as `sample_scene`'s.

  Args:
    scene: a scene whose groups have distinct shapes and distinct colors.
    rng: source of randomness.

  Returns:
    (instruction, edited scene).
  """
  groups = _distinct_groups(scene)
  edits = [_edit_recolor, _edit_add, _edit_move]
  if len(groups) == 2:
    edits.append(_edit_remove)
  chosen = edits[int(rng.integers(len(edits)))]
  return chosen(scene, groups, rng) or _edit_recolor(scene, groups, rng)


def motion(
    scene: Scene, rng: np.random.Generator, num_frames: int
) -> tuple[str, list[Scene]]:
  """Draws a short clip of one group moving in a straight line.

  The moving group is a single object (a group of one) that has room to move
  num_frames - 1 pixels, else a whole group with that room, else a single
  object with less room, else any group. It moves left, right, up or down by a
  total of D pixels, frame t being shifted by round(t * D / (num_frames - 1)).
  D is at least num_frames - 1 (so the group moves every frame) whenever the
  chosen group has that much room, and at most max(S // 2, num_frames - 1). Every frame keeps all objects inside the
  image and `min_gap` apart, and nothing passes through another object. Frame 0
  is `scene` itself, unless no group of it can move at all; then the clip shows
  only the first object of `scene`.

  Args:
    scene: a scene whose groups have distinct shapes and distinct colors.
    rng: source of randomness.
    num_frames: number of frames T >= 1.

  Returns:
    (caption such as "a red circle moving right", list of T scenes).
  """
  if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
    raise ValueError(
        f"num_frames must be an integer >= 1, got {num_frames!r}."
    )
  groups = _distinct_groups(scene)
  options = _motion_options(scene, groups)
  if not options:
    scene = Scene(scene.background, scene.objects[:1], scene.image_size)
    groups = scene.groups()
    options = _motion_options(scene, groups)
  if not options:
    raise ValueError(
        f"scene must have an object with room to move, got {scene.to_json()}."
    )
  singles = [o for o in options if len(o[0]) == 1]
  steady = [o for o in options if o[2] >= num_frames - 1]
  steady_singles = [o for o in singles if o[2] >= num_frames - 1]
  group, direction, room = _pick(
      rng, steady_singles or steady or singles or options
  )
  lo = min(room, max(1, num_frames - 1))
  total = int(rng.integers(lo, min(room, max(lo, scene.image_size // 2)) + 1))
  unit_y, unit_x = DIRECTIONS[direction]
  frames = []
  for t in range(num_frames):
    if num_frames == 1:
      step = 0
    else:  # round(t * total / (num_frames - 1)), in integers.
      step = (2 * t * total + num_frames - 1) // (2 * (num_frames - 1))
    moved = tuple(
        o.shifted(unit_y * step, unit_x * step) if o in group else o
        for o in scene.objects
    )
    frames.append(Scene(scene.background, moved, scene.image_size))
  return f"{_describe(group)} moving {direction}", frames


def make_example(
    index: int, seed: int, image_size: int, num_frames: int, grid: int = 1
) -> dict[str, Any]:
  """Builds one dataset record, a function of (seed, index) only.

  Args:
    index: record index, >= 0.
    seed: dataset seed, >= 0.
    image_size: side S of the images, at least `MIN_IMAGE_SIZE`.
    num_frames: number T of motion frames, >= 1.
    grid: pixel pitch of the scene's boxes (`sample_scene`).

  Returns:
    A dict with the features of `Shapes`: "image" (PIL RGB, S x S), "caption",
    "scene" (`Scene.to_json`), "questions" and "answers" (lists of
    `NUM_QUESTIONS` strings), "edit_instruction", "edited_image",
    "edited_scene", "frames" (list of T PIL images), "motion_caption" and
    "frame_scenes" (`scenes_to_json` of the T frame scenes).
  """
  rng = _example_rng(index, seed)
  scene = sample_scene(rng, image_size, grid=grid)
  pairs = questions(scene, rng)
  instruction, edited = edit(scene, rng)
  motion_caption, frame_scenes = motion(scene, rng, num_frames)
  return {
      "image": render(scene),
      "caption": caption(scene),
      "scene": scene.to_json(),
      "questions": [q for q, _ in pairs],
      "answers": [a for _, a in pairs],
      "edit_instruction": instruction,
      "edited_image": render(edited),
      "edited_scene": edited.to_json(),
      "frames": [render(s) for s in frame_scenes],
      "motion_caption": motion_caption,
      "frame_scenes": scenes_to_json(frame_scenes),
  }


def _check_image_size(image_size: int) -> None:
  if (
      not isinstance(image_size, (int, np.integer))
      or image_size < MIN_IMAGE_SIZE
  ):
    raise ValueError(
        f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got"
        f" {image_size!r}."
    )


def _check_grid(grid: int, lo: int, hi: int) -> None:
  if not isinstance(grid, (int, np.integer)) or grid < 1 or -(-lo // grid) * grid > hi:
    raise ValueError(
        f"grid must be an integer >= 1 with a multiple in the object sizes"
        f" [{lo}, {hi}], got {grid!r}."
    )


def _example_rng(index: int, seed: int) -> np.random.Generator:
  for name, value in (("index", index), ("seed", seed)):
    if not isinstance(value, (int, np.integer)) or value < 0:
      raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
  return np.random.default_rng([seed, index])


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
  return items[int(rng.integers(len(items)))]


def _arm(side: int) -> int:
  """Cross arm thickness: side / 3 rounded to the parity of side (centred)."""
  return 2 * round((side / 3 - side % 2) / 2) + side % 2


def _apart(a: Box, b: Box, gap: int) -> bool:
  """Whether boxes a and b have at least `gap` pixels between them."""
  return (
      a[2] + gap <= b[0]
      or b[2] + gap <= a[0]
      or a[3] + gap <= b[1]
      or b[3] + gap <= a[1]
  )


def _free_positions(
    size: int, boxes: Sequence[Box], image_size: int, gap: int, grid: int = 1
) -> np.ndarray:
  """Top-left corners (y, x), shape (N, 2), of size x size boxes that fit,
  on multiples of `grid`."""
  starts = np.arange(0, image_size - size + 1, grid)
  blocked = np.zeros((len(starts), len(starts)), dtype=bool)
  for y0, x0, y1, x1 in boxes:
    rows = (starts < y1 + gap) & (starts + size + gap > y0)
    cols = (starts < x1 + gap) & (starts + size + gap > x0)
    blocked |= rows[:, None] & cols[None, :]
  return starts[np.argwhere(~blocked)]


def _place(
    rng: np.random.Generator,
    sizes: Sequence[int],
    boxes: Sequence[Box],
    image_size: int,
    gap: int,
    grid: int = 1,
) -> list[Box] | None:
  """Adds one box per size at a uniformly drawn free position (corners on
  multiples of `grid`); None if full."""
  placed = list(boxes)
  for size in sizes:
    free = _free_positions(int(size), placed, image_size, gap, grid)
    if not len(free):
      return None
    y, x = (int(v) for v in free[rng.integers(len(free))])
    placed.append((y, x, y + int(size), x + int(size)))
  return placed[len(boxes) :]


def _grid_layout(
    counts: Sequence[int], size: int, image_size: int, gap: int
) -> list[Box]:
  """Fixed layout: one group in a 2x2 grid, or group 0 in a row above 1."""
  half = image_size // 2
  if len(counts) == 1:
    side = min(size, half - gap)
    offset = (half - side) // 2
    cells = [(i // 2, i % 2) for i in range(counts[0])]
    return [
        (r * half + offset, c * half + offset,
         r * half + offset + side, c * half + offset + side)
        for r, c in cells
    ]
  boxes = []
  for row, count in enumerate(counts):
    width = image_size // count
    side = min(size, half - gap, width - gap)
    y0 = row * half + (half - side) // 2
    for col in range(count):
      x0 = col * width + (width - side) // 2
      boxes.append((y0, x0, y0 + side, x0 + side))
  return boxes


def _make_scene(
    background: str,
    kinds: Sequence[tuple[str, str]],
    boxes: Sequence[Box],
    image_size: int,
) -> Scene:
  objects = tuple(
      ShapeObject(shape, color, box)
      for (shape, color), box in zip(kinds, boxes)
  )
  return Scene(background, objects, image_size)


def _well_formed(scene: Scene) -> bool:
  """The invariants of `sample_scene`, for scenes with distinct groups."""
  return layout_ok(scene) and (
      len(scene.groups()) == 1 or relation(scene) is not None
  )


def _distinct_groups(scene: Scene) -> tuple[tuple[ShapeObject, ...], ...]:
  groups = scene.groups()
  shapes = {g[0].shape for g in groups}
  colors = {g[0].color for g in groups}
  if len(shapes) != len(groups) or len(colors) != len(groups):
    raise ValueError(
        "scene must have groups of distinct shapes and distinct colors, got"
        f" {caption(scene)!r}."
    )
  return groups


def _plural(shape: str) -> str:
  return _PLURALS.get(shape, shape + "s")


def _noun(group: Sequence[ShapeObject]) -> str:
  """'circle' or 'circles', by the group's size."""
  shape = group[0].shape
  return shape if len(group) == 1 else _plural(shape)


def _article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


def _describe(group: Sequence[ShapeObject]) -> str:
  """'a red circle', 'an orange square', 'two red circles'."""
  color = group[0].color
  if len(group) == 1:
    return f"{_article(color)} {color} {group[0].shape}"
  number = NUMBER_WORDS.get(len(group), str(len(group)))
  return f"{number} {color} {_noun(group)}"


def _ask_count(scene, groups, rng) -> tuple[str, str]:
  del scene  # Unused.
  group = _pick(rng, groups)
  count = NUMBER_WORDS.get(len(group), str(len(group)))
  return f"how many {_plural(group[0].shape)}?", count


def _ask_color(scene, groups, rng) -> tuple[str, str]:
  del scene  # Unused.
  group = _pick(rng, groups)
  verb = "is" if len(group) == 1 else "are"
  return f"what color {verb} the {_noun(group)}?", group[0].color


def _ask_shape(scene, groups, rng) -> tuple[str, str]:
  del scene  # Unused.
  group = _pick(rng, groups)
  return f"what shape is {group[0].color}?", group[0].shape


def _ask_exists(scene, groups, rng) -> tuple[str, str]:
  del scene  # Unused.
  present = [g[0].shape for g in groups]
  absent = [s for s in SHAPES if s not in present]
  if absent and rng.random() < 0.5:
    return f"is there a {_pick(rng, absent)}?", "no"
  return f"is there a {_pick(rng, present)}?", "yes"


def _ask_background(scene, groups, rng) -> tuple[str, str]:
  del groups, rng  # Unused.
  return "what color is the background?", scene.background


def _ask_relation(scene, groups, rng) -> tuple[str, str]:
  where = relation(scene)
  first, second = groups
  if rng.random() < 0.5:
    first, second = second, first
    where = _INVERSE_RELATION[where]
  subject = f"{second[0].color} {_noun(second)}"
  return f"what is {where} the {subject}?", f"{first[0].color} {_noun(first)}"


def _edit_recolor(scene, groups, rng) -> tuple[str, Scene]:
  group = _pick(rng, groups)
  used = {g[0].color for g in groups}
  color = _pick(rng, [c for c in COLORS if c not in used])
  objects = tuple(
      dataclasses.replace(o, color=color) if o in group else o
      for o in scene.objects
  )
  edited = Scene(scene.background, objects, scene.image_size)
  return f"make the {_noun(group)} {color}", edited


def _edit_remove(scene, groups, rng) -> tuple[str, Scene]:
  group = _pick(rng, groups)
  objects = tuple(o for o in scene.objects if o not in group)
  edited = Scene(scene.background, objects, scene.image_size)
  return f"remove the {_noun(group)}", edited


def _edit_add(scene, groups, rng) -> tuple[str, Scene] | None:
  if len(scene.objects) >= MAX_OBJECTS:
    return None
  kinds = [(g[0].shape, g[0].color) for g in groups]
  if len(groups) == 1:
    shape = _pick(rng, [s for s in SHAPES if s != kinds[0][0]])
    color = _pick(rng, [c for c in COLORS if c != kinds[0][1]])
    kinds.append((shape, color))
  shape, color = _pick(rng, kinds)
  size = scene.image_size
  lo, hi = object_size_range(size)
  side = int(rng.integers(lo, hi + 1))
  boxes = [o.box for o in scene.objects]
  free = _free_positions(side, boxes, size, min_gap(size))
  for k in rng.permutation(len(free))[:_MAX_TRIES]:
    y, x = (int(v) for v in free[k])
    added = ShapeObject(shape, color, (y, x, y + side, x + side))
    edited = Scene(scene.background, scene.objects + (added,), size)
    if _well_formed(edited):
      return f"add {_article(color)} {color} {shape}", edited
  return None


def _edit_move(scene, groups, rng) -> tuple[str, Scene] | None:
  size = scene.image_size
  options = [(g, d) for g in groups for d in DIRECTIONS]
  for k in rng.permutation(len(options)):
    group, direction = options[k]
    unit_y, unit_x = DIRECTIONS[direction]
    shifts = []
    for shift in range(size // 8, size):
      objects = tuple(
          o.shifted(unit_y * shift, unit_x * shift) if o in group else o
          for o in scene.objects
      )
      if not _inside(objects, size):
        break
      edited = Scene(scene.background, objects, size)
      if _well_formed(edited):
        shifts.append(edited)
    if shifts:
      instruction = f"move the {_noun(group)} {_MOVE_WORDS[direction]}"
      return instruction, _pick(rng, shifts)
  return None


def _inside(objects: Sequence[ShapeObject], image_size: int) -> bool:
  return all(
      min(o.box[:2]) >= 0 and max(o.box[2:]) <= image_size for o in objects
  )


def _motion_options(
    scene: Scene, groups: Sequence[Sequence[ShapeObject]]
) -> list[tuple[tuple[ShapeObject, ...], str, int]]:
  """(group, direction, room) for each group and direction with room >= 1.

  Room is the largest shift whose path stays clear and inside the image.
  """
  gap = min_gap(scene.image_size)
  options = []
  for group in groups:
    still = [o.box for o in scene.objects if o not in group]
    for direction, (unit_y, unit_x) in DIRECTIONS.items():
      room = 0
      while True:
        step = room + 1
        moved = [o.shifted(unit_y * step, unit_x * step) for o in group]
        if not _inside(moved, scene.image_size) or not all(
            _apart(m.box, s, gap) for m in moved for s in still
        ):
          break
        room = step
      if room:
        options.append((tuple(group), direction, room))
  return options


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """Size of a `Shapes` variant.

  Attributes:
    image_size: side S of every image, at least `MIN_IMAGE_SIZE`.
    num_train: number of train records.
    num_test: number of test records.
    num_frames: number T of frames per motion clip.
    seed: train records are `make_example(i, 2 * seed, ...)`, test records
      `make_example(i, 2 * seed + 1, ...)`, skipping every i whose scene is
      also a train scene.
    grid: pixel pitch of the boxes (`sample_scene`); 1 = anywhere.
  """

  image_size: int = 64
  num_train: int = 8000
  num_test: int = 500
  num_frames: int = 8
  seed: int = 0
  grid: int = 1

  def __post_init__(self):
    _check_image_size(self.image_size)
    for field in ("num_train", "num_test", "num_frames"):
      value = getattr(self, field)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be an integer >= 1, got {value!r}.")
    if not isinstance(self.seed, int) or self.seed < 0:
      raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}.")
    _check_grid(self.grid, *object_size_range(self.image_size))


class Shapes(tfds.core.GeneratorBasedBuilder):
  """Colored shapes with captions, questions, edits and motion clips.

  Generated locally (no download). Configs: "32px" (512 train / 64 test,
  4 frames; unit tests), "32px_8k" (8000 / 500, 4 frames; 32 px recipes),
  "32px_8k_grid4" / "32px_8k_grid8" (the same with boxes on a 4- or 8-pixel
  grid), "32px_64k_grid4" (64000 train scenes on the 4-pixel grid) and "64px"
  (8000 / 500, 8 frames; demo); any
  `ShapesConfig` may be passed as `config`. Splits "train" and "test" share no
  scene. Features, with S = image_size and T = num_frames:
    image, edited_image: uint8 (S, S, 3), PNG-encoded.
    caption, scene, edit_instruction, edited_scene, motion_caption,
      frame_scenes: text (bytes when read back; scenes as JSON).
    questions, answers: `NUM_QUESTIONS` texts each.
    frames: T images (S, S, 3); `tfds.data_source` (no TensorFlow) reads
      them back as a list of T uint8 arrays, which `np.stack` makes one
      (T, S, S, 3) array.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: images, captions, questions, edits, motion.",
  }
  BUILDER_CONFIGS = [
      ShapesConfig(
          name="32px",
          description="32x32 images, 512 train / 64 test (unit tests).",
          image_size=32,
          num_train=512,
          num_test=64,
          num_frames=4,
      ),
      ShapesConfig(
          name="32px_8k",
          description="32x32 images, 8000 train / 500 test (32 px recipes).",
          image_size=32,
          num_train=8000,
          num_test=500,
          num_frames=4,
      ),
      ShapesConfig(
          name="32px_8k_grid4",
          description=("32x32 images, 8000 train / 500 test, every box on a"
                       " 4-pixel grid (side 8 or 12): whole 8x8 latent cells"
                       " for a downsample-4 tokenizer (32 px demo recipe)."),
          image_size=32,
          num_train=8000,
          num_test=500,
          num_frames=4,
          grid=4,
      ),
      ShapesConfig(
          name="32px_64k_grid4",
          description=("32x32 images on the 4-pixel grid, 64000 train / 500"
                       " test; its first 8000 train scenes are"
                       " 32px_8k_grid4's. Eight times the scenes, for runs"
                       " long enough to overfit 8000."),
          image_size=32,
          num_train=64000,
          num_test=500,
          num_frames=4,
          grid=4,
      ),
      ShapesConfig(
          name="32px_8k_grid8",
          description=("32x32 images, 8000 train / 500 test, every box 8x8"
                       " on an 8-pixel grid: one latent cell per object for"
                       " a downsample-8 tokenizer (4x4 latent)."),
          image_size=32,
          num_train=8000,
          num_test=500,
          num_frames=4,
          grid=8,
      ),
      ShapesConfig(
          name="64px",
          description="64x64 images, 8000 train / 500 test (demo).",
          image_size=64,
          num_train=8000,
          num_test=500,
          num_frames=8,
      ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "64px"

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    shape = (config.image_size, config.image_size, 3)
    text = tfds.features.Text
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=shape),
        "caption": text(),
        "scene": text(),
        "questions": tfds.features.Sequence(text(), length=NUM_QUESTIONS),
        "answers": tfds.features.Sequence(text(), length=NUM_QUESTIONS),
        "edit_instruction": text(),
        "edited_image": tfds.features.Image(shape=shape),
        "edited_scene": text(),
        "frames": tfds.features.Sequence(
            tfds.features.Image(shape=shape), length=config.num_frames
        ),
        "motion_caption": text(),
        "frame_scenes": text(),
    })
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Procedural colored shapes on plain backgrounds, with the exact"
            " scene description of every image."
        ),
        features=features,
        supervised_keys=("image", "caption"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {
        "train": self._generate_examples("train"),
        "test": self._generate_examples("test"),
    }

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    config = self.builder_config
    for index, seed in split_indices(config, split):
      yield index, make_example(index, seed, config.image_size,
                                config.num_frames, config.grid)


def split_indices(config: ShapesConfig, split: str) -> list[tuple[int, int]]:
  """(index, seed) of each record of a split, in order: record k of the
  split is `make_example(*split_indices(config, split)[k], ...)`."""
  train_seed = 2 * config.seed
  if split == "train":
    return [(i, train_seed) for i in range(config.num_train)]
  if split != "test":
    raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
  train_scenes = {scene.to_json() for scene in split_scenes(config, "train")}
  out, index = [], 0
  while len(out) < config.num_test:
    scene = sample_scene(_example_rng(index, train_seed + 1),
                         config.image_size, grid=config.grid)
    if scene.to_json() not in train_scenes:
      out.append((index, train_seed + 1))
    index += 1
  return out


def split_scenes(config: ShapesConfig, split: str) -> list[Scene]:
  """The scene of each image of a split (as `Shapes` writes it), without
  rendering anything: e.g. to know which captions training has seen."""
  if split == "train":
    return [sample_scene(_example_rng(i, 2 * config.seed), config.image_size,
                         grid=config.grid)
            for i in range(config.num_train)]
  return [sample_scene(_example_rng(i, seed), config.image_size,
                       grid=config.grid)
          for i, seed in split_indices(config, split)]


def builder_config(name: str) -> ShapesConfig:
  """The `Shapes` config of that name ("32px", "32px_8k", "32px_8k_grid4",
  "32px_8k_grid8", "64px")."""
  configs = {c.name: c for c in Shapes.BUILDER_CONFIGS}
  if name not in configs:
    raise ValueError(f"shapes has configs {sorted(configs)}, not {name!r}.")
  return configs[name]
