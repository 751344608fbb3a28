# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""How every command line of the project ends when something is wrong.

  * bad input that the project detects (it raises ValueError or
    FileNotFoundError with a message naming the value or file and the fix;
    the checkpoint and config errors are ValueErrors): one line on stderr,
    exit code 2;
  * a run that diverged (FloatingPointError from the training loop): one
    line, exit code 1;
  * anything else is a bug: Python's traceback.

`--verbose` (or NEXTFLOW_VERBOSE=1) shows the traceback of the first two as
well. Wrap a CLI's `main` with `one_line_errors` before `app.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import os
import sys
from typing import Any

from absl import flags

# checkpoint.CheckpointMismatchError and CheckpointCorruptError are
# ValueErrors, config_lib.ConfigError too.
BAD_INPUT = (ValueError, FileNotFoundError)



def verbose() -> bool:
  """--verbose was given (when the program defines it) or NEXTFLOW_VERBOSE."""
  given = "verbose" in flags.FLAGS and flags.FLAGS["verbose"].value
  return bool(given or os.environ.get("NEXTFLOW_VERBOSE"))


def exit_with(kind: str, message: str, code: int) -> None:
  """Writes `kind: message` (first line only) to stderr and exits."""
  lines = message.strip().splitlines() or [kind]
  more = " (more with --verbose)" if len(lines) > 1 else ""
  sys.stderr.write(f"{kind}: {' '.join(lines[0].split())}{more}\n")
  sys.exit(code)


def one_line_errors(main: Callable[[Sequence[str]], Any]
                    ) -> Callable[[Sequence[str]], Any]:
  """Wraps an absl `main`: project errors end in one line (module doc).

  Defines `--verbose` (once: only programs call this, so importing the
  library adds no flag to a user's own absl program).
  """
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "Show the traceback of bad-input and "
                      "diverged-run errors (else one line; also "
                      "NEXTFLOW_VERBOSE=1).")

  @functools.wraps(main)
  def wrapped(argv: Sequence[str]) -> Any:
    try:
      return main(argv)
    except BAD_INPUT + (FloatingPointError,) as e:
      if verbose():
        raise
      diverged = isinstance(e, FloatingPointError)
      exit_with("Run stopped" if diverged else "Bad input", str(e),
                1 if diverged else 2)

  return wrapped
