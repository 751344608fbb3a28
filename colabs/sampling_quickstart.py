# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sampling quickstart: the shipped shapes model
#
# What this shows: how to load a model bundle (`pretrained/shapes-cpu`, a
# 3.6M-parameter NextFlow trained for 65 minutes on 2 CPU cores on 32 px
# shapes), generate images from prompts, compare guidance and temperature
# settings side by side, watch one image form scale by scale, make
# variations that keep an image's coarse scales, and caption, question and
# edit images with the same model. Every model-building line imports from
# `nextflow_jax`.
#
# How long: about two minutes on a 2-core CPU (mostly compilation; each new
# batch shape compiles once), seconds on a Colab GPU.
#
# Be warned: this model draws the prompt's colours, but shapes only roughly
# and counts and positions often wrong; its shapes-GenEval score is 0.10
# (experiments/README.md says where it stands). The calls below are the same
# for a model that draws well.
#
# Setup: run from a clone of the repository, after
# `pip install -e .` (in Colab: clone it, then `!pip install -q -e <clone>`).

# %%
import os

import numpy as np
from IPython.display import display
from PIL import Image

from nextflow_jax import metrics
from nextflow_jax.sampling.generator import Generator, SamplingConfig

BUNDLE = next(p for p in ("pretrained/shapes-cpu", "../pretrained/shapes-cpu")
              if os.path.isdir(p))


def show(rows, labels, tile=96):
  """A grid of uint8 images, one labelled row per entry."""
  display(Image.fromarray(metrics.labeled_grid(rows, labels, tile=tile)))


gen = Generator.from_pretrained(BUNDLE)
print("schedule:", gen.schedule, "image size:", gen.image_size)

# %% [markdown]
# ## Text to image
# One compiled program per batch shape: the prompt is prefilled once, then
# each scale is one transformer call. `SamplingConfig` holds every knob.

# %%
prompts = ["a red circle", "two blue squares", "a yellow triangle left of a green cross"]
out = gen.text_to_image(prompts, SamplingConfig(seed=0, guidance=3.0))
show([[im] for im in out.pixels], prompts)

# %% [markdown]
# ## Knobs side by side
# The same prompts and seed under different guidance and per-scale
# temperatures (coarse to fine, one value per scale). Knob values are traced,
# so changing them reuses the compiled program.

# %%
settings = {
    "no guidance": SamplingConfig(seed=0, guidance=0.0),
    "guidance 3": SamplingConfig(seed=0, guidance=3.0),
    "guidance 6": SamplingConfig(seed=0, guidance=6.0),
    "colder fine scales": SamplingConfig(
        seed=0, guidance=3.0, temperature=(1.0, 1.0, 0.6, 0.3)),
}
columns = {name: gen.text_to_image(prompts, config).pixels
           for name, config in settings.items()}
show([[columns[name][i] for name in settings] for i in range(len(prompts))],
     [f"{p}: " + " | ".join(settings) for p in prompts])

# %% [markdown]
# ## Coarse to fine
# Next-scale generation writes a 1x1 grid, then 2x2, ... up to 8x8; decoding
# the first k scales shows the image after k steps.

# %%
codes = out.codes
strip = [gen.decode([c[:1] for c in codes[:k]], gen.schedule)[0]
         for k in range(1, len(gen.schedule) + 1)]
show([strip], [f"{prompts[0]}: after 1 .. {len(strip)} scales"])

# %% [markdown]
# ## Variations: keep the coarse scales, resample the rest
# `prefix_codes` fixes the first scales (here 2 of 4) of every row.

# %%
same = [prompts[0]] * 4
variations = gen.text_to_image(same, SamplingConfig(seed=1, guidance=3.0),
                               prefix_codes=[np.repeat(c[:1], 4, axis=0)
                                             for c in codes[:2]])
show([list(variations.pixels)], ["four completions of one 2-scale prefix"])

# %% [markdown]
# ## Understanding and editing with the same model
# Captions, answers and edits read the image as codes through the same
# transformer.

# %%
captions = gen.caption(out.pixels)
answers = gen.answer(out.pixels, ["how many circles are there?"] * len(prompts))
edited = gen.edit(out.pixels, ["make the circle blue"] * len(prompts),
                  SamplingConfig(seed=0, guidance=3.0)).pixels
show([[a, b] for a, b in zip(out.pixels, edited)],
     [f"caption: {c} | answer: {a}" for c, a in zip(captions, answers)])

# %% [markdown]
# ## An interleaved document
# The model writes text until it opens an image (`<boi>`), draws it, and
# goes on writing.

# %%
document = gen.interleaved(["a red circle"], max_images=1,
                           config=SamplingConfig(seed=0, guidance=3.0,
                                                 text_max_new_tokens=16))[0]
for part in document:
  if hasattr(part, "pixels"):
    display(Image.fromarray(part.pixels[0]).resize((96, 96), Image.NEAREST))
  else:
    print("text:", part.text)
