# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""One-command accelerator benchmark: 7B sampling at 1024 px, next-scale vs
raster, and the MFU of a 1b training step.

  python experiments/bench_gpu.py             # on one H100 / H200 (<= 8 min)
  python experiments/bench_gpu.py --smoke     # tiny shapes, any CPU (tests
                                              # the script, measures nothing)

Random weights (no download), bfloat16 parameters and compute, one device:

  sample_7b      the 7b preset's decoder (Qwen2.5-7B shape, K = 16384 codes),
                 the paper's 1:1 1024 px schedule (18 scales, 10,084 tokens),
                 CFG (2 rows per image), batch 1: seconds per image (median
                 of --repeats after compiling), compile seconds, peak device
                 memory;
  order_7b_16    the same decoder at a 16x16 grid (VAR's 10 scales): next
                 scale vs raster (256 sequential steps), seconds each;
  order_7b_1024  raster at 64x64 (4,096 sequential steps) when the 16x16
                 raster time predicts it fits --raster_budget_s, else the
                 prediction;
  train_1b       one training step of the 1b preset's model (Qwen2.5-1.5B
                 shape) on 2 rows of 4,096 positions holding a prompt and a
                 512 px image each (3,684 visual tokens), AdamW, remat
                 "nothing_saveable": seconds per step and MFU, with model
                 FLOPs = 6 * (non-embedding parameters) * tokens + the
                 attention matmuls (12 * layers * heads * head_dim * tokens *
                 seq / 2, a causal half) over the device's dense bf16 peak.

