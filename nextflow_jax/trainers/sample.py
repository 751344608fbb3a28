# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Sampling job (`config.trainer = "sample"`): PNGs from a trained model.

Loads a pretraining workdir or a model bundle (`bundle.py`, e.g.
`pretrained/shapes-cpu`) with `sampling.generator.Generator` and runs each
task of `sample.tasks`, writing into the workdir:

  sampling.json            every sampling knob (regenerate any image)
  <task>/grid.png          images with their prompts written under them
  <task>/NNN.png           each generated image
  <task>/results.json      prompts, inputs, generated text, references
  sample_report.json       seconds per task, the checkpoint step

Inputs: `sample.prompts` / `image_files` / `instructions` / `questions`,
or else the first `num_examples` records of the model's evaluation code
split (their captions, edit instructions, questions, and their images
decoded from the stored codes); a bundle has no code split, so its default
inputs are held-out shapes scenes of its image size
(`shapes_geneval.held_out_examples`). Image files are resized to the
model's image size.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from absl import logging
import ml_collections
import numpy as np
from PIL import Image as PILImage

from nextflow_jax import bundle
from nextflow_jax import checkpoint
from nextflow_jax import config_lib
from nextflow_jax import metrics
from nextflow_jax import scales
from nextflow_jax import workdirs
from nextflow_jax.evals import shapes_geneval
from nextflow_jax.sampling import config as sampling_config
from nextflow_jax.sampling import generator as generator_lib

TASKS = ("t2i", "edit", "caption", "vqa", "video", "interleaved")
PER_SCALE = ("temperature", "top_p")
REPORT_FILE = "sample_report.json"


def to_config_dict(config: sampling_config.SamplingConfig
                   ) -> ml_collections.ConfigDict:
  """SamplingConfig -> ConfigDict (per-scale knobs and top-k as tuples)."""
  values = dataclasses.asdict(config)
  for key in PER_SCALE:
    values[key] = tuple(np.atleast_1d(values[key]).tolist())
  for key in ("top_k", "text_top_k"):
    value = values[key]
    values[key] = () if value is None else tuple(np.atleast_1d(value).tolist())
  return ml_collections.ConfigDict(values)


