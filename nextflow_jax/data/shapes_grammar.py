# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The caption grammar of the shapes dataset: render, parse, categorise.

A prompt asks for one or two groups of objects, each with a count and a
shape and optionally a colour, and, for two groups, optionally where the
first is relative to the second:

  prompt   := group | group " and " group | group " " relation " " group
  group    := number [colour] shape        ("a red circle", "three crosses")
  number   := "a" | "an" | "one" | "two" | "three" | "four"
  relation := "left of" | "right of" | "above" | "below"

(nouns agree in number: "a circle", "two circles", "three crosses"). The
dataset's own captions (`shapes.caption`) are the fullest form: every group
with its colour, and the relation when the scene has one. A prompt that
leaves an attribute out lets the image choose it.

GenEval's six categories (Ghosh et al.) are shapes of a request:

  single_object  one object, no colour            "a triangle"
  two_objects    two single objects, no colours    "a circle and a square"
  counting       one group of 2-4, no colour       "three crosses"
  colors         one object with its colour        "a yellow diamond"
  position       two single objects and a relation "a circle left of a square"
  color_attr     two single objects, both coloured "a red circle and a blue
                                                    square"

Any other request (e.g. a full caption "two red circles left of a blue
square") is category "full". `scene_prompts(scene)` gives, for a scene,
the prompt of every category the scene satisfies: the training captions
of those categories (`tasks.TaskBuilder(prompt_variants=...)`) and the
prompts under which a reconstruction of a held-out image is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

from nextflow_jax.data import shapes

CATEGORIES = ("single_object", "two_objects", "counting", "colors", "position",
              "color_attr")
FULL = "full"
RELATIONS = ("left of", "right of", "above", "below")
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
_SINGULAR = {shapes._plural(s): s for s in shapes.SHAPES}  # pylint: disable=protected-access


@dataclasses.dataclass(frozen=True)
class Group:
  """`count` objects of `shape`; `color` None leaves the colour open."""
  shape: str
  count: int = 1
  color: str | None = None

  def __post_init__(self):
    if self.shape not in shapes.SHAPES:
      raise ValueError(f"shape {self.shape!r} is not one of {shapes.SHAPES}.")
    if self.color is not None and self.color not in shapes.COLORS:
      raise ValueError(f"color {self.color!r} is not one of "
                       f"{tuple(shapes.COLORS)}.")
    if not 1 <= self.count <= shapes.MAX_OBJECTS:
      raise ValueError(f"count {self.count} is not in [1, "
                       f"{shapes.MAX_OBJECTS}].")


@dataclasses.dataclass(frozen=True)
class Request:
  """What a prompt asks for: one or two groups, and maybe a relation of
  the first group to the second."""
  groups: tuple[Group, ...]
  relation: str | None = None

  def __post_init__(self):
    object.__setattr__(self, "groups", tuple(self.groups))
    if len(self.groups) not in (1, 2):
      raise ValueError(f"a request has 1 or 2 groups, got "
                       f"{len(self.groups)}.")
    if self.relation is not None and (
        len(self.groups) != 2 or self.relation not in RELATIONS):
      raise ValueError(f"relation {self.relation!r} needs two groups and one "
                       f"of {RELATIONS}.")
    if len(self.groups) == 2 and self.groups[0].shape == self.groups[1].shape:
      raise ValueError("the two groups of a request have different shapes, "
                       f"got two {self.groups[0].shape} groups.")

  @property
  def category(self) -> str:
    """One of `CATEGORIES`, or `FULL`."""
    counts = [g.count for g in self.groups]
    colored = [g.color is not None for g in self.groups]
    if len(self.groups) == 1:
      if counts[0] == 1:
        return "colors" if colored[0] else "single_object"
      return FULL if colored[0] else "counting"
    if counts != [1, 1]:
      return FULL
    if not any(colored):
      return "position" if self.relation else "two_objects"
    if all(colored) and self.relation is None:
      return "color_attr"
    return FULL


def _describe(group: Group) -> str:
  words = [group.color] if group.color else []
  if group.count == 1:
    words.append(group.shape)
    return f"{shapes._article(words[0])} " + " ".join(words)  # pylint: disable=protected-access
  words.append(shapes._plural(group.shape))  # pylint: disable=protected-access
  return f"{shapes.NUMBER_WORDS[group.count]} " + " ".join(words)


def render(request: Request) -> str:
  """The prompt text of a request."""
  first = _describe(request.groups[0])
  if len(request.groups) == 1:
    return first
  joint = request.relation or "and"
  return f"{first} {joint} {_describe(request.groups[1])}"


def parse(text: str) -> Request:
  """The request a prompt of this grammar states.

  Raises:
    ValueError: the text is not a prompt of the grammar (names the word
      and what was expected).
  """
  words = str(text).strip().lower().rstrip(".").split()
  if not words:
    raise ValueError("an empty prompt is not in the shapes grammar.")
  groups, position = [], 0
  relation = None

  def fail(expected: str):
    got = repr(words[position]) if position < len(words) else "the end"
    raise ValueError(f"prompt {text!r} is not in the shapes grammar: got "
                     f"{got} at word {position + 1}, expected {expected} "
                     "(e.g. 'a red circle left of two blue squares').")

  while True:
    if position >= len(words) or words[position] not in _NUMBERS:
      fail(f"a number {sorted(_NUMBERS)}")
    count = _NUMBERS[words[position]]
    position += 1
    color = None
    if position < len(words) and words[position] in shapes.COLORS:
      color = words[position]
      position += 1
    if position >= len(words):
      fail("a shape")
    noun = words[position]
    shape = noun if count == 1 else _SINGULAR.get(noun)
    if shape not in shapes.SHAPES or (count == 1) != (noun in shapes.SHAPES):
      fail(f"a {'singular' if count == 1 else 'plural'} shape of "
           f"{shapes.SHAPES}")
    position += 1
    groups.append(Group(shape, count, color))
    if position == len(words):
      break
    if len(groups) == 2:
      fail("the end of the prompt")
    rest = " ".join(words[position:position + 2])
    if words[position] == "and":
      position += 1
    elif words[position] in ("above", "below"):
      relation = words[position]
      position += 1
    elif rest in RELATIONS:
      relation = rest
      position += 2
    else:
      fail(f"'and' or a relation {RELATIONS}")
  try:
    return Request(tuple(groups), relation)
  except ValueError as e:
    raise ValueError(f"prompt {text!r}: {e}") from e


def scene_request(scene: shapes.Scene) -> Request:
  """The fullest request a scene satisfies: its caption's."""
  groups = tuple(Group(g[0].shape, len(g), g[0].color)
                 for g in scene.groups())
  return Request(groups, shapes.relation(scene) if len(groups) == 2 else None)


def scene_prompts(scene: shapes.Scene) -> dict[str, str]:
  """{category: prompt} for every category the scene satisfies, plus
  `FULL`: its caption (`shapes.caption(scene)`)."""
  full = scene_request(scene)
  out = {FULL: shapes.caption(scene)}
  g = full.groups
  if len(g) == 1:
    if g[0].count == 1:
      out["single_object"] = render(Request((Group(g[0].shape),)))
      out["colors"] = render(Request((Group(g[0].shape, 1, g[0].color),)))
    else:
      out["counting"] = render(Request((Group(g[0].shape, g[0].count),)))
  elif g[0].count == g[1].count == 1:
    bare = (Group(g[0].shape), Group(g[1].shape))
    out["two_objects"] = render(Request(bare))
    out["color_attr"] = render(Request(g))
    if full.relation:
      out["position"] = render(Request(bare, full.relation))
  return out


def all_requests(categories: Sequence[str] = CATEGORIES) -> list[Request]:
  """Every request of the given categories (the space prompt sets draw
  from)."""
  out = []
  colors = tuple(shapes.COLORS)
  for a in shapes.SHAPES:
    if "single_object" in categories:
      out.append(Request((Group(a),)))
    if "counting" in categories:
      out += [Request((Group(a, n),)) for n in (2, 3, 4)]
    if "colors" in categories:
      out += [Request((Group(a, 1, c),)) for c in colors]
    for b in shapes.SHAPES:
      if a == b:
        continue
      if "two_objects" in categories:
        out.append(Request((Group(a), Group(b))))
      if "position" in categories:
        out += [Request((Group(a), Group(b)), r) for r in RELATIONS]
      if "color_attr" in categories:
        out += [Request((Group(a, 1, c), Group(b, 1, d)))
                for c in colors for d in colors if c != d]
  return out