Writes experiments/results/gpu_<time>.json with the device name.
"""

import os
import sys

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import common
from nextflow_jax import scales
from nextflow_jax.data import sequences
from nextflow_jax.model import losses
from nextflow_jax.model import nextflow
from nextflow_jax.sampling import config as sampling_config
from nextflow_jax.sampling import next_scale
from nextflow_jax.sampling import raster
from nextflow_jax.sampling import state as state_lib
from nextflow_jax.text import vocab
# pylint: enable=g-import-not-at-top,wrong-import-position

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny shapes: check the script.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per program.")
_RASTER_BUDGET = flags.DEFINE_float(
    "raster_budget_s", 120.0, "Run raster at 64x64 only if predicted faster.")

SEVEN_B = dict(text_vocab_size=152_192, codebook_size=16_384, code_dim=40,
               num_layers=28, width=3584, num_heads=28, num_kv_heads=4,
               head_dim=128, mlp_dim=18_944, mrope_sections=(16, 24, 24))
ONE_B = dict(text_vocab_size=152_064, codebook_size=16_384, code_dim=40,
             num_layers=28, width=1536, num_heads=12, num_kv_heads=2,
             head_dim=128, mlp_dim=8960, mrope_sections=(16, 24, 24))
TINY = dict(text_vocab_size=512, codebook_size=64, code_dim=8, num_layers=2,
            width=64, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128)
# Dense bf16 peak FLOP/s by device kind (NVIDIA datasheets, SXM).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
PROMPT = 16
VAR_16 = scales.square_schedule((1, 2, 3, 4, 5, 6, 8, 10, 13, 16))


def _model(shape: dict, remat: str = "none") -> nextflow.NextFlow:
  return nextflow.NextFlow(**shape, max_scales=18, dtype=jnp.bfloat16,
                           param_dtype=jnp.bfloat16, remat_policy=remat)


def _params(model: nextflow.NextFlow):
  example = {k: jnp.asarray(v) for k, v in sequences.example_batch(
      sequences.Layout(), model.codebook_size, 8).items()}
  return nn.unbox(jax.jit(model.init)(jax.random.key(0), example))["params"]


def _prompts(rows: int):
  rng = np.random.default_rng(0)
  cond = [vocab.BOS_ID] + rng.integers(20, 500, PROMPT - 1).tolist()
  docs = [sequences.build([sequences.Text(cond if r < rows // 2 else
                                          [vocab.BOS_ID], loss=False)],
                          sequences.Layout(), codebook_size=16)
          for r in range(rows)]
  return state_lib.stack_prompts(docs, PROMPT)


def _time(fn, args, repeats: int) -> dict:
  """Compile seconds and median execution seconds of a jitted fn."""
  compile_s, seconds = common.time_program(fn, args, repeats)
  return {"compile_s": round(compile_s, 2), "seconds": round(seconds, 4)}


def _peak_memory_gib() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else round(peak / 2**30, 2)


def sample(model, params, schedule, method: str, repeats: int) -> dict:
  """One image with CFG (2 rows) by next-scale or raster sampling."""
  fields, time_, block = _prompts(2)
  keys = state_lib.row_keys(0, 0, 1)
  if method == "next_scale":
    fn = next_scale.make_generate(model, schedule=schedule,
                                  layout=sequences.Layout(),
                                  top_k=(None,) * len(schedule), cfg=True)
    knobs = next_scale.knobs_from_config(sampling_config.SamplingConfig(),
                                         len(schedule))
  else:
    fn = raster.make_generate(model, grid=tuple(schedule[-1]),
                              layout=sequences.Layout(image_order="raster"),
                              top_k=None, cfg=True)
    knobs = {"temperature": jnp.float32(1.0), "top_p": jnp.float32(0.95),
             "guidance": jnp.float32(3.0)}
  out = _time(fn, (params, fields, time_, block, keys, knobs), repeats)
  return {"method": method, "schedule": scales.format_schedule(schedule),
          "tokens": scales.token_count(schedule), **out}


def train_step_mfu(shape: dict, seq_len: int, image_side: int,
                   repeats: int) -> dict:
  """Seconds per AdamW step of 2 rows and the model-FLOPs utilisation."""
  model = _model(shape, remat="nothing_saveable")
  schedule = scales.square_schedule(tuple(
      s for s in (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32)
      if s <= image_side))
  rng = np.random.default_rng(0)
  codes = [rng.integers(0, shape["codebook_size"], (h, w)) for h, w in
           schedule]
  doc = sequences.build(
      [sequences.Text([vocab.BOS_ID] + list(range(20, 40)), loss=False),
       sequences.Image(codes, codes)], sequences.Layout(),
      codebook_size=shape["codebook_size"])
  batch = {k: jnp.asarray(np.stack([v, v])) for k, v in sequences.pad(
      doc, seq_len).items()}
  params = _params(model)
  tx = optax.adamw(1e-4)
  opt_state = tx.init(params)

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(
        lambda p: losses.sequence_loss(model, p, batch,
                                       chunk_size=512)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  out = _time(jax.jit(step, donate_argnums=(0, 1)),
              (params, opt_state, batch), repeats)
  tokens = int(np.asarray(batch["segment_ids"]).sum())
  embed = shape["text_vocab_size"] * shape["width"] * 2 + (
      shape["codebook_size"] * shape["width"])
  total = sum(x.size for x in jax.tree.leaves(params))
  attn = 12 * shape["num_layers"] * shape["num_heads"] * shape["head_dim"] * (
      tokens * seq_len / 2)
  flops = 6 * (total - embed) * tokens + attn
  kind = jax.devices()[0].device_kind
  peak = next((v for k, v in PEAK_BF16.items() if k in kind), None)
  achieved = flops / out["seconds"]
  return {"rows": 2, "seq_len": seq_len, "tokens": tokens,
          "parameters_b": round(total / 1e9, 3),
          "model_tflops": round(flops / 1e12, 2),
          "achieved_tflops_per_s": round(achieved / 1e12, 1),
          "mfu": round(achieved / peak, 3) if peak else None, **out}


def main(argv):
  del argv
  smoke = _SMOKE.value
  big = TINY if smoke else SEVEN_B
  repeats = 1 if smoke else _REPEATS.value
  results = {"device": jax.devices()[0].device_kind,
             "devices": jax.device_count(), "smoke": smoke}
  model = _model(big)
  params = _params(model)
  full = (scales.square_schedule((1, 2, 4)) if smoke else
          scales.paper_schedule("1:1", 1024))
  small = scales.square_schedule((1, 2)) if smoke else VAR_16
  results["sample_7b"] = sample(model, params, full, "next_scale", repeats)
  results["sample_7b"]["peak_memory_gib"] = _peak_memory_gib()
  print(results["sample_7b"], flush=True)
  order = [sample(model, params, small, m, repeats)
           for m in ("next_scale", "raster")]
  results["order_7b_16"] = order
  print(order, flush=True)
  per_step = order[1]["seconds"] / (scales.token_count(small[-1:]) + 2)
  steps = full[-1][0] * full[-1][1]
  predicted = per_step * (steps + 2)
  if predicted <= _RASTER_BUDGET.value:
    results["order_7b_1024"] = sample(model, params, full[-1:], "raster", 1)
  else:
    results["order_7b_1024"] = {"method": "raster", "skipped": True,
                                "predicted_s": round(predicted, 1)}
  results["order_7b_1024"]["next_scale_s"] = results["sample_7b"]["seconds"]
  print(results["order_7b_1024"], flush=True)
  del model, params
  results["train_1b"] = train_step_mfu(TINY if smoke else ONE_B,
                                       128 if smoke else 4096,
                                       4 if smoke else 32, repeats)
  print(results["train_1b"], flush=True)
  path = common.write_result("gpu_smoke" if smoke else "gpu", results)
  print("wrote", path)


if __name__ == "__main__":
  app.run(main)
