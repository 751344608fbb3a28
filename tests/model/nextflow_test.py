# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The unified model and its loss: embeddings, heads, chunked CE, sharding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax import sharding
from nextflow_jax.data import sequences as seq
from nextflow_jax.model import losses
from nextflow_jax.model import nextflow

K, V, L = 40, 64, 64
SCHEDULE = ((1, 1), (2, 2), (3, 3))


def make_model(shared_head=False, **kw):
  return nextflow.NextFlow(
      text_vocab_size=V, codebook_size=K, code_dim=6, num_layers=2, width=32,
      num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64, max_scales=4,
      shared_head=shared_head, **kw)


def make_batch(alpha=0.0):
  rng = np.random.default_rng(0)
  rows = []
  for b in range(2):
    targets = [rng.integers(0, K, hw) for hw in SCHEDULE]
    inputs = [rng.integers(0, K, hw) for hw in SCHEDULE]
    doc = seq.build([seq.Text([2, 10 + b, 11], loss=False),
                     seq.Image(inputs, targets), seq.Text([12, 3])],
                    seq.Layout(alpha=alpha), codebook_size=K)
    rows.append(seq.pad(doc, L))
  return {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}


@pytest.fixture(scope="module", params=[False, True], ids=["dual", "shared"])
def setup(request):
  model = make_model(shared_head=request.param)
  batch = make_batch()
  params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
  return model, nn.unbox(params), batch


def test_heads_and_hidden_shapes(setup):
  model, params, batch = setup
  hidden = jax.jit(model.apply)({"params": params}, batch)
  assert hidden.shape == (2, L, 32)
  text = model.apply({"params": params}, hidden, method=model.text_logits)
  vis = model.apply({"params": params}, hidden, method=model.visual_logits)
  assert text.shape == (2, L, V) and vis.shape == (2, L, K)
  assert text.dtype == vis.dtype == jnp.float32
  if model.shared_head:
    both = model.apply({"params": params}, hidden, method=model.shared_logits)
    np.testing.assert_allclose(both[..., V:], vis, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(both[..., :V], text, rtol=1e-4, atol=1e-6)


def test_visual_inputs_use_the_code_table_and_connector(setup):
  model, params, batch = setup
  embed = jax.jit(lambda p, b: model.apply({"params": p}, b,
                                           method=model.embed))
  x = embed(params, batch)
  # Changing a code that a visual position reads changes only that input.
  pos = int(np.argmax(np.asarray(batch["is_visual"][0])))
  codes = np.asarray(batch["visual_codes"]).copy()
  codes[0, pos, 0] = (codes[0, pos, 0] + 1) % K
  # The same compiled program for both, so other positions agree bitwise.
  x2 = embed(params, {**batch, "visual_codes": jnp.asarray(codes)})
  diff = np.abs(np.asarray(x2 - x)).sum(-1)
  assert diff[0, pos] > 0 and diff.sum() == diff[0, pos]
  # Text positions are the token embedding (+ nothing: scale ids are 0).
  np.testing.assert_allclose(x[0, 1], params["token_embed"][10], rtol=1e-6)


def test_chunked_loss_equals_unchunked_and_alpha_zero_is_plain_ce(setup):
  model, params, batch = setup
  loss = jax.jit(lambda p, b, c: losses.sequence_loss(model, p, b,
                                                      chunk_size=c),
                 static_argnums=2)
  t16, m16 = loss(params, batch, 16)
  t64, m64 = loss(params, batch, 64)
  np.testing.assert_allclose(t16, t64, rtol=1e-5)
  hidden = model.apply({"params": params}, batch)
  logits = model.apply({"params": params}, hidden, method=model.visual_logits)
  logp = jax.nn.log_softmax(logits, -1)
  ce = -np.take_along_axis(np.asarray(logp),
                           np.asarray(batch["targets"])[..., None], -1)[..., 0]
  mask = np.asarray(batch["target_is_visual"]) & (
      np.asarray(batch["segment_ids"]) > 0)
  if not model.shared_head:
    np.testing.assert_allclose(m16["visual_loss"], ce[mask].mean(), rtol=1e-5)
  assert int(m16["visual_tokens"]) == 2 * (1 + 4 + 9)
  np.testing.assert_array_equal(np.asarray(m16["scale_count"])[1:4],
                                [2, 8, 18])


def test_reweighted_loss_changes_only_the_visual_part():
  model = make_model()
  plain, weighted = make_batch(0.0), make_batch(0.9)
  params = nn.unbox(model.init(jax.random.key(0), plain)["params"])
  _, m0 = losses.sequence_loss(model, params, plain, chunk_size=64)
  _, m9 = losses.sequence_loss(model, params, weighted, chunk_size=64)
  np.testing.assert_allclose(m0["text_loss"], m9["text_loss"], rtol=1e-6)
  assert not np.isclose(m0["visual_loss"], m9["visual_loss"])


@pytest.mark.parametrize("mesh_shape,rules", [((1, 4, 1), "fsdp"),
                                              ((1, 2, 2), "fsdp_tp"),
                                              ((4, 1, 1), "dp")])
def test_loss_and_grads_match_a_single_device(mesh_shape, rules):
  model = make_model()
  batch = {k: jnp.concatenate([v, v]) for k, v in make_batch().items()}
  params = nn.unbox(model.init(jax.random.key(0), batch)["params"])
  grad_fn = jax.jit(jax.value_and_grad(
      lambda p, b: losses.sequence_loss(model, p, b, chunk_size=32)[0]))
  ref_loss, ref_grads = grad_fn(params, batch)

  mesh = sharding.make_mesh(mesh_shape)
  rule_set = sharding.get_rules(rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rule_set):
    abstract = jax.eval_shape(model.init, jax.random.key(0), batch)["params"]
    shardings = sharding.logical_shardings(abstract, mesh, rule_set)
    sharded = jax.device_put(params, shardings)
    loss, grads = jax.jit(jax.value_and_grad(
        lambda p, b: losses.sequence_loss(model, p, b, chunk_size=32)[0]))(
            sharded, sharding.shard_batch(jax.device_get(batch), mesh))
  # Tolerance: float32 reductions in another order across devices.
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4,
                                                       atol=2e-6),
               grads, ref_grads)


@pytest.mark.parametrize("shared_head", [False, True], ids=["dual", "shared"])
def test_both_head_options_train(shared_head):
  import optax  # pylint: disable=g-import-not-at-top
  model = make_model(shared_head=shared_head)
  batch = make_batch()
  params = nn.unbox(model.init(jax.random.key(0), batch)["params"])
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state):
    (loss, m), grads = jax.value_and_grad(
        lambda p: losses.sequence_loss(model, p, batch, chunk_size=64),
        has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss, m

  opt_state = tx.init(params)
  params, opt_state, first, m0 = step(params, opt_state)
  for _ in range(15):
    params, opt_state, last, m = step(params, opt_state)
  assert float(last) < 0.8 * float(first)
  assert float(m["text_loss"]) < float(m0["text_loss"])
  assert float(m["visual_loss"]) < float(m0["visual_loss"])
