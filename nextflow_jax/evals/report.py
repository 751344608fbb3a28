# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The pipeline's report: what each stage of a run produced, in one place.

`collect(workdir, stages)` reads the stage workdirs of
`trainers/pipeline.py` (W/tokenizer, W/pretrain, W/grpo, W/sample,
W/evaluate) into one dict (written as report.json); `write_markdown` turns
it into report.md, with the training curves plotted by matplotlib and the
stages' own PNG grids linked by relative path, so the folder can be moved
or viewed on GitHub as it is. Sections whose stage did not run are left
out.
"""

from __future__ import annotations

import glob
import json
import os
import platform
from typing import Any

import jax

from nextflow_jax import metrics

JSON_FILE = "report.json"
MARKDOWN_FILE = "report.md"
PRETRAIN_PLOT = "pretrain_curves.png"
GRPO_PLOT = "grpo_rewards.png"
PRETRAIN_CURVES = ("loss/visual_loss", "loss/text_loss",
                   "eval/loss/visual_loss", "eval/loss/text_loss")
SAMPLE_TASKS = ("t2i", "edit", "caption", "vqa", "video", "interleaved")


def _json(path: str) -> dict[str, Any] | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _last_eval(workdir: str) -> dict[str, Any] | None:
  """The newest eval_<step>.json of a trainer's workdir, with its step."""
  steps = [int(os.path.basename(p)[5:-5])
           for p in glob.glob(os.path.join(workdir, "eval_*.json"))]
  if not steps:
    return None
  return {"step": max(steps),
          **_json(os.path.join(workdir, f"eval_{max(steps)}.json"))}


def _newest(workdir: str, pattern: str) -> str | None:
  """The newest file `pattern` (one '{}' for the step) of a workdir,
  relative to its parent."""
  paths = glob.glob(os.path.join(workdir, pattern.format("*")))
  if not paths:
    return None
  prefix, suffix = pattern.split("{}")
  step = max(int(os.path.basename(p)[len(prefix):-len(suffix)])
             for p in paths)
  return os.path.join(os.path.basename(workdir), pattern.format(step))


