# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Exact checks of the shared-index multi-scale residual quantiser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax.tokenizer import quantizer as q

SCHEDULE = ((1, 1), (2, 2), (3, 3), (4, 4))
K = 64
UP = "bicubic-pytorch"  # the quantizer's default upsampling


def make(**kw):
  kw.setdefault("codebook_size", K)
  kw.setdefault("branch_dims", (6, 3))
  kw.setdefault("branch_weights", (1.0, 0.7))
  return q.MultiScaleQuantizer(**kw)


def init(model, f, seed=0):
  return jax.jit(model.init, static_argnums=2)(jax.random.key(seed), f,
                                               SCHEDULE)


def jit_method(model, method, **static):
  """model.<method> as one compiled function of (variables, *args)."""
  return jax.jit(lambda v, *a, **kw: model.apply(v, *a, method=method,
                                                 **static, **kw))


@pytest.fixture(scope="module")
def latent():
  return jax.random.normal(jax.random.key(1), (3, 4, 4, 9))


def test_area_matrix_is_adaptive_average_pooling():
  np.testing.assert_allclose(q.area_matrix(3, 8), np.array([
      [1 / 3] * 3 + [0] * 5, [0] * 2 + [1 / 4] * 4 + [0] * 2,
      [0] * 5 + [1 / 3] * 3], np.float32), rtol=1e-6)
  x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
  np.testing.assert_allclose(q.area_downsample(x, (2, 2)),
                             x.reshape(2, 2, 2, 2, 2, 1).mean((2, 4)))


@pytest.mark.parametrize("normalize", [True, False])
def test_argmin_equals_brute_force_joint_distance(normalize, latent):
  model = make(normalize=normalize)
  variables = init(model, latent)
  codebook = np.asarray(variables["params"]["codebook"]["value"]
                        if isinstance(variables["params"]["codebook"], dict)
                        else variables["params"]["codebook"].unbox())
  z = np.asarray(jax.random.normal(jax.random.key(2), (50, 9)))

  def norm(x):
    return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6) if normalize else x

  d_sem = ((norm(z[:, None, :6]) - norm(codebook[None, :, :6])) ** 2).sum(-1)
  d_pix = ((norm(z[:, None, 6:]) - norm(codebook[None, :, 6:])) ** 2).sum(-1)
  brute = d_sem + 0.7 * d_pix
  got = jit_method(model, model.distances)(variables, jnp.asarray(z))
  np.testing.assert_allclose(got, brute, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.argmin(got, -1), np.argmin(brute, -1))


def test_single_branch_ignores_nothing(latent):
  model = make(branch_dims=(9,), branch_weights=(1.0,))
  out = model.apply(init(model, latent), latent, SCHEDULE)
  assert [i.shape for i in out["indices"]] == [(3, h, w) for h, w in SCHEDULE]


