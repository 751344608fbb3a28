# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Training tasks: extracted-code records -> documents of text and images.

Each task turns one record written by `trainers/extract.py` (text fields +
per-scale `inputs`/`targets` codes) into a list of `sequences.Text` /
`sequences.Image` parts; `sequences.build` lays them out. Supervision
(`loss`) follows what the model should learn to produce:

  t2i         <bos> caption | image* <eos>           (caption: `prompt_loss`,
                                                      <eos>: `t2i_eos_loss`)
  caption     <bos> image | caption* <eos>*          (image-to-text)
  vqa         <bos> image | <user> question <assistant> | answer* <eos>*
  edit        <bos> image | instruction | edited image* <eos>*
  interleaved <bos> caption* image* instruction* edited image* <eos>*
  video       <bos> motion caption | <frame> frame_1* <frame> frame_2* ...
  text        <bos> text* <eos>*   (questions and answers of the record)

(* = supervised.) The `<eos>` that ends a t2i document is not supervised by
default: with the caption dropped for CFG, `<bos> image <eos>` would teach
the model to end right after an image, which is exactly where a caption
starts (`<bos> image caption`), and greedy captioning then writes nothing
(measured: P(<eos>) 0.24 > P("a") 0.23 after 627 steps of the cpu preset).
The image schedule, not `<eos>`, ends image generation. Prompt variants
(`prompt_variants`, shapes records only): with that probability a t2i
caption is replaced by the prompt of a GenEval category the record's scene
satisfies, drawn uniformly ("a triangle", "three crosses", "a circle left
of a square", ...; `shapes_grammar.scene_prompts`), so the model learns
prompts that leave attributes open. Classifier-free guidance: with
probability
`condition_dropout` the text condition of t2i / edit / video is replaced by
nothing (the unconditional branch at sampling time is the empty prompt).
A task needs its fields; `TaskBuilder` raises a clear error naming the
record when they are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from nextflow_jax.data import sequences as seq
from nextflow_jax.data import shapes
from nextflow_jax.data import shapes_grammar as grammar
from nextflow_jax.text import tokenizer as text_tokenizer
from nextflow_jax.text import vocab

FRAME_ID = vocab.SPECIAL_IDS["<frame>"]
TASKS = ("t2i", "caption", "vqa", "edit", "interleaved", "video", "text")
REQUIRED = {
    "t2i": ("caption", "image.targets"),
    "caption": ("caption", "image.targets"),
    "vqa": ("questions", "answers", "image.targets"),
    "edit": ("edit_instruction", "image.targets", "edited_image.targets"),
    "interleaved": ("caption", "edit_instruction", "image.targets",
                    "edited_image.targets"),
    "video": ("motion_caption", "frames.targets"),
    "text": ("caption",),
}


class TaskBuilder:
  """Builds the parts of one task from a record (tokenizer loaded lazily).

  Args:
    text_tokenizer_path: the sentencepiece model of the data job.
    prompt_loss: supervise the caption of t2i samples (paper: open).
    t2i_eos_loss: supervise the `<eos>` after a t2i image (module
      docstring; paper: open).
    condition_dropout: probability of dropping the text condition.
    prompt_variants: probability of a GenEval-category prompt instead of
      the caption of a shapes t2i sample (module docstring).
  """

  def __init__(self, text_tokenizer_path: str, *, prompt_loss: bool = False,
               t2i_eos_loss: bool = False,
               condition_dropout: float = 0.1, prompt_variants: float = 0.0):
    self.path = text_tokenizer_path
    self.prompt_loss = prompt_loss
    self.t2i_eos_loss = t2i_eos_loss
    self.condition_dropout = condition_dropout
    self.prompt_variants = prompt_variants
    self._tok = None

  def __getstate__(self):
    return {**self.__dict__, "_tok": None}

  def text(self, record: dict[str, Any], s: str) -> list[int]:
    if self._tok is None:
      self._tok = text_tokenizer.load(self.path)
    return self._tok.encode(seq.check_text(s, str(record.get("id"))))

  def parts(self, task: str, record: dict[str, Any],
            rng: np.random.Generator) -> list[seq.Text | seq.Image]:
    """The document of `task` for `record`."""
    missing = [f for f in REQUIRED[task] if f not in record]
    if missing:
      raise ValueError(f"record {record.get('id')}: task {task!r} needs "
                       f"{missing}; it has {sorted(record)}.")
    bos, eos = seq.Text([vocab.BOS_ID], loss=False), seq.Text([vocab.EOS_ID])
    drop = rng.random() < self.condition_dropout
    if task == "t2i":
      prompt = [] if drop else self.text(record, self._t2i_caption(record,
                                                                   rng))
      return [*t2i_prompt(prompt, loss=self.prompt_loss),
              seq.image_from_record(record, "image"),
              seq.Text([vocab.EOS_ID], loss=self.t2i_eos_loss)]
    if task == "caption":
      return [*caption_prompt(seq.image_from_record(record, "image")),
              seq.Text(self.text(record, record["caption"])), eos]
    if task == "vqa":
      i = int(rng.integers(len(record["questions"])))
      question = self.text(record, vqa_question(record["questions"][i]))
      return [*vqa_prompt(seq.image_from_record(record, "image"), question),
              seq.Text(self.text(record, record["answers"][i])), eos]
    if task == "edit":
      instruction = [] if drop else self.text(record,
                                              record["edit_instruction"])
      return [*edit_prompt(seq.image_from_record(record, "image"),
                           instruction),
              seq.image_from_record(record, "edited_image"), eos]
    if task == "interleaved":
      return [bos, seq.Text(self.text(record, record["caption"])),
              seq.image_from_record(record, "image"),
              seq.Text(self.text(record, record["edit_instruction"])),
              seq.image_from_record(record, "edited_image"), eos]
    if task == "video":
      caption = [] if drop else self.text(record, record["motion_caption"])
      frames = [seq.image_from_record(record, "frames", frame=f)
                for f in range(len(record["frames.targets"]))]
      return [*video_prompt(caption, frames[:-1]), frames[-1], eos]
    if task == "text":
      texts = [record["caption"], *record.get("questions", ()),
               *record.get("answers", ())]
      return [bos, seq.Text(self.text(record, " ".join(texts))), eos]
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}.")

  def _t2i_caption(self, record: dict[str, Any],
                   rng: np.random.Generator) -> str:
    """The caption, or (shapes records, `prompt_variants`) a category
    prompt of the record's scene."""
    if not self.prompt_variants or "scene" not in record or (
        rng.random() >= self.prompt_variants):
      return record["caption"]
    variants = grammar.scene_prompts(shapes.Scene.from_json(record["scene"]))
    categories = sorted(set(variants) - {grammar.FULL})
    if not categories:  # e.g. "two red circles left of a blue square"
      return record["caption"]
    return variants[categories[int(rng.integers(len(categories)))]]


