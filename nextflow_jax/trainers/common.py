# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Pieces every trainer uses: data from config, text tokenizer, sharded init.

Trainers are the only place that reads a ConfigDict; these helpers take the
config's sections and return plain objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import os
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import tensorflow_datasets as tfds

from nextflow_jax import sharding
from nextflow_jax import workdirs
from nextflow_jax.data import pipeline
from nextflow_jax.data import sources as sources_lib
from nextflow_jax.data import transforms as transforms_lib
from nextflow_jax.text import tokenizer as text_tokenizer

# Fields whose text trains the text tokenizer (str or list of str).
TEXT_FIELDS = ("caption", "questions", "answers", "edit_instruction",
               "motion_caption", "text")


def resolve_data_dir(data_dir: str) -> str:
  """"" -> TFDS's default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR)


def open_sources(data: ml_collections.ConfigDict,
                 split: str) -> list[sources_lib.Source]:
  """Opens every `data.sources` spec (building embedded datasets)."""
  tfds.disable_progress_bar()
  data_dir = resolve_data_dir(data.data_dir)
  return [sources_lib.open_source(spec, split, data_dir)
          for spec in data.sources]


def iter_texts(source: sources_lib.Source) -> Iterator[str]:
  """Every text string of every record of a source."""
  for i in range(len(source)):
    example = source[i]
    for field in TEXT_FIELDS:
      value = example.get(field)
      if isinstance(value, str):
        yield value
      elif isinstance(value, (list, tuple)):
        yield from (v for v in value if isinstance(v, str))


def ensure_text_tokenizer(workdir: str, opened: list[sources_lib.Source],
                          text: ml_collections.ConfigDict
                          ) -> tuple[text_tokenizer.TextTokenizer, bool]:
  """Loads `workdir/text_tokenizer.model`, training it first if missing.

  Returns:
    (tokenizer, whether it was trained now).
  """
  path = os.path.join(workdir, workdirs.TEXT_TOKENIZER_FILE)
  if os.path.exists(path):
    logging.info("reusing text tokenizer %s", path)
    return text_tokenizer.TextTokenizer.load(path), False
  texts = [t for s in opened for t in iter_texts(s)]
  logging.info("training the text tokenizer on %d sentences", len(texts))
  return text_tokenizer.train_sentencepiece(
      texts, path, text.vocab_size, model_type=text.model_type), True


def make_iterator(config: ml_collections.ConfigDict,
                  opened: list[sources_lib.Source],
                  text_tokenizer_path: str | None, *, spec: str | None = None,
                  batch_size: int | None = None, shuffle: bool = True,
                  num_epochs: int | None = None, seed_offset: int = 0,
                  weights: tuple[float, ...] | None = None):
  """The Grain iterator of `config.data` over already opened sources.

  Args:
    config: full config (uses `data` and `seed`).
    opened: sources from `open_sources`.
    text_tokenizer_path: for the `tokenize` transform (None: no text).
    spec: transform spec (default `data.transforms`); `{field}` placeholders
      are filled from `config.data`.
    batch_size: global batch (default `data.global_batch_size`).
    shuffle: shuffle (off for evaluation and extraction).
    num_epochs: None repeats forever. A final partial batch is dropped, so
      every batch splits evenly over the mesh.
    seed_offset: added to `config.seed` (e.g. for eval pipelines).
    weights: mixture weights (default `data.weights`; pass () for equal
      weights, e.g. when `opened` is a subset of the configured sources).
  """
  data = config.data
  batch = batch_size or data.global_batch_size
  context = {"text_tokenizer": text_tokenizer_path} if (
      text_tokenizer_path) else {}
  transforms = transforms_lib.parse(
      (spec or data.transforms).format(**data.to_dict()), context=context)
  dataset = pipeline.make_dataset(
      opened, batch_size=batch // jax.process_count(), transforms=transforms,
      weights=tuple(data.weights if weights is None else weights) or None,
      seed=config.seed + seed_offset,
      shuffle=shuffle, num_epochs=num_epochs,
      shard_index=jax.process_index(), shard_count=jax.process_count())
  return pipeline.make_iterator(dataset, num_threads=data.num_threads,
                                prefetch=data.prefetch,
                                num_workers=data.num_workers)


def mesh_and_rules(config: ml_collections.ConfigDict):
  """(mesh, rules) from `config.sharding`."""
  mesh = sharding.make_mesh(config.sharding.mesh)
  rules = sharding.get_rules(config.sharding.rules,
                             config.sharding.get("rule_overrides", ()))
  return mesh, rules


def init_sharded(init_fn: Callable[[jax.Array], Any], rng: jax.Array,
                 mesh: jax.sharding.Mesh, rules) -> tuple[Any, Any]:
  """Initialises a state on the mesh without materialising it on one device.

  `eval_shape` gives the logical names, the rules turn them into shardings,
  and `jit(init, out_shardings=...)` creates every shard in place. Returns
  (unboxed state, its shardings).
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init_fn, rng)
    shardings = sharding.logical_shardings(abstract, mesh, rules)
    state = jax.jit(lambda r: nn.unbox(init_fn(r)),
                    out_shardings=shardings)(rng)
  return state, shardings


def abstract_target(state: Any) -> Any:
  """ShapeDtypeStructs with shardings: the restore target of a state."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      state)
