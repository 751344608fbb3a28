# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Every image mode we accept becomes the 8-bit RGB picture it shows."""

import io

import numpy as np
from PIL import Image
import pytest

from nextflow_jax.data import images
from nextflow_jax.data import sources


def _encoded(im: Image.Image) -> bytes:
  buffer = io.BytesIO()
  im.save(buffer, "TIFF" if im.mode == "I" else "PNG")  # PNG has no 32-bit
  return buffer.getvalue()


@pytest.mark.parametrize("image,expected", [
    (Image.new("RGB", (4, 4), (1, 2, 3)), (1, 2, 3)),
    (Image.new("L", (4, 4), 9), (9, 9, 9)),
    (Image.new("RGBA", (4, 4), (10, 20, 30, 0)), (255, 255, 255)),
    (Image.new("RGBA", (4, 4), (10, 20, 30, 255)), (10, 20, 30)),
    (Image.fromarray(np.full((4, 4), 0x8000, np.uint16)), (128, 128, 128)),
    (Image.fromarray(np.full((4, 4), 200, np.int32)), (200, 200, 200)),
    (Image.fromarray(np.full((4, 4), 0xFF00, np.int32)), (255, 255, 255)),
])
def test_modes_become_the_rgb_they_show(image, expected):
  rgb = np.asarray(images.to_rgb(image))
  assert rgb.dtype == np.uint8 and rgb.shape == (4, 4, 3)
  assert (rgb == expected).all()
  # Records decode through the same path.
  decoded = sources.decode_image(_encoded(image), "r0")
  assert (decoded == expected).all()


def test_bad_input_float_image_mode_is_named():
  with pytest.raises(ValueError, match=r"unsupported image mode 'F'"):
    images.to_rgb(Image.new("F", (4, 4), 0.5))