# Prompts: the part of each task's document before what the model writes.
# The sampler builds its prompts with these same functions, so sampling
# sees exactly the layout that training saw.


def t2i_prompt(prompt: Sequence[int], loss: bool = False) -> list[seq.Text]:
  """<bos> caption (the image follows)."""
  return [seq.Text([vocab.BOS_ID, *prompt], loss=loss)]


def caption_prompt(image: seq.Image) -> list[seq.Text | seq.Image]:
  """<bos> image (its caption follows)."""
  return [seq.Text([vocab.BOS_ID], loss=False), context(image)]


def vqa_question(question: str) -> str:
  return f"<user> {question} <assistant>"


def vqa_prompt(image: seq.Image, question: Sequence[int]
               ) -> list[seq.Text | seq.Image]:
  """<bos> image <user> question <assistant> (the answer follows)."""
  return [*caption_prompt(image), seq.Text(question, loss=False)]


def edit_prompt(image: seq.Image, instruction: Sequence[int]
                ) -> list[seq.Text | seq.Image]:
  """<bos> source image instruction (the edited image follows)."""
  return [*caption_prompt(image), seq.Text(instruction, loss=False)]


def video_prompt(caption: Sequence[int], frames: Sequence[seq.Image]
                 ) -> list[seq.Text | seq.Image]:
  """<bos> caption (<frame> frame)* <frame> (the next frame follows)."""
  parts: list[seq.Text | seq.Image] = [
      seq.Text([vocab.BOS_ID, *caption], loss=False)]
  for frame in frames:
    parts += [seq.Text([FRAME_ID]), frame]
  return parts + [seq.Text([FRAME_ID])]


def context(image: seq.Image) -> seq.Image:
  """The same codes as an unsupervised (context) image."""
  return seq.Image(image.inputs, image.targets, loss=False)


class BuildSequence(grain.transforms.RandomMap):
  """Grain transform: record -> laid-out (unpadded) sequence of one task.

  The task is drawn per record with `task_weights` (tasks whose fields the
  record lacks are skipped). Deterministic given Grain's per-record rng.
  """

  def __init__(self, builder: TaskBuilder, tasks: Sequence[str],
               task_weights: Sequence[float], layout: seq.Layout,
               codebook_size: int):
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or len(tasks) != len(task_weights) or not tasks:
      raise ValueError(f"tasks {list(tasks)} with weights "
                       f"{list(task_weights)}: give one positive weight per "
                       f"task from {TASKS}.")
    self.builder, self.tasks = builder, tuple(tasks)
    self.weights = np.asarray(task_weights, np.float64)
    self.layout, self.codebook_size = layout, codebook_size

  def random_map(self, record: dict[str, Any],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    usable = np.array([all(f in record for f in REQUIRED[t])
                       for t in self.tasks])
    if not usable.any():
      raise ValueError(f"record {record.get('id')} has none of the fields "
                       f"of tasks {self.tasks}; it has {sorted(record)}.")
    p = self.weights * usable
    task = self.tasks[int(rng.choice(len(self.tasks), p=p / p.sum()))]
    return seq.build(self.builder.parts(task, record, rng), self.layout,
                     codebook_size=self.codebook_size,
                     task_id=TASKS.index(task))
