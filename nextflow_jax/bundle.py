# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Model bundles: a trained model as one self-contained, movable folder.

A bundle holds what sampling needs and nothing else (no optimizer state, no
absolute paths), so it can be committed, shared and loaded on any machine:

  <folder>/bundle.json           format version, the decoder's and the
                                 tokenizer's hyper-parameters, the schedule,
                                 the layout, provenance
  <folder>/text_tokenizer.model  the sentencepiece model (or
                                 text_tokenizer.json: Qwen's, converted)
  <folder>/decoder/              NextFlow parameters (Orbax, `save_tree`)
  <folder>/tokenizer/            VisionTokenizer parameters

Export a pretraining run, then load it anywhere:

  python -m nextflow_jax.bundle --workdir=runs/nextflow \
      --output=pretrained/my-model [--step=N] [--dtype=bfloat16]

  from nextflow_jax.sampling.generator import Generator
  gen = Generator.from_pretrained("pretrained/my-model")

`--dtype=bfloat16` stores floating-point parameters in bfloat16 (half the
size); loading casts them back to each model's `param_dtype`. Writing is
atomic: the bundle is assembled in a temporary folder next to `output` and
renamed when complete.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from nextflow_jax import checkpoint
from nextflow_jax import cli
from nextflow_jax import scales
from nextflow_jax import workdirs
from nextflow_jax.data import sequences
from nextflow_jax.model import nextflow
from nextflow_jax.text import tokenizer as text_tokenizer_lib
from nextflow_jax.tokenizer import model as tokenizer_model_lib

FORMAT = "nextflow_jax.bundle"
VERSION = 1
CONFIG_FILE = "bundle.json"
DECODER_DIR = "decoder"
TOKENIZER_DIR = "tokenizer"


def module_to_json(module: Any) -> dict[str, Any]:
  """A Flax module's hyper-parameters as JSON values (dtypes by name)."""
  values = {}
  for name in workdirs.field_names(type(module)):
    value = getattr(module, name)
    if isinstance(value, tuple):
      value = list(value)
    elif name.endswith("dtype"):
      value = jnp.dtype(value).name
    values[name] = value
  return values


def module_from_json(module_cls: type, values: dict[str, Any]) -> Any:
  """The inverse of `module_to_json`.

  Raises:
    ValueError: a key the module does not have (a bundle from a newer or
      different version of the library).
  """
  workdirs.check_keys(values, workdirs.field_names(module_cls),
                      module_cls.__name__)
  kwargs = {}
  for name, value in values.items():
    if isinstance(value, list):
      value = tuple(value)
    elif name.endswith("dtype"):
      value = jnp.dtype(value)
    kwargs[name] = value
  return module_cls(**kwargs)


def export(trained: workdirs.TrainedModel, output: str, *,
           dtype: str | None = None,
           provenance: dict[str, Any] | None = None) -> str:
  """Writes `trained` as a bundle folder `output` (which must not exist).

  Args:
    trained: the model to export (`workdirs.load_pretrain_run`, or built
      in memory).
    output: the bundle folder to create.
    dtype: store floating-point parameters in this dtype (e.g.
      "bfloat16"); None keeps them as they are.
    provenance: JSON values recorded in `bundle.json` (where the model
      came from); never absolute paths.

  Returns:
    The bundle folder.

  Raises:
    FileExistsError: `output` exists.
  """
  output = os.path.abspath(output)
  if os.path.exists(output):
    raise FileExistsError(f"{output} exists; remove it or choose another "
                          "--output.")
  parent = os.path.dirname(output)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".bundle-", dir=parent)
  try:
    _cast = lambda x: _stored(x, dtype)  # pylint: disable=g-long-lambda
    checkpoint.save_tree(os.path.join(tmp, DECODER_DIR),
                         jax.tree.map(_cast, trained.params))
    checkpoint.save_tree(os.path.join(tmp, TOKENIZER_DIR),
                         jax.tree.map(_cast, trained.tokenizer_params))
    for sub in (DECODER_DIR, TOKENIZER_DIR):  # It names the absolute path.
      marker = os.path.join(tmp, sub, "commit_success.txt")
      if os.path.exists(marker):
        os.remove(marker)
    text_tok = trained.text_tokenizer
    text_tok.save(os.path.join(tmp, text_tok.file_name))
    config = {
        "format": FORMAT, "version": VERSION,
        "model": module_to_json(trained.model),
        "tokenizer": module_to_json(trained.tokenizer),
        "schedule": scales.format_schedule(trained.schedule),
        "layout": dataclasses.asdict(trained.layout),
        "trained_seq_len": trained.trained_seq_len,
        "stored_dtype": dtype or "as trained",
        "provenance": provenance or {},
    }
    with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
      json.dump(config, f, indent=2)
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return output


