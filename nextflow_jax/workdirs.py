# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Loading what a run produced: models, tokenizers, layouts, code folders.

Every job writes a workdir (`--workdir`) with `checkpoints/` (Orbax; each
step also stores the job's config as JSON). This module is the one place
that turns such a saved config back into objects, so the trainers and the
sampler (`sampling/generator.py`) cannot disagree about it:

  build_model(config.model, ...)      config section -> NextFlow
  build_tokenizer(config.tokenizer)   config section -> VisionTokenizer
  build_layout(config.layout, ...)    config section -> sequences.Layout
  code_folders(codes_dir, split)      where an extraction wrote a split
  load_tokenizer(workdir)             a tokenizer run (or bundle) ->
                                      model + params
  load_pretrain_run(workdir)          a pretraining run -> `TrainedModel`

Config sections may be `ml_collections.ConfigDict`s or the plain dicts that
checkpoints store. A key that the model does not have is an error naming
it (a mistyped key in a config file would otherwise be ignored silently).
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nextflow_jax import checkpoint
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax.data import records
from nextflow_jax.data import sequences
from nextflow_jax.data import sources as sources_lib
from nextflow_jax.model import nextflow
from nextflow_jax.text import hf_tokenizer
from nextflow_jax.text import tokenizer as text_tokenizer_lib
from nextflow_jax.tokenizer import model as tokenizer_model_lib

TEXT_TOKENIZER_FILE = text_tokenizer_lib.TextTokenizer.file_name
# Sentencepiece (trained here) or Qwen's tokenizer.json (convert/qwen.py).
TextTokenizer = (text_tokenizer_lib.TextTokenizer |
                 hf_tokenizer.HFTextTokenizer)

CHECKPOINTS = "checkpoints"
# Sizes that come from the data (text tokenizer, codebook), not `model`.
_MODEL_SIZES_FROM_DATA = ("codebook_size", "code_dim")
# `tokenizer` keys that describe the schedule, not the network.
_TOKENIZER_SCHEDULE_KEYS = ("scales",)


@dataclasses.dataclass
class TrainedModel:
  """Everything sampling needs: decoder, tokenizers, schedule, layout.

  Attributes:
    model: the NextFlow decoder; params: its (unboxed) parameters.
    tokenizer: the VisionTokenizer whose codes trained the model;
      tokenizer_params: its parameters.
    text_tokenizer: the sentencepiece tokenizer of the data job.
    schedule: the schedule of the codes the model trained on.
    layout: the training layout (RoPE range, interpolation, alpha, order).
    trained_seq_len: the longest document the model trained on (positions,
      `data.seq_len`); 0 when unknown.
  """
  model: nextflow.NextFlow
  params: Any
  tokenizer: tokenizer_model_lib.VisionTokenizer
  tokenizer_params: Any
  text_tokenizer: TextTokenizer
  schedule: scales.Schedule
  layout: sequences.Layout
  trained_seq_len: int = 0


def field_names(module_cls: type) -> tuple[str, ...]:
  """The dataclass fields of a Flax module class (its hyper-parameters)."""
  return tuple(f.name for f in dataclasses.fields(module_cls)
               if f.name not in ("parent", "name"))


def check_keys(section: Mapping[str, Any], allowed: tuple[str, ...],
               name: str) -> None:
  """Raises ValueError naming every key of `section` not in `allowed`."""
  unknown = sorted(set(section.keys()) - set(allowed))
  if unknown:
    raise ValueError(f"config.{name} has unknown key(s) {unknown}; the keys "
                     f"it may have are {sorted(allowed)}.")


def model_keys() -> tuple[str, ...]:
  """Keys a `model` config section may have (NextFlow's own fields)."""
  return tuple(k for k in field_names(nextflow.NextFlow)
               if k not in _MODEL_SIZES_FROM_DATA)


# NextFlow fields added after models were saved, with the value that a
# saved model section (a workdir's config, a bundle) without the field was
# trained with: before it existed, the RoPE frequencies were contiguous.
SAVED_MODEL_DEFAULTS = {"mrope_interleaved": False}


def saved_model_section(section: Mapping[str, Any]) -> dict[str, Any]:
  """A saved `model` section with `SAVED_MODEL_DEFAULTS` filled in."""
  return {**SAVED_MODEL_DEFAULTS, **section}


# `model` fields that change what the parameters compute without changing
# their shapes: a checkpoint restores under another value without an error,
# and training would go on as a different model.
_SHAPE_PRESERVING_MODEL_KEYS = ("rope_theta", "mrope_sections",
                                "mrope_interleaved", "norm_eps")


def check_resumable_model(saved: Mapping[str, Any],
                          current: Mapping[str, Any], workdir: str) -> None:
  """Refuses to resume a run under a model that computes differently.

  Args:
    saved: the `model` section saved with the run's checkpoint (fields the
      run predates are filled in by `saved_model_section`).
    current: the `model` section of the config resuming it.
    workdir: the run, for the message.

  Raises:
    ValueError: naming each such field, the two values, and the flag that
      continues the run as it was trained.
  """
  saved = saved_model_section(saved)
  differences = []
  for key in _SHAPE_PRESERVING_MODEL_KEYS:
    a, b = saved.get(key), current.get(key)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
      a, b = tuple(a or ()), tuple(b or ())
    if a != b:
      differences.append((key, a, b))
  if differences:
    lines = "; ".join(f"model.{k} is {b!r} here but the run trained with "
                      f"{a!r}" for k, a, b in differences)
    flags_ = " ".join(f"--config.model.{k}={a!r}" for k, a, _ in differences)
    raise ValueError(
        f"cannot resume {workdir}: {lines}. These fields change what the "
        f"parameters compute, not their shapes, so the checkpoint would load "
        f"and train on as another model. Continue it as trained with "
        f"{flags_}, or start a new --workdir.")


def build_model(section: Mapping[str, Any], *, text_vocab_size: int,
                codebook_size: int, code_dim: int) -> nextflow.NextFlow:
  """A `model` config section (+ sizes from the data) -> NextFlow.

  Args:
    section: NextFlow fields by name (`configs/nextflow.py`'s `model`);
      `dtype`/`param_dtype` as strings, `mrope_sections` () for the default.
    text_vocab_size: text ids (at least the text tokenizer's size).
    codebook_size, code_dim: the tokenizer's codebook.

  Raises:
    ValueError: the section has a key NextFlow does not (named).
  """
  check_keys(section, model_keys(), "model")
  kwargs = dict(section.items())
  for key in ("dtype", "param_dtype"):
    kwargs[key] = jnp.dtype(kwargs.get(key, "float32"))
  kwargs["mrope_sections"] = tuple(kwargs.get("mrope_sections") or ()) or None
  kwargs["text_vocab_size"] = text_vocab_size
  return nextflow.NextFlow(codebook_size=codebook_size, code_dim=code_dim,
                           **kwargs)


def tokenizer_keys() -> tuple[str, ...]:
  """Keys a `tokenizer` config section may have."""
  return field_names(tokenizer_model_lib.VisionTokenizer) + (
      _TOKENIZER_SCHEDULE_KEYS)


def build_tokenizer(section: Mapping[str, Any]
                    ) -> tokenizer_model_lib.VisionTokenizer:
  """A `tokenizer` config section (`configs/tokenizer.py`) -> the model.

  `decoder_channels` / `decoder_num_res_blocks` of 0 mean "as the encoder".

  Raises:
    ValueError: the section has a key the tokenizer does not (named).
  """
  check_keys(section, tokenizer_keys(), "tokenizer")
  kwargs = {k: v for k, v in section.items()
            if k not in _TOKENIZER_SCHEDULE_KEYS}
  for key in ("dtype", "param_dtype"):
    if key in kwargs:
      kwargs[key] = jnp.dtype(kwargs[key])
  if "channel_mults" in kwargs:
    kwargs["channel_mults"] = tuple(kwargs["channel_mults"])
  for key in ("decoder_channels", "decoder_num_res_blocks"):
    kwargs[key] = kwargs.get(key) or None
  return tokenizer_model_lib.VisionTokenizer(**kwargs)


def tokenizer_schedule(section: Mapping[str, Any]) -> scales.Schedule:
  """The schedule a tokenizer section trains with (`tokenizer.scales`)."""
  return scales.parse_schedule(section["scales"])


def build_layout(section: Mapping[str, Any],
                 upsample_method: str) -> sequences.Layout:
  """A `layout` config section + the tokenizer's interpolation -> Layout."""
  return sequences.Layout(
      rope_range=section["rope_range"], upsample_method=upsample_method,
      alpha=section["alpha"],
      context_final_block=section["context_final_block"],
      image_order=section.get("image_order", "next_scale"))


def code_folders(codes_dir: str, split: str) -> list[str]:
  """The folders an extraction wrote for `split`: `codes_dir/codes/<split>`,
  or `<split>-p<k>` per process when several processes extracted."""
  root = os.path.join(codes_dir, "codes")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{root} does not exist; run configs/extract.py "
                            f"with --workdir={codes_dir} first.")
  folders = sorted(os.path.join(root, d) for d in os.listdir(root)
                   if d == split or d.startswith(split + "-p"))
  if not folders:
    raise FileNotFoundError(f"no split {split!r} in {root}: "
                            f"{sorted(os.listdir(root))}.")
  return folders


