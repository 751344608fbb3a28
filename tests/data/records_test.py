# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The msgpack record codec and manifests."""

import numpy as np
import pytest

from nextflow_jax.data import records


def test_round_trip_of_every_supported_type():
  record = {"image": b"\x89PNG...", "caption": "two red circles",
            "n": 3, "w": 0.5, "ok": True, "tags": ["a", "b"],
            "codes": np.arange(12, dtype=np.int32).reshape(3, 4),
            "scale": np.int64(7)}
  out = records.decode(records.encode(record))
  assert out["codes"].dtype == np.int32 and out["codes"].shape == (3, 4)
  np.testing.assert_array_equal(out.pop("codes"), record.pop("codes"))
  assert out == {**record, "scale": 7}


def test_garbage_and_unsupported_values():
  with pytest.raises(ValueError, match="not a nextflow_jax record"):
    records.decode(b"\xc1\xc1garbage")
  with pytest.raises(ValueError, match="a list, not a dict"):
    records.decode(records.encode([1, 2]))
  with pytest.raises(TypeError, match="cannot store a set"):
    records.encode({"x": {1, 2}})


def test_manifest_is_required(tmp_path):
  with pytest.raises(FileNotFoundError, match="no manifest.json"):
    records.read_manifest(str(tmp_path))
  records.write_manifest(str(tmp_path), ["a"], 3, ["image"])
  assert records.read_manifest(str(tmp_path))["num_records"] == 3


def test_bad_input_truncated_shard_is_named(tmp_path):
  from nextflow_jax.data import sources  # pylint: disable=g-import-not-at-top
  folder = str(tmp_path / "shards")
  with records.ShardedWriter(folder, num_shards=2, prefix="data") as writer:
    for i in range(40):
      writer.write({"caption": "x" * 200, "index": np.int32(i)})
  shard = sorted(p for p in (tmp_path / "shards").iterdir()
                 if p.name.startswith("data"))[-1]
  with open(shard, "r+b") as f:
    f.truncate(shard.stat().st_size // 2)
  with pytest.raises(ValueError, match=rf"unreadable shard\(s\), truncated "
                     rf"or not ArrayRecord: {shard.name} "):
    sources.ArrayRecordSource(folder)
