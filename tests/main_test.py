# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The command line: the data job end to end, and config errors up front."""

import json
import os
import subprocess
import sys

import pytest

from nextflow_jax import metrics
from nextflow_jax.text import tokenizer as text_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
  return subprocess.run(
      [sys.executable, "-m", "nextflow_jax.main", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_prepare_data_job_end_to_end(tfds_dir, tmp_path):
  workdir = str(tmp_path / "run")
  args = ("--config=configs/data.py:mu", f"--workdir={workdir}",
          f"--config.data.data_dir={tfds_dir}")
  result = run_main(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "data_report.json")) as f:
    report = json.load(f)
  assert report["sources"]["shapes/32px"]["records"] == 512
  assert report["sources"]["twemoji/32px"]["records"] > 3000
  assert report["pipeline"]["images_per_sec"] > 0
  assert report["pipeline"]["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
  assert report["image_tokens"]["tokens_per_image"] == 1 + 4 + 16
  assert 3 <= report["text_tokens"]["mean"] <= report["text_tokens"]["max"]
  tok = text_tokenizer.TextTokenizer.load(
      os.path.join(workdir, "text_tokenizer.model"))
  assert tok.decode(tok.encode("two red circles")) == "two red circles"
  for name in ("preview.png", "preview_captions.txt", "log.txt"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert "data/images_per_sec" in metrics.read_scalars(workdir)

  again = run_main(*args)  # A second run reuses the trained tokenizer.
  assert again.returncode == 0, again.stderr[-3000:]
  assert "reusing text tokenizer" in again.stderr


def test_invalid_config_stops_before_running(tmp_path):
  result = run_main("--config=configs/data.py:mu",
                    f"--workdir={tmp_path / 'run'}",
                    "--config.data.global_batch_size=6")
  assert result.returncode != 0
  assert ("config.data.global_batch_size=6 is invalid: must be a positive "
          "multiple of the data-parallel size 4") in result.stderr
  assert not os.path.exists(tmp_path / "run" / "data_report.json")


@pytest.mark.parametrize("args,message", [
    (("--config=configs/data.py:mu,junk",),
     "config.arg='junk' is invalid: overrides are"),
    (("--config=configs/data.py:huge",),
     "config.preset='huge' is invalid: choose one of ['cpu', 'mu']"),
    (("--config=configs/data.py:mu", "--config.data.global_batch_szie=3"),
     "config.data.global_batch_szie='3' is invalid: no such key; did you "
     "mean 'data.global_batch_size'?"),
    (("--config=configs/data.py:mu", "--config.data.global_batch_size=x"),
     "config.data.global_batch_size='x' is invalid: expected a int."),
    (("--config=configs/nope.py:mu",),
     "config file 'configs/nope.py' does not exist"),
])
def test_bad_input_config_flags_are_one_line(args, message, tmp_path):
  # ml_collections re-raises config-file errors as type(e)(traceback) and an
  # unknown --config.a.b key as a bare AttributeError.
  result = run_main(*args, f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if "Invalid config" in l]
  assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "run")


def test_bad_input_found_during_the_run_is_one_line(tmp_path):
  (tmp_path / "records").mkdir()  # No manifest: not a converted folder.
  args = ("--config=configs/data.py:mu",
          f"--config.data.sources=array_record:{tmp_path / 'records'}",
          "--config.data.weights=1", f"--workdir={tmp_path / 'run'}")
  result = run_main(*args)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Bad input: " in result.stderr and "has no manifest.json" in (
      result.stderr)
  assert "Traceback" not in result.stderr
  verbose = run_main(*args, "--verbose")
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr
