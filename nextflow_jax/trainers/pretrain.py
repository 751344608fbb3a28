# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Unified pretraining (`config.trainer = "pretrain"`).

Reads the code shards written by `trainers/extract.py` (the tokenizer never
runs in the training step), lays records out as documents of the configured
tasks (`data/tasks.py`, `data/sequences.py`), packs them into rows of
`data.seq_len`, and trains `model/nextflow.py` with the chunked text +
scale-reweighted visual cross-entropy (`model/losses.py`).

  * Sharded init: `eval_shape` -> shardings from logical names ->
    `jit(init, out_shardings=...)`; the step is jitted with donated state.
  * AdamW, warmup + cosine decay, global-norm clipping; gradient
    accumulation over `optim.grad_accum_steps` micro-batches, the schedule
    counted in optimizer updates; weight decay on projection matrices and
    heads only (`pretrain_step.py`).
  * Metrics: loss per modality, per task and per scale group, tokens/s and
    an MFU estimate (6 * params * tokens / s over the device's peak FLOPs).
  * `layout.image_order = "raster"` trains the raster-scan baseline (the
    same model writing one token at a time) on single-scale codes of the
    same tokenizer (`extract.schedule`).
  * Resume: the workdir's checkpoint (state + data position) >
    `init_from` (a Qwen conversion, `convert/qwen.py`: the decoder and the
    text embedding and head from it, the visual parameters fresh) >
    scratch. The code embedding table starts from the tokenizer's code
    vectors. `data.text_tokenizer` names the text tokenizer file; empty:
    the conversion's tokenizer.json with `init_from`, else the tokenizer
    workdir's sentencepiece model.
  * The loop (`loop.py`): a non-finite loss or parameters stop the run;
    checkpoints only ever hold finite parameters.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from nextflow_jax import checkpoint
from nextflow_jax import config_lib
from nextflow_jax import metrics
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax import workdirs
from nextflow_jax.convert import qwen as qwen_convert
from nextflow_jax.data import pipeline
from nextflow_jax.data import records
from nextflow_jax.data import sequences
from nextflow_jax.data import tasks as tasks_lib
from nextflow_jax.model import layers
from nextflow_jax.model import losses
from nextflow_jax.model import rope
from nextflow_jax.text import hf_tokenizer
from nextflow_jax.text import tokenizer as text_tokenizer_lib
from nextflow_jax.trainers import common
from nextflow_jax.trainers import loop
from nextflow_jax.trainers import pretrain_step

REPORT_FILE = "pretrain_report.json"
# Peak dense bf16 FLOP/s per device for the MFU estimate (vendor figures).
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5p": 459e12,
              "TPU v6 lite": 918e12, "NVIDIA H100": 989e12,
              "NVIDIA H200": 989e12, "NVIDIA A100": 312e12}


def check_codes_schedule(manifest: dict, tokenizer_schedule: scales.Schedule,
                         image_order: str) -> scales.Schedule:
  """The schedule of extracted codes, checked against tokenizer and layout.

  Args:
    manifest: the codes' manifest (`trainers/extract.py`).
    tokenizer_schedule: the schedule the tokenizer is trained with now.
    image_order: `layout.image_order`.

  Returns:
    The codes' schedule (`extract.schedule`, or the tokenizer's).

  Raises:
    ValueError: the tokenizer was retrained with another schedule since the
      extraction, or the codes do not fit the image order.
  """
  # Manifests from before `extract.schedule` hold only the codes' schedule,
  # which was then always the tokenizer's.
  trained = manifest.get("tokenizer_schedule", manifest["schedule"])
  if scales.format_schedule(tokenizer_schedule) != trained:
    raise ValueError(f"the codes were extracted with a tokenizer of schedule "
                     f"{trained} but the tokenizer in "
                     f"{manifest['tokenizer_workdir']} now has "
                     f"{scales.format_schedule(tokenizer_schedule)}; "
                     "re-extract the codes with configs/extract.py.")
  schedule = scales.parse_schedule(manifest["schedule"])
  sequences.check_image_order(image_order, schedule)
  return schedule


