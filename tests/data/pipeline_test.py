# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Grain pipelines over both embedded datasets: determinism, resume, mixture,
per-process sharding, transforms and their errors."""

import sys

import numpy as np
import pytest

from nextflow_jax.data import pipeline
from nextflow_jax.data import sources
from nextflow_jax.data import transforms
from nextflow_jax.text import tokenizer as text_tokenizer
from nextflow_jax.text import vocab

SPECS = ("shapes/32px", "twemoji/32px")


@pytest.fixture(scope="module")
def opened(tfds_dir):
  return [sources.open_source(s, "train", tfds_dir, prepare=False)
          for s in SPECS]


@pytest.fixture(scope="module")
def tok_path(opened, tmp_path_factory):
  texts = [opened[i % 2][i]["caption"] for i in range(400)]
  path = str(tmp_path_factory.mktemp("tok") / "text.model")
  text_tokenizer.train_sentencepiece(texts, path, 512)
  return path


def spec_transforms(tok_path, max_len=32):
  return transforms.parse(
      f"check_image(32)|to_float|tokenize(max_len={max_len})|"
      "keep('image','tokens','tokens_mask','caption','id')",
      context={"text_tokenizer": tok_path})


def batches(dataset, n, **kw):
  it = pipeline.make_iterator(dataset, **kw)
  out = [next(it) for _ in range(n)]
  it.close()
  return out


@pytest.mark.parametrize("index", [0, 1])
def test_each_dataset_reads_back_deterministically(opened, tok_path, index):
  make = lambda seed: pipeline.make_dataset(
      [opened[index]], batch_size=4, seed=seed,
      transforms=spec_transforms(tok_path))
  a, b, c = batches(make(0), 3), batches(make(0), 3), batches(make(1), 3)
  for x, y in zip(a, b):
    assert list(x["id"]) == list(y["id"])
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["tokens"], y["tokens"])
  assert [list(x["id"]) for x in a] != [list(x["id"]) for x in c]
  batch = a[0]
  assert batch["image"].shape == (4, 32, 32, 3)
  assert batch["image"].dtype == np.float32
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert (batch["tokens"][:, 0] == vocab.BOS_ID).all()
  tok = text_tokenizer.TextTokenizer.load(tok_path)
  assert [tok.decode(t) for t in batch["tokens"]] == list(batch["caption"])
  assert "tensorflow" not in sys.modules


def test_epochs_cover_every_record_once_and_reshuffle(opened):
  source = opened[0]
  ds = pipeline.make_dataset([source], batch_size=len(source), seed=0,
                             transforms=transforms.parse("keep('id')"))
  epoch0, epoch1 = ds[0]["id"], ds[1]["id"]
  assert sorted(epoch0) == sorted(epoch1) == sorted(
      f"shapes/32px:train:{i}" for i in range(len(source)))
  assert list(epoch0) != list(epoch1)


def test_resume_yields_exactly_the_next_batches(opened, tok_path):
  ds = pipeline.make_dataset(opened, batch_size=4, seed=0,
                             transforms=spec_transforms(tok_path))
  it = pipeline.make_iterator(ds)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it)["id"] for _ in range(3)]
  it.close()
  resumed = pipeline.make_iterator(ds)
  resumed.set_state(state)
  assert [list(next(resumed)["id"]) for _ in range(3)] == [
      list(e) for e in expected]
  resumed.close()


def test_mixture_follows_weights(opened):
  ds = pipeline.make_dataset(opened, batch_size=100, weights=[1, 3],
                             transforms=transforms.parse("keep('id')"))
  ids = np.concatenate([ds[i]["id"] for i in range(4)])
  shapes_fraction = np.mean([i.startswith("shapes") for i in ids])
  assert shapes_fraction == pytest.approx(0.25, abs=0.02)


def test_processes_read_disjoint_slices(opened):
  per_process = []
  for index in range(2):
    ds = pipeline.make_dataset(opened, batch_size=64, shard_index=index,
                               shard_count=2, num_epochs=1,
                               transforms=transforms.parse("keep('id')"))
    per_process.append(set(ds[0]["id"]) | set(ds[1]["id"]))
    assert any(i.startswith("shapes") for i in per_process[-1])
    assert any(i.startswith("twemoji") for i in per_process[-1])
  assert not per_process[0] & per_process[1]


def test_resize_center_crops():
  example = {"image": np.zeros((20, 40, 3), np.uint8), "id": "r"}
  example["image"][:, 10:30] = 200
  out = transforms.apply(transforms.parse("resize(10)"), example)
  assert out["image"].shape == (10, 10, 3)
  # The 40-px-wide image is halved and cropped to its centre, the stripe;
  # only the outermost columns blend with the black beyond it.
  assert (out["image"][:, 2:8] == 200).all()
  assert (out["image"][:, 0] < 200).all()


@pytest.mark.parametrize("spec,example,match", [
    ("check_image", {"image": np.zeros((8, 8, 4), np.uint8), "id": "r7"},
     r"record r7: image has shape \(8, 8, 4\), expected \(H, W, 3\)"),
    ("check_image", {"image": np.zeros((8, 8, 3), np.float32), "id": "r7"},
     r"record r7: image has dtype float32, expected uint8"),
    ("check_image(16)", {"image": np.zeros((8, 8, 3), np.uint8), "id": "r7"},
     r"record r7: image is 8x8, expected 16x16; add resize\(16\)"),
    ("check_image", {"caption": "x", "id": "r7"},
     r"record r7 has no 'image' field"),
    ("keep('image')", {"caption": "x", "id": "r7"}, r"record r7 lacks"),
])
def test_bad_input_transform_names_the_record(spec, example, match):
  with pytest.raises(ValueError, match=match):
    transforms.apply(transforms.parse(spec), example)


def test_tokenize_errors(tok_path):
  ts = transforms.parse("tokenize(max_len=4)",
                        context={"text_tokenizer": tok_path})
  with pytest.raises(ValueError, match=r"record r1: caption is .* tokens, more "
                     r"than max_len=4"):
    transforms.apply(ts, {"caption": "two red circles left of a blue square",
                          "id": "r1"})
  with pytest.raises(ValueError, match=r"record r2: caption is empty"):
    transforms.apply(ts, {"caption": " ", "id": "r2"})
  with pytest.raises(ValueError, match="tokenize needs the text tokenizer"):
    transforms.parse("tokenize(max_len=4)")


@pytest.mark.parametrize("spec,match", [
    ("flip", r"unknown transform 'flip'"),
    ("resize(size=open('x'))", r"not `name` or `name\(literal args\)`"),
    ("resize(0)", r"size=0 must be positive"),
])
def test_bad_input_transform_specs(spec, match):
  with pytest.raises(ValueError, match=match):
    transforms.parse(spec)


def test_unknown_tfds_dataset(tfds_dir):
  with pytest.raises(ValueError, match=r"cannot open TFDS dataset 'no_such_ds'"):
    sources.open_source("tfds:no_such_ds", "train", tfds_dir)


def test_text_lists_become_str(tfds_dir):
  example = sources.open_source("shapes/32px", "test", tfds_dir)[0]
  assert isinstance(example["questions"], list)
  assert all(isinstance(q, str) for q in example["questions"] +
             example["answers"])


def test_tfds_by_name_reads_a_prepared_dataset(tfds_dir):
  source = sources.open_source("tfds:twemoji/32px", "test", tfds_dir)
  example = source[0]
  assert example["image"].shape == (32, 32, 3)
  assert isinstance(example["caption"], str) and example["caption"]
  assert example["id"] == "tfds:twemoji/32px:test:0"
