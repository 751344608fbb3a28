# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Next-scale image sampling with a KV cache and classifier-free guidance.

The loop (nextflow-method.md section 8.1), on a `state.DecodeState` whose
rows already hold their prompts:

  append <boi> (num_scales = K)          -> logits of scale 1 (1x1)
  for k = 2..K:
    append block B_k: Up(E[codes_{k-1}])  -> logits of scale k (h_k x w_k)
  append <eoi>                            -> hidden state for the next text

Each append is one transformer call over the whole scale: its queries see
the cache and each other, which is exactly the block-causal training mask,
so the logits equal one full forward over the finished document
(`data/sequences.py` lays out both). With CFG the batch holds the
conditional rows first and the unconditional rows second; both halves are
fed the same sampled codes (VAR's `autoregressive_infer_cfg`).

The scale loop is a Python loop traced inside one `jax.jit`: every scale
has its own static shape, all compiled into one program that is reused for
every batch with the same shapes (prompts are padded to a fixed budget).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nextflow_jax import scales
from nextflow_jax.data import sequences
from nextflow_jax.model import nextflow
from nextflow_jax.sampling import filters
from nextflow_jax.sampling import state as state_lib
from nextflow_jax.text import vocab


def block_fields(prev_codes: jax.Array, schedule: scales.Schedule, k: int,
                 boi_time: jax.Array, boi_block: jax.Array,
                 layout: sequences.Layout) -> dict[str, jax.Array]:
  """Inputs of block B_{k+1} (0-based scale k >= 1) from scale k-1's codes.

  Args:
    prev_codes: (B, h_{k-1} * w_{k-1}) int32 codes of the previous scale.
    schedule: the image's schedule.
    k: 0-based index of the scale this block predicts.
    boi_time, boi_block: (B,) time and block id of the image's <boi>.
    layout: rope range and upsampling (must match training).

  Returns:
    `state.INPUT_FIELDS`, each (B, h_k * w_k, ...).
  """
  index, weight = sequences.interpolation_taps(
      tuple(schedule[k - 1]), tuple(schedule[k]), layout.upsample_method)
  batch_size, n = prev_codes.shape[0], index.shape[0]
  rowcol = jnp.asarray(sequences.image_positions(schedule, k,
                                                 layout.rope_range))
  time = jnp.broadcast_to((boi_time + k).astype(jnp.float32)[:, None, None],
                          (batch_size, n, 1))
  return {
      "tokens": jnp.zeros((batch_size, n), jnp.int32),
      "positions": jnp.concatenate(
          [time, jnp.broadcast_to(rowcol, (batch_size, n, 2))], -1),
      "visual_codes": prev_codes[:, jnp.asarray(index)],
      "visual_weights": jnp.broadcast_to(jnp.asarray(weight),
                                         (batch_size,) + weight.shape),
      "is_visual": jnp.ones((batch_size, n), bool),
      "block_ids": jnp.broadcast_to((boi_block + k)[:, None], (batch_size, n)),
      "scale_ids": jnp.full((batch_size, n), k + 1, jnp.int32),
      "num_scales": jnp.full((batch_size, n), len(schedule), jnp.int32)}


def sample_image(model: nextflow.NextFlow, params: Any,
                 state: state_lib.DecodeState, *, schedule: scales.Schedule,
                 layout: sequences.Layout, keys: jax.Array,
                 top_k: Sequence[int | None], temperature: jax.Array,
                 top_p: jax.Array, guidance: jax.Array, cfg: bool,
                 active: jax.Array, return_logits: bool = False,
                 prefix_codes: Sequence[jax.Array] = ()
                 ) -> tuple[state_lib.DecodeState, list[jax.Array],
                            jax.Array, list[jax.Array]]:
  """Generates one image per (conditional) row, from <boi> to <eoi>.

  With `prefix_codes`, the first m = len(prefix_codes) scales are not
  sampled but given, and only scales m+1..K are drawn: the continuations of
  a fixed coarse image (GRPO's value estimate of a prefix, variations of an
  image, the "which scales decide the image" probe). Their logits are still
  computed (and returned with `return_logits`), so the log-probability of
  the given codes under the model is available too.

  Args:
    model, params: NextFlow and its params.
    state: prompts already in the cache; with `cfg`, 2B rows (conditional
      rows, then their unconditional twins), else B rows.
    schedule: the K scales to generate.
    layout: the training layout (rope range, upsampling).
    keys: (B,) one key per conditional row.
    top_k: K static ints (None = off).
    temperature, top_p, guidance: (K,) per-scale values.
    cfg: whether the batch carries unconditional twins.
    active: (rows,) bool; inactive rows write padding (see `state`).
    return_logits: also return each scale's (guided) logits.
    prefix_codes: m <= K arrays (B, h_k, w_k) int32, the codes of the first
      m scales of `schedule`.

  Returns:
    (state after <eoi>, K codes (B, h_k, w_k) int32, (rows, width) hidden
    state at <eoi> (it predicts the next text token), K logits
    (B, h_k * w_k, codebook) or []).
  """
  rows = state.batch_size
  batch_size = rows // 2 if cfg else rows
  num = len(schedule)
  _check_prefix(prefix_codes, schedule, batch_size)
  boi_time, boi_block = state.time, state.block + 1
  fields, _ = state_lib.text_fields(jnp.full((rows,), vocab.BOI_ID), state,
                                    active)
  fields["num_scales"] = jnp.full((rows, 1), num, jnp.int32)
  state, hidden = state_lib.append(model, params, state, fields, active)
  codes, all_logits, previous = [], [], None
  for k in range(num):
    if k:
      fields = block_fields(previous, schedule, k, boi_time, boi_block,
                            layout)
      state, hidden = state_lib.append(model, params, state, fields, active)
    logits = model.apply({"params": params}, hidden,
                         method=model.visual_logits)
    if cfg:
      logits = filters.guide(logits[:batch_size], logits[batch_size:],
                             guidance[k])
    scale_keys = jax.vmap(lambda key: jax.random.fold_in(key, k))(keys)  # pylint: disable=cell-var-from-loop
    if k < len(prefix_codes):
      sampled = prefix_codes[k].reshape(batch_size, -1).astype(jnp.int32)
    else:
      sampled = filters.sample_rows(logits, scale_keys, top_k=top_k[k],
                                    top_p=top_p[k],
                                    temperature=temperature[k])
    codes.append(sampled.reshape(batch_size, *schedule[k]))
    previous = jnp.concatenate([sampled, sampled]) if cfg else sampled
    if return_logits:
      all_logits.append(logits)
  state, hidden = state_lib.close_image(model, params, state, boi_time + num,
                                       boi_block + num - 1, active)
  return state, codes, hidden, all_logits


def _check_prefix(prefix_codes: Sequence[jax.Array],
                  schedule: scales.Schedule, batch_size: int) -> None:
  """Prefix codes must be the first scales of `schedule`, one per row."""
  if len(prefix_codes) > len(schedule):
    raise ValueError(f"{len(prefix_codes)} prefix scales for a schedule of "
                     f"{len(schedule)} ({scales.format_schedule(schedule)}).")
  for k, codes in enumerate(prefix_codes):
    want = (batch_size, *schedule[k])
    if tuple(codes.shape) != want:
      raise ValueError(f"prefix scale {k + 1} has shape {tuple(codes.shape)}"
                       f"; the schedule {scales.format_schedule(schedule)} "
                       f"with {batch_size} rows needs {want}.")


def cache_length(prompt_len: int, schedule: scales.Schedule,
                 extra: int = 0) -> int:
  """Cache positions for a prompt, one image (<boi>, blocks, <eoi>), extra."""
  return prompt_len + 1 + scales.token_count(schedule[1:]) + 1 + extra


def make_generate(model: nextflow.NextFlow, *, schedule: scales.Schedule,
                  layout: sequences.Layout, top_k: Sequence[int | None],
                  cfg: bool, num_images: int = 1,
                  separator: int = vocab.SPECIAL_IDS["<frame>"],
                  return_logits: bool = False):
  """A jitted `(params, prompts, time, block, keys, knobs, prefix=())
  -> codes, logits`.

  prompts / time / block come from `state.stack_prompts` (2B rows with CFG:
  conditional prompts, then unconditional); keys are (B,) row keys;
  knobs = {"temperature", "top_p", "guidance"}, each (K,); prefix: codes
  of the first scales of every image (`sample_image`'s `prefix_codes`; one
  program per prefix length). The prefill and all scale steps are one
  compiled program.

  With `num_images` > 1 (video frames), consecutive images are separated
  by the `separator` text token and image i > 0 samples with keys
  fold_in(key, i). Returns a list of `num_images` per-scale code lists (and
  logits lists; empty unless `return_logits`); with one image, its codes
  and logits.
  """
  top_k = tuple(None if k is None else int(k) for k in top_k)
  schedule = tuple(tuple(s) for s in schedule)

  def generate(params, prompts, time, block, keys, knobs, prefix=()):
    max_len = prompts["tokens"].shape[1] + num_images * (
        cache_length(0, schedule) + 1)
    state, _ = state_lib.prefill(model, params, prompts, time, block, max_len)
    active = jnp.ones((state.batch_size,), bool)
    images, all_logits = [], []
    for i in range(num_images):
      if i:
        fields, moved = state_lib.text_fields(
            jnp.full((state.batch_size,), separator), state, active)
        state, _ = state_lib.append(model, params, state, fields, active)
        state = state.replace(time=moved.time, block=moved.block)
      image_keys = keys if i == 0 else jax.vmap(
          lambda key: jax.random.fold_in(key, i))(keys)  # pylint: disable=cell-var-from-loop
      state, codes, _, logits = sample_image(
          model, params, state, schedule=schedule, layout=layout,
          keys=image_keys, top_k=top_k, temperature=knobs["temperature"],
          top_p=knobs["top_p"], guidance=knobs["guidance"], cfg=cfg,
          active=active, return_logits=return_logits, prefix_codes=prefix)
      images.append(codes)
      all_logits.append(logits)
    if num_images == 1:
      return images[0], all_logits[0]
    return images, all_logits

  return jax.jit(generate)


def knobs_from_config(config, num_scales: int) -> dict[str, np.ndarray]:
  """Traced per-scale knobs of a `SamplingConfig`."""
  return {"temperature": np.asarray(config.per_scale("temperature",
                                                     num_scales), np.float32),
          "top_p": np.asarray(config.per_scale("top_p", num_scales),
                              np.float32),
          "guidance": config.guidance_weights(num_scales)}