def check_config(config: ml_collections.ConfigDict) -> None:
  """Up-front checks of a pretraining config (run by `trainers.validate`).

  Raises:
    config_lib.ConfigError: naming the key, the value and what is allowed.
  """
  data = config.data
  if not data.codes_dir or not os.path.isdir(os.path.join(data.codes_dir,
                                                          "codes")):
    raise config_lib.ConfigError(
        "data.codes_dir", data.codes_dir,
        "give the --workdir of configs/extract.py (it must hold codes/).")
  chunk = config.loss.chunk_size
  if data.seq_len < 1 or data.seq_len % min(chunk, data.seq_len):
    raise config_lib.ConfigError(
        "data.seq_len", data.seq_len,
        f"must be a positive multiple of loss.chunk_size={chunk}.")
  unknown = [t for t in data.tasks if t not in tasks_lib.TASKS]
  if unknown or not data.tasks:
    raise config_lib.ConfigError("data.tasks", data.tasks,
                                 f"choose from {list(tasks_lib.TASKS)}.")
  if len(data.task_weights) != len(data.tasks) or any(
      w <= 0 for w in data.task_weights):
    raise config_lib.ConfigError(
        "data.task_weights", data.task_weights,
        f"give one positive weight per task ({len(data.tasks)}).")
  model = config.model
  if model.get("attention", "xla") not in layers.ATTENTION_IMPLEMENTATIONS:
    raise config_lib.ConfigError(
        "model.attention", model.attention,
        f"choose one of {list(layers.ATTENTION_IMPLEMENTATIONS)}.")
  try:
    layers.check_attention("config.model", model.get("attention", "xla"),
                           model.get("attention_block", 512))
  except layers.AttentionChoiceError as e:
    raise config_lib.ConfigError(f"model.{e.field}", model.get(e.field),
                                 str(e)) from e
  if data.packing not in ("first_fit", "none"):
    raise config_lib.ConfigError("data.packing", data.packing,
                                 "choose 'first_fit' or 'none'.")
  if not 0.0 <= data.condition_dropout < 1.0:
    raise config_lib.ConfigError("data.condition_dropout",
                                 data.condition_dropout, "must be in [0, 1).")
  if not 0.0 <= data.prompt_variants <= 1.0:
    raise config_lib.ConfigError("data.prompt_variants",
                                 data.prompt_variants, "must be in [0, 1].")
  if data.num_workers < 0:
    raise config_lib.ConfigError(
        "data.num_workers", data.num_workers,
        "must be >= 0 (0 = threads only, > 0 = Grain worker processes).")
  _check_model(config.model)
  _check_init_from(config)
  if config.layout.alpha < 0:
    raise config_lib.ConfigError("layout.alpha", config.layout.alpha,
                                 "must be >= 0.")
  if config.optim.grad_accum_steps < 1:
    raise config_lib.ConfigError("optim.grad_accum_steps",
                                 config.optim.grad_accum_steps,
                                 "must be >= 1.")
  _check_image_order(config)


def _check_model(model: ml_collections.ConfigDict) -> None:
  allowed = workdirs.model_keys()
  for key in model.keys():
    if key not in allowed:
      raise config_lib.ConfigError(
          f"model.{key}", model[key],
          f"NextFlow has no such field; the model section may have "
          f"{sorted(allowed)}.")
  if model.num_heads % model.num_kv_heads:
    raise config_lib.ConfigError(
        "model.num_kv_heads", model.num_kv_heads,
        f"must divide model.num_heads={model.num_heads}.")


