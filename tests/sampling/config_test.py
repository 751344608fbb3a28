# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""SamplingConfig: guidance schedules, per-scale knobs, errors, JSON."""

import numpy as np
import pytest

from nextflow_jax import scales
from nextflow_jax.sampling import config as config_lib


def test_guidance_schedules():
  c = config_lib.SamplingConfig
  np.testing.assert_allclose(c(guidance=4.0, guidance_schedule="constant")
                             .guidance_weights(3), [4, 4, 4])
  np.testing.assert_allclose(c(guidance=4.0).guidance_weights(5),
                             [0, 1, 2, 3, 4])
  np.testing.assert_allclose(
      c(guidance_schedule="list", guidance_list=(1, 2, 3))
      .guidance_weights(3), [1, 2, 3])
  np.testing.assert_allclose(
      c(guidance=2.0, guidance_schedule="constant", guidance_cutoff=2)
      .guidance_weights(4), [2, 2, 0, 0])
  assert not c(guidance=0.0, guidance_schedule="constant").uses_guidance


def test_per_scale_knobs_and_schedules():
  c = config_lib.SamplingConfig(top_k=(1, 2, 3), temperature=0.5)
  assert c.per_scale("top_k", 3) == (1, 2, 3)
  assert c.per_scale("temperature", 3) == (0.5, 0.5, 0.5)
  with pytest.raises(ValueError, match="top_k has 3 values but the schedule "
                     "has 4 scales"):
    c.per_scale("top_k", 4)
  default = ((1, 1), (2, 2))
  assert c.image_schedule(default) == default
  assert config_lib.SamplingConfig(schedule="1,2x3").image_schedule(
      default) == ((1, 1), (2, 3))
  assert config_lib.SamplingConfig(
      aspect_ratio="7:4", resolution=1024).image_schedule(
          default) == scales.paper_schedule("7:4", 1024)
  with pytest.raises(ValueError, match="not in the paper's table"):
    config_lib.SamplingConfig(aspect_ratio="16:9").image_schedule(default)


@pytest.mark.parametrize("kwargs, message", [
    (dict(top_k=0.5), "top-k must be a positive integer"),
    (dict(top_k=0), "top-k must be a positive integer"),
    (dict(text_top_k=-1), "top-k must be a positive integer"),
    (dict(top_p=0.0), r"top-p must be in \(0, 1\]"),
    (dict(text_top_p=1.5), r"top-p must be in \(0, 1\]"),
    (dict(temperature=-1.0), "must be >= 0"),
    (dict(guidance_schedule="cosine"), "guidance_schedule='cosine'"),
    (dict(guidance_schedule="list"), "needs guidance_list"),
])
def test_bad_input_sampling_knobs(kwargs, message):
  with pytest.raises(ValueError, match=message):
    config_lib.SamplingConfig(**kwargs)


def test_guidance_list_of_the_wrong_length_raises():
  c = config_lib.SamplingConfig(guidance_schedule="list",
                                guidance_list=(1.0, 2.0))
  with pytest.raises(ValueError, match="guidance_list has 2 weights but the "
                     "schedule has 3 scales"):
    c.guidance_weights(3)


def test_json_round_trip_and_unknown_keys():
  c = config_lib.SamplingConfig(seed=7, top_k=(None, 2), stop_tokens=(3, 4))
  assert config_lib.SamplingConfig.from_json(c.to_json()) == c
  with pytest.raises(ValueError, match=r"unknown sampling keys \['cfg'\]"):
    config_lib.SamplingConfig.from_dict({"cfg": 3})
