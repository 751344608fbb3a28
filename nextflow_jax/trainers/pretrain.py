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
    accumulation over `optim.grad_accum_steps` micro-batches
    (`optax.MultiSteps`).
  * Metrics: loss per modality, per task and per scale group, tokens/s and
    an MFU estimate (6 * params * tokens / s over the device's peak FLOPs).
  * `layout.image_order = "raster"` trains the raster-scan baseline (the
    same model writing one token at a time) on single-scale codes of the
    same tokenizer (`extract.schedule`).
  * Resume: the workdir's checkpoint (state + data position) > scratch.
    The code embedding table starts from the tokenizer's code vectors.
  * A non-finite loss stops the run with a clear message; the last
    checkpoint stays intact.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from nextflow_jax import checkpoint
from nextflow_jax import metrics
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax.data import pipeline
from nextflow_jax.data import records
from nextflow_jax.data import sequences
from nextflow_jax.data import sources as sources_lib
from nextflow_jax.data import tasks as tasks_lib
from nextflow_jax.model import losses
from nextflow_jax.model import nextflow
from nextflow_jax.text import tokenizer as text_tokenizer
from nextflow_jax.trainers import common
from nextflow_jax.trainers import extract

REPORT_FILE = "pretrain_report.json"
# Peak dense bf16 FLOP/s per device for the MFU estimate (vendor figures).
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5p": 459e12,
              "TPU v6 lite": 918e12, "NVIDIA H100": 989e12,
              "NVIDIA H200": 989e12, "NVIDIA A100": 312e12}


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def model_from_config(cfg: ml_collections.ConfigDict, *, text_vocab_size: int,
                      codebook_size: int, code_dim: int) -> nextflow.NextFlow:
  """`config.model` (+ sizes from the data) -> NextFlow."""
  fields = {f.name for f in dataclasses.fields(nextflow.NextFlow)} - {
      "text_vocab_size", "codebook_size", "code_dim"}
  kwargs = {k: v for k, v in cfg.items() if k in fields}
  for key in ("dtype", "param_dtype"):
    kwargs[key] = jnp.dtype(kwargs.get(key, "float32"))
  if kwargs.get("mrope_sections"):
    kwargs["mrope_sections"] = tuple(kwargs["mrope_sections"])
  else:
    kwargs["mrope_sections"] = None
  return nextflow.NextFlow(text_vocab_size=text_vocab_size,
                           codebook_size=codebook_size, code_dim=code_dim,
                           **kwargs)


def make_optimizer(optim: ml_collections.ConfigDict,
                   num_steps: int) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, optim.lr, optim.warmup_steps, max(num_steps, optim.warmup_steps + 1),
      end_value=optim.lr * optim.end_lr_ratio)
  tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip),
                   optax.adamw(schedule, b1=optim.b1, b2=optim.b2,
                               weight_decay=optim.weight_decay))
  if optim.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=optim.grad_accum_steps)
  return tx