def _check_init_from(config: ml_collections.ConfigDict) -> None:
  """`init_from` is a Qwen conversion whose model section this config has;
  `data.text_tokenizer` exists."""
  path = config.data.text_tokenizer
  if path and not os.path.exists(path):
    raise config_lib.ConfigError("data.text_tokenizer", path,
                                 "no such file (a sentencepiece .model or a "
                                 "Hugging Face tokenizer.json).")
  if not config.init_from:
    return
  try:
    conversion = qwen_convert.read_conversion(config.init_from)
  except FileNotFoundError as e:
    raise config_lib.ConfigError("init_from", config.init_from, str(e))
  head_dim = conversion["model"]["head_dim"]
  differ = [f"model.{k}={_flag(v)}" for k, v in conversion["model"].items()
            if _normalised(k, config.model.get(k), head_dim) !=
            _normalised(k, v, head_dim)]
  if differ:
    raise config_lib.ConfigError(
        "init_from", config.init_from,
        "its parameters have another shape than config.model; set "
        + " ".join(f"--config.{d}" for d in differ) + " (from its "
        f"{qwen_convert.CONVERSION_FILE}).")


def _normalised(key: str, value, head_dim: int):
  """A model field's value as the model reads it (() sections = default)."""
  if key == "mrope_sections":
    return rope.resolve_sections(tuple(value or ()) or None, head_dim)
  return tuple(value) if isinstance(value, (list, tuple)) else value


def _flag(value) -> str:
  """A value as a --config override writes it."""
  if isinstance(value, (list, tuple)):
    return "(" + ",".join(str(v) for v in value) + ")"
  return repr(value)


def _check_image_order(config) -> None:
  """`layout.image_order`; raster order needs single-scale codes."""
  layout = config.layout
  if layout.image_order not in sequences.IMAGE_ORDERS:
    raise config_lib.ConfigError(
        "layout.image_order", layout.image_order,
        f"choose one of {list(sequences.IMAGE_ORDERS)}.")
  if layout.image_order != "raster":
    return
  if layout.context_final_block:
    raise config_lib.ConfigError(
        "layout.context_final_block", True,
        "applies to next-scale order only (raster context images get every "
        "cell); set it to False.")
  try:  # The codes' schedule, when the extraction is already there.
    folder = workdirs.code_folders(config.data.codes_dir, config.data.split)[0]
    schedule = scales.parse_schedule(
        records.read_manifest(folder)["schedule"])
  except (OSError, ValueError, KeyError):
    return  # run() reports a missing or broken extraction.
  try:
    sequences.check_image_order("raster", schedule)
  except ValueError as e:
    raise config_lib.ConfigError("layout.image_order", "raster",
                                 f"the codes in {folder}: {e}")


def _text_tokenizer(config: ml_collections.ConfigDict, tok_workdir: str):
  """`data.text_tokenizer`, or the conversion's, or the tokenizer job's."""
  path = config.data.text_tokenizer
  if not path and config.init_from:
    converted = os.path.join(config.init_from,
                             hf_tokenizer.HFTextTokenizer.file_name)
    path = converted if os.path.exists(converted) else ""
  if path:
    return text_tokenizer_lib.load(path)
  return workdirs.load_text_tokenizer(tok_workdir)


