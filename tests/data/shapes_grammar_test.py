# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The shapes caption grammar: render / parse round trips, categories."""

import numpy as np
import pytest

from nextflow_jax.data import shapes
from nextflow_jax.data import shapes_grammar as grammar

G, R = grammar.Group, grammar.Request


@pytest.mark.parametrize("text,request_,category", [
    ("a triangle", R((G("triangle"),)), "single_object"),
    ("a circle and a square", R((G("circle"), G("square"))), "two_objects"),
    ("three crosses", R((G("cross", 3),)), "counting"),
    ("a yellow diamond", R((G("diamond", 1, "yellow"),)), "colors"),
    ("a circle left of a square", R((G("circle"), G("square")), "left of"),
     "position"),
    ("a red circle and a blue square",
     R((G("circle", 1, "red"), G("square", 1, "blue"))), "color_attr"),
    ("two red circles left of a blue square",
     R((G("circle", 2, "red"), G("square", 1, "blue")), "left of"), "full"),
    ("an orange square above four green crosses",
     R((G("square", 1, "orange"), G("cross", 4, "green")), "above"), "full"),
])
def test_parse_render_and_category(text, request_, category):
  assert grammar.parse(text) == request_
  assert grammar.render(request_) == text
  assert request_.category == category


@pytest.mark.parametrize("text,match", [
    ("", "empty prompt"),
    ("a purple elephant", r"got 'elephant' at word 3, expected a singular "
     r"shape"),
    ("two circle", r"expected a plural shape"),
    ("a circles", r"expected a singular shape"),
    ("five circles", r"expected a number"),
    ("a circle next to a square", r"got 'next' at word 3, expected 'and' or "
     r"a relation"),
    ("a circle and a circle", r"different shapes"),
    ("a circle and a square and a cross", r"expected the end"),
])
def test_text_outside_the_grammar_is_refused(text, match):
  with pytest.raises(ValueError, match=match):
    grammar.parse(text)


def test_every_dataset_caption_parses_back_to_its_scene():
  rng = np.random.default_rng(0)
  for _ in range(300):
    scene = shapes.sample_scene(rng, 64)
    caption = shapes.caption(scene)
    assert grammar.parse(caption) == grammar.scene_request(scene)
    assert grammar.render(grammar.scene_request(scene)) == caption


def test_scene_prompts_cover_the_categories_a_scene_satisfies():
  def obj(shape, color, x):
    return shapes.ShapeObject(shape, color, (20, x, 36, x + 16))

  one = shapes.Scene("white", (obj("circle", "red", 4),), 64)
  assert grammar.scene_prompts(one) == {
      "full": "a red circle", "single_object": "a circle",
      "colors": "a red circle"}
  many = shapes.Scene("white", (obj("cross", "blue", 2), obj("cross", "blue",
                                                             22)), 64)
  assert grammar.scene_prompts(many) == {"full": "two blue crosses",
                                         "counting": "two crosses"}
  pair = shapes.Scene("black", (obj("circle", "red", 4),
                                obj("square", "blue", 40)), 64)
  assert grammar.scene_prompts(pair) == {
      "full": "a red circle left of a blue square",
      "two_objects": "a circle and a square",
      "color_attr": "a red circle and a blue square",
      "position": "a circle left of a square"}
  for prompt in grammar.scene_prompts(pair).values():
    grammar.parse(prompt)


def test_all_requests_sizes():
  assert len(grammar.all_requests(("single_object",))) == 5
  assert len(grammar.all_requests(("counting",))) == 15
  assert len(grammar.all_requests(("colors",))) == 40
  assert len(grammar.all_requests(("two_objects",))) == 20
  assert len(grammar.all_requests(("position",))) == 80
  assert len(grammar.all_requests(("color_attr",))) == 20 * 56
  assert {r.category for r in grammar.all_requests()} == set(
      grammar.CATEGORIES)