def test_sum_of_upsampled_codes_is_the_returned_latent(latent):
  model = make()
  variables = init(model, latent)
  out = model.apply(variables, latent, SCHEDULE)
  maps = [model.apply(variables, idx, method=model.lookup)
          for idx in out["indices"]]
  total = sum(q.upsample(m, (4, 4), UP) for m in maps)
  np.testing.assert_allclose(out["quantized"], total, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["latent"], total, rtol=1e-5, atol=1e-5)
  decoded = model.apply(variables, out["indices"], (4, 4), method=model.decode)
  np.testing.assert_allclose(decoded, total, rtol=1e-5, atol=1e-5)
  prefix = model.apply(variables, out["indices"][:2], (4, 4),
                       method=model.decode)
  np.testing.assert_allclose(
      prefix, sum(q.upsample(m, (4, 4), UP) for m in maps[:2]),
      rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_phi", [0, 2])
def test_codebook_holding_the_residuals_recovers_the_latent(latent, num_phi):
  """Build the codebook from the residual path itself: every lookup is then
  exact, so decode(encode(f)) == f."""
  model = make(normalize=False, codebook_size=3 * (1 + 4 + 9 + 16),
               num_phi=num_phi, phi_ratio=0.0)
  variables = init(model, latent)
  rows, residual = [], latent
  for hw in SCHEDULE:
    r = q.area_downsample(residual, hw)
    rows.append(r.reshape(-1, 9))
    residual = residual - q.upsample(r, (4, 4), UP)
  codebook = jnp.concatenate(rows)
  params = jax.tree.map(lambda x: x, variables["params"])
  params["codebook"] = params["codebook"].replace_boxed(codebook)
  variables = {"params": params}
  indices = model.apply(variables, latent, SCHEDULE, method=model.encode)
  recon = model.apply(variables, indices, (4, 4), method=model.decode)
  np.testing.assert_allclose(recon, latent, rtol=1e-4, atol=1e-4)


def test_straight_through_gradient_is_identity(latent):
  model = make()
  variables = init(model, latent)
  v = jax.random.normal(jax.random.key(3), latent.shape)
  grad = jax.grad(lambda f: jnp.sum(
      model.apply(variables, f, SCHEDULE)["latent"] * v))(latent)
  np.testing.assert_allclose(grad, v, rtol=1e-6)


def test_losses_reach_codebook_and_encoder(latent):
  model = make()
  variables = init(model, latent)

  def loss(params, f):
    out = model.apply({"params": params}, f, SCHEDULE)
    return out["codebook_loss"] + out["commit_loss"]

  g_params, g_f = jax.jit(jax.grad(loss, argnums=(0, 1)))(
      variables["params"], latent)
  assert float(jnp.abs(g_params["codebook"].unbox()).sum()) > 0
  assert float(jnp.abs(g_f).sum()) > 0


def test_batch_equals_per_image(latent):
  model = make()
  variables = init(model, latent)
  encode = jit_method(model, model.encode, schedule=SCHEDULE)
  batch = encode(variables, latent)
  for i in range(latent.shape[0]):
    single = encode(variables, latent[i:i + 1])
    for b, s in zip(batch, single):
      np.testing.assert_array_equal(b[i:i + 1], s)


def test_self_correction_rate_zero_equals_plain_encoding(latent):
  model = make()
  variables = init(model, latent)
  plain = jit_method(model, model.encode, schedule=SCHEDULE)(variables, latent)
  inputs, targets = jit_method(model, model.encode_streams, schedule=SCHEDULE,
                               rate=0.0, top_k=4)(variables, latent,
                                                  rng=jax.random.key(0))
  for p, i, t in zip(plain, inputs, targets):
    np.testing.assert_array_equal(p, i)
    np.testing.assert_array_equal(p, t)


def test_self_correction_changes_rate_of_cells_to_top_k_codes():
  model = make(codebook_size=256)
  f = jax.random.normal(jax.random.key(5), (64, 8, 8, 9))
  schedule = ((1, 1), (2, 2), (4, 4), (8, 8))
  variables = jax.jit(model.init, static_argnums=2)(jax.random.key(0), f,
                                                    schedule)
  top_k, rate = 5, 0.6
  distances = jax.jit(lambda v, r, hw: model.apply(
      v, q.area_downsample(r, hw), method=model.distances), static_argnums=2)
  code_map = jax.jit(lambda v, i: q.upsample(
      model.apply(v, i, method=model.lookup), (8, 8), UP))
  for residual_from in ("inputs", "targets"):
    inputs, targets = jit_method(
        model, model.encode_streams, schedule=schedule, rate=rate,
        top_k=top_k, residual_from=residual_from)(variables, f,
                                                  rng=jax.random.key(9))
    changed = np.concatenate([np.ravel(i != t) for i, t in zip(inputs,
                                                                targets)])
    assert changed.mean() == pytest.approx(rate, abs=0.03)
    # Recompute each scale's residual and check inputs are in its top-k.
    residual = f
    for k, (hw, inp, tgt) in enumerate(zip(schedule, inputs, targets)):
      d = distances(variables, residual, hw)
      ranks = np.argsort(np.argsort(np.asarray(d), -1), -1)
      np.testing.assert_array_equal(np.take_along_axis(
          ranks, np.asarray(tgt)[..., None], -1), 0)
      assert (np.take_along_axis(ranks, np.asarray(inp)[..., None], -1)
              < top_k).all()
      used = inp if residual_from == "inputs" else tgt
      residual = residual - code_map(variables, used)
    if residual_from == "targets":  # Targets then equal plain encoding.
      plain = jit_method(model, model.encode, schedule=schedule)(variables, f)
      for p, t in zip(plain, targets):
        np.testing.assert_array_equal(p, t)


def test_scale_dropout_keeps_first_and_last(latent):
  model = make(scale_drop_prob=1.0, scale_drop_fraction=0.5)
  variables = init(model, latent)
  out = model.apply(variables, latent, SCHEDULE, train=True,
                    rngs={"dropout": jax.random.key(4)})
  keep = np.asarray(out["keep"])
  assert (keep[:, 0] == 1).all() and (keep[:, -1] == 1).all()
  assert (keep[:, 1:-1].sum(-1) == 1).all()  # half of the 2 middle scales
  maps = [q.upsample(model.apply(variables, i, method=model.lookup), (4, 4),
                     UP) * keep[:, k, None, None, None]
          for k, i in enumerate(out["indices"])]
  np.testing.assert_allclose(out["quantized"], sum(maps), rtol=1e-5,
                             atol=1e-5)
  assert float(out["code_counts"].sum()) == pytest.approx(
      sum(h * w * keep[:, k].sum() for k, (h, w) in enumerate(SCHEDULE)))


def test_usage_perplexity_and_dead_code_restart():
  counts = jnp.array([10.0, 0.0, 10.0, 0.0])
  assert float(q.codebook_usage(counts, 1.0)) == 0.5
  np.testing.assert_allclose(q.perplexity(counts), 2.0, rtol=1e-5)
  codebook = jnp.array([[3.0, 0, 0, 4.0], [1, 1, 1, 1], [0, 6.0, 8.0, 0],
                        [1, 1, 1, 1]])
  candidates = jax.random.normal(jax.random.key(1), (6, 4))
  new, new_counts, n = q.restart_dead_codes(
      codebook, counts, candidates, jax.random.key(0), 1.0)
  assert int(n) == 2
  np.testing.assert_array_equal(new[jnp.array([0, 2])],
                                codebook[jnp.array([0, 2])])
  # Dead rows become distinct candidates, unscaled: each then quantises
  # its residual exactly.
  picked = [int(np.argmin(np.abs(np.asarray(candidates) - new[row]).sum(-1)))
            for row in (1, 3)]
  for row, pick in zip((1, 3), picked):
    np.testing.assert_array_equal(new[row], candidates[pick])
  assert picked[0] != picked[1]
  np.testing.assert_array_equal(new_counts, [10.0, 1.0, 10.0, 1.0])


def test_kmeans_update_moves_codes_to_the_mean_of_their_residuals():
  codebook = jnp.zeros((3, 2))
  # Two scales: (1, 1) and (1, 2) for one image; code 2 is never used.
  indices = [jnp.array([[[0]]]), jnp.array([[[0, 1]]])]
  rows = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, -1.0]])
  keep = jnp.ones((1, 2))
  counts = jnp.array([2.0, 1.0, 0.0])
  code_ema = counts / 3 * 3  # decay 0: this batch's frequency
  new, code_sum = q.kmeans_update(codebook + 9.0, jnp.zeros((3, 2)),
                                  code_ema, rows, indices, keep, 0.0)
  np.testing.assert_allclose(new, [[2.0, 3.0], [5.0, -1.0], [9.0, 9.0]])
  np.testing.assert_allclose(code_sum[:2] / code_ema[:2, None], new[:2])
  # A dropped scale's codes do not count (code 0 took only row 0).
  new, _ = q.kmeans_update(codebook, jnp.zeros((3, 2)),
                           jnp.array([3.0, 0.0, 0.0]), rows, indices,
                           jnp.array([[1.0, 0.0]]), 0.0)
  np.testing.assert_allclose(new[0], [1.0, 2.0])


