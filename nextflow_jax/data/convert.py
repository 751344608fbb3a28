# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Converts a folder of images + captions into ArrayRecord shards.

The format a user with their own data brings:

  my_images/
    cat.jpg   cat.txt          one caption file per image (same stem), or
    dog.png                    a captions.jsonl with {"file": "dog.png",
    captions.jsonl               "caption": "a dog"} per line (also "text")

Every image is decoded, converted to RGB (RGBA is composited over white,
greyscale is repeated to three channels), optionally resized (shorter side
to `image_size`, centre crop), re-encoded as PNG and written with its caption
and source file name as one record (see `records.py`). Shards are written
into a temporary folder that is renamed to `output_dir` only when everything
succeeded, so an interrupted or failed conversion never leaves a folder that
looks valid.

  python -m nextflow_jax.data.convert --input_dir=my_images \
      --output_dir=data/my_images --num_shards=4 --image_size=256

Then train on it with `data.sources=array_record:data/my_images`.
"""

from __future__ import annotations

from collections.abc import Sequence
import io
import json
import os

from absl import app
from absl import flags
from PIL import Image

from nextflow_jax import cli
from nextflow_jax.data import images as image_modes
from nextflow_jax.data import records

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
CAPTIONS_JSONL = "captions.jsonl"


def read_captions(input_dir: str) -> list[tuple[str, str]]:
  """Returns sorted (image path, caption) pairs of a folder.

  Raises:
    ValueError: no images, an image without caption, an empty caption, a
      malformed captions.jsonl line, or a caption for a missing image.
  """
  if not os.path.isdir(input_dir):
    raise ValueError(f"input_dir {input_dir!r} is not a folder.")
  images = sorted(
      f for f in os.listdir(input_dir)
      if f.lower().endswith(IMAGE_EXTENSIONS) and
      os.path.isfile(os.path.join(input_dir, f)))
  if not images:
    raise ValueError(f"{input_dir} contains no images (looked for "
                     f"{', '.join(IMAGE_EXTENSIONS)}).")
  captions, where = {}, {}
  jsonl = os.path.join(input_dir, CAPTIONS_JSONL)
  if os.path.exists(jsonl):
    with open(jsonl, encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          entry = json.loads(line)
          name, text = entry["file"], entry.get("caption", entry.get("text"))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
          raise ValueError(f"{jsonl}:{lineno}: expected a JSON object with "
                           f"'file' and 'caption' (or 'text'): {e}") from e
        if name not in images:
          raise ValueError(f"{jsonl}:{lineno}: caption for {name!r}, which is "
                           f"not an image in {input_dir}.")
        if text is None:
          raise ValueError(f"{jsonl}:{lineno}: the line for {name!r} has no "
                           "'caption' (or 'text') field.")
        if not isinstance(text, str):
          raise ValueError(f"{jsonl}:{lineno}: the caption of {name!r} is a "
                           f"{type(text).__name__}, not a string.")
        captions[name], where[name] = text, f"{jsonl}:{lineno}"
  pairs = []
  for name in images:
    if name not in captions:
      txt = os.path.join(input_dir, os.path.splitext(name)[0] + ".txt")
      if not os.path.exists(txt):
        raise ValueError(f"{os.path.join(input_dir, name)} has no caption: add "
                         f"{os.path.basename(txt)} or a line in "
                         f"{CAPTIONS_JSONL}.")
      with open(txt, encoding="utf-8") as f:
        captions[name], where[name] = f.read(), txt
    text = captions[name]
    if not text.strip():
      raise ValueError(f"{os.path.join(input_dir, name)} has an empty caption "
                       f"(in {where[name]}); write its caption there.")
    pairs.append((os.path.join(input_dir, name), " ".join(text.split())))
  return pairs


def load_rgb(path: str, image_size: int | None) -> Image.Image:
  """Opens an image as RGB, optionally resized + centre-cropped to square."""
  try:
    with Image.open(path) as im:
      im.load()
      rgb = image_modes.to_rgb(im)
  except (OSError, SyntaxError) as e:
    raise ValueError(f"{path} is not a readable image ({e}).") from e
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e
  if image_size is None:
    return rgb
  w, h = rgb.size
  if min(w, h) < image_size:
    raise ValueError(f"{path} is {w}x{h}, smaller than image_size="
                     f"{image_size}; drop it or lower image_size.")
  scale = image_size / min(w, h)
  rw, rh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
  rgb = rgb.resize((rw, rh), Image.Resampling.BICUBIC)
  left, top = (rw - image_size) // 2, (rh - image_size) // 2
  return rgb.crop((left, top, left + image_size, top + image_size))


def convert_image_folder(input_dir: str, output_dir: str, *,
                         num_shards: int = 1,
                         image_size: int | None = None) -> dict:
  """Writes `output_dir` with `num_shards` ArrayRecord shards + manifest.

  Args:
    input_dir: folder of images with captions (see module docstring).
    output_dir: must not exist yet; created atomically.
    num_shards: records are dealt round-robin over this many shards.
    image_size: resize (shorter side) and centre-crop to this square size;
      None keeps each image's size.

  Returns:
    The manifest dict.
  """
  if os.path.exists(output_dir):
    raise ValueError(f"output_dir {output_dir!r} already exists; choose a new "
                     "folder or delete it.")
  pairs = read_captions(input_dir)
  with records.ShardedWriter(output_dir, num_shards=num_shards,
                             source=os.path.abspath(input_dir),
                             image_size=image_size) as writer:
    for path, caption in pairs:
      buf = io.BytesIO()
      load_rgb(path, image_size).save(buf, format="PNG")
      writer.write({"image": buf.getvalue(), "caption": caption,
                    "file": os.path.relpath(path, input_dir)})
  return records.read_manifest(output_dir)


_INPUT = flags.DEFINE_string("input_dir", None, "Folder of images + captions.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "New folder for the shards.")
_SHARDS = flags.DEFINE_integer("num_shards", 1, "Number of ArrayRecord shards.")
_SIZE = flags.DEFINE_integer("image_size", None,
                             "Resize + centre-crop to this size (default: keep).")


def main(argv: Sequence[str]) -> None:
  del argv
  manifest = convert_image_folder(_INPUT.value, _OUTPUT.value,
                                  num_shards=_SHARDS.value,
                                  image_size=_SIZE.value)
  print(f"wrote {manifest['num_records']} records in "
        f"{len(manifest['shards'])} shards to {_OUTPUT.value}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["input_dir", "output_dir"])
  app.run(cli.one_line_errors(main))