def _init_from(folder: str, fresh: Any) -> Any:
  """Params of a Qwen conversion, on `fresh`'s shardings; its visual
  parameters stay `fresh` (the code embedding holds the tokenizer's code
  vectors)."""
  conversion = qwen_convert.read_conversion(folder)
  keep = conversion["visual_params"]
  try:
    loaded = checkpoint.load_tree(
        os.path.join(folder, qwen_convert.PARAMS_DIR),
        common.abstract_target({k: v for k, v in fresh.items()
                                if k not in keep}))
  except checkpoint.CheckpointMismatchError as e:
    raise ValueError(f"config.init_from: {e}") from None
  logging.info("init_from %s: %d parameter tensors from %s, fresh: %s",
               folder, len(jax.tree.leaves(loaded)), conversion["source"],
               keep)
  return {**loaded, **{k: fresh[k] for k in keep}}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pretrains; returns the report (also written to the workdir)."""
  mesh, rules = common.mesh_and_rules(config)
  data = config.data
  train_src, manifest = workdirs.open_code_sources(data.codes_dir, data.split)
  eval_src, _ = workdirs.open_code_sources(data.codes_dir, data.eval_split)
  tok_workdir = manifest["tokenizer_workdir"]
  text_tok = _text_tokenizer(config, tok_workdir)
  kept = os.path.join(workdir, text_tok.file_name)
  if jax.process_index() == 0 and not os.path.exists(kept):
    text_tok.save(kept)  # Sampling reads the model's own text tokenizer.
  tok_model, tok_params, tok_schedule, _ = workdirs.load_tokenizer(
      tok_workdir, mesh, rules)
  schedule = check_codes_schedule(manifest, tok_schedule,
                                  config.layout.image_order)
  code_vectors = jax.device_get(tok_model.apply(
      {"params": tok_params}, method=tok_model.code_vectors))
  model = workdirs.build_model(
      config.model, text_vocab_size=max(config.model.text_vocab_size,
                                        text_tok.vocab_size),
      codebook_size=manifest["codebook_size"], code_dim=code_vectors.shape[1])
  if len(schedule) > model.max_scales:
    raise ValueError(f"the schedule has {len(schedule)} scales but "
                     f"model.max_scales={model.max_scales}; raise it.")
  layout = workdirs.build_layout(config.layout, tok_model.upsample_method)
  builder = tasks_lib.TaskBuilder(
      text_tok.source, prompt_loss=data.prompt_loss,
      t2i_eos_loss=data.t2i_eos_loss,
      condition_dropout=data.condition_dropout,
      prompt_variants=data.prompt_variants)
  build = tasks_lib.BuildSequence(builder, data.tasks, data.task_weights,
                                  layout, model.codebook_size)

  def dataset(opened, *, shuffle, num_epochs, seed_offset=0, num_workers=0):
    return pipeline.make_sequence_dataset(
        opened, build=build, seq_len=data.seq_len,
        batch_size=data.global_batch_size // jax.process_count(),
        packing=data.packing, num_packing_bins=data.num_packing_bins,
        seed=config.seed + seed_offset, shuffle=shuffle,
        num_epochs=num_epochs, shard_index=jax.process_index(),
        shard_count=jax.process_count(), num_threads=data.num_threads,
        prefetch=data.prefetch, num_workers=num_workers)

  if config.eval.num_batches > 0:
    _check_eval_split(dataset(eval_src, shuffle=False, num_epochs=1,
                              seed_offset=1), data)
  settings = loop.LoopSettings.from_config(config)
  tx = pretrain_step.make_optimizer(config.optim, settings.num_steps)
  example = sequences.example_batch(layout, model.codebook_size, data.seq_len)
  state, state_shardings = common.init_sharded(
      pretrain_step.make_init_state(model, tx, example, code_vectors),
      jax.random.key(config.seed), mesh, rules)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("NextFlow parameters: %.2fM; seq_len %d, batch %d",
               n_params / 1e6, data.seq_len, data.global_batch_size)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 max_to_keep=config.train.keep_checkpoints)
  train_iter = iter(dataset(train_src, shuffle=True, num_epochs=None,
                            num_workers=data.num_workers))
  if ckpt.latest_step() is not None:
    workdirs.check_resumable_model(
        ckpt.restore_config().get("model", {}), config.model.to_dict(),
        workdir)
    state, _ = ckpt.restore(common.abstract_target(state),
                            data_iterator=train_iter, config=config)
    logging.info("resumed from step %d", int(state.step))
  elif config.init_from:
    state = state.replace(params=_init_from(config.init_from, state.params))

  loss_cfg = dict(text_weight=config.loss.text_weight,
                  visual_weight=config.loss.visual_weight,
                  chunk_size=config.loss.chunk_size,
                  num_tasks=len(tasks_lib.TASKS))
  batch_sharding = sharding.batch_sharding(mesh)
  step_fn = jax.jit(pretrain_step.make_train_step(model, tx, loss_cfg),
                    in_shardings=(state_shardings, batch_sharding),
                    out_shardings=(state_shardings, None), donate_argnums=0)
  eval_fn = jax.jit(lambda p, b: losses.sequence_loss(model, p, b,
                                                      **loss_cfg)[1])
  writer = metrics.Writer(workdir)
  peak = _peak_flops()
  counter = {"tokens": 0, "since": time.perf_counter()}

  def train_step(state, batch, step):
    del step
    # Counted on the host batch: no device sync between logging steps.
    counter["tokens"] += int(np.sum(batch["segment_ids"] > 0))
    return step_fn(state, sharding.shard_batch(batch, mesh))

  def to_scalars(step, values):
    del step
    now = time.perf_counter()
    tokens_per_sec = counter["tokens"] / (now - counter["since"])
    counter.update(tokens=0, since=now)
    scalars = _flatten_metrics(values)
    scalars["tokens_per_sec"] = tokens_per_sec
    scalars["model_tflops_per_sec"] = 6 * n_params * tokens_per_sec / 1e12
    if peak:
      scalars["mfu"] = 6 * n_params * tokens_per_sec / (
          peak * jax.device_count())
    return scalars

  def evaluate(state, step):
    result = _evaluate(eval_fn, state.params, dataset(
        eval_src, shuffle=False, num_epochs=1, seed_offset=1), mesh,
                       config.eval.num_batches)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()})
    if jax.process_index() == 0:
      with open(os.path.join(workdir, f"eval_{step}.json"), "w") as f:
        json.dump(result, f, indent=2)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state, step, minutes = loop.run(
        state, start_step=int(state.step), settings=settings,
        train_iter=train_iter, train_step=train_step, ckpt=ckpt,
        writer=writer, config=config, loss_key="total_loss",
        to_scalars=to_scalars, evaluate=evaluate)
  writer.close()
  report = {"steps": step, "parameters_millions": round(n_params / 1e6, 3),
            "minutes": round(minutes, 2)}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, REPORT_FILE), "w") as f:
      json.dump(report, f, indent=2)
  return report


def _flatten_metrics(values: dict) -> dict[str, float]:
  """Scalars as they are; per-scale / per-task arrays as named scalars."""
  out = {}
  for key in ("total_loss", "text_loss", "visual_loss", "text_accuracy",
              "visual_accuracy", "grad_norm", "text_tokens", "visual_tokens"):
    out[f"loss/{key}" if "loss" in key else key] = float(values[key])
  for s, (ce, n) in enumerate(zip(values["scale_ce"], values["scale_count"])):
    if n:
      out[f"scale_ce/{s:02d}"] = float(ce)
  for t, (ce, n) in enumerate(zip(values["task_ce"], values["task_count"])):
    if n:
      out[f"task_ce/{tasks_lib.TASKS[t]}"] = float(ce)
  return out


def _check_eval_split(eval_dataset, data: ml_collections.ConfigDict) -> None:
  """Fails before the first step, not at the first evaluation (which would
  lose the steps since the last checkpoint), when the evaluation split
  cannot fill one batch."""
  if next(iter(eval_dataset), None) is None:
    raise ValueError(
        f"data.eval_split={data.eval_split!r} of {data.codes_dir} does not "
        f"fill one batch of data.global_batch_size={data.global_batch_size}"
        f" rows of data.seq_len={data.seq_len} tokens; extract more records"
        " into that split, lower the batch size, or set eval.num_batches=0.")


def _evaluate(eval_fn, params, dataset, mesh, num_batches: int) -> dict:
  sums: dict[str, float] = {}
  n = 0
  for i, batch in enumerate(dataset):
    if i >= num_batches:
      break
    values = jax.device_get(eval_fn(params, sharding.shard_batch(batch, mesh)))
    for key, value in _flatten_metrics({**values, "total_loss": 0.0,
                                        "grad_norm": 0.0}).items():
      sums[key] = sums.get(key, 0.0) + value
    n += 1
  if not n:
    raise ValueError("evaluation got no batches; check data.eval_split.")
  return {k: v / n for k, v in sums.items()
          if k not in ("loss/total_loss", "grad_norm")}


@functools.lru_cache(maxsize=1)
def _peak_flops() -> float | None:
  kind = jax.devices()[0].device_kind
  return next((v for k, v in PEAK_FLOPS.items() if kind.startswith(k)), None)
