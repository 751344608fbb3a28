# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""KV-cached text decoding: greedy, temperature, top-k, top-p, stop tokens.

`sample_text` runs one `lax.while_loop` that, per step, turns the last
hidden state into text logits, samples a token per row and feeds it back
(one cache position per step). A row stops at a stop token (kept in its
output, not fed: the caller decides what follows, e.g. `<boi>` starts an
image) or after `max_new_tokens`; the loop ends when every active row has
stopped. Ids the text model must never write are masked: padding, `<bos>`,
`<eoi>` (inserted by the image sampler) and ids at or beyond the text
tokenizer's vocabulary (the model's text head may be wider), and `<boi>`
unless it is a stop token (it may only be written where an image can
follow).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from nextflow_jax.model import nextflow
from nextflow_jax.sampling import filters
from nextflow_jax.sampling import state as state_lib
from nextflow_jax.text import vocab

NEVER_SAMPLED = (vocab.PAD_ID, vocab.BOS_ID, vocab.EOI_ID)


def sample_text(model: nextflow.NextFlow, params: Any,
                state: state_lib.DecodeState, last_hidden: jax.Array, *,
                keys: jax.Array, max_new_tokens: int, vocab_size: int,
                stop_tokens: Sequence[int], top_k: int | None,
                temperature: jax.Array | float, top_p: jax.Array | float,
                active: jax.Array, return_logits: bool = False
                ) -> tuple[state_lib.DecodeState, dict[str, jax.Array]]:
  """Decodes text for every active row.

  Args:
    model, params: NextFlow and its params.
    state: the cache so far; `last_hidden` (B, width) is the hidden state of
      each row's last position (its logits give the first new token).
    keys: (B,) row keys; step t uses fold_in(key, t).
    max_new_tokens: static bound on generated tokens (cache room needed).
    vocab_size: the text tokenizer's size; larger ids are never sampled.
    stop_tokens: ids that end a row (e.g. `<eos>`, `<boi>`).
    top_k (static), temperature, top_p: see `filters`.
    active: (B,) bool rows that write text; others only write padding.
    return_logits: also return the (B, max_new_tokens, V) logits of every
      step (before masking).

  Returns:
    (state, {"tokens": (B, max_new_tokens) int32, PAD after the end,
    "lengths": (B,) tokens written incl. the stop token, "stop": (B,) the
    stop token that ended the row or -1, "hidden": (B, width) hidden state
    of the last fed position, ["logits"]}).
  """
  rows = state.batch_size
  text_size = model.text_vocab_size
  never = NEVER_SAMPLED + (() if vocab.BOI_ID in stop_tokens else
                           (vocab.BOI_ID,))
  banned = jnp.zeros((text_size,), bool).at[jnp.asarray(never)].set(
      True) | (jnp.arange(text_size) >= vocab_size)
  stops = jnp.asarray(tuple(stop_tokens), jnp.int32)
  if stops.size == 0:
    stops = jnp.full((1,), -1, jnp.int32)
  carry = {
      "state": state.forget_length(), "hidden": last_hidden, "step": jnp.zeros((), jnp.int32),
      "tokens": jnp.full((rows, max_new_tokens), vocab.PAD_ID, jnp.int32),
      "lengths": jnp.zeros((rows,), jnp.int32),
      "stop": jnp.full((rows,), -1, jnp.int32),
      "done": ~active}
  if return_logits:
    carry["logits"] = jnp.zeros((rows, max_new_tokens, text_size),
                                jnp.float32)

  def cond(c):
    return (c["step"] < max_new_tokens) & ~jnp.all(c["done"])

  def body(c):
    step = c["step"]
    logits = model.apply({"params": params}, c["hidden"],
                         method=model.text_logits)
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
    token = filters.sample_rows(jnp.where(banned, -jnp.inf, logits),
                                step_keys, top_k=top_k, top_p=top_p,
                                temperature=temperature)
    running = ~c["done"]
    stopped = running & jnp.isin(token, stops)
    feed = running & ~stopped
    fields, moved = state_lib.text_fields(token, c["state"], feed)
    new_state, hidden = state_lib.append(model, params, moved, fields, feed)
    out = dict(c, state=new_state, step=step + 1,
               hidden=jnp.where(feed[:, None], hidden[:, -1], c["hidden"]),
               tokens=c["tokens"].at[:, step].set(
                   jnp.where(running, token, vocab.PAD_ID)),
               lengths=c["lengths"] + running,
               stop=jnp.where(stopped, token, c["stop"]),
               done=c["done"] | stopped)
    if return_logits:
      out["logits"] = c["logits"].at[:, step].set(logits)
    return out

  c = jax.lax.while_loop(cond, body, carry)
  result = {k: c[k] for k in ("tokens", "lengths", "stop", "hidden")}
  if return_logits:
    result["logits"] = c["logits"]
  return c["state"], result


def make_generate(model: nextflow.NextFlow, *, max_new_tokens: int,
                  vocab_size: int, stop_tokens: Sequence[int], top_k: int | None,
                  return_logits: bool = False):
  """A jitted `(params, prompts, time, block, keys, knobs) -> result`.

  Prefill + `sample_text` as one program; prompts from
  `state.stack_prompts`; knobs = {"temperature", "top_p"} scalars.
  """
  stop_tokens = tuple(int(t) for t in stop_tokens)

  def generate(params, prompts, time, block, keys, knobs):
    max_len = prompts["tokens"].shape[1] + max_new_tokens
    state, hidden = state_lib.prefill(model, params, prompts, time, block,
                                      max_len)
    _, result = sample_text(
        model, params, state, hidden, keys=keys,
        max_new_tokens=max_new_tokens, vocab_size=vocab_size,
        stop_tokens=stop_tokens, top_k=top_k,
        temperature=knobs["temperature"], top_p=knobs["top_p"],
        active=jnp.ones((state.batch_size,), bool),
        return_logits=return_logits)
    return result

  return jax.jit(generate)
