# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Next-scale vs raster-scan sampling on the same backbone.

  python experiments/bench_sampling.py [--models=cpu,var_d16]
      [--grids=16,32,64] [--batches=1,8] [--budget_s=240]

Both samplers run the NextFlow decoder with random weights, float32, CFG
(2B rows: conditional + unconditional), a 16-token prompt, and are each
compiled as ONE program (`next_scale.make_generate`: prefill + every
scale; `raster.make_generate`: prefill + a `lax.fori_loop` over the
cells), ahead of time, so the timed calls measure execution only.

  grids: 16 -> VAR's 10 scales (680 tokens) vs 256 raster steps
         32 -> the paper's 1:1 512 px schedule (16 scales, 3,684 tokens)
               vs 1,024 steps
         64 -> the paper's 1:1 1024 px schedule (18 scales, 10,084 tokens)
               vs 4,096 steps
  models: cpu     -> configs/nextflow.py:cpu (4 layers, width 256)
          var_tiny -> issue 12's VAR-tiny shape (4 layers, width 256,
                     codebook 4096)
          var_d16 -> VAR-d16's shape (16 layers, width 1024, 16 heads,
                     SwiGLU 2730 ~ GELU 4x FLOPs, codebook 4096)

For each run: wall seconds per batch (median of --repeats), sequential
transformer calls, tokens computed (rows x positions) and tokens/s, and a
FLOPs-and-bytes model: per call, time ~ max(FLOPs / F, bytes / BW) with F
(matmul FLOP/s) and BW (memory bandwidth) measured on this machine, bytes =
weights + the KV cache read (`predicted_s`), and the same plus writing and
reading the attention scores that XLA's attention materialises
(`predicted_with_scores_s`). A run is skipped, with the reason, when its
attention scores would not fit in memory (XLA's attention materialises
them) or its time estimated from a smaller run exceeds --budget_s.

