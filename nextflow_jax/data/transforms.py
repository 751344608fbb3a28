# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Named per-example transforms, chosen in configs by a spec string.

big_vision's "pp" idea with Grain transforms: `data.transforms` is a string
like

  "check_image|resize(64)|to_float|tokenize(max_len=32)|keep('image','tokens')"

Each item is a registered name with optional literal arguments. Transforms
are module-level classes so Grain worker processes can pickle them.
Transforms that need resources (the text tokenizer) take their path from the
`context` given to `parse`, and load it lazily in the worker.

Errors name the record (`example["id"]`) and what was expected.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np
from PIL import Image

from nextflow_jax.text import tokenizer as text_tokenizer
from nextflow_jax.text import vocab

_REGISTRY: dict[str, Callable[..., grain.transforms.Map]] = {}


def register(name: str):
  """Class decorator: makes a transform available under `name` in specs."""
  def wrap(cls):
    _REGISTRY[name] = cls
    return cls
  return wrap


def names() -> list[str]:
  return sorted(_REGISTRY)


def parse(spec: str, context: dict[str, Any] | None = None
          ) -> list[grain.transforms.Map]:
  """Builds transforms from a "a|b(1)|c(k=2)" spec.

  Args:
    spec: '|'-separated items `name` or `name(literal args)`.
    context: resources for transforms that declare them (a transform whose
      constructor has a `context` argument receives this dict).

  Raises:
    ValueError: unknown name or arguments that are not Python literals.
  """
  out = []
  for item in (s.strip() for s in spec.split("|")):
    if not item:
      continue
    try:
      call = ast.parse(item if "(" in item else item + "()", mode="eval").body
      if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError("not a call")
      args = [ast.literal_eval(a) for a in call.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError) as e:
      raise ValueError(f"transform {item!r} is not `name` or `name(literal "
                       f"args)`: {e}") from e
    name = call.func.id
    if name not in _REGISTRY:
      raise ValueError(f"unknown transform {name!r} in {spec!r}; registered: "
                       f"{names()}.")
    cls = _REGISTRY[name]
    if "context" in cls.__init__.__code__.co_varnames:
      kwargs["context"] = context or {}
    try:
      out.append(cls(*args, **kwargs))
    except (TypeError, ValueError) as e:
      raise ValueError(f"transform {item!r}: {e}") from e
  return out


def _rid(example: dict[str, Any]) -> str:
  return str(example.get("id", "<unknown record>"))


@register("check_image")
class CheckImage(grain.transforms.Map):
  """Asserts `key` is a uint8 (H, W, channels) image, optionally of `size`."""

  def __init__(self, size: int | None = None, channels: int = 3,
               key: str = "image"):
    self.size, self.channels, self.key = size, channels, key

  def map(self, example):
    if self.key not in example:
      raise ValueError(f"record {_rid(example)} has no {self.key!r} field; "
                       f"fields: {sorted(example)}.")
    image = np.asarray(example[self.key])
    if image.ndim != 3 or image.shape[-1] != self.channels:
      raise ValueError(f"record {_rid(example)}: {self.key} has shape "
                       f"{image.shape}, expected (H, W, {self.channels}).")
    if image.dtype != np.uint8:
      raise ValueError(f"record {_rid(example)}: {self.key} has dtype "
                       f"{image.dtype}, expected uint8.")
    if self.size is not None and image.shape[:2] != (self.size, self.size):
      raise ValueError(f"record {_rid(example)}: {self.key} is "
                       f"{image.shape[0]}x{image.shape[1]}, expected "
                       f"{self.size}x{self.size}; add resize({self.size}).")
    return example


@register("resize")
class Resize(grain.transforms.Map):
  """Resizes the shorter side to `size` (bicubic) and centre-crops a square."""

  def __init__(self, size: int, key: str = "image"):
    if size < 1:
      raise ValueError(f"size={size} must be positive.")
    self.size, self.key = size, key

  def map(self, example):
    image = np.asarray(example[self.key])
    h, w = image.shape[:2]
    if (h, w) != (self.size, self.size):
      scale = self.size / min(h, w)
      rh, rw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
      pil = Image.fromarray(image).resize((rw, rh), Image.Resampling.BICUBIC)
      top, left = (rh - self.size) // 2, (rw - self.size) // 2
      image = np.asarray(pil)[top:top + self.size, left:left + self.size]
    example[self.key] = image
    return example


@register("to_float")
class ToFloat(grain.transforms.Map):
  """uint8 [0, 255] -> float32 [-1, 1] for each of `keys`."""

  def __init__(self, *keys: str):
    self.keys = keys or ("image",)

  def map(self, example):
    for key in self.keys:
      example[key] = np.asarray(example[key], np.float32) / 127.5 - 1.0
    return example


@register("tokenize")
class Tokenize(grain.transforms.Map):
  """Text at `key` -> int32 ids at `out` (+ `out`_mask), padded to max_len.

  Adds <bos>/<eos>. Text longer than `max_len` tokens is an error (raise
  max_len): silently truncating captions would train on cut sentences.
  Needs `context["text_tokenizer"]`, the path of the sentencepiece model.
  """

  def __init__(self, max_len: int, key: str = "caption",
               out: str = "tokens", context: dict[str, Any] | None = None):
    if "text_tokenizer" not in (context or {}):
      raise ValueError("tokenize needs the text tokenizer: run the "
                       "prepare_data job first and pass its path as "
                       "context['text_tokenizer'].")
    self.max_len, self.key, self.out = max_len, key, out
    self.path = context["text_tokenizer"]
    self._tokenizer = None

  def __getstate__(self):
    return {**self.__dict__, "_tokenizer": None}

  def map(self, example):
    if self._tokenizer is None:
      self._tokenizer = text_tokenizer.load(self.path)
    text = example[self.key]
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"record {_rid(example)}: {self.key} is empty or not "
                       f"text ({text!r}).")
    ids = self._tokenizer.encode(text, add_bos=True, add_eos=True)
    if len(ids) > self.max_len:
      raise ValueError(f"record {_rid(example)}: {self.key} is {len(ids)} "
                       f"tokens, more than max_len={self.max_len}; raise it.")
    tokens = np.full((self.max_len,), vocab.PAD_ID, np.int32)
    tokens[:len(ids)] = ids
    example[self.out] = tokens
    example[self.out + "_mask"] = tokens != vocab.PAD_ID
    return example


@register("keep")
class Keep(grain.transforms.Map):
  """Keeps only the given fields (strings can be batched, but often needn't)."""

  def __init__(self, *keys: str):
    if not keys:
      raise ValueError("keep() needs at least one field name.")
    self.keys = keys

  def map(self, example):
    missing = [k for k in self.keys if k not in example]
    if missing:
      raise ValueError(f"record {_rid(example)} lacks {missing}; fields: "
                       f"{sorted(example)}.")
    return {k: example[k] for k in self.keys}


@register("rename")
class Rename(grain.transforms.Map):
  """rename(old='new', ...): renames fields, e.g. a TFDS dataset's keys."""

  def __init__(self, **mapping: str):
    self.mapping = mapping

  def map(self, example):
    for old, new in self.mapping.items():
      if old not in example:
        raise ValueError(f"record {_rid(example)} has no {old!r} to rename; "
                         f"fields: {sorted(example)}.")
      example[new] = example.pop(old)
    return example


def apply(transforms: Sequence[grain.transforms.Map],
          example: dict[str, Any]) -> dict[str, Any]:
  """Runs transforms on one example (for notebooks and tests)."""
  for t in transforms:
    example = t.map(example)
  return example