def test_losses_average_the_partial_sums(latent):
  """VAR form: codebook loss = mean over k of mse(F_k, f)."""
  model = make()
  variables = init(model, latent)
  out = jit_method(model, model.__call__, schedule=SCHEDULE)(variables,
                                                             latent)
  lookup = jit_method(model, model.lookup)
  partial, expected = 0.0, 0.0
  for idx in out["indices"]:
    partial = partial + q.upsample(lookup(variables, idx), (4, 4), UP)
    expected += float(jnp.mean((partial - latent) ** 2))
  n = len(SCHEDULE)
  np.testing.assert_allclose(out["codebook_loss"], expected / n, rtol=1e-5)
  np.testing.assert_allclose(out["commit_loss"], 0.25 * expected / n,
                             rtol=1e-5)
  rows = out["residual_rows"]
  assert rows.shape == (3 * (1 + 4 + 9 + 16), 9)
  np.testing.assert_allclose(rows[:3], latent.mean((1, 2)), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(rate=0.5, top_k=1), r"top_k=1 must be in \[2, 64\]"),
    (dict(rate=1.5, top_k=4), r"rate=1.5 must be in \[0, 1\]"),
    (dict(rate=0.5, top_k=4, residual_from="x"), r"residual_from='x'"),
])
def test_stream_argument_errors(latent, kwargs, match):
  model = make()
  with pytest.raises(ValueError, match=match):
    model.apply(init(model, latent), latent, SCHEDULE, jax.random.key(0),
                method=model.encode_streams, **kwargs)


def test_schedule_and_latent_errors(latent):
  model = make()
  variables = init(model, latent)
  with pytest.raises(ValueError, match=r"schedule ends at \(2, 2\) but the "
                     r"latent grid is \(4, 4\)"):
    model.apply(variables, latent, ((1, 1), (2, 2)))
  with pytest.raises(ValueError, match=r"expected \(B, H, W, 9\)"):
    model.apply(variables, latent[..., :8], SCHEDULE)
