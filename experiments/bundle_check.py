# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Records what a shipped bundle does, for its regression test.

  python experiments/bundle_check.py --bundle=pretrained/shapes-cpu

Measures, at fixed seeds, one number per path through the bundle, and
writes them to `<bundle>/check.json` with the machine:

  reconstruction   shapes-GenEval of the tokenizer's reconstructions of the
                   first held-out scenes (encoder, quantiser, decoder);
  code_nll         the model's mean negative log-likelihood (nats per cell)
                   of the true codes of held-out images given their
                   captions (embedding, layout, transformer, visual head);
  vqa_accuracy     answers to the held-out images' questions (text path);
  generation       one image for each of `--num_prompts` prompts spread over
                   the prompt set: its shapes-GenEval overall, correct
                   images and mean check fraction (the sampler end to end).

`tests/pretrained_test.py` recomputes them and asserts each stays within a
stated margin of this record, so a change that breaks the sampler, the
tokenizer or the parameter layout fails CI even for a model that draws
poorly. Rerun this script whenever the bundle is re-exported.
"""

import json
import os
import sys
from typing import Any

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top,wrong-import-position
from nextflow_jax import scales
from nextflow_jax.evals import shapes_geneval
from nextflow_jax.rl import grpo
from nextflow_jax.sampling import generator as generator_lib
from nextflow_jax.trainers import grpo as grpo_trainer
# pylint: enable=g-import-not-at-top,wrong-import-position

CHECK_FILE = "check.json"
SETTINGS = {"num_prompts": 32, "seed": 0, "guidance": 3.0,
            "reconstruction_images": 32, "nll_images": 16,
            "vqa_images": 8}

_BUNDLE = flags.DEFINE_string("bundle", "pretrained/shapes-cpu", "Bundle.")


def check_prompts(num: int) -> list[dict]:
  """`num` prompts spread evenly over the prompt set (every category)."""
  prompts = shapes_geneval.load_prompt_set()
  return prompts[::max(1, len(prompts) // num)][:num]


def code_nll(gen: generator_lib.Generator, examples: list[dict]) -> float:
  """Mean NLL (nats per cell) of the held-out images' true codes given
  their captions, teacher forced, no guidance."""
  codes = gen.encode(np.stack([e["image"] for e in examples]))
  seq_len = -(-(64 + scales.token_count(gen.schedule)) // 8) * 8
  batch = grpo_trainer.rollout_batch(gen, [e["caption"] for e in examples],
                                     codes, seq_len)
  logp, _ = jax.jit(lambda p, b: grpo.cell_log_probs(gen.model, p, b))(
      gen.params, batch)
  cells = np.asarray(batch["target_is_visual"] & (batch["segment_ids"] > 0))
  return float(-np.asarray(logp)[cells].mean())


def measure(gen: generator_lib.Generator,
            settings: dict[str, Any]) -> dict[str, Any]:
  """Every number of check.json (see the module docstring)."""
  num = max(settings["reconstruction_images"], settings["nll_images"],
            settings["vqa_images"])
  examples = shapes_geneval.held_out_examples(
      num, shapes_geneval.held_out_dataset(gen.image_size[0]))
  recon = examples[:settings["reconstruction_images"]]
  images = np.stack([e["image"] for e in recon])
  reconstruction = shapes_geneval.score_scenes(
      gen.decode(gen.encode(images), gen.schedule),
      [e["scene"] for e in recon])["overall"]
  pairs = [(e["image"], q, a) for e in examples[:settings["vqa_images"]]
           for q, a in zip(e["questions"], e["answers"])]
  answers = gen.answer(np.stack([p[0] for p in pairs]),
                       [p[1] for p in pairs])
  vqa = float(np.mean([shapes_geneval.answer_matches(a, p[2])
                       for a, p in zip(answers, pairs)]))
  generation = shapes_geneval.evaluate_generator(
      gen, check_prompts(settings["num_prompts"]), images_per_prompt=1,
      config=generator_lib.SamplingConfig(seed=settings["seed"],
                                          guidance=settings["guidance"]))
  return {
      "reconstruction": reconstruction,
      "code_nll": code_nll(gen, examples[:settings["nll_images"]]),
      "vqa_accuracy": vqa,
      "generation": {k: generation[k] for k in (
          "overall", "correct_images", "mean_check_fraction")}}


def main(argv):
  del argv
  gen = generator_lib.Generator.from_pretrained(_BUNDLE.value)
  check = {"settings": SETTINGS, **measure(gen, SETTINGS),
           "machine": common.machine()}
  path = os.path.join(_BUNDLE.value, CHECK_FILE)
  with open(path, "w") as f:
    json.dump(check, f, indent=2)
  print(json.dumps(check, indent=2))
  print("wrote", path)


if __name__ == "__main__":
  app.run(main)
