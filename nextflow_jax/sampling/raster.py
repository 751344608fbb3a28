# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Raster-scan image sampling: the baseline of one token at a time.

The same backbone, trained with `Layout(image_order="raster")` on
single-scale codes (`data/sequences.py`), writes the h x w grid cell by
cell in row-major order, on a `state.DecodeState` whose rows already hold
their prompts:

  append <boi> (num_scales = 1)          -> logits of cell 0
  for i = 0..n-2:
    sample cell i; append it (code i)    -> logits of cell i + 1
  sample cell n-1 (never fed)
  append <eoi>                           -> hidden state for the next text

Every append is one position whose query sees the cache, which is exactly
the causal training mask, so the logits equal one full forward over the
finished document. With CFG the batch holds the conditional rows first and
the unconditional rows second; both halves are fed the same sampled code.

The n - 1 cell steps are one `jax.lax.fori_loop` whose carry is the KV
cache, so the program is compiled once for every grid size, however many
cells it has (a Python loop would trace n model calls). The per-token knobs
(temperature, top-p, guidance) are one traced scalar each: raster order has
no scales to vary them over.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nextflow_jax.data import sequences
from nextflow_jax.model import nextflow
from nextflow_jax.sampling import filters
from nextflow_jax.sampling import state as state_lib
from nextflow_jax.text import vocab


def cell_fields(codes: jax.Array, i: jax.Array, rowcol: jax.Array,
                boi_time: jax.Array, boi_block: jax.Array
                ) -> dict[str, jax.Array]:
  """Inputs of raster position c_i, fed the code of cell i.

  Args:
    codes: (rows,) int32 code of cell i per row.
    i: scalar int (traced) cell index.
    rowcol: (n, 2) RoPE row/col of every cell (`sequences.image_positions`).
    boi_time, boi_block: (rows,) time and block id of the image's <boi>.

  Returns:
    `state.INPUT_FIELDS`, each (rows, 1, ...).
  """
  rows = codes.shape[0]
  time = (boi_time + 1 + i).astype(jnp.float32)[:, None]
  taps = jnp.zeros((rows, 1, sequences.MAX_TAPS), jnp.int32)
  weights = jnp.zeros((rows, 1, sequences.MAX_TAPS), jnp.float32)
  return {
      "tokens": jnp.zeros((rows, 1), jnp.int32),
      "positions": jnp.concatenate(
          [time, jnp.broadcast_to(rowcol[i], (rows, 2))], -1)[:, None],
      "visual_codes": taps.at[:, 0, 0].set(codes.astype(jnp.int32)),
      "visual_weights": weights.at[:, 0, 0].set(1.0),
      "is_visual": jnp.ones((rows, 1), bool),
      "block_ids": (boi_block + 1 + i)[:, None],
      "scale_ids": jnp.ones((rows, 1), jnp.int32),
      "num_scales": jnp.ones((rows, 1), jnp.int32)}


