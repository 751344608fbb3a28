# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The Python API for sampling from a trained NextFlow.

  gen = Generator.from_pretrained("pretrained/shapes-cpu")  # a bundle
  gen = Generator.from_workdir("runs/nextflow")      # or a pretrain workdir
  out = gen.text_to_image(["two red circles"], SamplingConfig(seed=1))
  out.pixels                                         # (B, H, W, 3) uint8
  gen.caption(out.pixels)                            # ["two red circles"]
  gen.edit(out.pixels, ["make the circles blue"])
  gen.answer(images, ["how many circles are there?"])
  gen.continue_video(["a square moves right"], frames, num_frames=2)
  gen.interleaved(["<bos> text that may open images"], max_images=2)

Every task lays its prompt out with the training task's own prompt builder
(`data/tasks.py`), so what the sampler conditions on is what training
showed. Images given as input are tokenized with the tokenizer's top-1
codes; generated images are decoded by the tokenizer's pixel decoder.
Interleaved documents feed generated codes straight back (no re-encoding).

Compiled programs are cached per (task, shapes, static knobs): prompts are
left-padded to a multiple of `PROMPT_BUCKET` positions, so new prompts reuse
the program, and sweeping temperature, top-p or guidance does not
recompile.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nextflow_jax import bundle
from nextflow_jax import metrics
from nextflow_jax import scales
from nextflow_jax import sharding
from nextflow_jax import workdirs
from nextflow_jax.data import sequences
from nextflow_jax.data import tasks
from nextflow_jax.model import nextflow
from nextflow_jax.sampling import config as config_lib
from nextflow_jax.sampling import next_scale
from nextflow_jax.sampling import raster
from nextflow_jax.sampling import state as state_lib
from nextflow_jax.sampling import text as text_lib
from nextflow_jax.text import tokenizer as text_tokenizer_lib
from nextflow_jax.text import vocab
from nextflow_jax.tokenizer import model as tokenizer_model_lib

SamplingConfig = config_lib.SamplingConfig
PROMPT_BUCKET = 64
Codes = list[np.ndarray]  # per scale, (B, h_k, w_k) int32


@dataclasses.dataclass
class Text:
  """Generated text: token ids (stop token excluded) and the decoded text."""
  ids: list[int]
  text: str


@dataclasses.dataclass
class Images:
  """Generated images: uint8 pixels (B, H, W, 3) and per-scale codes."""
  pixels: np.ndarray
  codes: Codes
  schedule: scales.Schedule


