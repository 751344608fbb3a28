# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Who may import whom (ARCHITECTURE.md, "Boundaries").

The library (everything but `trainers/` and `main.py`) never imports a
trainer, so the sampler, the tokenizer, the model and the data layer load
without the trainers; `config_lib` knows no trainer (each trainer registers
its own config checks).
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "nextflow_jax")


def imported_modules(path: str) -> set[str]:
  """Every module a file imports, fully qualified, anywhere in the file
  (function-level imports included)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


def library_files() -> list[str]:
  files = []
  for folder, _, names in os.walk(PACKAGE):
    rel = os.path.relpath(folder, PACKAGE)
    if rel.split(os.sep)[0] == "trainers":
      continue
    files += [os.path.join(folder, n) for n in names if n.endswith(".py")
              and not (rel == "." and n == "main.py")]
  return sorted(files)


def test_the_walk_sees_the_library():
  rel = {os.path.relpath(f, PACKAGE) for f in library_files()}
  assert {"config_lib.py", "workdirs.py", "sampling/generator.py",
          "model/nextflow.py", "tokenizer/model.py", "data/tasks.py",
          "text/vocab.py"} <= rel
  assert not any(r.startswith("trainers") or r == "main.py" for r in rel)


@pytest.mark.parametrize("path", library_files(),
                         ids=lambda p: os.path.relpath(p, PACKAGE))
def test_library_modules_never_import_trainers(path):
  bad = sorted(m for m in imported_modules(path)
               if m == "nextflow_jax.trainers" or
               m.startswith("nextflow_jax.trainers."))
  assert not bad, f"{os.path.relpath(path, ROOT)} imports {bad}"


def test_the_import_check_catches_a_function_level_import(tmp_path):
  path = tmp_path / "m.py"
  path.write_text("def f():\n  from nextflow_jax.trainers import pretrain\n")
  assert "nextflow_jax.trainers.pretrain" in imported_modules(str(path))