def open_code_sources(codes_dir: str, split: str
                      ) -> tuple[list[sources_lib.Source], dict]:
  """The extraction output of `split` as sources, and its manifest."""
  folders = code_folders(codes_dir, split)
  opened = [sources_lib.ArrayRecordSource(f) for f in folders]
  return opened, records.read_manifest(folders[0])


def load_text_tokenizer(workdir: str) -> TextTokenizer:
  """`workdir/text_tokenizer.model` (written by the data / tokenizer jobs),
  or the `text_tokenizer.json` of a model converted from Qwen."""
  return text_tokenizer_lib.load_from_folder(workdir)


def _saved_run(workdir: str, step: int | None, what: str
               ) -> tuple[dict, Any]:
  """(saved config, raw state) of a workdir's checkpoint."""
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, CHECKPOINTS))
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"no checkpoint in {workdir}/{CHECKPOINTS}; "
                              f"train {what} first.")
    return ckpt.restore_config(step), ckpt.restore_raw(step)
  finally:
    ckpt.close()


def load_tokenizer(workdir: str, mesh: jax.sharding.Mesh | None = None,
                   rules=None) -> tuple[tokenizer_model_lib.VisionTokenizer,
                                        Any, scales.Schedule, dict]:
  """(model, params, schedule, saved config) of a tokenizer workdir, or of
  the vision tokenizer inside a model bundle (`bundle.load_tokenizer`).

  Parameters are placed with the model's logical shardings on `mesh`
  (default: all devices, data parallel, i.e. replicated).
  """
  # bundle.py builds on this module; imported here to keep that one-way.
  from nextflow_jax import bundle as bundle_lib  # pylint: disable=g-import-not-at-top
  if bundle_lib.is_bundle(workdir):
    model, raw_params, schedule, saved = bundle_lib.load_tokenizer(workdir)
    raw = {"params": {"tokenizer": raw_params}}
  else:
    saved, raw = _saved_run(workdir, None,
                            "a tokenizer with configs/tokenizer.py")
    model = build_tokenizer(saved["tokenizer"])
    schedule = tokenizer_schedule(saved["tokenizer"])
  size = saved["data"]["image_size"]
  mesh = mesh or sharding.make_mesh((-1, 1, 1))
  rules = rules if rules is not None else sharding.get_rules("dp")
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(
        lambda rng: model.init(rng, jnp.zeros((1, size, size, 3)), schedule),
        jax.random.key(0))
    shardings = sharding.logical_shardings(abstract, mesh, rules)["params"]
  params = jax.device_put(raw["params"]["tokenizer"], shardings)
  return model, params, schedule, saved


