# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Checkpoints: save on a 4-device mesh, restore on 2; iterator resume."""

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nextflow_jax import checkpoint
from nextflow_jax import sharding


class Mlp(nn.Module):
  width: int = 16

  @nn.compact
  def __call__(self, x):
    init = nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                        ("embed", "mlp"))
    return nn.Dense(self.width, kernel_init=init)(x)


def sharded_state(mesh, width=16, seed=0):
  """(abstract target with shardings, concrete state) for an FSDP mesh."""
  model, tx = Mlp(width), optax.adam(1e-3)
  rules = sharding.get_rules("fsdp")

  def init(rng):
    params = model.init(rng, jnp.ones((1, 8)))["params"]
    return {"params": params, "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32)}

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init, jax.random.key(seed))
    shardings = sharding.logical_shardings(abstract, mesh, rules)
    state = jax.jit(lambda r: nn.unbox(init(r)),
                    out_shardings=shardings)(jax.random.key(seed))
  target = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      nn.unbox(abstract), shardings)
  return target, state


def data_iterator():
  ds = grain.MapDataset.range(1000).seed(3).shuffle().map(
      lambda i: {"x": np.full((2,), i)}).batch(4)
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2)))


def test_save_on_4_devices_restore_on_2_with_equal_values(tmp_path):
  mesh4 = sharding.make_mesh((1, -1, 1))
  _, state = sharded_state(mesh4)
  assert state["params"]["Dense_0"]["kernel"].sharding.mesh.size == 4
  it = data_iterator()
  for _ in range(5):
    next(it)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(5, state, data_iterator=it, config={"preset": "mu"})
  expected_next = [next(it)["x"] for _ in range(3)]
  ckpt.close()

  mesh2 = sharding.make_mesh((1, -1, 1), jax.devices()[:2])
  target, _ = sharded_state(mesh2, seed=1)  # Other values: must be replaced.
  fresh = data_iterator()
  restored, step = checkpoint.Checkpointer(str(tmp_path)).restore(
      target, data_iterator=fresh)
  assert step == 5
  kernel = restored["params"]["Dense_0"]["kernel"]
  assert kernel.sharding.mesh.size == 2
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored),
               jax.device_get(state))
  for want in expected_next:
    np.testing.assert_array_equal(next(fresh)["x"], want)


def test_keeps_the_newest_n_and_restores_config(tmp_path):
  _, state = sharded_state(sharding.make_mesh((-1, 1, 1)))
  ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, state, config={"step_saved": step})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3] and ckpt.latest_step() == 3
  assert ckpt.restore_config(2) == {"step_saved": 2}
  ckpt.close()


def test_mismatched_checkpoint_names_the_differences(tmp_path):
  mesh = sharding.make_mesh((-1, 1, 1))
  _, state = sharded_state(mesh, width=16)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(1, state)
  ckpt.wait()
  other, _ = sharded_state(mesh, width=24)
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"params/Dense_0/kernel: checkpoint \(8, 16\) vs "
                     r"model \(8, 24\)"):
    ckpt.restore(other)
  ckpt.close()


def test_bad_input_resume_with_another_config_names_the_fields(tmp_path):
  mesh = sharding.make_mesh((-1, 1, 1))
  _, state = sharded_state(mesh, width=16)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(1, state, config={"model": {"width": 16, "depth": 2},
                              "train": {"num_steps": 10}})
  ckpt.wait()
  other, _ = sharded_state(mesh, width=24)
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"differs from the one saved with it: "
                     r"model.width: 16 -> 24; train.num_steps: 10 -> 20\. "
                     r"Use another --workdir"):
    ckpt.restore(other, config={"model": {"width": 24, "depth": 2},
                                "train": {"num_steps": 20}})
  ckpt.close()


def test_restore_without_checkpoint(tmp_path):
  target, _ = sharded_state(sharding.make_mesh((-1, 1, 1)))
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    checkpoint.Checkpointer(str(tmp_path)).restore(target)


def test_unfinished_save_is_not_a_checkpoint(tmp_path):
  """Orbax writes into a temporary folder; only finished steps are listed."""
  _, state = sharded_state(sharding.make_mesh((-1, 1, 1)))
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(1, state)
  ckpt.wait()
  (tmp_path / "2.orbax-checkpoint-tmp-123").mkdir()
  assert checkpoint.Checkpointer(str(tmp_path)).all_steps() == [1]
  ckpt.close()


