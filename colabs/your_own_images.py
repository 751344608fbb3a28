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
# # Your own images: folder -> ArrayRecord -> tokenizer -> codes -> model
#
# What this shows: the path from a folder of captioned images to a NextFlow
# model that samples from them, each step the library's own job run from
# Python (the same jobs `python -m nextflow_jax.main --config=...` runs):
# convert the folder to ArrayRecord shards, train a vision tokenizer (and
# its text tokenizer) on them, extract the multi-scale codes, pretrain, and
# sample. The sizes here are the unit-test (`mu`) presets and a few dozen
# steps, so the samples are noise: the point is the plumbing. For a real run
# keep the same calls and use the `cpu` presets (or the `1b`/`7b` ones on
# accelerators) and more steps; the README lists the commands.
#
# The folder is made here from drawings so that the notebook runs offline;
# point `INPUT_DIR` at yours: images with a `.txt` caption of the same stem,
# or a `captions.jsonl` (see `nextflow_jax/data/convert.py`).
#
# How long: about three minutes on a 2-core CPU, mostly compilation.

# %%
import os
import tempfile

import numpy as np
from IPython.display import display
from PIL import Image, ImageDraw

from nextflow_jax import config_lib
from nextflow_jax import metrics
from nextflow_jax import trainers
from nextflow_jax.data import convert
from nextflow_jax.sampling.generator import Generator, SamplingConfig

ROOT = next(p for p in (".", "..") if os.path.isdir(os.path.join(p, "configs")))
WORK = tempfile.mkdtemp(prefix="own_images_")


def load(config_arg):
  """configs/<file>.py:<preset>, as the main job's --config reads it."""
  return config_lib.load_config(os.path.join(ROOT, "configs", config_arg))


def run(config, workdir):
  """Validates the config up front, then runs its trainer (what main does)."""
  trainers.validate(config, workdir)
  return trainers.get(config.trainer).run(config, workdir)


# %% tags=["parameters"]
TOKENIZER_STEPS = 40  # the test suite runs 4 of each
PRETRAIN_STEPS = 40

# %% [markdown]
# ## A folder of captioned images
# 96 drawings of four kinds of scene, each with a caption file. Replace this
# cell with `INPUT_DIR = "/path/to/your/images"`.

# %%
INPUT_DIR = os.path.join(WORK, "my_images")
os.makedirs(INPUT_DIR)
rng = np.random.default_rng(0)
SKIES = {"day": (110, 170, 240), "dusk": (240, 140, 80), "night": (20, 20, 60)}
for i in range(96):
  sky = list(SKIES)[i % 3]
  image = Image.new("RGB", (48, 48), SKIES[sky])
  draw = ImageDraw.Draw(image)
  ground = int(rng.integers(28, 38))
  water = i % 2 == 0
  draw.rectangle([0, ground, 47, 47], fill=(40, 90, 200) if water else (60, 150, 60))
  x, r = int(rng.integers(8, 40)), int(rng.integers(4, 8))
  body = "moon" if sky == "night" else "sun"
  draw.ellipse([x - r, 14 - r, x + r, 14 + r],
               fill=(240, 240, 220) if body == "moon" else (255, 220, 40))
  image.save(os.path.join(INPUT_DIR, f"{i:03d}.png"))
  with open(os.path.join(INPUT_DIR, f"{i:03d}.txt"), "w") as f:
    f.write(f"a {body} over the {'sea' if water else 'field'} at {sky}")
print(sorted(os.listdir(INPUT_DIR))[:4])

# %% [markdown]
# ## 1. Convert: the folder becomes ArrayRecord shards
# Images are decoded, made RGB, resized (shorter side) and centre-cropped to
# 32 px, and written with their captions; the folder appears only when every
# image was converted. A training config then names it as
# `array_record:<folder>`.

# %%
DATA = os.path.join(WORK, "my_images_32px")
manifest = convert.convert_image_folder(INPUT_DIR, DATA, num_shards=2, image_size=32)
print(manifest["num_records"], "records in", DATA)
SOURCE = f"array_record:{DATA}"

# %% [markdown]
# ## 2. The tokenizers
# The vision tokenizer job also trains the sentencepiece text tokenizer on
# the captions (at most `text.vocab_size` pieces; byte fallback covers any
# character), so that the model's text side speaks your vocabulary. An array_record folder has no splits: the job evaluates
# on the same records.

# %%
tok = load("tokenizer.py:mu")
tok.data.sources = (SOURCE,)
tok.data.weights = (1.0,)
tok.train.num_steps = TOKENIZER_STEPS
tok.train.log_every_steps = 20
tok.train.ckpt_every_steps = TOKENIZER_STEPS
tok.train.eval_every_steps = TOKENIZER_STEPS
TOK_DIR = os.path.join(WORK, "tokenizer")
run(tok, TOK_DIR)
print(sorted(os.listdir(TOK_DIR)))

# %% [markdown]
# ## 3. Extract the codes
# Each image is encoded once into its per-scale codes (with the paper's
# self-correction applied to the inputs); pretraining reads these shards.
# A model bundle works as `tokenizer_workdir` too (e.g. the 32 px
# `pretrained/shapes-cpu`), when your images suit its tokenizer.

# %%
ext = load("extract.py:mu")
ext.tokenizer_workdir = TOK_DIR
ext.data.sources = (SOURCE,)
ext.extract.image_fields = ("image",)
CODES = os.path.join(WORK, "codes")
manifests = run(ext, CODES)
print({split: m["num_records"] for split, m in manifests.items()},
      "schedule", manifests["train"]["schedule"])

# %% [markdown]
# ## 4. Pretrain on text-to-image
# Your captions have no questions or edits, so the task mix is text-to-image
# alone (10% of the prompts dropped for classifier-free guidance).

# %%
nf = load("nextflow.py:mu")
nf.data.codes_dir = CODES
nf.data.tasks = ("t2i",)
nf.data.task_weights = (1.0,)
nf.train.num_steps = PRETRAIN_STEPS
nf.train.log_every_steps = 20
nf.train.ckpt_every_steps = PRETRAIN_STEPS
nf.train.eval_every_steps = PRETRAIN_STEPS
MODEL_DIR = os.path.join(WORK, "nextflow")
report = run(nf, MODEL_DIR)
print({k: v for k, v in report.items() if isinstance(v, (int, float))})

# %% [markdown]
# ## 5. Sample from it
# `Generator.from_workdir` loads the latest checkpoint with the tokenizer
# its codes came from. `python -m nextflow_jax.bundle --workdir=... --output=...`
# exports the run as a bundle for `Generator.from_pretrained`.

# %%
gen = Generator.from_workdir(MODEL_DIR)
prompts = ["a sun over the sea at day", "a moon over the field at night"]
out = gen.text_to_image([p for p in prompts for _ in range(3)],
                        SamplingConfig(seed=0, guidance=3.0))
originals = [np.asarray(Image.open(os.path.join(INPUT_DIR, f)).resize((32, 32)))
             for f in ("000.png", "001.png", "002.png")]
display(Image.fromarray(metrics.labeled_grid(
    [list(out.pixels[:3]), list(out.pixels[3:]), originals],
    prompts + ["three of your images"], tile=96)))
