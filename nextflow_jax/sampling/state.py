# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The KV-cached decoding state that every sampler extends.

A `DecodeState` is the model's KV cache plus, per batch row, the next RoPE
time counter and the last block id used (`data/sequences.py` numbers both).
Samplers append positions to it with `append`: a prompt, one text token, an
image scale. Rows may be *inactive* in an append (a row that already
stopped, or the unconditional half of a CFG batch while the conditional
half writes text): their new entries get segment 0, which the attention
mask treats as padding, and their counters do not move. So rows of one
batch can follow different documents in lock step, and the cache always
holds exactly what one full forward over each row's document would see.

Prompts are left-padded to a common length (`stack_prompts`); padding is
segment 0 as well, so prompts of any length share one compiled program.

Prefix-sized reads: where the number of filled positions is known when the
program is traced (after the prefill and in the Python-unrolled scale loop
of next-scale sampling, `DecodeState.filled`), attention reads only that
prefix of the cache instead of all `max_len` slots. Inside a `lax` loop
(text tokens, raster cells) the count is traced, so the samplers drop it
(`forget_length`) and those steps read the whole cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from nextflow_jax.data import sequences
from nextflow_jax.model import nextflow
from nextflow_jax.text import vocab

# The per-position inputs the model reads (`NextFlow.__call__`).
INPUT_FIELDS = ("tokens", "positions", "visual_codes", "visual_weights",
                "is_visual", "block_ids", "scale_ids", "num_scales")


@flax.struct.dataclass
class DecodeState:
  """KV cache and per-row counters.

  Attributes:
    cache: the model's "cache" collection (every layer's keys and values).
    time: (B,) int32 RoPE time of the row's next text position.
    block: (B,) int32 last block id the row used.
    filled: positions written so far when known at trace time (a static
      Python int, part of the tree structure), else None.
  """
  cache: Any
  time: jax.Array
  block: jax.Array
  filled: int | None = flax.struct.field(pytree_node=False, default=None)

  def forget_length(self) -> "DecodeState":
    """The same state without its static length (the carry of a loop
    whose steps append: every step must have the same structure)."""
    return self.replace(filled=None)

  @property
  def batch_size(self) -> int:
    return self.time.shape[0]

  @property
  def max_len(self) -> int:
    return _attention_cache(self.cache)["cached_key"].shape[-3]

  @property
  def length(self) -> jax.Array:
    """Positions written so far (the same for every row)."""
    index = _attention_cache(self.cache)["cache_index"]
    return index.reshape(-1)[0]


def _attention_cache(cache) -> dict:
  """The first attention layer's cache dict (stacked or unrolled layers)."""
  node = cache
  while "cached_key" not in node:
    node = node[sorted(node)[0]]
  return node


def init_cache(model: nextflow.NextFlow, batch_size: int,
               max_len: int) -> Any:
  """An empty cache for `batch_size` rows of up to `max_len` positions."""
  dummy = {f: jnp.zeros((batch_size, max_len, *shape), dtype)
           for f, (shape, dtype) in _FIELD_SPECS.items()}
  dummy["segment_ids"] = jnp.zeros((batch_size, max_len), jnp.int32)
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), dummy, decode=True)["cache"])
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                      flax.linen.unbox(abstract))


_FIELD_SPECS = {
    "tokens": ((), jnp.int32), "positions": ((3,), jnp.float32),
    "visual_codes": ((sequences.MAX_TAPS,), jnp.int32),
    "visual_weights": ((sequences.MAX_TAPS,), jnp.float32),
    "is_visual": ((), jnp.bool_), "block_ids": ((), jnp.int32),
    "scale_ids": ((), jnp.int32), "num_scales": ((), jnp.int32)}


def append(model: nextflow.NextFlow, params: Any, state: DecodeState,
           fields: dict[str, jax.Array], active: jax.Array
           ) -> tuple[DecodeState, jax.Array]:
  """Runs L new positions through the model, extending the cache.

  Args:
    model, params: the NextFlow model and its params.
    state: the state to extend (counters are not changed here; the field
      builders below compute them).
    fields: `INPUT_FIELDS`, each (B, L, ...).
    active: (B,) bool; inactive rows write padding.

  Returns:
    (state with the extended cache, (B, L, width) hidden states).

  Raises:
    ValueError: the cache has no room for L more positions.
  """
  length = fields["tokens"].shape[1]
  if not isinstance(state.length, jax.core.Tracer):
    if int(state.length) + length > state.max_len:
      raise ValueError(f"the KV cache holds {state.max_len} positions, "
                       f"{int(state.length)} are used and {length} more do "
                       "not fit; raise max_len.")
  batch = dict(fields)
  batch["segment_ids"] = jnp.broadcast_to(
      active.astype(jnp.int32)[:, None], fields["tokens"].shape)
  filled = None if state.filled is None else state.filled + length
  hidden, mutated = model.apply({"params": params, "cache": state.cache},
                                batch, decode=True, kv_len=filled,
                                mutable=["cache"])
  return state.replace(cache=mutated["cache"], filled=filled), hidden


