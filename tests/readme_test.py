# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The README's Python snippets run as written (from the repository root,
in order, each in a fresh namespace): an API change that breaks one fails
here."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _snippets():
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  out = []
  for match in re.finditer(r"```python\n(.*?)```", text, re.S):
    line = text.count("\n", 0, match.start()) + 1
    out.append(pytest.param(match.group(1), id=f"README.md:{line}"))
  return out


def test_the_readme_has_snippets_for_every_module():
  code = "".join(p.values[0] for p in _snippets())
  for module in ("tokenizer", "model", "sampling", "rl"):
    assert f"nextflow_jax.{module}" in code or (
        module == "tokenizer" and "load_tokenizer" in code), module


@pytest.mark.parametrize("code", _snippets())
def test_the_snippet_runs(code, monkeypatch):
  monkeypatch.chdir(ROOT)
  exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # pylint: disable=exec-used
