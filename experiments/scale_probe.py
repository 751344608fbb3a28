# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Which scales decide the image? Tokenizer and model, scale by scale.

For held-out shapes images (their scenes known), scores with the exact
shapes-GenEval scene check (fraction of images whose scene is right):

  preview      the tokenizer's decode of the true codes of the first s
               scales only (what next-scale generation shows after s steps);
  completion   the true codes of the first s scales given to the sampler
               (`Generator.text_to_image(prefix_codes=...)`), the remaining
               scales sampled by the model from the image's caption.

s = 0 is plain text-to-image; s = K is the tokenizer's reconstruction. Where
the completion falls to the t2i score, the model cannot yet produce the
scales after s from the coarser ones.

Then the finest scale alone, the first K - 1 scales true:

  tokenizer  each cell's code replaced by its r-th nearest code to the true
             residual (r = 0 is the encoding): how much the decoder forgives
             a near miss;
  model      the finest scale from the model's (guided) logits: sampled,
             arg-max, or the code nearest to the expected code vector
             sum_j p_j e_j (a "mean" prediction).

  python experiments/scale_probe.py --model=runs/k128/nextflow --num=128
  python experiments/scale_probe.py --model=pretrained/shapes-cpu \
      --dataset=32px_8k_grid4

Writes results/scale_probe_<date>.json with the machine.
"""

import dataclasses
import os
import sys

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from nextflow_jax.data import sequences  # pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax.data import tasks  # pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax.evals import shapes_geneval  # pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax.sampling import generator as generator_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax.sampling import next_scale  # pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax.sampling import state as state_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = flags.DEFINE_string("model", None, "Model bundle or workdir.",
                             required=True)
_NUM = flags.DEFINE_integer("num", 128, "Held-out images.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Rows per sampler call.")
_GUIDANCE = flags.DEFINE_float("guidance", 3.0, "CFG weight.")
_DATASET = flags.DEFINE_string(
    "dataset", "", "shapes config of the held-out scenes (e.g. "
    "32px_8k_grid4 for models trained on its codes); default: the "
    "evaluator's held-out scenes at the model's image size.")
RANKS = (0, 1, 2, 4, 8, 16)


def _quantizer(gen, name, *args, **kwargs):
  """Calls the tokenizer's quantizer method `name`."""
  return gen.tokenizer.apply(
      {"params": gen.tokenizer_params}, *args,
      method=lambda m, *a, **k: getattr(m.quantizer, name)(*a, **k), **kwargs)


def _ranked_final_codes(gen, images, codes):
  """(B, h, w, K) codes of the finest scale, nearest to the true residual
  (given the true coarser scales) first."""
  latent = gen.tokenizer.apply({"params": gen.tokenizer_params},
                               jnp.asarray(images, jnp.float32) / 127.5 - 1,
                               method=gen.tokenizer.encode_latent)
  schedule = gen.schedule
  coarse = _quantizer(gen, "decode", [jnp.asarray(c) for c in codes[:-1]],
                      tuple(schedule[-1]), num_scales=len(schedule))
  distances = _quantizer(gen, "distances", latent - coarse)
  return np.argsort(np.asarray(distances), axis=-1)


def _final_scale_logits(gen, captions, prefix, config):
  """The model's guided logits of the finest scale, the coarser ones given:
  (B, h * w, K)."""
  schedule = gen.schedule
  fn = next_scale.make_generate(
      gen.model, schedule=schedule, layout=gen.layout,
      top_k=(None,) * len(schedule), cfg=True, return_logits=True)
  docs = [sequences.build(tasks.t2i_prompt(gen.text_tokenizer.encode(t)),
                          gen.layout, codebook_size=gen.model.codebook_size)
          for t in list(captions) + [""] * len(captions)]
  fields, time, block = state_lib.stack_prompts(
      docs, max(len(d["tokens"]) for d in docs))
  _, logits = fn(gen.params, fields, time, block,
                 state_lib.row_keys(config.seed, 0, len(captions)),
                 next_scale.knobs_from_config(config, len(schedule)),
                 tuple(jnp.asarray(c) for c in prefix))
  return np.asarray(logits[-1])


def main(argv):
  del argv
  gen = (generator_lib.Generator.from_pretrained(_MODEL.value)
         if os.path.exists(os.path.join(_MODEL.value, "bundle.json")) else
         generator_lib.Generator.from_workdir(_MODEL.value))
  dataset = _DATASET.value or shapes_geneval.held_out_dataset(
      gen.image_size[0])
  examples = shapes_geneval.held_out_examples(_NUM.value, dataset)
  images = np.stack([e["image"] for e in examples])
  scenes = [e["scene"] for e in examples]
  captions = [e["caption"] for e in examples]
  schedule = gen.schedule
  codes = gen.encode(images)
  config = generator_lib.SamplingConfig(seed=0, guidance=_GUIDANCE.value)

  def accuracy(pixels):
    return float(np.mean([shapes_geneval.scene_verdict(p, s).correct
                          for p, s in zip(pixels, scenes)]))

  def batches():
    for start in range(0, len(examples), _BATCH.value):
      yield start, slice(start, start + _BATCH.value)

  rows = []
  for s in range(len(schedule) + 1):
    preview = accuracy(gen.decode(codes[:s], schedule)) if s else 0.0
    pixels = []
    for start, part in batches():
      out = gen.text_to_image(captions[part], dataclasses.replace(
          config, seed=start), prefix_codes=[c[part] for c in codes[:s]])
      pixels.extend(out.pixels)
    rows.append({"given_scales": s, "tokenizer_preview": preview,
                 "model_completion": accuracy(pixels)})
    print(rows[-1], flush=True)

  ranked = _ranked_final_codes(gen, images, codes)
  near_miss = {r: accuracy(gen.decode(codes[:-1] + [ranked[..., r]],
                                      schedule)) for r in RANKS}
  print("finest scale replaced by the r-th nearest code:", near_miss)

  table = np.asarray(gen.tokenizer.apply({"params": gen.tokenizer_params},
                                         method=gen.tokenizer.code_vectors))
  shape = codes[-1].shape[1:]
  finest = {"sampled": [], "arg_max": [], "nearest_to_expected_vector": []}
  for start, part in batches():
    logits = _final_scale_logits(gen, captions[part],
                                 [c[part] for c in codes[:-1]],
                                 dataclasses.replace(config, seed=start))
    probs = np.asarray(jax.nn.softmax(logits, -1))
    expected = probs @ table
    nearest = ((expected[..., None, :] - table) ** 2).sum(-1).argmin(-1)
    rng = np.random.default_rng(start)
    sampled = (probs.cumsum(-1) > rng.random(probs.shape[:-1] + (1,))
               ).argmax(-1)
    for name, chosen in (("sampled", sampled),
                         ("arg_max", logits.argmax(-1)),
                         ("nearest_to_expected_vector", nearest)):
      finest[name].extend(gen.decode(
          [c[part] for c in codes[:-1]] +
          [chosen.reshape(-1, *shape).astype(np.int32)], schedule))
  finest = {k: accuracy(v) for k, v in finest.items()}
  print("finest scale from the model, the coarser ones true:", finest)
  path = common.write_result("scale_probe", {
      "model": _MODEL.value, "num_images": len(examples),
      "dataset": dataset,
      "schedule": [list(hw) for hw in schedule], "guidance": _GUIDANCE.value,
      "rows": rows,
      "finest_scale_rth_nearest_code": {str(r): v
                                        for r, v in near_miss.items()},
      "finest_scale_from_model": finest})
  print("wrote", path)


if __name__ == "__main__":
  app.run(main)