def machine() -> dict[str, Any]:
  """CPU model, cores, memory, accelerators and versions that numbers come
  from (the report's and the benchmark scripts')."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f
                 if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  try:
    with open("/proc/meminfo") as f:
      mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
  except OSError:
    mem_gib = None
  return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib,
          "devices": sorted({d.device_kind for d in jax.devices()}),
          "jax": jax.__version__, "python": platform.python_version()}


def collect(workdir: str, stages: dict[str, Any]) -> dict[str, Any]:
  """Everything the report shows, as plain JSON values."""
  out: dict[str, Any] = {
      "machine": machine(),
      "minutes": {k: v["minutes"] for k, v in stages.items()},
      "total_minutes": round(sum(v["minutes"] for v in stages.values()), 2)}
  tok = os.path.join(workdir, "tokenizer")
  if "tokenizer" in stages:
    out["tokenizer"] = {"eval": _last_eval(tok),
                        "samples": _newest(tok, "samples_{}.png")}
  pre = os.path.join(workdir, "pretrain")
  if "pretrain" in stages:
    scalars = metrics.read_scalars(pre)
    out["pretrain"] = {
        "report": _json(os.path.join(pre, "pretrain_report.json")),
        "eval": _last_eval(pre),
        "curves": {k: scalars[k] for k in PRETRAIN_CURVES if k in scalars}}
  grpo = os.path.join(workdir, "grpo")
  if "grpo" in stages:
    scalars = metrics.read_scalars(grpo)
    out["grpo"] = {
        "report": _json(os.path.join(grpo, "grpo_report.json")),
        "curves": {k: scalars[k] for k in ("reward/mean",
                                           "eval/reward_mean", "kl")
                   if k in scalars},
        "samples": _newest(grpo, "samples_{}.png")}
  if "sample" in stages:
    sample = os.path.join(workdir, "sample")
    out["sample"] = {
        "report": _json(os.path.join(sample, "sample_report.json")),
        "grids": {t: os.path.join("sample", t, "grid.png")
                  for t in SAMPLE_TASKS
                  if os.path.exists(os.path.join(sample, t, "grid.png"))}}
  if "evaluate" in stages:
    out["evaluate"] = _json(os.path.join(workdir, "evaluate",
                                         "evaluation.json"))
  return out


# ----------------------------------------------------------------- markdown


def _plot(path: str, series: dict[str, list], title: str,
          ylabel: str) -> None:
  """Line plot of {name: [(step, value)]} to a PNG."""
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  # pylint: enable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
  for name, points in series.items():
    steps, values = zip(*points) if points else ((), ())
    ax.plot(steps, values, marker="o" if len(points) < 20 else None,
            markersize=3, label=name)
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _fmt(value: Any, digits: int = 3) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def _geneval_table(models: dict[str, Any]) -> list[str]:
  categories = []
  for entry in models.values():
    for c in entry["geneval"]["categories"]:
      if c not in categories:
        categories.append(c)
  lines = ["| model | overall | " + " | ".join(categories) + " |",
           "|---|---|" + "---|" * len(categories)]
  for name, entry in models.items():
    g = entry["geneval"]
    lines.append(f"| {name} | {_fmt(g['overall'])} | " + " | ".join(
        _fmt(g["categories"].get(c)) for c in categories) + " |")
  return lines


def write_markdown(report: dict[str, Any], workdir: str) -> str:
  """Writes report.md (and its plots) into `workdir`; returns its path."""
  m = report["machine"]
  lines = ["# nextflow_jax pipeline report", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, "
           f"{', '.join(m['devices'])}, JAX {m['jax']}.", "",
           "| stage | minutes |", "|---|---|"]
  lines += [f"| {k} | {v:.1f} |" for k, v in report["minutes"].items()]
  lines += [f"| **total** | **{report['total_minutes']:.1f}** |", ""]

  tok = report.get("tokenizer")
  if tok:
    lines += ["## Vision tokenizer", ""]
    ev = tok["eval"] or {}
    sources = {k: v for k, v in ev.items() if isinstance(v, dict)}
    if sources:
      lines += [f"Held-out evaluation at step {ev['step']}: reconstruction "
                "quality, codebook use and the shapes-GenEval score of the "
                "reconstructions (the ceiling no generator of these codes "
                "can beat).", "",
                "| source | PSNR | SSIM | codebook usage | perplexity | "
                "shapes-GenEval ceiling |", "|---|---|---|---|---|---|"]
      for name, s in sources.items():
        lines.append(
            f"| {name} | {_fmt(s.get('psnr'), 2)} | {_fmt(s.get('ssim'))} "
            f"| {_fmt(s.get('codebook_usage'))} | "
            f"{_fmt(s.get('perplexity'), 1)} | "
            f"{_fmt(s.get('geneval_overall'))} |")
      lines.append("")
    if tok["samples"]:
      lines += ["Held-out images (left) and the decodes of 1, 2, ... "
                "scales:", "", f"![tokenizer samples]({tok['samples']})", ""]

  pre = report.get("pretrain")
  if pre:
    lines += ["## Pretraining", ""]
    if pre["report"]:
      r = pre["report"]
      lines += [f"{r.get('steps')} steps, "
                f"{r.get('parameters_millions')}M parameters, "
                f"{_fmt(r.get('minutes'), 1)} min.", ""]
    if pre["curves"]:
      _plot(os.path.join(workdir, PRETRAIN_PLOT), pre["curves"],
            "pretraining", "cross-entropy (nats)")
      lines += [f"![pretraining curves]({PRETRAIN_PLOT})", ""]
    ev = pre["eval"]
    if ev:
      per_scale = [ev[k] for k in sorted(ev) if k.startswith("scale_ce/")]
      lines += [f"Held-out at step {ev['step']}: visual CE "
                f"{_fmt(ev.get('loss/visual_loss'))}, text CE "
                f"{_fmt(ev.get('loss/text_loss'))}; visual CE per scale "
                + ", ".join(_fmt(v, 2) for v in per_scale) + ".", ""]

  grpo = report.get("grpo")
  if grpo:
    lines += ["## GRPO", ""]
    if grpo["report"]:
      r = grpo["report"]
      lines += [f"{r.get('updates')} updates of "
                f"{r.get('rollouts_per_update')} rollouts, prefix tuning on "
                f"the first {r.get('prefix_scales')} scales, "
                f"{_fmt(r.get('minutes'), 1)} min.", ""]
    if grpo["curves"]:
      _plot(os.path.join(workdir, GRPO_PLOT), grpo["curves"], "GRPO",
            "reward / KL")
      lines += [f"![GRPO curves]({GRPO_PLOT})", ""]

  ev = report.get("evaluate")
  if ev and ev["models"]:
    lines += ["## Prompt following: shapes-GenEval", "",
              f"{ev['num_prompts']} prompts ({ev['prompt_split']}), "
              f"{ev['images_per_prompt']} images each, guidance "
              f"{ev['guidance']}; pretrain is the model before GRPO, grpo "
              "after.", ""]
    lines += _geneval_table(ev["models"]) + [""]
    for name in ev["models"]:
      lines += [f"![{name} shapes-GenEval grid](evaluate/{name}/grid.png)",
                ""]
    lines += ["## Understanding and speed", "",
              "| model | caption scene match | VQA accuracy | edit accuracy "
              "| seconds per image (batch) |", "|---|---|---|---|---|"]
    for name, entry in ev["models"].items():
      u = entry.get("understanding", {})
      lines.append(
          f"| {name} | {_fmt(u.get('caption_scene_match'))} | "
          f"{_fmt(u.get('vqa_accuracy'))} | {_fmt(u.get('edit_accuracy'))} "
          f"| {_fmt(entry['seconds_per_image'])} ({entry['batch_size']}) |")
    lines.append("")

  sample = report.get("sample")
  if sample and sample["grids"]:
    lines += ["## Samples", ""]
    for task, path in sample["grids"].items():
      lines += [f"### {task}", "", f"![{task}]({path})", ""]
  path = os.path.join(workdir, MARKDOWN_FILE)
  with open(path + ".tmp", "w") as f:
    f.write("\n".join(lines))
  os.replace(path + ".tmp", path)
  return path
