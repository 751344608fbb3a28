# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Fast in-process probe: does a pixel tokenizer variant learn shapes?

Trains `tokenizer.model.VisionTokenizer` (pixel branch only) on freshly
rendered shapes scenes for a few hundred steps, without the trainer (no
data pipeline, checkpoints or GAN), then reports held-out PSNR, the PSNR of
each scale prefix and shapes-GenEval of 96 held-out reconstructions. It
isolates the quantiser: `ae` skips quantisation (the network's own
ceiling), the others change only how codes are chosen and learned.

  python experiments/tokenizer_probe.py ae 400 S=32 p=2 mults=12
  python experiments/tokenizer_probe.py unit 400 S=32 p=2 mults=12
  python experiments/tokenizer_probe.py ema 400 S=32 p=2 mults=12 bypass=0.5

Variants (first argument):
  ae      decoder on the continuous latent (no quantisation).
  unit    `normalize=True` as the library does it: cosine choice, unit-norm
          code vectors (TokenFlow).
  cosine  cosine choice, raw rows summed (VAR's `using_znorm`).
  plain   `normalize=False`: L2 choice, raw rows (VAR's default).
  ema     plain, but the codebook follows k-means EMA updates (decay
          `gamma`) instead of the codebook loss.
Options (key=value): S image size (64), p patch_size (4), mults
channel_mults as digits (12), ch channels (64), nrb res blocks (1), K
codebook (1024), dim latent width (8), sched scales ("1,2,3,4,5,6,8"), lr
(1e-3), restart dead-code restart period (50), gamma (0.95), cbscale
(multiply the initial codebook), bypass (fraction of a batch decoded from
the continuous latent), warm (train this many steps as an autoencoder, then
make every code a residual of one batch and quantise from there), eval
(steps between evaluations, 400).
Appends one JSON line per evaluation to
experiments/results/tokenizer_probe.jsonl (with the machine) and writes a
grid of 16 held-out images over their reconstructions next to it.
"""

import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax import scales
from nextflow_jax.data import shapes
from nextflow_jax.evals import shapes_geneval
from nextflow_jax.tokenizer import model as model_lib
from nextflow_jax.tokenizer import quantizer as quantizer_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

BATCH = 16
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "tokenizer_probe.jsonl")


def render_many(seed: int, n: int, size: int):
  rng = np.random.default_rng(seed)
  scenes = [shapes.sample_scene(rng, size) for _ in range(n)]
  images = np.stack([np.asarray(shapes.render(s), np.float32) / 127.5 - 1
                     for s in scenes])
  return images, scenes


def _unbox(x):
  return getattr(x, "value", x)


def _with_codebook(params, codebook):
  box = params["quantizer"]["codebook"]
  new = box.replace_boxed(codebook) if hasattr(box, "value") else codebook
  return {**params, "quantizer": {**params["quantizer"], "codebook": new}}


def main(argv):
  variant, steps = argv[1], int(argv[2])
  opts = dict(a.split("=", 1) for a in argv[3:])
  size, dim = int(opts.get("S", 64)), int(opts.get("dim", 8))
  num_codes = int(opts.get("K", 1024))
  train_x, _ = render_many(0, 4096, size)
  test_x, test_scenes = render_many(1, 96, size)
  if variant == "cosine":  # VAR using_znorm: sum the raw rows.
    quantizer_lib.MultiScaleQuantizer.code_vectors = (
        lambda self: self.codebook.astype(jnp.float32))
  model = model_lib.VisionTokenizer(
      codebook_size=num_codes, attention=False, num_groups=16,
      use_semantic=False, pixel_dim=dim, channels=int(opts.get("ch", 64)),
      channel_mults=tuple(int(c) for c in opts.get("mults", "12")),
      num_res_blocks=int(opts.get("nrb", 1)),
      patch_size=int(opts.get("p", 4)),
      normalize=variant in ("unit", "cosine"))
  schedule = scales.parse_schedule(opts.get("sched", "1,2,3,4,5,6,8"))
  params = model.init({"params": jax.random.key(0),
                       "dropout": jax.random.key(1)},
                      jnp.asarray(train_x[:BATCH]), schedule)["params"]
  if "cbscale" in opts:
    params = _with_codebook(params, _unbox(params["quantizer"]["codebook"]) *
                            float(opts["cbscale"]))
  lr = float(opts.get("lr", 1e-3))
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(
      optax.warmup_cosine_decay_schedule(0, lr, 50, steps, lr * 0.1),
      b2=0.95))
  opt_state = tx.init(params)
  restart_every, gamma = int(opts.get("restart", 50)), float(
      opts.get("gamma", 0.95))
  bypass = float(opts.get("bypass", 0))

  def loss_fn(p, x, quantize=True):
    if variant == "ae" or not quantize:
      f = model.apply({"params": p}, x, method=model.encode_latent)
      rec = model.apply({"params": p}, f,
                        method=model.decode_latent).astype(jnp.float32)
      return jnp.mean(jnp.abs(rec - x)), (
          rec, jnp.zeros((num_codes,)), jnp.zeros((1, dim)),
          jnp.zeros((1,), jnp.int32))
    out = model.apply({"params": p}, x, schedule, train=False)
    rec = out["recon"]
    if bypass:
      f = model.apply({"params": p}, x, method=model.encode_latent)
      seed = jnp.sum(x * 1000).astype(jnp.int32)
      cont = jax.random.uniform(jax.random.fold_in(jax.random.key(7), seed),
                                (x.shape[0], 1, 1, 1)) < bypass
      rec = model.apply({"params": p}, jnp.where(cont, f, out["latent"]),
                        method=model.decode_latent).astype(jnp.float32)
    loss = jnp.mean(jnp.abs(rec - x)) + out["commit_loss"]
    if variant != "ema":
      loss += out["codebook_loss"]
    assign = jnp.concatenate([i.reshape(-1) for i in out["indices"]])
    return loss, (rec, out["code_counts"], out["residual_rows"], assign)

  @functools.partial(jax.jit, static_argnums=7)
  def step(p, o, use, sums, x, key, i, quantize):
    (loss, (rec, counts, rows, assign)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(p, x, quantize)
    updates, o = tx.update(grads, o, p)
    p = optax.apply_updates(p, updates)
    if not quantize:  # Autoencoder warm-up: the codebook waits.
      return p, o, use, sums, loss, psnr_of(rec, x)
    if variant == "ema":  # k-means EMA of the residuals each code took.
      n_used, total = sums
      n = jax.ops.segment_sum(jnp.ones_like(assign, jnp.float32), assign,
                              num_codes)
      n_used = gamma * n_used + (1 - gamma) * n
      total = gamma * total + (1 - gamma) * jax.ops.segment_sum(
          rows, assign, num_codes)
      codebook = jnp.where((n_used > 1e-5)[:, None],
                           total / jnp.maximum(n_used, 1e-5)[:, None],
                           _unbox(p["quantizer"]["codebook"]))
      p, sums = _with_codebook(p, codebook), (n_used, total)
    use = 0.99 * use + 0.01 * counts / jnp.maximum(counts.sum(), 1.0) * (
        num_codes)
    if variant != "ae" and restart_every:
      def restart(args):
        p, use = args
        new, use, _ = quantizer_lib.restart_dead_codes(
            _unbox(p["quantizer"]["codebook"]), use, rows, key, 0.03)
        return _with_codebook(p, new), use
      p, use = jax.lax.cond((i + 1) % restart_every == 0, restart,
                            lambda a: a, (p, use))
    if variant == "ema":  # Restarted rows: keep the EMA sums consistent.
      sums = (sums[0], _unbox(p["quantizer"]["codebook"]) * sums[0][:, None])
    return p, o, use, sums, loss, psnr_of(rec, x)

  def psnr_of(rec, x):
    return 10 * jnp.log10(4.0 / jnp.mean((jnp.clip(rec, -1, 1) - x) ** 2))

  @jax.jit
  def seed_codebook(p, x, key):
    """After the warm-up: every code becomes a residual of this batch."""
    rows = model.apply({"params": p}, x, schedule)["residual_rows"]
    new, _, _ = quantizer_lib.restart_dead_codes(
        _unbox(p["quantizer"]["codebook"]), jnp.zeros((num_codes,)), rows,
        key, 1.0)
    return _with_codebook(p, new)

  def reconstruct(p, x):
    if variant == "ae":
      return loss_fn(p, x)[1][0]
    return model.apply({"params": p}, x, schedule, train=False)["recon"]

  reconstruct = jax.jit(reconstruct)
  use = jnp.ones((num_codes,))
  sums = (jnp.ones((num_codes,)), _unbox(params["quantizer"]["codebook"]))
  rng, key, start = np.random.default_rng(5), jax.random.key(3), time.time()
  warm = int(opts.get("warm", 0)) if variant != "ae" else 0
  for i in range(steps):
    x = jnp.asarray(train_x[rng.integers(0, len(train_x), BATCH)])
    if warm and i == warm:
      params = seed_codebook(params, x, jax.random.fold_in(key, steps + 1))
      sums = (jnp.ones((num_codes,)), _unbox(params["quantizer"]["codebook"]))
    params, opt_state, use, sums, loss, psnr = step(
        params, opt_state, use, sums, x, jax.random.fold_in(key, i), i,
        i >= warm)
    if i % 50 == 0:
      print(f"{i} loss {float(loss):.4f} train psnr {float(psnr):.2f} "
            f"t {time.time() - start:.0f}s", flush=True)
    if (i + 1) % int(opts.get("eval", 400)) and i + 1 != steps:
      continue
    recs = np.clip(np.concatenate([
        np.asarray(reconstruct(params, jnp.asarray(test_x[j:j + BATCH])))
        for j in range(0, len(test_x), BATCH)]), -1, 1)
    score = shapes_geneval.score_scenes(list(recs), test_scenes)
    prefix_psnr = []
    if variant != "ae":
      xs = jnp.asarray(test_x[:BATCH])
      idx = model.apply({"params": params}, xs, schedule, method=model.encode)
      for k in range(1, len(schedule) + 1):
        r = np.clip(np.asarray(model.apply({"params": params}, idx[:k],
                                           schedule, method=model.decode)),
                    -1, 1)
        prefix_psnr.append(round(float(10 * np.log10(
            4.0 / np.mean((r - test_x[:BATCH]) ** 2))), 2))
    row = {"variant": variant, "options": opts, "step": i + 1,
           "seconds": round(time.time() - start),
           "psnr": round(float(10 * np.log10(
               4.0 / np.mean((recs - test_x) ** 2))), 2),
           "prefix_psnr": prefix_psnr, "geneval_overall": score["overall"],
           "geneval": score["categories"], "machine": common.machine()}
    print(json.dumps({k: v for k, v in row.items() if k != "machine"}),
          flush=True)
    with open(RESULTS, "a") as f:
      f.write(json.dumps(row) + "\n")
    # 16 held-out renders over their reconstructions, 4x nearest upscale.
    grid = np.concatenate([np.concatenate(list(test_x[:16]), 1),
                           np.concatenate(list(recs[:16]), 1)], 0)
    pixels = ((grid + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    name = "_".join([variant] + [f"{k}{v}" for k, v in sorted(opts.items())
                                 if k != "eval"] + [str(i + 1)])
    Image.fromarray(pixels).resize((pixels.shape[1] * 4, pixels.shape[0] * 4),
                                   Image.NEAREST).save(os.path.join(
                                       os.path.dirname(RESULTS),
                                       f"tokenizer_probe_{name}.png"))


if __name__ == "__main__":
  main(sys.argv)