Writes experiments/results/sampling_<time>.json with the machine.
"""

import os
import sys
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import common
from nextflow_jax import scales
from nextflow_jax.data import sequences
from nextflow_jax.model import nextflow
from nextflow_jax.sampling import config as sampling_config
from nextflow_jax.sampling import next_scale
from nextflow_jax.sampling import raster
from nextflow_jax.sampling import state as state_lib
from nextflow_jax.text import vocab

_MODELS = flags.DEFINE_list("models", ["cpu", "var_d16"], "Model shapes.")
_GRIDS = flags.DEFINE_list("grids", ["16", "32", "64"], "Final grid sides.")
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "Images per batch.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per run.")
_BUDGET = flags.DEFINE_float("budget_s", 240.0,
                             "Skip runs estimated to take longer.")
_MEMORY = flags.DEFINE_float("max_scores_gib", 6.0,
                             "Skip runs whose attention scores exceed this.")

MODELS = {
    "cpu": dict(text_vocab_size=1024, codebook_size=1024, code_dim=40,
                num_layers=4, width=256, num_heads=4, num_kv_heads=2,
                head_dim=64, mlp_dim=704),
    "var_tiny": dict(text_vocab_size=1024, codebook_size=4096, code_dim=40,
                     num_layers=4, width=256, num_heads=4, num_kv_heads=4,
                     head_dim=64, mlp_dim=682),
    "var_d16": dict(text_vocab_size=1024, codebook_size=4096, code_dim=40,
                    num_layers=16, width=1024, num_heads=16, num_kv_heads=16,
                    head_dim=64, mlp_dim=2730),
}
VAR_SCHEDULE = scales.square_schedule((1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
PROMPT = 16


def schedule_for(side: int) -> scales.Schedule:
  return VAR_SCHEDULE if side == 16 else scales.paper_schedule(
      "1:1", {32: 512, 64: 1024}[side])


def machine_speed() -> tuple[float, float]:
  """(matmul FLOP/s, memory copy bytes/s) measured here, float32."""
  a = jnp.ones((2048, 2048), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(5):
    mm(a).block_until_ready()
  flops = 5 * 2 * 2048 ** 3 / (time.perf_counter() - t)
  big = jnp.ones((64 * 2 ** 20,), jnp.float32)  # 256 MiB
  cp = jax.jit(lambda x: x + 1.0)
  cp(big).block_until_ready()
  t = time.perf_counter()
  for _ in range(5):
    cp(big).block_until_ready()
  bandwidth = 5 * 2 * big.nbytes / (time.perf_counter() - t)
  return flops, bandwidth


def cost_model(shape: dict, calls: list[tuple[int, int]], rows: int,
               flops_per_s: float, bytes_per_s: float) -> dict:
  """FLOPs, bytes and predicted seconds of a list of (queries, keys) calls.

  Per call and row: 2 * (dense params) * queries + 4 * queries * keys *
  heads * head_dim * layers; bytes: all weights once + K/V of `keys`
  positions for every row.
  """
  d, layers = shape["width"], shape["num_layers"]
  qdim = shape["num_heads"] * shape["head_dim"]
  kvdim = shape["num_kv_heads"] * shape["head_dim"]
  per_layer = d * (2 * qdim + 2 * kvdim) + 3 * d * shape["mlp_dim"]
  dense = layers * per_layer + d * shape["codebook_size"]
  total_flops = total_bytes = predicted = 0.0
  score_bytes = predicted_scores = 0.0
  for q, k in calls:
    flops = rows * (2 * dense * q + 4 * q * k * qdim * layers)
    nbytes = 4 * (dense + rows * 2 * layers * k * kvdim)
    # XLA's attention writes the (rows, heads, q, k) float32 scores and
    # reads them back: traffic a fused (flash) kernel would not have.
    scores = 2 * 4 * rows * shape["num_heads"] * q * k * layers
    total_flops += flops
    total_bytes += nbytes
    score_bytes += scores
    predicted += max(flops / flops_per_s, nbytes / bytes_per_s)
    predicted_scores += max(flops / flops_per_s,
                            (nbytes + scores) / bytes_per_s)
  return {"gflops": round(total_flops / 1e9, 2),
          "gbytes": round(total_bytes / 1e9, 2),
          "score_gbytes": round(score_bytes / 1e9, 2),
          "predicted_s": round(predicted, 3),
          "predicted_with_scores_s": round(predicted_scores, 3)}


def prompts(rows: int):
  rng = np.random.default_rng(0)
  cond = [vocab.BOS_ID] + rng.integers(20, 1000, PROMPT - 1).tolist()
  layout = sequences.Layout()
  docs = [sequences.build([sequences.Text(cond if r < rows // 2 else
                                          [vocab.BOS_ID], loss=False)],
                          layout, codebook_size=16) for r in range(rows)]
  return state_lib.stack_prompts(docs, PROMPT)


def run_one(name, model, params, side, batch, speed, estimates):
  rows = 2 * batch
  schedule = schedule_for(side)
  n = side * side
  fields, time_, block = prompts(rows)
  keys = state_lib.row_keys(0, 0, batch)
  shape = MODELS[name]
  heads = shape["num_heads"]
  out = []
  for method in ("next_scale", "raster"):
    if method == "next_scale":
      knobs = next_scale.knobs_from_config(sampling_config.SamplingConfig(),
                                           len(schedule))
      fn = next_scale.make_generate(
          model, schedule=schedule, layout=sequences.Layout(),
          top_k=(None,) * len(schedule), cfg=True)
      calls = [(PROMPT, PROMPT), (1, PROMPT + 1)]
      kv = PROMPT + 1
      for h, w in schedule[1:]:
        kv += h * w
        calls.append((h * w, kv))
      calls.append((1, kv + 1))
      biggest = max(q * k for q, k in calls)
    else:
      knobs = {"temperature": jnp.float32(1.0), "top_p": jnp.float32(0.95),
               "guidance": jnp.float32(3.0)}
      fn = raster.make_generate(
          model, grid=(side, side),
          layout=sequences.Layout(image_order="raster"), top_k=None,
          cfg=True)
      calls = [(PROMPT, PROMPT)] + [(1, PROMPT + 1 + i) for i in range(n)] + [
          (1, PROMPT + n + 1)]
      biggest = PROMPT + n + 1
    tokens = rows * sum(q for q, _ in calls)
    entry = {"model": name, "grid": f"{side}x{side}", "batch": batch,
             "rows_with_cfg": rows, "method": method,
             "scales": len(schedule) if method == "next_scale" else None,
             "sequential_calls": len(calls), "tokens_computed": tokens,
             **cost_model(shape, calls, rows, *speed)}
    scores_gib = rows * heads * biggest * 4 / 2 ** 30
    key = (name, method, batch)
    estimate = None
    if key in estimates:  # seconds per token of a smaller run
      estimate = estimates[key] * tokens
    if scores_gib > _MEMORY.value:
      entry["skipped"] = (f"attention scores need {scores_gib:.1f} GiB "
                          f"> {_MEMORY.value} GiB")
    elif estimate is not None and estimate > _BUDGET.value:
      entry["skipped"] = (f"estimated {estimate:.0f} s from the "
                          f"{estimates[key + ('grid',)]} run > budget")
      entry["estimated_s"] = round(estimate, 1)
    else:
      compile_s, seconds = common.time_program(
          fn, (params, fields, time_, block, keys, knobs),
          _REPEATS.value if (estimate or 0) < 30 else 1)
      entry.update(compile_s=round(compile_s, 2), seconds=round(seconds, 4),
                   tokens_per_s=round(tokens / seconds, 1),
                   images_per_s=round(batch / seconds, 3))
      estimates[key] = seconds / tokens
      estimates[key + ("grid",)] = f"{side}x{side}"
    print(entry, flush=True)
    out.append(entry)
  ns, rs = out
  if "seconds" in ns and "seconds" in rs:
    ns["raster_over_next_scale"] = round(rs["seconds"] / ns["seconds"], 2)
  return out


def main(argv):
  del argv
  speed = machine_speed()
  print(f"matmul {speed[0] / 1e9:.1f} GFLOP/s, copy {speed[1] / 1e9:.1f} "
        "GB/s", flush=True)
  results = []
  for name in _MODELS.value:
    model = nextflow.NextFlow(**MODELS[name], max_scales=18)
    example = {k: jnp.asarray(v)[None] for k, v in sequences.pad(
        sequences.build([sequences.Text([1])], sequences.Layout(),
                        codebook_size=16), 8).items()}
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), example))[
        "params"]
    estimates = {}
    for side in (int(s) for s in _GRIDS.value):
      for batch in (int(b) for b in _BATCHES.value):
        results += run_one(name, model, params, side, batch, speed,
                           estimates)
  path = common.write_result("sampling", {
      "matmul_gflops": round(speed[0] / 1e9, 1),
      "copy_gbytes_per_s": round(speed[1] / 1e9, 1), "runs": results})
  print("wrote", path)


if __name__ == "__main__":
  app.run(main)