def sample_image(model: nextflow.NextFlow, params: Any,
                 state: state_lib.DecodeState, *, grid: tuple[int, int],
                 layout: sequences.Layout, keys: jax.Array,
                 top_k: int | None, temperature: jax.Array, top_p: jax.Array,
                 guidance: jax.Array, cfg: bool, active: jax.Array,
                 return_logits: bool = False
                 ) -> tuple[state_lib.DecodeState, jax.Array, jax.Array,
                            jax.Array | None]:
  """Generates one image per (conditional) row, from <boi> to <eoi>.

  Args:
    model, params: NextFlow and its params.
    state: prompts already in the cache; with `cfg`, 2B rows (conditional
      rows, then their unconditional twins), else B rows.
    grid: (h, w) cells to generate.
    layout: the training layout (rope range).
    keys: (B,) one key per conditional row; cell i uses fold_in(key, i).
    top_k: static int >= 1 (None = off).
    temperature, top_p, guidance: scalars for every cell.
    cfg: whether the batch carries unconditional twins.
    active: (rows,) bool; inactive rows write padding (see `state`).
    return_logits: also return every cell's (guided) logits.

  Returns:
    (state after <eoi>, codes (B, h, w) int32, (rows, width) hidden state
    at <eoi> (it predicts the next text token), logits (B, h * w, codebook)
    or None).
  """
  rows = state.batch_size
  batch_size = rows // 2 if cfg else rows
  n = grid[0] * grid[1]
  rowcol = jnp.asarray(sequences.image_positions((tuple(grid),), 0,
                                                 layout.rope_range))
  boi_time, boi_block = state.time, state.block + 1
  fields, _ = state_lib.text_fields(jnp.full((rows,), vocab.BOI_ID), state,
                                    active)
  fields["num_scales"] = jnp.ones((rows, 1), jnp.int32)
  state, hidden = state_lib.append(model, params, state, fields, active)

  def pick(i, hidden, codes, logits_out):
    """Samples cell i from the last hidden states (rows, width)."""
    logits = model.apply({"params": params}, hidden,
                         method=model.visual_logits)
    if cfg:
      logits = filters.guide(logits[:batch_size], logits[batch_size:],
                             guidance)
    cell_keys = jax.vmap(lambda key: jax.random.fold_in(key, i))(keys)
    code = filters.sample_rows(logits, cell_keys, top_k=top_k, top_p=top_p,
                               temperature=temperature)
    if return_logits:
      logits_out = logits_out.at[:, i].set(logits)
    return code, codes.at[:, i].set(code), logits_out

  def step(i, carry):
    state, hidden, codes, logits_out = carry
    code, codes, logits_out = pick(i, hidden, codes, logits_out)
    fed = jnp.concatenate([code, code]) if cfg else code
    state, hidden = state_lib.append(
        model, params, state,
        cell_fields(fed, i, rowcol, boi_time, boi_block), active)
    return state, hidden[:, -1], codes, logits_out

  codes = jnp.zeros((batch_size, n), jnp.int32)
  logits_out = (jnp.zeros((batch_size, n, model.codebook_size), jnp.float32)
                if return_logits else None)
  state, hidden, codes, logits_out = jax.lax.fori_loop(
      0, n - 1, step, (state.forget_length(), hidden[:, -1], codes,
                       logits_out))
  _, codes, logits_out = pick(n - 1, hidden, codes, logits_out)
  state, hidden = state_lib.close_image(model, params, state, boi_time + n,
                                       boi_block + n - 1, active)
  return state, codes.reshape(batch_size, *grid), hidden, logits_out


def cache_length(prompt_len: int, grid: tuple[int, int],
                 extra: int = 0) -> int:
  """Cache positions: the prompt, <boi>, n - 1 cells, <eoi> and `extra`."""
  return prompt_len + 1 + grid[0] * grid[1] - 1 + 1 + extra


def make_generate(model: nextflow.NextFlow, *, grid: tuple[int, int],
                  layout: sequences.Layout, top_k: int | None, cfg: bool,
                  return_logits: bool = False):
  """A jitted `(params, prompts, time, block, keys, knobs) -> codes, logits`.

  prompts / time / block come from `state.stack_prompts` (2B rows with CFG:
  conditional prompts, then unconditional); keys are (B,) row keys;
  knobs = {"temperature", "top_p", "guidance"}, each a scalar. Returns
  codes (B, h, w) int32 and, with `return_logits`, the (guided) logits
  (B, h * w, codebook), else None. The prefill and all n cell steps are one
  compiled program.

  Raises:
    ValueError: a grid with a side < 1 or a layout not in raster order.
  """
  grid = (int(grid[0]), int(grid[1]))
  if min(grid) < 1:
    raise ValueError(f"grid={grid} must have positive sides (h, w).")
  if layout.image_order != "raster":
    raise ValueError(f"the raster sampler needs the layout the model was "
                     f"trained with in raster order; got image_order="
                     f"{layout.image_order!r}. Use sequences.Layout("
                     "image_order='raster', ...).")
  top_k = None if top_k is None else int(top_k)

  def generate(params, prompts, time, block, keys, knobs):
    max_len = cache_length(prompts["tokens"].shape[1], grid)
    state, _ = state_lib.prefill(model, params, prompts, time, block, max_len)
    active = jnp.ones((state.batch_size,), bool)
    _, codes, _, logits = sample_image(
        model, params, state, grid=grid, layout=layout, keys=keys,
        top_k=top_k, temperature=knobs["temperature"], top_p=knobs["top_p"],
        guidance=knobs["guidance"], cfg=cfg, active=active,
        return_logits=return_logits)
    return codes, logits

  return jax.jit(generate)