def test_unreadable_newest_step_falls_back_to_the_previous_one(tmp_path):
  """A truncated file in the newest step (disk full, copy cut short)."""
  target, state = sharded_state(sharding.make_mesh((-1, 1, 1)))
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  it = data_iterator()
  ckpt.save(1, state, data_iterator=it)
  expected_next = next(it)["x"]
  ckpt.save(2, state, data_iterator=it)
  ckpt.close()
  sharding_file = tmp_path / "2" / "state" / "_sharding"
  sharding_file.write_bytes(sharding_file.read_bytes()[:40])

  reader = checkpoint.Checkpointer(str(tmp_path))
  with pytest.raises(checkpoint.CheckpointCorruptError,
                     match=r"checkpoint step 2 in .* is unreadable"):
    reader.restore(target, step=2)
  fresh = data_iterator()
  restored, step = reader.restore(target, data_iterator=fresh)
  assert step == 1
  np.testing.assert_array_equal(next(fresh)["x"], expected_next)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored),
               jax.device_get(state))
  assert (tmp_path / "2.unreadable").is_dir()
  assert reader.all_steps() == [1]
  reader.save(2, state)  # Training goes on and saves step 2 again.
  reader.wait()
  assert reader.all_steps() == [1, 2]
  reader.close()


_KILLED_WRITER = """
import sys, time
import jax.numpy as jnp
from nextflow_jax import checkpoint
ckpt = checkpoint.Checkpointer(sys.argv[1])
ckpt.save(1, {"w": jnp.full((4096, 4096), 1.0)})
ckpt.wait()
ckpt.save(2, {"w": jnp.full((4096, 4096), 2.0)})  # asynchronous
print("saving", flush=True)
time.sleep(60)
"""


def test_kill_9_during_an_async_save_leaves_a_restorable_checkpoint(
    tmp_path):
  """A process killed (SIGKILL) while step 2 is being written: the folder
  restores step 1 (the save was cut) or step 2 (it had finished), never a
  half-written state."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER,
                           str(tmp_path)], stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "saving"
  finally:
    proc.kill()
    proc.wait(timeout=60)
  target = {"w": jax.ShapeDtypeStruct((4096, 4096), jnp.float32)}
  reader = checkpoint.Checkpointer(str(tmp_path))
  restored, step = reader.restore(target)
  assert step in (1, 2)
  np.testing.assert_array_equal(np.unique(np.asarray(restored["w"])),
                                [float(step)])
  # The resumed run saves the next step (step 2 again when the killed save
  # was cut) over whatever the killed one left.
  reader.save(step + 1, {"w": jnp.full((4096, 4096), 3.0)})
  reader.wait()
  restored, latest = reader.restore(target)
  assert latest == step + 1 and float(restored["w"][0, 0]) == 3.0
  reader.close()


def test_a_saved_tree_loads_sharded_and_names_what_differs(tmp_path):
  tree = {"a": np.arange(16, dtype=np.float32).reshape(4, 4),
          "b": {"c": np.ones(3, np.float32)}}
  checkpoint.save_tree(str(tmp_path / "t"), tree)
  mesh = sharding.make_mesh((1, 4, 1))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  target = {"a": jax.ShapeDtypeStruct((4, 4), jnp.bfloat16, sharding=split),
            "b": {"c": jax.ShapeDtypeStruct((3,), jnp.float32,
                                            sharding=sharding.replicated(
                                                mesh))}}
  loaded = checkpoint.load_tree(str(tmp_path / "t"), target)
  assert loaded["a"].dtype == jnp.bfloat16
  assert loaded["a"].addressable_shards[0].data.shape == (1, 4)
  np.testing.assert_array_equal(np.asarray(loaded["a"], np.float32),
                                tree["a"])
  target["b"] = {"d": target["b"]["c"]}
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"2 differences\):\n  b/c: in the checkpoint but "
                     r"not in the model\n  b/d: missing in the checkpoint"):
    checkpoint.load_tree(str(tmp_path / "t"), target)