def text_fields(tokens: jax.Array, state: DecodeState, active: jax.Array
                ) -> tuple[dict[str, jax.Array], DecodeState]:
  """Fields of one text token per row (B,) -> (B, 1) and moved counters."""
  batch_size = tokens.shape[0]
  block = state.block + 1
  t = state.time.astype(jnp.float32)
  fields = {
      "tokens": tokens.astype(jnp.int32)[:, None],
      "positions": jnp.stack([t, t, t], -1)[:, None],
      "visual_codes": jnp.zeros((batch_size, 1, sequences.MAX_TAPS),
                                jnp.int32),
      "visual_weights": jnp.zeros((batch_size, 1, sequences.MAX_TAPS),
                                  jnp.float32),
      "is_visual": jnp.zeros((batch_size, 1), bool),
      "block_ids": block[:, None],
      "scale_ids": jnp.zeros((batch_size, 1), jnp.int32),
      "num_scales": jnp.zeros((batch_size, 1), jnp.int32)}
  moved = state.replace(time=jnp.where(active, state.time + 1, state.time),
                        block=jnp.where(active, block, state.block))
  return fields, moved


def close_image(model: nextflow.NextFlow, params: Any, state: DecodeState,
                eoi_time: jax.Array, last_block: jax.Array, active: jax.Array
                ) -> tuple[DecodeState, jax.Array]:
  """Appends `<eoi>` after an image's last block; text resumes after it.

  Args:
    eoi_time, last_block: (B,) the time of `<eoi>` and the image's last
      block id (`<eoi>` takes the next one).

  Returns:
    (state, (B, width) hidden state at `<eoi>`: it predicts the next text).
  """
  rows = state.batch_size
  at_end = state.replace(time=eoi_time, block=last_block)
  fields, moved = text_fields(jnp.full((rows,), vocab.EOI_ID), at_end,
                              jnp.ones((rows,), bool))
  state, hidden = append(model, params, state, fields, active)
  state = state.replace(time=jnp.where(active, moved.time, state.time),
                        block=jnp.where(active, moved.block, state.block))
  return state, hidden[:, -1]


def stack_prompts(docs: Sequence[dict[str, np.ndarray]], length: int
                  ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
  """Left-pads laid-out prompts (`sequences.build`) to one length.

  Args:
    docs: one document per row, each non-empty.
    length: common length (>= the longest document).

  Returns:
    (fields (B, length, ...) incl. `segment_ids` (1 = real, 0 = padding),
    next time counter (B,), last block id (B,)).

  Raises:
    ValueError: an empty document or one longer than `length`.
  """
  out = {f: [] for f in (*INPUT_FIELDS, "segment_ids")}
  times, blocks = [], []
  for r, doc in enumerate(docs):
    n = len(doc["tokens"])
    if not n or n > length:
      raise ValueError(f"prompt {r} has {n} positions; it must have between "
                       f"1 and {length} (the prompt length budget). Shorten "
                       "the prompt or raise max_prompt_len.")
    pad = length - n
    for f in INPUT_FIELDS:
      v = np.asarray(doc[f])
      out[f].append(np.concatenate(
          [np.zeros((pad,) + v.shape[1:], v.dtype), v]))
    out["segment_ids"].append((np.arange(length) >= pad).astype(np.int32))
    times.append(int(doc["positions"][-1, 0]) + 1)
    blocks.append(int(doc["block_ids"][-1]))
  fields = {f: np.stack(v) for f, v in out.items()}
  return fields, np.asarray(times, np.int32), np.asarray(blocks, np.int32)


def prefill(model: nextflow.NextFlow, params: Any, prompts: dict[str, Any],
            time: jax.Array, block: jax.Array, max_len: int
            ) -> tuple[DecodeState, jax.Array]:
  """A fresh cache filled with left-padded prompts (`stack_prompts`).

  Returns:
    (state, (B, width) hidden state of every row's last prompt position).
  """
  batch_size, length = prompts["tokens"].shape
  state = DecodeState(cache=init_cache(model, batch_size, max_len),
                      time=jnp.asarray(time, jnp.int32),
                      block=jnp.asarray(block, jnp.int32))
  fields = {f: jnp.asarray(prompts[f]) for f in INPUT_FIELDS}
  if length > max_len:
    raise ValueError(f"prompts of {length} positions do not fit "
                     f"max_len={max_len}.")
  batch = dict(fields, segment_ids=jnp.asarray(prompts["segment_ids"]))
  hidden, mutated = model.apply({"params": params, "cache": state.cache},
                                batch, decode=True, kv_len=length,
                                mutable=["cache"])
  return state.replace(cache=mutated["cache"], filled=length), hidden[:, -1]


def row_keys(seed: int, first_row: int, batch_size: int) -> jax.Array:
  """(B,) keys: row r gets fold_in(key(seed), first_row + r)."""
  base = jax.random.key(seed)
  return jax.vmap(lambda r: jax.random.fold_in(base, r))(
      first_row + jnp.arange(batch_size))
