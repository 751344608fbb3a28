# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Every sampling knob in one dataclass, saved next to what it generated.

`SamplingConfig` is plain data (JSON round trip with `to_json` /
`from_json`), so any image written by the sampler can be regenerated
exactly from the `sampling.json` beside it plus the model checkpoint.

Per-scale knobs (temperature, top-k, top-p) take one value for every scale
or a tuple with one value per scale. Guidance (VAR's form, see `filters`):

  guidance_schedule = "constant":  w_k = guidance
                      "linear":    w_k = guidance * (k - 1) / (K - 1)
                                   (VAR's ramp: scale 1 unguided)
                      "list":      w_k = guidance_list[k - 1]
  guidance_cutoff = c > 0:         w_k = 0 for k > c (early cut-off)

and the unconditional branch reads `negative_prompt` ("" = the empty
prompt that `data.condition_dropout` trained). Defaults follow VRL's use of
VAR's procedure with NextFlow (cfg 5, top-k 2, top-p 0.9 at 1024 px,
nextflow-method.md section 8.2) softened for small models: cfg 3 with the
linear ramp, top-k None (off), top-p 0.95.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from nextflow_jax import scales
from nextflow_jax.text import vocab

GUIDANCE_SCHEDULES = ("constant", "linear", "list")
FILE_NAME = "sampling.json"


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample images and text.

  Attributes:
    seed: base seed; row r of a batch uses fold_in(key(seed), first_row + r).
    schedule: image schedule, "1,2,4" or "1x1,2x3,..."; "" = the model's
      training schedule. Overridden by `aspect_ratio`.
    aspect_ratio, resolution: a row of the paper's schedule table (e.g.
      "7:4", 512); "" = use `schedule`.
    guidance, guidance_schedule, guidance_list, guidance_cutoff,
      negative_prompt: classifier-free guidance (module docstring);
      guidance 0 with "constant" turns CFG off (no unconditional rows).
    temperature, top_k, top_p: visual sampling, per scale or one value
      (top_k None = off).
    text_max_new_tokens: longest generated text.
    text_temperature, text_top_k, text_top_p: text sampling (temperature
      0 = greedy).
    stop_tokens: token ids that end text generation (kept in the output).
  """
  seed: int = 0
  schedule: str = ""
  aspect_ratio: str = ""
  resolution: int = 256
  guidance: float = 3.0
  guidance_schedule: str = "linear"
  guidance_list: tuple[float, ...] = ()
  guidance_cutoff: int = 0
  negative_prompt: str = ""
  temperature: float | tuple[float, ...] = 1.0
  top_k: int | None | tuple[int | None, ...] = None
  top_p: float | tuple[float, ...] = 0.95
  text_max_new_tokens: int = 48
  text_temperature: float = 0.0
  text_top_k: int | None = None
  text_top_p: float = 1.0
  stop_tokens: tuple[int, ...] = (vocab.EOS_ID,)

  def __post_init__(self):
    if self.guidance_schedule not in GUIDANCE_SCHEDULES:
      raise ValueError(f"guidance_schedule={self.guidance_schedule!r}; "
                       f"choose one of {GUIDANCE_SCHEDULES}.")
    if self.guidance_schedule == "list" and not self.guidance_list:
      raise ValueError("guidance_schedule='list' needs guidance_list, one "
                       "weight per scale.")
    if self.guidance_cutoff < 0:
      raise ValueError(f"guidance_cutoff={self.guidance_cutoff} must be >= 0 "
                       "(0 = no cut-off).")
    for name in ("top_k", "text_top_k"):
      for k in _as_tuple(getattr(self, name)):
        if k is not None and (int(k) != k or k < 1):
          raise ValueError(f"{name}={getattr(self, name)}: top-k must be a "
                           "positive integer, or None for no top-k.")
    for name in ("top_p", "text_top_p"):
      for p in _as_tuple(getattr(self, name)):
        if not 0 < p <= 1:
          raise ValueError(f"{name}={getattr(self, name)}: top-p must be in "
                           "(0, 1]; 1 turns it off.")
    for name in ("temperature", "text_temperature"):
      for t in _as_tuple(getattr(self, name)):
        if t < 0:
          raise ValueError(f"{name}={getattr(self, name)} must be >= 0 "
                           "(0 = greedy).")
    if self.text_max_new_tokens < 1:
      raise ValueError(f"text_max_new_tokens={self.text_max_new_tokens} must "
                       "be positive.")
    # Checked now, not after a model has loaded.
    schedule = None
    if self.aspect_ratio:
      schedule = scales.paper_schedule(self.aspect_ratio, self.resolution)
    elif self.schedule:
      schedule = scales.parse_schedule(self.schedule)
      scales.validate_schedule(schedule, name="sampling schedule")
    if (schedule is not None and self.guidance_schedule == "list" and
        len(self.guidance_list) != len(schedule)):
      raise ValueError(f"guidance_list={tuple(self.guidance_list)} has "
                       f"{len(self.guidance_list)} weights but the schedule "
                       f"has {len(schedule)} scales; give one per scale.")

  # ---------------------------------------------------------- per scale

  def image_schedule(self, default: scales.Schedule) -> scales.Schedule:
    """The schedule to generate: aspect_ratio > schedule > `default`."""
    if self.aspect_ratio:
      return scales.paper_schedule(self.aspect_ratio, self.resolution)
    if self.schedule:
      schedule = scales.parse_schedule(self.schedule)
      scales.validate_schedule(schedule, name="sampling schedule")
      return schedule
    return tuple(tuple(s) for s in default)

  @property
  def uses_guidance(self) -> bool:
    return not (self.guidance_schedule != "list" and self.guidance == 0)

  def guidance_weights(self, num_scales: int) -> np.ndarray:
    """(num_scales,) float32 guidance weight of every scale."""
    k = np.arange(num_scales, dtype=np.float64)
    if self.guidance_schedule == "constant":
      w = np.full(num_scales, self.guidance)
    elif self.guidance_schedule == "linear":
      w = self.guidance * k / max(num_scales - 1, 1)
    else:
      w = np.asarray(self.guidance_list, np.float64)
      if len(w) != num_scales:
        raise ValueError(f"guidance_list has {len(w)} weights but the "
                         f"schedule has {num_scales} scales; give one per "
                         "scale.")
    if self.guidance_cutoff:
      w = np.where(k < self.guidance_cutoff, w, 0.0)
    return w.astype(np.float32)

  def per_scale(self, name: str, num_scales: int) -> tuple:
    """A per-scale knob expanded to `num_scales` values."""
    values = _as_tuple(getattr(self, name))
    if len(values) == 1:
      return values * num_scales
    if len(values) != num_scales:
      raise ValueError(f"{name} has {len(values)} values but the schedule has "
                       f"{num_scales} scales; give one value or one per "
                       "scale.")
    return values

  # -------------------------------------------------------------- JSON

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "SamplingConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown sampling keys {unknown}; known: "
                       f"{sorted(known)}.")
    fixed = {k: tuple(v) if isinstance(v, (list, tuple)) else v
             for k, v in values.items()}
    return cls(**fixed)

  @classmethod
  def from_json(cls, text: str) -> "SamplingConfig":
    return cls.from_dict(json.loads(text))


def _as_tuple(value: Any) -> tuple:
  if isinstance(value, Sequence) and not isinstance(value, str):
    return tuple(value)
  return (value,)