def load(folder: str) -> workdirs.TrainedModel:
  """Reads a bundle written by `export` (from any folder it was moved to).

  Raises:
    FileNotFoundError: `folder` is not a bundle.
    ValueError: the bundle's format or version is not one this library
      reads.
  """
  config = _read_checked(folder)
  model = module_from_json(nextflow.NextFlow,
                           workdirs.saved_model_section(config["model"]))
  tokenizer = module_from_json(tokenizer_model_lib.VisionTokenizer,
                               config["tokenizer"])
  params = _restored(checkpoint.load_tree(os.path.join(folder, DECODER_DIR)),
                     model.param_dtype)
  tokenizer_params = _restored(
      checkpoint.load_tree(os.path.join(folder, TOKENIZER_DIR)),
      tokenizer.param_dtype)
  return workdirs.TrainedModel(
      model=model, params=params, tokenizer=tokenizer,
      tokenizer_params=tokenizer_params,
      text_tokenizer=text_tokenizer_lib.load_from_folder(folder),
      schedule=scales.parse_schedule(config["schedule"]),
      layout=sequences.Layout(**config["layout"]),
      trained_seq_len=int(config.get("trained_seq_len", 0)))


def load_tokenizer(folder: str) -> tuple[Any, Any, scales.Schedule, dict]:
  """The vision tokenizer of a bundle alone (no decoder is read).

  Returns (model, params, schedule, saved) like `workdirs.load_tokenizer`,
  where `saved` holds the sections a tokenizer workdir's saved config has
  and its readers use: `tokenizer` (with `scales`) and `data.image_size`
  (the last scale times the tokenizer's downsampling).
  """
  config = _read_checked(folder)
  tokenizer = module_from_json(tokenizer_model_lib.VisionTokenizer,
                               config["tokenizer"])
  params = _restored(
      checkpoint.load_tree(os.path.join(folder, TOKENIZER_DIR)),
      tokenizer.param_dtype)
  schedule = scales.parse_schedule(config["schedule"])
  saved = {"tokenizer": dict(config["tokenizer"], scales=config["schedule"]),
           "data": {"image_size": schedule[-1][0] * tokenizer.downsample}}
  return tokenizer, params, schedule, saved


def is_bundle(folder: str) -> bool:
  """Whether `folder` holds a bundle (its `bundle.json`)."""
  return os.path.exists(os.path.join(folder, CONFIG_FILE))


def read_config(folder: str) -> dict[str, Any]:
  """The `bundle.json` of a bundle (hyper-parameters and provenance)."""
  with open(os.path.join(folder, CONFIG_FILE)) as f:
    return json.load(f)


def _read_checked(folder: str) -> dict[str, Any]:
  """`bundle.json` of `folder`, checked to be a format this library reads."""
  path = os.path.join(folder, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{folder} is not a model bundle (no "
                            f"{CONFIG_FILE}); export one with `python -m "
                            "nextflow_jax.bundle --workdir=... --output=...`.")
  with open(path) as f:
    config = json.load(f)
  if config.get("format") != FORMAT or config.get("version") != VERSION:
    raise ValueError(f"{path} has format {config.get('format')!r} version "
                     f"{config.get('version')!r}; this library reads "
                     f"{FORMAT!r} version {VERSION}.")
  return config


def _stored(x: Any, dtype: str | None) -> np.ndarray:
  x = np.asarray(x)
  if dtype and np.issubdtype(x.dtype, np.floating):
    return x.astype(jnp.dtype(dtype))
  return x


def _restored(tree: Any, param_dtype: Any) -> Any:
  def leaf(x):
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating) or x.dtype == jnp.bfloat16:
      return jnp.asarray(x, param_dtype)
    return jnp.asarray(x)
  return jax.tree.map(leaf, tree)


# ------------------------------------------------------------------- CLI


def main(argv: Sequence[str]) -> None:
  """python -m nextflow_jax.bundle --workdir=W --output=O [--step --dtype]."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  trained = workdirs.load_pretrain_run(values.workdir, step=values.step)
  folder = export(trained, values.output, dtype=values.dtype, provenance={
      "workdir": os.path.basename(os.path.abspath(values.workdir)),
      "step": "latest" if values.step is None else values.step})
  print(f"wrote {folder}")


def _define_flags() -> None:
  # Defined only when run as a program: `--workdir` is also main.py's flag.
  flags.DEFINE_string("workdir", None, "The pretraining workdir to export.")
  flags.DEFINE_string("output", None, "The bundle folder to create.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_string("dtype", None, "Store floating parameters in this "
                      "dtype, e.g. bfloat16 (default: as trained).")
  flags.mark_flags_as_required(["workdir", "output"])


if __name__ == "__main__":
  _define_flags()
  app.run(cli.one_line_errors(main))