def _trained_text_tokenizer(workdir: str, tokenizer_workdir: str
                            ) -> TextTokenizer:
  """The copy a pretraining run keeps of its text tokenizer (runs before
  that copy existed: the tokenizer workdir's)."""
  try:
    return load_text_tokenizer(workdir)
  except FileNotFoundError:
    return load_text_tokenizer(tokenizer_workdir)


def load_pretrain_run(workdir: str, *, step: int | None = None,
                      tokenizer_workdir: str = "") -> TrainedModel:
  """A pretraining workdir's checkpoint (latest, or `step`) for sampling.

  The tokenizer and the schedule are the ones named by the manifest of the
  codes the model trained on; `tokenizer_workdir` overrides the tokenizer
  (the schedule is then the tokenizer's). Only parameters are loaded.
  """
  saved, raw = _saved_run(workdir, step, "a model with configs/nextflow.py")
  codes_schedule = None
  if not tokenizer_workdir:
    manifest = records.read_manifest(code_folders(
        saved["data"]["codes_dir"], saved["data"]["split"])[0])
    tokenizer_workdir = manifest["tokenizer_workdir"]
    codes_schedule = scales.parse_schedule(manifest["schedule"])
  tok_model, tok_params, tok_schedule, _ = load_tokenizer(tokenizer_workdir)
  params = raw["params"]
  model = build_model(
      saved_model_section(saved["model"]),
      text_vocab_size=params["token_embed"].shape[0],
      codebook_size=params["code_embed"].shape[0],
      code_dim=params["code_embed"].shape[1])
  return TrainedModel(
      model=model, params=jax.tree.map(jnp.asarray, params),
      tokenizer=tok_model, tokenizer_params=tok_params,
      text_tokenizer=_trained_text_tokenizer(workdir, tokenizer_workdir),
      schedule=codes_schedule or tok_schedule,
      layout=build_layout(saved["layout"], tok_model.upsample_method),
      trained_seq_len=int(saved["data"].get("seq_len", 0)))
