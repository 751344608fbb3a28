# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Folder of images + captions -> ArrayRecord shards -> Grain, and bad input."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from nextflow_jax.data import convert
from nextflow_jax.data import pipeline
from nextflow_jax.data import sources
from nextflow_jax.data import transforms


def make_folder(path, n=5, caption_style="txt"):
  os.makedirs(path, exist_ok=True)
  rng = np.random.default_rng(0)
  pixels = {}
  for i in range(n):
    name = f"img{i}.png"
    arr = rng.integers(0, 256, (24 + i, 20, 3), dtype=np.uint8)
    Image.fromarray(arr).save(os.path.join(path, name))
    pixels[name] = arr
    if caption_style == "txt":
      with open(os.path.join(path, f"img{i}.txt"), "w") as f:
        f.write(f"  picture   number {i}\n")
  if caption_style == "jsonl":
    with open(os.path.join(path, "captions.jsonl"), "w") as f:
      for i in range(n):
        f.write(json.dumps({"file": f"img{i}.png",
                            "text": f"picture number {i}"}) + "\n")
  return pixels


@pytest.mark.parametrize("style", ["txt", "jsonl"])
def test_round_trip_through_grain(tmp_path, style):
  pixels = make_folder(tmp_path / "in", caption_style=style)
  manifest = convert.convert_image_folder(str(tmp_path / "in"),
                                          str(tmp_path / "out"), num_shards=2)
  assert manifest["num_records"] == 5 and len(manifest["shards"]) == 2
  source = sources.open_source(f"array_record:{tmp_path / 'out'}", "train", "")
  got = {}
  for i in range(len(source)):
    ex = source[i]
    got[ex["file"]] = ex
    assert ex["id"] == f"array_record:{tmp_path / 'out'}:{i}"
  assert sorted(got) == sorted(pixels)
  for name, arr in pixels.items():
    np.testing.assert_array_equal(got[name]["image"], arr)  # PNG: lossless
    assert got[name]["caption"] == f"picture number {name[3]}"
  ds = pipeline.make_dataset([source], batch_size=5, shuffle=False,
                             num_epochs=1,
                             transforms=transforms.parse("keep('caption')"))
  assert [ex["caption"] for ex in [source[i] for i in range(5)]] == list(
      ds[0]["caption"])


def test_resize_and_mode_conversion(tmp_path):
  src = tmp_path / "in"
  src.mkdir()
  Image.new("RGBA", (40, 30), (255, 0, 0, 0)).save(src / "clear.png")
  Image.new("L", (30, 50), 7).save(src / "grey.png")
  # 16-bit greyscale: PIL's own convert("RGB") clips it to white.
  Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(src / "deep.png")
  for stem in ("clear", "grey", "deep"):
    (src / f"{stem}.txt").write_text(stem)
  convert.convert_image_folder(str(src), str(tmp_path / "out"), image_size=16)
  source = sources.ArrayRecordSource(str(tmp_path / "out"))
  images = {source[i]["caption"]: source[i]["image"] for i in range(3)}
  assert images["clear"].shape == (16, 16, 3)
  assert (images["clear"] == 255).all()  # transparent -> white background
  assert (images["grey"] == 7).all()
  assert (images["deep"] == 40000 >> 8).all()  # 156, not 255


@pytest.mark.parametrize("setup,match", [
    ("empty", r"contains no images"),
    ("no_caption", r"img0.png has no caption: add img0.txt"),
    ("empty_caption", r"img0.png has an empty caption \(in .*img0.txt\)"),
    ("jsonl_empty_caption", r"img0.png has an empty caption "
     r"\(in .*captions.jsonl:1\)"),
    ("jsonl_no_caption", r"captions.jsonl:1: the line for 'img0.png' has no "
     r"'caption'"),
    ("jsonl_number_caption", r"captions.jsonl:1: the caption of 'img0.png' "
     r"is a int, not a string"),
    ("corrupt", r"img1.png is not a readable image"),
    ("bad_jsonl", r"captions.jsonl:1: expected a JSON object"),
    ("jsonl_unknown_file", r"caption for 'ghost.png', which is not an image"),
    ("too_small", r"img0.png is 20x24, smaller than image_size=32"),
])
def test_bad_input_fails_clearly_and_leaves_nothing(tmp_path, setup, match):
  src = tmp_path / "in"
  src.mkdir()
  if setup != "empty":
    make_folder(src, n=3)
  if setup == "no_caption":
    os.remove(src / "img0.txt")
  elif setup == "empty_caption":
    (src / "img0.txt").write_text("  \n")
  elif setup == "corrupt":
    (src / "img1.png").write_bytes(b"not a png at all")
  elif setup == "bad_jsonl":
    (src / "captions.jsonl").write_text("{not json\n")
  elif setup == "jsonl_empty_caption":
    (src / "captions.jsonl").write_text('{"file": "img0.png", "caption": ""}')
  elif setup == "jsonl_no_caption":
    (src / "captions.jsonl").write_text('{"file": "img0.png"}')
  elif setup == "jsonl_number_caption":
    (src / "captions.jsonl").write_text('{"file": "img0.png", "caption": 7}')
  elif setup == "jsonl_unknown_file":
    (src / "captions.jsonl").write_text('{"file": "ghost.png", "caption": "x"}')
  with pytest.raises(ValueError, match=match):
    convert.convert_image_folder(str(src), str(tmp_path / "out"),
                                 image_size=32 if setup == "too_small" else None)
  assert sorted(os.listdir(tmp_path)) == ["in"]  # No partial output left.


def test_existing_output_is_not_overwritten(tmp_path):
  make_folder(tmp_path / "in", n=1)
  (tmp_path / "out").mkdir()
  with pytest.raises(ValueError, match="already exists"):
    convert.convert_image_folder(str(tmp_path / "in"), str(tmp_path / "out"))


def test_folder_without_manifest_is_rejected(tmp_path):
  (tmp_path / "half").mkdir()
  with pytest.raises(FileNotFoundError, match="not a finished"):
    sources.open_source(f"array_record:{tmp_path / 'half'}", "train", "")


def test_bad_input_on_the_command_line_is_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "nextflow_jax.data.convert",
       f"--input_dir={tmp_path / 'missing'}", f"--output_dir={tmp_path / 'o'}"],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      f"Bad input: input_dir '{tmp_path / 'missing'}' is not a folder.")
  assert "Traceback" not in result.stderr