class Generator:
  """Samples images and text from a NextFlow model (see module docstring).

  Args:
    model, params: the NextFlow model and its (unboxed) params.
    tokenizer, tokenizer_params: the VisionTokenizer the codes come from.
    text_tokenizer: the sentencepiece tokenizer of the data job.
    schedule: the schedule of the codes the model trained on (default for
      generation; a single scale for a raster-order model).
    layout: the training layout (`sequences.Layout`).
    max_prompt_len: prompt budget in positions: prompts are left-padded to
      it and a longer prompt is an error. 0 (default): pad to the next
      multiple of `PROMPT_BUCKET`, so similar prompts share a program.
    trained_seq_len: the longest document the model trained on (0 =
      unknown); a prompt longer than that is sampled with a warning, since
      the model never saw those positions.

  Raises:
    ValueError: the tokenizer's codebook or code width does not match the
      model's.
  """

  def __init__(self, model: nextflow.NextFlow, params: Any, *,
               tokenizer: tokenizer_model_lib.VisionTokenizer,
               tokenizer_params: Any,
               text_tokenizer: text_tokenizer_lib.TextTokenizer,
               schedule: scales.Schedule, layout: sequences.Layout,
               max_prompt_len: int = 0, trained_seq_len: int = 0):
    if tokenizer.codebook_size != model.codebook_size:
      raise ValueError(f"the tokenizer has {tokenizer.codebook_size} codes "
                       f"but the model was trained on {model.codebook_size}; "
                       "load the tokenizer whose codes trained this model.")
    code_dim = sum(tokenizer.branch_dims)
    if code_dim != model.code_dim:
      raise ValueError(f"the tokenizer's code vectors have width {code_dim} "
                       f"but the model's code embeddings {model.code_dim}; "
                       "load the tokenizer whose codes trained this model.")
    if text_tokenizer.vocab_size > model.text_vocab_size:
      raise ValueError(f"the text tokenizer has {text_tokenizer.vocab_size} "
                       f"ids but the model's text vocabulary is "
                       f"{model.text_vocab_size}.")
    self.model, self.params = model, params
    self.tokenizer, self.tokenizer_params = tokenizer, tokenizer_params
    self.text_tokenizer = text_tokenizer
    self.schedule = tuple(tuple(s) for s in schedule)
    self.layout = layout
    self.max_prompt_len = max_prompt_len
    self.trained_seq_len = trained_seq_len
    self.mesh: jax.sharding.Mesh | None = None
    self.rules: sharding.Rules | None = None
    self._programs: dict[tuple, Any] = {}

  def with_compute_dtype(self, dtype: Any) -> "Generator":
    """A Generator over the same parameters computing in `dtype` (e.g.
    "bfloat16"): projections, activations and the KV cache (keys are cached
    in the compute dtype) take half the memory and bandwidth; RMSNorm,
    softmax and RoPE stay float32 and the heads accumulate in float32.
    The tests bound its log-probabilities against float32 and check that
    sampled images agree on most cells."""
    other = Generator(
        self.model.clone(dtype=jnp.dtype(dtype)), self.params,
        tokenizer=self.tokenizer, tokenizer_params=self.tokenizer_params,
        text_tokenizer=self.text_tokenizer, schedule=self.schedule,
        layout=self.layout, max_prompt_len=self.max_prompt_len,
        trained_seq_len=self.trained_seq_len)
    if self.mesh is not None:
      other.mesh, other.rules = self.mesh, self.rules
    return other

  def shard(self, mesh: jax.sharding.Mesh,
            rules: sharding.Rules) -> "Generator":
    """Places the decoder's parameters on `mesh` by their logical names
    (`sharding.get_rules`: "fsdp", "fsdp_tp", ... as in training) and runs
    every sampling program under that mesh, so that a model too large for
    one device samples on a slice: the KV cache and activations follow the
    same rules through the model's logical constraints. Returns self.

      gen = Generator.from_pretrained(folder).shard(
          sharding.make_mesh((1, 4, 2)), sharding.get_rules("fsdp_tp"))
    """
    example = sequences.example_batch(self.layout, self.model.codebook_size,
                                      8)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      abstract = jax.eval_shape(self.model.init, jax.random.key(0), example)
      shardings = sharding.logical_shardings(abstract, mesh, rules)["params"]
    self.params = jax.device_put(self.params, shardings)
    self.mesh, self.rules = mesh, rules
    self._programs.clear()
    return self

  # ------------------------------------------------------------ loading

  @classmethod
  def from_trained(cls, trained: workdirs.TrainedModel, *,
                   max_prompt_len: int = 0) -> "Generator":
    """A Generator over a loaded model (`workdirs` / `bundle`)."""
    return cls(trained.model, trained.params, tokenizer=trained.tokenizer,
               tokenizer_params=trained.tokenizer_params,
               text_tokenizer=trained.text_tokenizer,
               schedule=trained.schedule, layout=trained.layout,
               max_prompt_len=max_prompt_len,
               trained_seq_len=trained.trained_seq_len)

  @classmethod
  def from_pretrained(cls, folder: str, *,
                      max_prompt_len: int = 0) -> "Generator":
    """Loads a model bundle (`bundle.py`), e.g. "pretrained/shapes-cpu"."""
    return cls.from_trained(bundle.load(folder),
                            max_prompt_len=max_prompt_len)

  @classmethod
  def from_workdir(cls, workdir: str, *, step: int | None = None,
                   tokenizer_workdir: str = "",
                   max_prompt_len: int = 0) -> "Generator":
    """Loads the latest (or `step`) pretraining checkpoint of `workdir`.

    The tokenizer and the default schedule are the ones named by the code
    manifest the model trained on; `tokenizer_workdir` overrides the
    tokenizer (the schedule is then the tokenizer's). A model trained in
    raster order samples with `raster.py`.
    """
    return cls.from_trained(
        workdirs.load_pretrain_run(workdir, step=step,
                                   tokenizer_workdir=tokenizer_workdir),
        max_prompt_len=max_prompt_len)

  # ------------------------------------------------------ pixels, codes

  @property
  def image_size(self) -> tuple[int, int]:
    """(H, W) of input images: the training schedule's final grid."""
    return scales.pixel_size(self.schedule, self.tokenizer.downsample)

  def encode(self, images: np.ndarray) -> Codes:
    """(B, H, W, 3) uint8 or [-1, 1] float images -> top-1 codes per scale."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images have shape {images.shape}; expected "
                       "(B, H, W, 3).")
    if tuple(images.shape[1:3]) != self.image_size:
      raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} but "
                       f"this model's tokenizer reads "
                       f"{self.image_size[0]}x{self.image_size[1]} images "
                       f"(schedule {scales.format_schedule(self.schedule)}); "
                       "resize them first.")
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 127.5 - 1.0
    fn = self._program(("encode",), lambda: jax.jit(functools.partial(
        self.tokenizer.apply, method=self.tokenizer.encode,
        schedule=self.schedule)))
    return [np.asarray(c) for c in fn({"params": self.tokenizer_params},
                                      jnp.asarray(images, jnp.float32))]

  def decode(self, codes: Codes, schedule: scales.Schedule) -> np.ndarray:
    """Per-scale codes -> (B, H, W, 3) uint8 images.

    Raises:
      ValueError: codes of the wrong shape, dtype or outside the codebook
        (checked here, on the host: under `jit` they would decode to NaN).
    """
    schedule = tuple(tuple(s) for s in schedule)
    self.tokenizer.check_indices([np.asarray(c) for c in codes], schedule)
    fn = self._program(("decode", schedule), lambda: jax.jit(
        functools.partial(self.tokenizer.apply, method=self.tokenizer.decode,
                          schedule=schedule)))
    pixels = fn({"params": self.tokenizer_params},
                [jnp.asarray(c) for c in codes])
    return metrics.to_uint8(np.asarray(pixels))

  def _as_image(self, codes: Codes, loss: bool) -> sequences.Image:
    return sequences.Image(codes, codes, loss=loss)

  # ------------------------------------------------------------ tasks

  def text_to_image(self, prompts: Sequence[str],
                    config: SamplingConfig = SamplingConfig(), *,
                    prefix_codes: Codes | None = None) -> Images:
    """One image per prompt.

    `prefix_codes` (per-scale (B, h_k, w_k) codes of the first m scales of
    the schedule, e.g. `encode(images)[:m]`) fixes those scales: only the
    finer ones are sampled, giving variations of a coarse image.
    """
    cond = [tasks.t2i_prompt(self._text(p)) for p in prompts]
    uncond = [tasks.t2i_prompt(self._text(config.negative_prompt))
              for _ in prompts]
    return self._images(cond, uncond, config, prefix_codes=prefix_codes)

  def edit(self, images: np.ndarray, instructions: Sequence[str],
           config: SamplingConfig = SamplingConfig()) -> Images:
    """Edits each image by its instruction (source image, text -> image)."""
    self._check_count(images, instructions, "instructions")
    sources = _rows(self.encode(images))
    cond = [tasks.edit_prompt(self._as_image(s, False), self._text(t))
            for s, t in zip(sources, instructions)]
    uncond = [tasks.edit_prompt(self._as_image(s, False),
                                self._text(config.negative_prompt))
              for s in sources]
    return self._images(cond, uncond, config)

  def continue_text(self, prompts: Sequence[str],
                    config: SamplingConfig = SamplingConfig(), *,
                    bos: bool = True) -> list[str]:
    """Continues each text prompt with text (a language model's job).

    `bos=False` leaves out our `<bos>`, as a model converted from Qwen
    (which has none) reads text (`convert/qwen.py`)."""
    return self._texts([[sequences.Text(
        ([vocab.BOS_ID] if bos else []) + self._text(p), loss=False)]
                        for p in prompts], config)

  def caption(self, images: np.ndarray,
              config: SamplingConfig = SamplingConfig()) -> list[str]:
    """A caption per image."""
    codes = _rows(self.encode(images))
    return self._texts([tasks.caption_prompt(self._as_image(c, False))
                        for c in codes], config)

  def answer(self, images: np.ndarray, questions: Sequence[str],
             config: SamplingConfig = SamplingConfig()) -> list[str]:
    """Answers a question about each image (visual question answering)."""
    self._check_count(images, questions, "questions")
    codes = _rows(self.encode(images))
    return self._texts([tasks.vqa_prompt(
        self._as_image(c, False), self._text(tasks.vqa_question(q)))
                        for c, q in zip(codes, questions)], config)

  def continue_video(self, captions: Sequence[str], frames: np.ndarray,
                     num_frames: int = 1,
                     config: SamplingConfig = SamplingConfig()) -> Images:
    """Generates `num_frames` next frames after the given ones.

    Args:
      captions: a motion caption per video.
      frames: (B, T, H, W, 3) given frames (T >= 0).
      num_frames: frames to generate.
      config: sampling knobs; the unconditional branch drops the caption
        (as `condition_dropout` did in training) and keeps the frames.

    Returns:
      Images with pixels (B, num_frames, H, W, 3) and codes of every frame
      (each a list of (B, h, w) per scale).
    """
    frames = np.asarray(frames)
    if frames.ndim != 5:
      raise ValueError(f"frames have shape {frames.shape}; expected "
                       "(B, T, H, W, 3).")
    self._check_count(frames, captions, "captions")
    given = [[] for _ in captions]
    for t in range(frames.shape[1]):
      for r, c in enumerate(_rows(self.encode(frames[:, t]))):
        given[r].append(self._as_image(c, True))
    cond = [tasks.video_prompt(self._text(c), g)
            for c, g in zip(captions, given)]
    uncond = [tasks.video_prompt(self._text(config.negative_prompt), g)
              for g in given]
    return self._images(cond, uncond, config, num_images=num_frames)

  def interleaved(self, prompts: Sequence[str], max_images: int = 2,
                  config: SamplingConfig = SamplingConfig()
                  ) -> list[list[Text | Images]]:
    """Writes documents of text and images in one pass.

    Each row writes text until `<eos>`, or `<boi>`, which opens an image
    (next-scale sampled, then `<eoi>`), after which its text continues; at
    most `max_images` images per row. Chain of thought before drawing is
    the same loop: prompt with the instruction and let the model write its
    reasoning until it opens the image. With CFG, every image's
    unconditional twin reads `<bos>` + negative prompt + the row's earlier
    images (no text).

    Returns:
      Per row, the generated document: `Text` and `Images` (one image each)
      in order.
    """
    if self.layout.image_order == "raster":
      raise ValueError("interleaved generation needs a next-scale model; "
                       "this one was trained in raster order.")
    cond = [tasks.t2i_prompt(self._text(p)) for p in prompts]
    uncond = [tasks.t2i_prompt(self._text(config.negative_prompt))
              for _ in prompts]
    rows = len(prompts)
    schedule = config.image_schedule(self.schedule)
    cfg = config.uses_guidance
    knobs = next_scale.knobs_from_config(config, len(schedule))
    top_k = config.per_scale("top_k", len(schedule))
    new = config.text_max_new_tokens
    state, hidden = self._prefill(cond + uncond if cfg else cond, max_images
                                  * next_scale.cache_length(0, schedule)
                                  + (max_images + 1) * new)
    keys = state_lib.row_keys(config.seed, 0, rows)
    twins = (lambda x: jnp.concatenate([x, x])) if cfg else (lambda x: x)
    running = np.ones(rows, bool)
    docs: list[list[Any]] = [[] for _ in range(rows)]
    text_phase = functools.partial(self._text_phase, max_new_tokens=new,
                                   top_k=config.text_top_k)
    text_step = self._program(
        ("text", new, config.text_top_k),
        lambda: jax.jit(text_phase, static_argnames=("stop_tokens",)))
    image_step = self._program(
        ("image", schedule, top_k, cfg), lambda: jax.jit(functools.partial(
            self._image_phase, schedule=schedule, top_k=top_k, cfg=cfg)))
    for i in range(max_images + 1):
      stops = tuple(config.stop_tokens) + ((vocab.BOI_ID,) if i < max_images
                                           else ())
      active = np.concatenate([running, np.zeros(rows, bool)]) if cfg else (
          running)
      phase_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2 * i))(keys)  # pylint: disable=cell-var-from-loop
      state, result = text_step(
          self.params, state, hidden, twins(phase_keys), jnp.asarray(active),
          jnp.float32(config.text_temperature),
          jnp.float32(config.text_top_p), stop_tokens=stops)
      tokens, lengths = np.asarray(result["tokens"]), np.asarray(
          result["lengths"])
      stop = np.asarray(result["stop"])[:rows]
      for r in np.nonzero(running)[0]:
        ids = [t for t in tokens[r, :lengths[r]].tolist()
               if t not in stops]
        if ids:
          docs[r].append(Text(ids, self.text_tokenizer.decode(ids)))
      wants_image = running & (stop == vocab.BOI_ID)
      if not wants_image.any():
        break
      image_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2 * i + 1))(keys)  # pylint: disable=cell-var-from-loop
      state, codes, eoi_hidden = image_step(
          self.params, state, image_keys, jnp.asarray(twins(wants_image)),
          knobs)
      codes = [np.asarray(c) for c in codes]
      pixels = self.decode(codes, schedule)
      for r in np.nonzero(wants_image)[0]:
        docs[r].append(Images(pixels[r], [c[r] for c in codes], schedule))
      hidden = jnp.where(jnp.asarray(twins(wants_image))[:, None], eoi_hidden,
                         result["hidden"])
      running = wants_image
    return docs

  # ---------------------------------------------------------- internals

  def _text(self, s: str) -> list[int]:
    return self.text_tokenizer.encode(sequences.check_text(s, "prompt"))

  @staticmethod
  def _check_count(images, texts, name):
    if len(images) != len(texts):
      raise ValueError(f"got {len(images)} images but {len(texts)} {name}; "
                       "give one per image.")

  def _program(self, key: tuple, make):
    if key not in self._programs:
      fn = make()
      if self.mesh is not None:
        fn = functools.partial(self._in_mesh, fn)
      self._programs[key] = fn
    return self._programs[key]

  def _in_mesh(self, fn, *args, **kwargs):
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      return fn(*args, **kwargs)

  def _stack(self, docs_parts: Sequence[list]) -> tuple:
    docs = [sequences.build(p, self.layout,
                            codebook_size=self.model.codebook_size)
            for p in docs_parts]
    longest = max(len(d["tokens"]) for d in docs)
    if self.trained_seq_len and longest > self.trained_seq_len:
      logging.warning(
          "a prompt has %d positions, more than the %d of the longest "
          "document this model trained on (data.seq_len); it samples "
          "positions it never saw, so expect worse output.", longest,
          self.trained_seq_len)
    return state_lib.stack_prompts(docs, self._prompt_len(docs))

  def _prompt_len(self, docs) -> int:
    if self.max_prompt_len:
      return self.max_prompt_len
    longest = max(len(d["tokens"]) for d in docs)
    return -(-longest // PROMPT_BUCKET) * PROMPT_BUCKET

  def _prefill(self, docs_parts, extra: int):
    """A cache with the prompts and room for `extra` more positions."""
    fields, time, block = self._stack(docs_parts)
    max_len = fields["tokens"].shape[1] + extra
    fn = self._program(("prefill", max_len), lambda: jax.jit(
        functools.partial(state_lib.prefill, self.model, max_len=max_len)))
    return fn(self.params, fields, time, block)

  def _images(self, cond, uncond, config: SamplingConfig,
              num_images: int = 1, prefix_codes: Codes | None = None
              ) -> Images:
    """Prompts -> `num_images` images per row (video frames: `<frame>`
    separates consecutive ones), each starting from `prefix_codes` if given.
    """
    schedule = config.image_schedule(self.schedule)
    prefix = tuple(jnp.asarray(c, jnp.int32) for c in prefix_codes or ())
    if prefix and self.layout.image_order == "raster":
      raise ValueError("prefix_codes fix the first scales of next-scale "
                       "sampling; this model samples in raster order.")
    if len(schedule) > self.model.max_scales:
      raise ValueError(f"the schedule has {len(schedule)} scales but the "
                       f"model has scale embeddings for "
                       f"{self.model.max_scales}; use a shorter schedule.")
    cfg = config.uses_guidance
    rows = len(cond)
    knobs = next_scale.knobs_from_config(config, len(schedule))
    top_k = config.per_scale("top_k", len(schedule))
    fields, time, block = self._stack(cond + uncond if cfg else cond)
    keys = state_lib.row_keys(config.seed, 0, rows)
    if self.layout.image_order == "raster":
      self._check_raster(schedule, num_images)
      fn = self._program(("raster", schedule, top_k[0], cfg), lambda: (
          raster.make_generate(self.model, grid=schedule[0],
                               layout=self.layout, top_k=top_k[0], cfg=cfg)))
      codes, _ = fn(self.params, fields, time, block, keys,
                    {k: v[0] for k, v in knobs.items()})
      frames = [[codes]]
    else:
      fn = self._program(("images", schedule, top_k, cfg, num_images),
                         lambda: next_scale.make_generate(
                             self.model, schedule=schedule,
                             layout=self.layout, top_k=top_k, cfg=cfg,
                             num_images=num_images, separator=tasks.FRAME_ID))
      out, _ = fn(self.params, fields, time, block, keys, knobs, prefix)
      frames = [out] if num_images == 1 else out
    codes = [[np.asarray(c) for c in frame] for frame in frames]
    pixels = np.stack([self.decode(c, schedule) for c in codes], 1)
    if num_images == 1:
      return Images(pixels[:, 0], codes[0], schedule)
    return Images(pixels, codes, schedule)

  def _check_raster(self, schedule, num_images: int) -> None:
    if len(schedule) != 1 or num_images != 1:
      raise ValueError(
          "this model was trained in raster order: it samples one image per "
          f"prompt on a single-scale schedule, not {num_images} images on "
          f"{scales.format_schedule(schedule)}. Leave the schedule empty "
          "(the model's own) and use text_to_image or edit.")

  def _image_phase(self, params, state, keys, active, knobs, *, schedule,
                   top_k, cfg):
    state, codes, hidden, _ = next_scale.sample_image(
        self.model, params, state, schedule=schedule, layout=self.layout,
        keys=keys, top_k=top_k, temperature=knobs["temperature"],
        top_p=knobs["top_p"], guidance=knobs["guidance"], cfg=cfg,
        active=active)
    return state, codes, hidden

  def _text_phase(self, params, state, hidden, keys, active, temperature,
                  top_p, *, max_new_tokens, top_k, stop_tokens):
    return text_lib.sample_text(
        self.model, params, state, hidden, keys=keys,
        max_new_tokens=max_new_tokens,
        vocab_size=self.text_tokenizer.vocab_size, stop_tokens=stop_tokens,
        top_k=top_k, temperature=temperature, top_p=top_p, active=active)

  def _texts(self, docs_parts, config: SamplingConfig) -> list[str]:
    new = config.text_max_new_tokens
    fn = self._program(
        ("texts", new, config.text_top_k, tuple(config.stop_tokens)),
        lambda: text_lib.make_generate(
            self.model, max_new_tokens=new,
            vocab_size=self.text_tokenizer.vocab_size,
            stop_tokens=config.stop_tokens, top_k=config.text_top_k))
    fields, time, block = self._stack(docs_parts)
    result = fn(self.params, fields, time, block,
                state_lib.row_keys(config.seed, 0, len(docs_parts)),
                {"temperature": jnp.float32(config.text_temperature),
                 "top_p": jnp.float32(config.text_top_p)})
    tokens, lengths = np.asarray(result["tokens"]), np.asarray(
        result["lengths"])
    return [self.text_tokenizer.decode(
        [t for t in tokens[r, :lengths[r]].tolist()
         if t not in config.stop_tokens]) for r in range(len(docs_parts))]


def _rows(codes: Codes) -> list[Codes]:
  """Per-scale (B, h, w) codes -> per-row lists of (h, w) codes."""
  return [[c[r] for c in codes] for r in range(codes[0].shape[0])]