def make_train_step(model: nextflow.NextFlow, tx, loss_cfg: dict):
  """Pure `(state, batch) -> (state, metrics)`."""

  def step(state: TrainState, batch):
    (total, m), grads = jax.value_and_grad(
        lambda p: losses.sequence_loss(model, p, batch, **loss_cfg),
        has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    m = dict(m, total_loss=total, grad_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state), m

  return step


def code_folders(codes_dir: str, split: str) -> list[str]:
  """The extraction output folders `codes_dir/codes/<split>*/`."""
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
  """The extraction output `codes_dir/codes/<split>*/` and its manifest."""
  folders = code_folders(codes_dir, split)
  opened = [sources_lib.ArrayRecordSource(f) for f in folders]
  return opened, records.read_manifest(folders[0])


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


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Pretrains; returns the report (also written to the workdir)."""
  mesh, rules = common.mesh_and_rules(config)
  data = config.data
  train_src, manifest = open_code_sources(data.codes_dir, data.split)
  eval_src, _ = open_code_sources(data.codes_dir, data.eval_split)
  tok_workdir = manifest["tokenizer_workdir"]
  text_tok_path = os.path.join(tok_workdir, common.TEXT_TOKENIZER_FILE)
  text_tok = text_tokenizer.TextTokenizer.load(text_tok_path)
  tok_model, tok_params, tok_schedule, _ = extract.load_tokenizer(
      tok_workdir, mesh, rules)
  schedule = check_codes_schedule(manifest, tok_schedule,
                                  config.layout.image_order)
  code_vectors = jax.device_get(tok_model.apply(
      {"params": tok_params}, method=tok_model.code_vectors))
  model = model_from_config(
      config.model, text_vocab_size=max(config.model.text_vocab_size,
                                        text_tok.vocab_size),
      codebook_size=manifest["codebook_size"], code_dim=code_vectors.shape[1])
  if len(schedule) > model.max_scales:
    raise ValueError(f"the schedule has {len(schedule)} scales but "
                     f"model.max_scales={model.max_scales}; raise it.")
  layout = sequences.Layout(
      rope_range=config.layout.rope_range,
      upsample_method=tok_model.upsample_method, alpha=config.layout.alpha,
      context_final_block=config.layout.context_final_block,
      image_order=config.layout.image_order)
  builder = tasks_lib.TaskBuilder(
      text_tok_path, prompt_loss=data.prompt_loss,
      t2i_eos_loss=data.t2i_eos_loss,
      condition_dropout=data.condition_dropout)
  build = tasks_lib.BuildSequence(builder, data.tasks, data.task_weights,
                                  layout, model.codebook_size)

  def dataset(opened, *, shuffle, num_epochs, seed_offset=0):
    return pipeline.make_sequence_dataset(
        opened, build=build, seq_len=data.seq_len,
        batch_size=data.global_batch_size // jax.process_count(),
        packing=data.packing, num_packing_bins=data.num_packing_bins,
        seed=config.seed + seed_offset, shuffle=shuffle,
        num_epochs=num_epochs, shard_index=jax.process_index(),
        shard_count=jax.process_count(), num_threads=data.num_threads,
        prefetch=data.prefetch)

  num_steps = config.train.num_steps
  tx = make_optimizer(config.optim, num_steps)
  example = {k: jnp.asarray(v) for k, v in sequences.pad(
      sequences.build([sequences.Text([1])], layout,
                      codebook_size=model.codebook_size),
      data.seq_len).items()}
  example = jax.tree.map(lambda x: x[None], example)

  def init_state(rng):
    params = model.init(rng, example)["params"]
    params = {**params, "code_embed": jnp.asarray(code_vectors,
                                                  model.param_dtype)}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params))

  state, state_shardings = common.init_sharded(
      init_state, jax.random.key(config.seed), mesh, rules)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("NextFlow parameters: %.2fM; seq_len %d, batch %d",
               n_params / 1e6, data.seq_len, data.global_batch_size)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 max_to_keep=config.train.keep_checkpoints)
  train_iter = iter(dataset(train_src, shuffle=True, num_epochs=None))
  if ckpt.latest_step() is not None:
    state, _ = ckpt.restore(common.abstract_target(state),
                            data_iterator=train_iter)
    logging.info("resumed from step %d", int(state.step))

  loss_cfg = dict(text_weight=config.loss.text_weight,
                  visual_weight=config.loss.visual_weight,
                  chunk_size=config.loss.chunk_size,
                  num_tasks=len(tasks_lib.TASKS))
  batch_sharding = sharding.batch_sharding(mesh)
  step_fn = jax.jit(make_train_step(model, tx, loss_cfg),
                    in_shardings=(state_shardings, batch_sharding),
                    out_shardings=(state_shardings, None), donate_argnums=0)
  eval_fn = jax.jit(lambda p, b: losses.sequence_loss(model, p, b,
                                                      **loss_cfg)[1])
  writer = metrics.Writer(workdir)
  start = step = int(state.step)
  progress = metrics.Progress(num_steps, start)
  peak = _peak_flops()
  tokens_since, t_last, t_start = 0.0, time.perf_counter(), time.perf_counter()
  # try/finally: pending asynchronous saves finish even when training stops
  # with an error, so the last checkpoint is always complete.
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      while step < num_steps:
        batch = sharding.shard_batch(next(train_iter), mesh)
        state, m = step_fn(state, batch)
        step += 1
        tokens_since += float(jnp.sum(batch["segment_ids"] > 0))
        out_of_time = config.train.max_minutes and (
            time.perf_counter() - t_start > 60 * config.train.max_minutes)
        last = step == num_steps or out_of_time
        if step % config.train.log_every_steps == 0 or last:
          values = jax.device_get(m)
          common.check_finite(float(values["total_loss"]), step,
                              ckpt.latest_step())
          now = time.perf_counter()
          tokens_per_sec = tokens_since / (now - t_last)
          tokens_since, t_last = 0.0, now
          scalars = _flatten_metrics(values)
          scalars["tokens_per_sec"] = tokens_per_sec
          scalars["model_tflops_per_sec"] = 6 * n_params * tokens_per_sec / 1e12
          if peak:
            scalars["mfu"] = 6 * n_params * tokens_per_sec / (
                peak * jax.device_count())
          writer.write_scalars(step, {**scalars, **progress.update(step)})
        if step % config.train.ckpt_every_steps == 0 or last:
          ckpt.save(step, state, data_iterator=train_iter, config=config)
        if config.eval.num_batches and (
            step % config.train.eval_every_steps == 0 or last):
          result = _evaluate(eval_fn, state.params, dataset(
              eval_src, shuffle=False, num_epochs=1, seed_offset=1), mesh,
                             config.eval.num_batches)
          writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()})
          if jax.process_index() == 0:
            with open(os.path.join(workdir, f"eval_{step}.json"), "w") as f:
              json.dump(result, f, indent=2)
        if out_of_time:
          break
  finally:
    ckpt.close()
  writer.close()
  report = {"steps": step, "parameters_millions": round(n_params / 1e6, 3),
            "minutes": round((time.perf_counter() - t_start) / 60, 2)}
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
