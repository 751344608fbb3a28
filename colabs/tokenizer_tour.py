# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The vision tokenizer: codes, scales and the shared index
#
# What this shows: the multi-scale residual VQ tokenizer of the shipped
# bundle (`pretrained/shapes-cpu`: pixel branch, 128 codes, scales 1x1 ...
# 8x8) turning held-out images into 155 codes and back; what each scale adds
# (the previews next-scale generation shows); how the codebook is used; and,
# on a small randomly initialised dual tokenizer, how one index addresses a
# semantic and a pixel vector at once (NextFlow's shared-index dual codebook).
# Every model line imports from `nextflow_jax`.
#
# How long: under a minute on a 2-core CPU.
#
# Setup: run from a clone of the repository after `pip install -e .`.

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np
from IPython.display import display
from PIL import Image

from nextflow_jax import metrics
from nextflow_jax.evals import shapes_geneval
from nextflow_jax.sampling.generator import Generator
from nextflow_jax.tokenizer.model import VisionTokenizer

BUNDLE = next(p for p in ("pretrained/shapes-cpu", "../pretrained/shapes-cpu")
              if os.path.isdir(p))
gen = Generator.from_pretrained(BUNDLE)
tok, tok_params, schedule = gen.tokenizer, gen.tokenizer_params, gen.schedule
print("schedule:", schedule, "codebook:", tok.codebook_size,
      "latent widths (per branch):", tok.branch_dims)

# %% [markdown]
# ## Encode and decode held-out images
# `held_out_examples` regenerates scenes no training image contains.

# %%
examples = shapes_geneval.held_out_examples(6, "32px_8k")
images = np.stack([e["image"] for e in examples])
codes = gen.encode(images)  # per scale, (B, h, w) int32
print("codes per image:", sum(c[0].size for c in codes))
recon = gen.decode(codes, schedule)
display(Image.fromarray(metrics.labeled_grid(
    [list(images), list(recon)], ["held-out images", "reconstructions"],
    tile=96)))

# %% [markdown]
# ## What each scale adds
# Decoding the first k scales gives the image after k steps of next-scale
# generation. For these 8-12 px shapes the last (8x8) scale decides the shape
# (experiments/README.md measures it).

# %%
rows = [[gen.decode([c[i:i + 1] for c in codes[:k]], schedule)[0]
         for k in range(1, len(schedule) + 1)] for i in range(3)]
display(Image.fromarray(metrics.labeled_grid(
    rows, [f"scales 1..{len(schedule)}"] * 3, tile=64)))

# %% [markdown]
# ## Codebook use
# How often each code appears at each scale in these images, and the
# perplexity (exp of the entropy): the number of equally used codes with the
# same spread.

# %%
more = np.stack([e["image"] for e in shapes_geneval.held_out_examples(
    64, "32px_8k")])
for k, c in enumerate(gen.encode(more)):
  counts = np.bincount(c.ravel(), minlength=tok.codebook_size)
  p = counts[counts > 0] / counts.sum()
  print(f"scale {k + 1} {schedule[k]}: {np.count_nonzero(counts):3d} codes "
        f"used, perplexity {np.exp(-(p * np.log(p)).sum()):6.1f}")

# %% [markdown]
# ## One index, two vectors: the dual codebook
# With the semantic branch on, each code's row holds a semantic part and a
# pixel part; the quantiser picks the index minimising
# d_semantic + w * d_pixel, so one index stands for both. (A small random
# tokenizer here; the shipped one is pixel-only.)

# %%
dual = VisionTokenizer(codebook_size=16, channels=16, channel_mults=(1, 2),
                       patch_size=4,
                       num_res_blocks=1, attention=False, num_groups=8,
                       semantic_dim=8, vit_width=32, vit_depth=1, vit_heads=2,
                       vit_mlp_dim=64, semantic_out_dim=32)
small_schedule = ((1, 1), (2, 2), (4, 4))
x = jnp.asarray(images[:2], jnp.float32) / 127.5 - 1
params = dual.init({"params": jax.random.key(0),
                    "dropout": jax.random.key(1)}, x, small_schedule)
table = dual.apply(params, method=dual.code_vectors)
print("code table:", table.shape, "= semantic", dual.branch_dims[0],
      "+ pixel", dual.branch_dims[1])
index = dual.apply(params, x, small_schedule, method=dual.encode)
print("indices of the 4x4 scale, image 0:\n", np.asarray(index[-1][0]))
print("code", int(index[-1][0, 0, 0]), "-> semantic part",
      np.round(np.asarray(table[index[-1][0, 0, 0], :8]), 2))
