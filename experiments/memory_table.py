# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Per-device memory of the 1b / 7b presets, without allocating them.

  python experiments/memory_table.py [--micro_batch=1]

Runs on fake CPU devices (16, set before JAX is imported). For each preset
and topology, the full train state (parameters + AdamW moments + step) is
`jax.eval_shape`d and sharded with the preset's logical names; per-device
bytes are summed from each leaf's shard shape. Activations are estimated per
device for one micro-batch of `--micro_batch` sequences of `data.seq_len`:

  saved by remat   n_layers * tokens * width * 2 B   (scan + remat keeps
                                                     each layer's input)
  one layer        tokens * (6 width + 3 mlp + 2 (heads + 2 kv) hd) * 2 B
                   + heads * T^2 * 4 B per sequence (XLA attention scores)
  loss chunk       chunk * (text vocab + K) * 4 B per sequence
  (divided by the tensor-parallel size for the sharded parts)

With `--compiled`, the training step itself is also lowered and compiled
for each of `COMPILED` (preset, rules, mesh, attention implementation)
on the fake devices, and XLA's `memory_analysis()` of that executable gives
per-device argument, output and temporary bytes: a measurement of the
compiled program, not the formula above. It is the CPU backend's buffer
assignment (GPU and TPU compilers schedule differently, so treat it as an
estimate of the same program there), and compiling a 7B step takes minutes.

Prints a table and writes results/memory_<time>.json.
"""

import copy
import json
import math
import os
import sys
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=16")
os.environ["JAX_PLATFORMS"] = "cpu"

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

from nextflow_jax import config_lib
from nextflow_jax import sharding
from nextflow_jax import workdirs
from nextflow_jax.data import sequences
from nextflow_jax.data import tasks
from nextflow_jax.trainers import pretrain_step

_MICRO = flags.DEFINE_integer("micro_batch", 1, "Sequences per device.")
_COMPILED = flags.DEFINE_bool("compiled", False, "Also compile the training "
                              "step of each COMPILED setting and report "
                              "XLA's memory analysis.")
_PRESETS = flags.DEFINE_list("compiled_presets", ["1b", "7b"], "Presets of "
                             "the compiled rows.")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPOLOGIES = [("fsdp", (1, 8, 1)), ("fsdp", (1, 16, 1)),
              ("fsdp_tp", (1, 4, 2)), ("fsdp_tp", (1, 8, 2))]
# (rules, mesh, attention) of the compiled rows, per preset.
COMPILED = [("fsdp_tp", (1, 8, 2), "xla"), ("fsdp_tp", (1, 8, 2), "blocked")]
CODEBOOK, CODE_DIM = 16384, 40
GIB = 2 ** 30


def preset_config(preset):
  return config_lib.load_config(os.path.join(ROOT, "configs",
                                             f"nextflow.py:{preset}"))


def _train_setup(config, rules_name, mesh_shape):
  """(model, optimizer, boxed init fn, example batch, mesh, rules)."""
  model = workdirs.build_model(
      config.model, text_vocab_size=config.model.text_vocab_size,
      codebook_size=CODEBOOK, code_dim=CODE_DIM)
  tx = pretrain_step.make_optimizer(config.optim, config.train.num_steps)
  example = sequences.example_batch(sequences.Layout(), CODEBOOK, 8)

  def init_state(rng):
    params = model.init(rng, example)["params"]
    return pretrain_step.TrainState(step=jnp.zeros((), jnp.int32),
                                    params=params, opt_state=tx.init(params))

  devices = jax.devices()[:math.prod(mesh_shape)]
  mesh = sharding.make_mesh(mesh_shape, devices)
  return model, tx, init_state, example, mesh, sharding.get_rules(rules_name)


def state_bytes(config, rules_name, mesh_shape):
  _, _, init_state, _, mesh, rules = _train_setup(config, rules_name,
                                                  mesh_shape)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init_state, jax.random.key(0))
    shardings = sharding.logical_shardings(abstract, mesh, rules)

  def per_device(part):
    tree = nn.unbox(getattr(abstract, part))
    sh = getattr(shardings, part)
    return sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
               for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(sh)))

  n_params = sum(x.size for x in jax.tree.leaves(nn.unbox(abstract.params)))
  return n_params, per_device("params"), per_device("opt_state")


def compiled_bytes(config, rules_name, mesh_shape, attention):
  """XLA's per-device memory analysis of the compiled training step on
  micro-batches of `--micro_batch` sequences per device."""
  config = copy.deepcopy(config)
  config.model.attention = attention
  model, tx, init_state, example, mesh, rules = _train_setup(
      config, rules_name, mesh_shape)
  batch_sharding = sharding.batch_sharding(mesh)
  rows = mesh_shape[0] * mesh_shape[1] * _MICRO.value
  batch = {k: jax.ShapeDtypeStruct((rows, config.data.seq_len) + v.shape[2:],
                                   v.dtype,
                                   sharding=batch_sharding)
           for k, v in example.items()}
  loss_cfg = dict(text_weight=1.0, visual_weight=1.0,
                  chunk_size=config.loss.chunk_size,
                  num_tasks=len(tasks.TASKS))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init_state, jax.random.key(0))
    shardings = sharding.logical_shardings(abstract, mesh, rules)
  state = jax.tree.map(
      lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
      nn.unbox(abstract), shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    step = jax.jit(pretrain_step.make_train_step(model, tx, loss_cfg),
                   in_shardings=(shardings, batch_sharding),
                   out_shardings=(shardings, None), donate_argnums=0)
    t0 = time.perf_counter()
    analysis = step.lower(state, batch).compile().memory_analysis()
  return {"argument_gib": round(analysis.argument_size_in_bytes / GIB, 2),
          "output_gib": round(analysis.output_size_in_bytes / GIB, 2),
          "alias_gib": round(analysis.alias_size_in_bytes / GIB, 2),
          "temp_gib": round(analysis.temp_size_in_bytes / GIB, 2),
          "compile_seconds": round(time.perf_counter() - t0, 1)}


def activation_bytes(config, tp):
  m, d = config.model, config.data
  tokens = _MICRO.value * d.seq_len
  saved = m.num_layers * tokens * m.width * 2
  heads_dim = (m.num_heads + 2 * m.num_kv_heads) * m.head_dim
  layer = tokens * (6 * m.width + (3 * m.mlp_dim + 2 * heads_dim) / tp) * 2
  scores = _MICRO.value * (m.num_heads / tp) * d.seq_len ** 2 * 4
  logits = _MICRO.value * config.loss.chunk_size * (
      m.text_vocab_size + CODEBOOK) * 4
  return saved + layer + scores + logits, scores


def main(argv):
  del argv
  rows = []
  print(f"{'preset':6s} {'rules':8s} {'mesh':10s} {'params':>8s} "
        f"{'param GiB':>9s} {'adam GiB':>9s} {'act GiB':>8s} "
        f"{'(scores)':>8s} {'total GiB':>9s}")
  for preset in ("1b", "7b"):
    config = preset_config(preset)
    for rules_name, mesh_shape in TOPOLOGIES:
      n, p_bytes, o_bytes = state_bytes(config, rules_name, mesh_shape)
      act, scores = activation_bytes(config, mesh_shape[2])
      total = p_bytes + o_bytes + act
      row = {"preset": preset, "rules": rules_name, "mesh": list(mesh_shape),
             "params_billions": round(n / 1e9, 3),
             "params_gib_per_device": round(p_bytes / GIB, 2),
             "adam_gib_per_device": round(o_bytes / GIB, 2),
             "activations_gib_per_device": round(act / GIB, 2),
             "attention_scores_gib": round(scores / GIB, 2),
             "total_gib_per_device": round(total / GIB, 2),
             "micro_batch": _MICRO.value, "seq_len": config.data.seq_len}
      rows.append(row)
      print(f"{preset:6s} {rules_name:8s} {str(mesh_shape):10s} "
            f"{n / 1e9:7.2f}B {row['params_gib_per_device']:9.2f} "
            f"{row['adam_gib_per_device']:9.2f} "
            f"{row['activations_gib_per_device']:8.2f} "
            f"{row['attention_scores_gib']:8.2f} "
            f"{row['total_gib_per_device']:9.2f}")
  compiled = []
  for preset in _PRESETS.value if _COMPILED.value else ():
    config = preset_config(preset)
    for rules_name, mesh_shape, attention in COMPILED:
      row = {"preset": preset, "rules": rules_name, "mesh": list(mesh_shape),
             "attention": attention, "micro_batch": _MICRO.value,
             "seq_len": config.data.seq_len,
             **compiled_bytes(config, rules_name, mesh_shape, attention)}
      compiled.append(row)
      print(json.dumps(row), flush=True)
  print("wrote", common.write_result("memory", {"rows": rows,
                                                "compiled": compiled}))


if __name__ == "__main__":
  app.run(main)
