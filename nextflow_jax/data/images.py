# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""PIL images of any common mode -> 8-bit RGB, the one format we train on.

  * RGB: as is. CMYK, YCbCr: PIL's conversion.
  * Transparency (RGBA, LA, palette with alpha): composited on white, the
    usual background of icons and drawings (a plain `convert("RGB")` keeps
    whatever colour the transparent pixels hold, often black).
  * 8-bit greyscale (L): repeated into three channels.
  * 16- and 32-bit greyscale (I;16*, I): PIL's `convert("RGB")` clips the
    values at 255, so almost every pixel turns white. They are scaled to 8
    bits instead: 16-bit by >> 8; 32-bit by the 16-bit range when values
    exceed 255.
  * Anything else (float "F", 1-bit "1" is fine via L; HSV, LAB...) is an
    error that names the mode.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_ALPHA_MODES = ("RGBA", "LA", "P", "PA", "RGBa", "La")
_DIRECT_MODES = ("RGB", "L", "1", "CMYK", "YCbCr")


def to_rgb(im: Image.Image) -> Image.Image:
  """Converts an opened image to 8-bit RGB (see the module docstring).

  Raises:
    ValueError: the mode cannot be read as a picture (named).
  """
  if im.mode == "RGB":
    return im
  if im.mode in _ALPHA_MODES:
    rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")
  if im.mode in _DIRECT_MODES:
    return im.convert("RGB")
  if im.mode.startswith("I;16") or im.mode == "I":
    values = np.asarray(im).astype(np.int64)
    if im.mode.startswith("I;16") or values.max(initial=0) > 255:
      values = values >> 8
    grey = np.clip(values, 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")
  raise ValueError(f"unsupported image mode {im.mode!r}; expected an RGB, "
                   "RGBA, greyscale (8 or 16 bit) or palette image.")
