# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Scale schedules: the paper's table and its token counts."""

import pytest

from nextflow_jax import scales


def test_square_token_counts_match_the_paper():
  counts = [scales.token_count(scales.paper_schedule("1:1", r))
            for r in (256, 512, 1024)]
  assert counts == [900, 3684, 10084]


def test_table_has_41_valid_18_step_schedules():
  assert len(scales.PAPER_SCHEDULES) == 41
  for name, schedule in scales.PAPER_SCHEDULES.items():
    assert len(schedule) == 18 and schedule[0] == (1, 1)
    scales.validate_schedule(schedule, name=name)


@pytest.mark.parametrize("ratio,counts", [
    ("1:4", (905, 3689, 10089)), ("13:19", (865, 3556, 9731)),
    ("15:17", (896, 3667, 10042)), ("4:1", (905, 3689, 10089))])
def test_rows_of_table_14(ratio, counts):
  got = tuple(scales.token_count(scales.paper_schedule(ratio, r))
              for r in (256, 512, 1024))
  assert got == counts


def test_aspect_ratio_is_h_over_w():
  h, w = scales.paper_schedule("1:2", 1024)[-1]
  assert (h, w) == (44, 88)
  assert scales.pixel_size(scales.paper_schedule("1:2", 1024), 16) == (704, 1408)


def test_parse_and_square():
  assert scales.parse_schedule("1,2,4") == ((1, 1), (2, 2), (4, 4))
  assert scales.parse_schedule("1x1, 2x3") == ((1, 1), (2, 3))
  assert scales.parse_schedule([1, (2, 3)]) == ((1, 1), (2, 3))
  assert scales.square_schedule([1, 2]) == ((1, 1), (2, 2))


@pytest.mark.parametrize("kwargs,match", [
    (dict(aspect_ratio="7:3"), "not in the paper's table"),
    (dict(resolution=300), "not a level"),
])
def test_paper_schedule_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    scales.paper_schedule(**kwargs)


@pytest.mark.parametrize("schedule,kwargs,match", [
    ((), {}, "is empty"),
    (((1, 1), (0, 2)), {}, "sides must be positive"),
    (((2, 2), (2, 2)), {}, "not increasing at step 1"),
    (((1, 1), (2, 1), (1, 3)), {}, "not increasing at step 2"),
    (((1, 1), (4, 4)), dict(image_size=60, downsample=16), "not a multiple"),
    (((1, 1), (2, 2)), dict(image_size=64, downsample=16), "final grid of 4x4"),
])
def test_validate_schedule_errors(schedule, kwargs, match):
  with pytest.raises(ValueError, match=match):
    scales.validate_schedule(schedule, **kwargs)