def from_config_dict(section: ml_collections.ConfigDict
                     ) -> sampling_config.SamplingConfig:
  """The inverse of `to_config_dict` (validated by SamplingConfig)."""
  values = section.to_dict()
  for key in PER_SCALE + ("top_k",):
    value = tuple(values[key])
    values[key] = (None if not value else value[0] if len(value) == 1
                   else value)
  text_top_k = tuple(values["text_top_k"])
  if len(text_top_k) > 1:
    raise ValueError(f"text_top_k={text_top_k}: give one value or ().")
  values["text_top_k"] = text_top_k[0] if text_top_k else None
  return sampling_config.SamplingConfig.from_dict(values)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Up-front checks of the `sample` section (run by `trainers.validate`).

  Raises:
    config_lib.ConfigError: naming the key, the value and what is allowed.
  """
  sample = config.sample
  if not sample.model_workdir or not (
      os.path.isdir(os.path.join(sample.model_workdir, "checkpoints")) or
      _is_bundle(sample.model_workdir)):
    raise config_lib.ConfigError(
        "sample.model_workdir", sample.model_workdir,
        "give the --workdir of a pretrained model (it holds checkpoints/) "
        "or a model bundle (it holds bundle.json).")
  unknown = [t for t in sample.tasks if t not in TASKS]
  if unknown or not sample.tasks:
    raise config_lib.ConfigError("sample.tasks", list(sample.tasks),
                                 f"choose from {list(TASKS)}.")
  if sample.num_examples < 1:
    raise config_lib.ConfigError("sample.num_examples", sample.num_examples,
                                 "must be positive.")
  try:
    from_config_dict(sample.sampling)
  except ValueError as e:  # SamplingConfig names the field first: "top_p=..."
    field = str(e).split("=", 1)[0]
    if field not in sample.sampling:
      raise config_lib.ConfigError("sample.sampling",
                                   sample.sampling.to_dict(), str(e))
    raise config_lib.ConfigError(f"sample.sampling.{field}",
                                 sample.sampling[field], str(e))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs every task of `config.sample.tasks`; returns the report."""
  s = config.sample
  unknown = [t for t in s.tasks if t not in TASKS]
  if unknown:
    raise ValueError(f"sample.tasks has {unknown}; choose from {TASKS}.")
  knobs = from_config_dict(s.sampling)
  os.makedirs(workdir, exist_ok=True)
  if _is_bundle(s.model_workdir):
    gen = generator_lib.Generator.from_pretrained(
        s.model_workdir, max_prompt_len=s.max_prompt_len)
  else:
    gen = generator_lib.Generator.from_workdir(
        s.model_workdir, step=None if s.step < 0 else s.step,
        tokenizer_workdir=s.tokenizer_workdir,
        max_prompt_len=s.max_prompt_len)
  with open(os.path.join(workdir, sampling_config.FILE_NAME), "w") as f:
    f.write(knobs.to_json())
  examples = _eval_examples(s, gen)
  report: dict[str, Any] = {"model_workdir": s.model_workdir,
                            "schedule": scales.format_schedule(gen.schedule),
                            "seconds": {}}
  for task in s.tasks:
    out = os.path.join(workdir, task)
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    results = _TASK_FNS[task](gen, s, knobs, examples, out)
    report["seconds"][task] = round(time.perf_counter() - start, 2)
    with open(os.path.join(out, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    logging.info("%s: %d results in %.1f s -> %s", task, len(results),
                 report["seconds"][task], out)
  with open(os.path.join(workdir, REPORT_FILE), "w") as f:
    json.dump(report, f, indent=2)
  return report


# ----------------------------------------------------------------- inputs


def _is_bundle(folder: str) -> bool:
  return os.path.exists(os.path.join(folder, bundle.CONFIG_FILE))


def _eval_examples(s, gen) -> list[dict[str, Any]]:
  """The first records of the model's eval code split, images decoded (of
  a bundle: held-out shapes scenes of its image size)."""
  if _is_bundle(s.model_workdir):
    if gen.image_size[0] != gen.image_size[1] or gen.image_size[0] not in (
        shapes_geneval.HELD_OUT_DATASETS):
      if s.prompts or s.image_files:
        return []
      raise ValueError(
          f"{s.model_workdir} is a bundle of {gen.image_size} images, which "
          "has no shapes scenes to take default inputs from; pass "
          "sample.prompts (and sample.image_files for image tasks).")
    return [dict(e, pixels=e["image"]) for e in
            shapes_geneval.held_out_examples(
                s.num_examples,
                shapes_geneval.held_out_dataset(gen.image_size[0]))]
  saved = ml_collections.ConfigDict(_saved_config(s.model_workdir))
  sources, _ = workdirs.open_code_sources(saved.data.codes_dir, s.split)
  examples = []
  for record in (sources[0][i] for i in range(min(s.num_examples,
                                                  len(sources[0])))):
    schedule = scales.parse_schedule(record["schedule"])
    codes = scales.split_codes(np.asarray(record["image.targets"]), schedule)
    example = dict(record, pixels=gen.decode([c[None] for c in codes],
                                             schedule)[0])
    if "frames.targets" in record:
      first = scales.split_codes(np.asarray(record["frames.targets"])[0],
                                 schedule)
      example["first_frame"] = gen.decode([c[None] for c in first],
                                          schedule)[0]
    examples.append(example)
  return examples


def _saved_config(workdir: str) -> dict:
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return ckpt.restore_config()
  finally:
    ckpt.close()


def _images(s, gen, examples) -> np.ndarray:
  if not s.image_files and not examples:
    raise ValueError("this task needs input images: pass sample.image_files.")
  if not s.image_files:
    return np.stack([e["pixels"] for e in examples])
  h, w = gen.image_size
  loaded = []
  for path in s.image_files:
    with PILImage.open(path) as image:
      loaded.append(np.asarray(image.convert("RGB").resize((w, h))))
  return np.stack(loaded)


def _texts(given, examples, field, what) -> list[str]:
  if given:
    return list(given)
  texts = [e[field][0] if isinstance(e[field], (list, tuple)) else e[field]
           for e in examples if field in e]
  if not texts:
    raise ValueError(f"the evaluation records have no {field!r}; pass "
                     f"sample.{what}.")
  return texts


def _pair(images, texts, name):
  n = min(len(images), len(texts))
  if len(images) != len(texts):
    logging.warning("%d images and %d %s: using the first %d", len(images),
                    len(texts), name, n)
  return images[:n], texts[:n]


# ------------------------------------------------------------------ tasks


def _t2i(gen, s, knobs, examples, out):
  prompts = _texts(s.prompts, examples, "caption", "prompts")
  result = gen.text_to_image(prompts, knobs)
  _save_each(result.pixels, out)
  metrics.save_png(os.path.join(out, "grid.png"), metrics.labeled_grid(
      [[p] for p in result.pixels], prompts))
  return [{"prompt": p, "image": f"{i:03d}.png"}
          for i, p in enumerate(prompts)]


def _edit(gen, s, knobs, examples, out):
  images, instructions = _pair(
      _images(s, gen, examples),
      _texts(s.instructions, examples, "edit_instruction", "instructions"),
      "instructions")
  result = gen.edit(images, instructions, knobs)
  _save_each(result.pixels, out)
  metrics.save_png(os.path.join(out, "grid.png"), metrics.labeled_grid(
      [[a, b] for a, b in zip(images, result.pixels)], instructions))
  return [{"instruction": t, "image": f"{i:03d}.png"}
          for i, t in enumerate(instructions)]


def _caption(gen, s, knobs, examples, out):
  images = _images(s, gen, examples)
  captions = gen.caption(images, knobs)
  metrics.save_png(os.path.join(out, "grid.png"), metrics.labeled_grid(
      [[im] for im in images], captions))
  refs = [] if s.image_files else [e.get("caption", "") for e in examples]
  return [{"caption": c, **({"reference": refs[i]} if refs else {})}
          for i, c in enumerate(captions)]


def _vqa(gen, s, knobs, examples, out):
  images, questions = _pair(
      _images(s, gen, examples),
      _texts(s.questions, examples, "questions", "questions"), "questions")
  answers = gen.answer(images, questions, knobs)
  metrics.save_png(os.path.join(out, "grid.png"), metrics.labeled_grid(
      [[im] for im in images],
      [f"{q} -> {a}" for q, a in zip(questions, answers)]))
  refs = ([] if s.questions or s.image_files else
          [e["answers"][0] for e in examples if "answers" in e])
  return [{"question": q, "answer": a,
           **({"reference": refs[i]} if refs else {})}
          for i, (q, a) in enumerate(zip(questions, answers))]


def _video(gen, s, knobs, examples, out):
  with_frames = [e for e in examples if "first_frame" in e]
  if not with_frames:
    raise ValueError("the evaluation records have no video frames; the "
                     "video task needs shapes motion records.")
  captions = [e["motion_caption"] for e in with_frames]
  first = np.stack([e["first_frame"] for e in with_frames])
  result = gen.continue_video(captions, first[:, None], s.video_frames,
                              knobs)
  rows = [[f, *frames] for f, frames in zip(first, result.pixels)]
  metrics.save_png(os.path.join(out, "grid.png"),
                   metrics.labeled_grid(rows, captions))
  return [{"caption": c} for c in captions]


def _interleaved(gen, s, knobs, examples, out):
  prompts = _texts(s.prompts, examples, "caption", "prompts")
  docs = gen.interleaved(prompts, s.max_images, knobs)
  results, rows, labels = [], [], []
  for i, (prompt, doc) in enumerate(zip(prompts, docs)):
    texts = [p.text for p in doc if isinstance(p, generator_lib.Text)]
    images = [p.pixels for p in doc if isinstance(p, generator_lib.Images)]
    results.append({"prompt": prompt, "document": [
        p.text if isinstance(p, generator_lib.Text) else "<image>"
        for p in doc]})
    if images:
      rows.append(images)
      labels.append(f"[{i}] {prompt} | " + " | ".join(texts))
  if rows:
    metrics.save_png(os.path.join(out, "grid.png"),
                     metrics.labeled_grid(rows, labels))
  return results


_TASK_FNS = {"t2i": _t2i, "edit": _edit, "caption": _caption, "vqa": _vqa,
             "video": _video, "interleaved": _interleaved}


def _save_each(pixels: np.ndarray, out: str) -> None:
  for i, image in enumerate(pixels):
    metrics.save_png(os.path.join(out, f"{i:03d}.png"), image)
