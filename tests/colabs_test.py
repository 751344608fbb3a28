# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Every notebook in colabs/ runs top to bottom, and its .ipynb is the
stripped twin of its jupytext .py (the file people edit).

A notebook's cell tagged "parameters" holds its run lengths; as papermill
does, the test inserts a cell after it that shortens them (`SHORT`), so the
suite checks every cell's code in its budget; the notebooks' own lengths
are what their headers time."""

import glob
import os

import jupytext
import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.py")))
SHORT = {"grpo.py": "UPDATES = 2",
         "your_own_images.py": "TOKENIZER_STEPS = 4\nPRETRAIN_STEPS = 4"}


def _cells(notebook):
  return [(c.cell_type, c.source.strip()) for c in notebook.cells]


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_the_ipynb_is_the_py_without_outputs(path):
  twin = path[:-3] + ".ipynb"
  assert os.path.exists(twin), (f"{twin} is missing: run jupytext --to "
                                f"ipynb {path}")
  ipynb = nbformat.read(twin, as_version=4)
  assert _cells(ipynb) == _cells(jupytext.read(path)), (
      f"{twin} differs from {path}: run jupytext --sync {path}")
  for cell in ipynb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, (
          f"{twin} has outputs; strip them before committing")


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_the_notebook_runs(path):
  notebook = jupytext.read(path)
  short = SHORT.get(os.path.basename(path))
  if short:
    where = [i for i, c in enumerate(notebook.cells)
             if "parameters" in c.metadata.get("tags", [])]
    assert len(where) == 1, f"{path} needs one cell tagged parameters"
    notebook.cells.insert(where[0] + 1, nbformat.v4.new_code_cell(short))
  client = nbclient.NotebookClient(
      notebook, timeout=600, kernel_name="python3",
      resources={"metadata": {"path": ROOT}})
  client.execute()  # a failing cell raises CellExecutionError
  errors = [o for c in notebook.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors
