# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The Twemoji dataset: captions, stable split, prepared records."""

import numpy as np
import tensorflow_datasets as tfds

from nextflow_jax.data import twemoji


def test_captions_are_cldr_names():
  assert twemoji.caption_for("1f34e.png") == "red apple"
  assert twemoji.caption_for("1f436.png") == "dog face"
  assert twemoji.caption_for("1f1e9-1f1ea.png") == "flag germany"
  assert twemoji.caption_for(
      "1f3f4-e0067-e0062-e0065-e006e-e0067-e007f.png") == "flag england"
  assert twemoji.caption_for("1f3f4-200d-2620-fe0f.png") == "pirate flag"
  assert twemoji.caption_for("e50a.png") is None  # private use: no name


def test_split_is_stable_and_about_ten_percent():
  files = twemoji.emoji_files()
  assert len(files) == 4009
  test = [f for f in files if twemoji.is_test(f)]
  assert 0.08 < len(test) / len(files) < 0.12
  assert twemoji.is_test(test[0]) and not twemoji.is_test(
      next(f for f in files if f not in test))


def test_prepared_records_match_the_assets(tfds_dir):
  train = tfds.data_source("twemoji/32px", data_dir=tfds_dir, split="train")
  test = tfds.data_source("twemoji/32px", data_dir=tfds_dir, split="test")
  named = [f for f in twemoji.emoji_files() if twemoji.caption_for(f)]
  assert len(train) + len(test) == len(named)
  train_codes = {train[i]["codepoints"] for i in range(len(train))}
  test_codes = {test[i]["codepoints"] for i in range(len(test))}
  assert not train_codes & test_codes
  example = train[0]
  file_name = example["codepoints"].decode() + ".png"
  assert example["caption"].decode() == twemoji.caption_for(file_name)
  expected = np.asarray(twemoji.load_image(file_name, 32, (255, 255, 255)))
  np.testing.assert_array_equal(example["image"], expected)
