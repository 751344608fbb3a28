# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Config helpers: preset/override parsing and up-front validation.

Every `configs/*.py` exposes `get_config(arg)`. `arg` is a comma-separated
list whose first bare word is a preset and whose `key=value` items override
dotted config keys after the preset is applied, e.g.

  configs/data.py:cpu
  configs/data.py:mu,data.global_batch_size=8,data.sources=shapes/32px

`--config.a.b=value` on the command line works as well (ml_collections
`config_flags`). `validate(config, workdir)` runs before any work starts and
raises `ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
import difflib
import os
import tempfile
from typing import Any

import jax
import ml_collections

from nextflow_jax import scales
from nextflow_jax import sharding


class ConfigError(ValueError):
  """A config value is invalid; the message names key, value and fix."""

  def __init__(self, key: str, value: Any = None, allowed: str | None = None):
    if allowed is None:  # Re-raised with only a message: ml_collections
      # does `type(e)("Error whilst parsing config file:" + traceback)`;
      # keep our own last line.
      marker = f"{__name__}.ConfigError: "
      super().__init__(key.rsplit(marker, 1)[-1].strip())
      self.key, self.value = None, None
      return
    name = key if key.startswith("--") else f"config.{key}"
    super().__init__(f"{name}={value!r} is invalid: {allowed}")
    self.key = key
    self.value = value


def _split_items(arg: str) -> list[str]:
  """Splits at commas outside (), [] and {} so tuple values stay whole."""
  items, depth, start = [], 0, 0
  for i, ch in enumerate(arg):
    depth += (ch in "([{") - (ch in ")]}")
    if ch == "," and depth == 0:
      items.append(arg[start:i])
      start = i + 1
  items.append(arg[start:])
  return [s.strip() for s in items if s.strip()]


def parse_arg(arg: str | None, presets: Mapping[str, Callable[[], Any]],
              default: str) -> tuple[str, dict[str, str]]:
  """Splits "preset,k=v,..." into the preset name and raw overrides.

  Raises:
    ConfigError: the preset is unknown or an item is malformed.
  """
  items = _split_items(arg or "")
  preset = default
  if items and "=" not in items[0]:
    preset = items.pop(0)
  if preset not in presets:
    raise ConfigError("preset", preset,
                      f"choose one of {sorted(presets)} (e.g. "
                      f"'configs/x.py:{default}').")
  overrides = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ConfigError("arg", item, "overrides are 'dotted.key=value' items "
                        "separated by commas, after the preset name.")
    overrides[key.strip()] = value.strip()
  return preset, overrides


def from_presets(arg: str | None, base: Callable[[], ml_collections.ConfigDict],
                 presets: Mapping[str, Callable[[ml_collections.ConfigDict],
                                                None]],
                 default: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file: base, then the preset, then the
  `key=value` overrides of `arg`."""
  preset, overrides = parse_arg(arg, presets, default)
  config = base()
  presets[preset](config)
  apply_overrides(config, overrides)
  return config


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads "configs/x.py:arg" like `--config` does (for notebooks, tests)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path!r} does not exist.")
  module_spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def command_line_error(argv: Sequence[str], error: Exception) -> str:
  """One line for a `--config` flag that failed to parse (main's CLI).

  ml_collections reports an unknown `--config.a.b` key as a bare
  AttributeError and a bad value as a flags error; this replays the
  `--config.<key>=<value>` flags through `apply_overrides` for the message
  that names the key and what it may be.
  """
  spec = next((a.split("=", 1)[1] for a in argv
               if a.startswith("--config=")), None)
  overrides = dict(a[len("--config."):].split("=", 1) for a in argv
                   if a.startswith("--config.") and "=" in a)
  if spec is not None:
    try:
      apply_overrides(load_config(spec), overrides)
    except (ConfigError, FileNotFoundError) as e:
      return str(e)
    except Exception:  # pylint: disable=broad-except
      pass  # The file itself is broken: its own error says more.
  return str(error).strip().splitlines()[-1] if str(error).strip() else (
      type(error).__name__)


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, str]) -> None:
  """Sets dotted keys from strings, coerced to the existing value's type."""
  for key, raw in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
        raise ConfigError(key, raw, f"'{p}' is not a section of this config.")
      node = node[p]
    if leaf not in node:
      close = difflib.get_close_matches(leaf, list(node.keys()), n=1)
      hint = f"did you mean {'.'.join((*parents, close[0]))!r}? " if close else ""
      raise ConfigError(key, raw, f"no such key; {hint}keys here are "
                        f"{sorted(node.keys())}.")
    node[leaf] = _coerce(key, raw, node[leaf])


def _literal_sequence(key: str, raw: str) -> tuple[Any, ...]:
  try:
    value = ast.literal_eval(raw.strip())
  except (ValueError, SyntaxError):
    value = None
  if not isinstance(value, (tuple, list)):
    raise ConfigError(key, raw, "expected a sequence such as (1,2,4) or "
                      "1;2;4.")
  return tuple(value)


def _coerce(key: str, raw: str, current: Any) -> Any:
  """Parses `raw` like the type of `current` (str, bool, int, float, tuple)."""
  if isinstance(current, str):
    return raw
  if isinstance(current, bool):
    if raw.lower() not in ("true", "false", "1", "0"):
      raise ConfigError(key, raw, "expected true or false.")
    return raw.lower() in ("true", "1")
  if isinstance(current, (tuple, list)):
    if raw.strip()[:1] in "([":  # A literal: "(1,2,4)" or "[1, 2]".
      parts = [str(p) if not isinstance(p, str) else p
               for p in _literal_sequence(key, raw)]
    else:  # "1;2;4": ';' needs no brackets in a shell.
      parts = [p for p in raw.split(";") if p]
    elem = current[0] if current else None  # empty: literal or string
    return tuple(_coerce(key, p, elem) for p in parts)
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if current is not None and not isinstance(value, type(current)):
    raise ConfigError(key, raw, f"expected a {type(current).__name__}.")
  return value


# ---------------------------------------------------------------- validation


def validate(config: ml_collections.ConfigDict, workdir: str | None) -> None:
  """Checks the sections every job shares before anything runs; raises
  `ConfigError` on the first invalid value.

  A trainer's own sections are checked by its `check_config`;
  `trainers.validate` runs both (that is what `main` does).

  Args:
    config: the full config.
    workdir: where the job writes; must exist or be creatable, and writable.
  """
  mesh_shape = _validate_sharding(config)
  if "data" in config:
    _validate_data(config, mesh_shape)
  if "tokenizer" in config:
    _validate_tokenizer(config)
  if "tokenizer_workdir" in config:
    path = config.tokenizer_workdir
    if not path or not (os.path.isdir(os.path.join(path, "checkpoints")) or
                        os.path.exists(os.path.join(path, "bundle.json"))):
      raise ConfigError("tokenizer_workdir", config.tokenizer_workdir,
                        "give the --workdir of a trained tokenizer (it must "
                        "hold checkpoints/) or a model bundle (bundle.json).")
  if "eval" in config and "batch_size" in config.eval:
    dp = mesh_shape[0] * mesh_shape[1]
    if config.eval.batch_size < 1 or config.eval.batch_size % dp:
      raise ConfigError("eval.batch_size", config.eval.batch_size,
                        f"must be a positive multiple of the data-parallel "
                        f"size {dp}.")
  if config.get("init_from") and not (
      os.path.isdir(os.path.join(config.init_from, "checkpoints")) or
      os.path.exists(os.path.join(config.init_from, "conversion.json"))):
    raise ConfigError("init_from", config.init_from,
                      "must be the --workdir of a previous stage (it must "
                      "hold checkpoints/) or, for pretraining, a Qwen "
                      "conversion (conversion.json).")
  if "train" in config:
    for key in ("num_steps", "log_every_steps", "ckpt_every_steps",
                "eval_every_steps", "keep_checkpoints"):
      if key in config.train and config.train[key] < 1:
        raise ConfigError(f"train.{key}", config.train[key],
                          "must be a positive integer.")
  for section in ("optim", "disc_optim"):
    if section in config:
      _validate_optim(config[section], section)
  if workdir is not None:
    check_workdir(workdir)


def _validate_optim(optim, section: str) -> None:
  """Learning rate, schedule, Adam and clipping values of an optimizer."""
  if optim.get("lr", 1.0) <= 0:
    raise ConfigError(f"{section}.lr", optim.lr,
                      "must be > 0 (a negative rate ascends the loss).")
  for key in ("warmup_steps", "weight_decay", "grad_clip"):
    if optim.get(key, 0) < 0:
      raise ConfigError(f"{section}.{key}", optim[key], "must be >= 0.")
  for key in ("b1", "b2"):
    if key in optim and not 0 <= optim[key] < 1:
      raise ConfigError(f"{section}.{key}", optim[key], "must be in [0, 1).")
  if "end_lr_ratio" in optim and not 0 <= optim.end_lr_ratio <= 1:
    raise ConfigError(f"{section}.end_lr_ratio", optim.end_lr_ratio,
                      "must be in [0, 1] (the final learning rate over the "
                      "peak).")
  if optim.get("grad_accum_steps", 1) < 1:
    raise ConfigError(f"{section}.grad_accum_steps", optim.grad_accum_steps,
                      "must be >= 1.")


def _validate_sharding(config) -> tuple[int, ...]:
  if "sharding" not in config:
    return (jax.device_count(), 1, 1)
  try:
    shape = sharding.resolve_mesh_shape(config.sharding.mesh,
                                        jax.device_count())
  except ValueError as e:
    raise ConfigError("sharding.mesh", list(config.sharding.mesh), str(e))
  try:
    sharding.get_rules(config.sharding.rules,
                       config.sharding.get("rule_overrides", ()))
  except ValueError as e:
    raise ConfigError("sharding.rules", config.sharding.rules, str(e))
  return shape


def _validate_data(config, mesh_shape: tuple[int, ...]) -> None:
  from nextflow_jax.data import sources  # pylint: disable=g-import-not-at-top
  data = config.data
  dp = mesh_shape[0] * mesh_shape[1]
  bs = data.global_batch_size
  if bs < 1 or bs % dp or bs % jax.process_count():
    raise ConfigError(
        "data.global_batch_size", bs,
        f"must be a positive multiple of the data-parallel size {dp} "
        f"(mesh data x fsdp) and of the process count {jax.process_count()}.")
  if "sources" not in data:
    return
  if not data.sources:
    raise ConfigError("data.sources", data.sources, "give at least one source.")
  for spec in data.sources:
    try:
      sources.parse_source_spec(spec)
    except ValueError as e:
      raise ConfigError("data.sources", spec, str(e))
  weights = data.get("weights", ())
  if weights and (len(weights) != len(data.sources) or
                  any(w <= 0 for w in weights)):
    raise ConfigError("data.weights", weights, f"give one positive weight per "
                      f"source ({len(data.sources)}), or none for equal.")
  if "image_size" in data and data.image_size < 8:
    raise ConfigError("data.image_size", data.image_size,
                      "must be an int >= 8 (pixels per side).")


def _validate_tokenizer(config) -> None:
  """The image tokenizer section: downsampling, schedule, codebook, stage."""
  tok = config.tokenizer
  if "channel_mults" in tok:  # A tokenizer that is trained here.
    patch = tok.get("patch_size", 1)
    if not isinstance(patch, int) or patch < 1 or patch & (patch - 1):
      raise ConfigError("tokenizer.patch_size", patch,
                        "must be a power of two >= 1 (1 = no space-to-depth "
                        "stem).")
    key = "tokenizer.channel_mults"
    downsample = patch * 2 ** (len(tok.channel_mults) - 1)
  else:  # Only described (e.g. to count tokens per image).
    key, downsample = "tokenizer.downsample", tok.downsample
  if downsample not in (4, 8, 16):
    raise ConfigError(key, tok[key.split(".")[1]],
                      f"gives a downsampling factor of {downsample}; it must "
                      "be 4, 8 or 16 (patch_size * 2 ** (len(channel_mults) "
                      "- 1)).")
  image_size = config.data.image_size if "data" in config else None
  if image_size is not None and image_size % downsample:
    raise ConfigError(
        "data.image_size", image_size,
        f"must be a multiple of the tokenizer's downsampling {downsample} "
        f"(e.g. {downsample * max(1, image_size // downsample)}).")
  try:
    schedule = scales.parse_schedule(tok.scales)
    scales.validate_schedule(schedule, image_size=image_size,
                             downsample=downsample, name="tokenizer.scales")
  except ValueError as e:
    raise ConfigError("tokenizer.scales", tok.scales, str(e))
  if "codebook_size" in tok and tok.codebook_size < 2:
    raise ConfigError("tokenizer.codebook_size", tok.codebook_size,
                      "must be >= 2.")
  if "stage" in config and config.stage not in ("pixel", "joint", "decoder"):
    raise ConfigError("stage", config.stage,
                      "choose one of ['decoder', 'joint', 'pixel'].")
  if config.get("stage") == "pixel" and tok.get("use_semantic"):
    raise ConfigError("tokenizer.use_semantic", True,
                      "stage='pixel' trains the pixel branch alone: set "
                      "tokenizer.use_semantic=False.")
  for key in ("scale_drop_prob", "scale_drop_fraction"):
    if key in tok and not 0.0 <= tok[key] <= 1.0:
      raise ConfigError(f"tokenizer.{key}", tok[key], "must be in [0, 1].")
  if "loss" in config and config.loss.get("entropy_weight", 0) > 0 and (
      not tok.get("use_entropy_loss")):
    raise ConfigError("loss.entropy_weight", config.loss.entropy_weight,
                      "has no effect unless tokenizer.use_entropy_loss=True.")
  if "codes" in config and config.codes.get("autoencoder_steps", 0) and (
      config.codes.autoencoder_steps < 0 or config.get("stage") == "decoder"):
    raise ConfigError("codes.autoencoder_steps",
                      config.codes.autoencoder_steps,
                      "must be >= 0, and 0 in the decoder stage (its encoder "
                      "and codebook are frozen).")
  if "codes" in config and config.codes.get("codebook_update",
                                             "gradient") not in (
                                                 "gradient", "kmeans"):
    raise ConfigError("codes.codebook_update", config.codes.codebook_update,
                      "choose 'gradient' (codebook loss) or 'kmeans' (EMA "
                      "means of the residuals).")
  if "codes" in config and not 0.0 <= config.codes.ema_decay < 1.0:
    raise ConfigError("codes.ema_decay", config.codes.ema_decay,
                      "must be in [0, 1).")
  if "semantic" in config and tok.get("use_semantic"):
    sem = config.semantic
    if sem.objective not in ("contrastive", "teacher"):
      raise ConfigError("semantic.objective", sem.objective,
                        "choose 'contrastive' or 'teacher'.")
    if sem.objective == "teacher" and (
        sem.teacher_width != tok.semantic_out_dim):
      raise ConfigError("tokenizer.semantic_out_dim", tok.semantic_out_dim,
                        f"must equal semantic.teacher_width="
                        f"{sem.teacher_width} to regress teacher features.")
    if sem.objective == "teacher" and not sem.teacher_checkpoint:
      raise ConfigError("semantic.teacher_checkpoint", "",
                        "give the folder of the teacher's Orbax params.")


def check_workdir(workdir: str) -> None:
  """Creates `workdir` if needed and checks that it is writable."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ConfigError("--workdir", workdir, f"cannot create or write to it "
                      f"({e.strerror}); pass a --workdir you can write.") from e
