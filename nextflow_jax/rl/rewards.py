# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Rewards for image RL: plain callables registered by name.

A reward is `fn(images, prompts, **record) -> float32[B]`: `images` are
(B, H, W, 3) uint8 generations, `prompts` their B prompt strings, and
`record` holds any other per-prompt fields the prompt source gives (each a
length-B sequence). Register your own (an OCR score, a preference model)
and name it in `config.grpo.rewards`; the trainer never changes:

  from nextflow_jax.rl import rewards

  @rewards.register("brightness")
  def brightness(images, prompts, **record):
    return images.mean(axis=(1, 2, 3)) / 255.0

`combined(names, weights)` is the weighted sum the trainer uses; it checks
every reward's output (shape (B,), finite) and names the one that is not.

Built in:
  shapes_geneval         fraction of the prompt's checks that pass
                         (`shapes_geneval.Verdict.fraction`): dense, in [0, 1]
  shapes_geneval_binary  1 when the image is right, else 0 (GenEval's own
                         per-image score)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nextflow_jax.evals import shapes_geneval

Reward = Callable[..., np.ndarray]
_REGISTRY: dict[str, Reward] = {}


def register(name: str) -> Callable[[Reward], Reward]:
  """Decorator: registers `fn` under `name` (a name is taken only once)."""

  def wrap(fn: Reward) -> Reward:
    if name in _REGISTRY and _REGISTRY[name] is not fn:
      raise ValueError(f"a reward named {name!r} is registered already.")
    _REGISTRY[name] = fn
    return fn

  return wrap


def get(name: str) -> Reward:
  if name not in _REGISTRY:
    raise ValueError(f"no reward named {name!r}; registered: "
                     f"{sorted(_REGISTRY)} (add one with "
                     "`nextflow_jax.rl.rewards.register`).")
  return _REGISTRY[name]


def names() -> list[str]:
  return sorted(_REGISTRY)


def checked(name: str, values: Any, batch_size: int) -> np.ndarray:
  """`values` as float32[B], or a ValueError naming the reward."""
  out = np.asarray(values, np.float32)
  if out.shape != (batch_size,):
    raise ValueError(f"reward {name!r} returned shape {out.shape}; a reward "
                     f"returns one float per image, shape ({batch_size},).")
  if not np.all(np.isfinite(out)):
    bad = np.flatnonzero(~np.isfinite(out))[:5].tolist()
    raise ValueError(f"reward {name!r} returned non-finite values at images "
                     f"{bad}: {out[bad].tolist()}.")
  return out


def combined(reward_names: Sequence[str], weights: Sequence[float]
             ) -> Callable[..., tuple[np.ndarray, dict[str, np.ndarray]]]:
  """`fn(images, prompts, **record) -> (total float32[B], {name: values})`,
  total = sum_i weights[i] * reward_i."""
  if len(reward_names) != len(weights) or not reward_names:
    raise ValueError(f"rewards {list(reward_names)} need one weight each; "
                     f"got {list(weights)}.")
  fns = [get(n) for n in reward_names]

  def total(images, prompts, **record):
    parts = {n: checked(n, fn(images, prompts, **record), len(prompts))
             for n, fn in zip(reward_names, fns)}
    value = sum(w * parts[n] for n, w in zip(reward_names, weights))
    return np.asarray(value, np.float32), parts

  return total


@register("shapes_geneval")
def shapes_geneval_fraction(images, prompts, **record) -> np.ndarray:
  del record
  return np.asarray([shapes_geneval.score(np.asarray(im), p).fraction
                     for im, p in zip(images, prompts)], np.float32)


@register("shapes_geneval_binary")
def shapes_geneval_binary(images, prompts, **record) -> np.ndarray:
  del record
  return np.asarray([float(shapes_geneval.score(np.asarray(im), p).correct)
                     for im, p in zip(images, prompts)], np.float32)
