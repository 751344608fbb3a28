# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Trains the dual-codebook multi-scale residual VQ tokenizer.

Semantic ViT branch + pixel CNN branch on one shared index (TokenFlow /
NextFlow), multi-scale residual quantisation over `tokenizer.scales`, losses
in `config.loss`; see nextflow_jax/trainers/tokenizer.py.

  # unit-test size, seconds:
  python -m nextflow_jax.main --config=configs/tokenizer.py:mu --workdir=/tmp/tok
  # 2-core CPU demo, 64 px shapes + Twemoji, stops after 20 minutes:
  python -m nextflow_jax.main --config=configs/tokenizer.py:cpu --workdir=runs/tok
  # the same, pixel branch only (dual-vs-single comparison, stage 1):
  python -m nextflow_jax.main --config=configs/tokenizer.py:cpu_pixel --workdir=runs/tok_pix
  # 256 px, the paper's first 12 scales, for a GPU/TPU host:
  python -m nextflow_jax.main --config=configs/tokenizer.py:256 --workdir=runs/tok256 \
      --config.data.sources=array_record:/data/my_images

Recipe stages: `stage=pixel` (with `tokenizer.use_semantic=False`), then
`stage=joint,init_from=<pixel workdir>`, then
`stage=decoder,init_from=<joint workdir>,tokenizer.decoder_channels=...`.
"""

import ml_collections

from nextflow_jax import config_lib


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "tokenizer"
  c.seed = 0
  c.stage = "joint"  # pixel | joint | decoder
  c.init_from = ""  # workdir of the previous stage

  c.data = ml_collections.ConfigDict()
  c.data.sources = ("shapes/64px", "twemoji/64px")
  c.data.weights = (1.0, 1.0)
  c.data.data_dir = ""
  c.data.split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 64
  c.data.max_text_len = 32
  c.data.global_batch_size = 16
  # The trainer appends tokenize(...) for the contrastive objective and
  # keep(...) of the fields the step uses.
  c.data.transforms = "check_image|resize({image_size})|to_float"
  c.data.num_threads = 2
  c.data.num_workers = 0
  c.data.prefetch = 4

  c.text = ml_collections.ConfigDict()
  c.text.vocab_size = 1024
  c.text.model_type = "bpe"

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.scales = "1,2,3,4,5,6,8"
  c.tokenizer.codebook_size = 1024
  c.tokenizer.channels = 32
  c.tokenizer.channel_mults = (1, 2, 2, 4)  # 8x downsampling
  # Space-to-depth stem / pixel-shuffle head (1 = none); the downsampling
  # is patch_size * 2 ** (len(channel_mults) - 1).
  c.tokenizer.patch_size = 1
  c.tokenizer.num_res_blocks = 1
  c.tokenizer.attention = False
  c.tokenizer.num_groups = 16
  c.tokenizer.decoder_channels = 0  # 0 = channels
  c.tokenizer.decoder_num_res_blocks = 0  # 0 = num_res_blocks
  c.tokenizer.pixel_dim = 8
  c.tokenizer.use_semantic = True
  c.tokenizer.semantic_dim = 32
  c.tokenizer.vit_width = 96
  c.tokenizer.vit_depth = 2
  c.tokenizer.vit_heads = 3
  c.tokenizer.vit_mlp_dim = 192
  c.tokenizer.semantic_decoder_depth = 1
  c.tokenizer.semantic_out_dim = 96
  c.tokenizer.pixel_weight = 1.0
  c.tokenizer.normalize = True
  c.tokenizer.upsample_method = "bicubic-pytorch"
  c.tokenizer.num_phi = 0
  c.tokenizer.beta = 0.25
  c.tokenizer.scale_drop_prob = 0.5
  c.tokenizer.scale_drop_fraction = 0.5
  c.tokenizer.use_entropy_loss = False
  c.tokenizer.dtype = "float32"
  c.tokenizer.param_dtype = "float32"

  c.semantic = ml_collections.ConfigDict()
  c.semantic.objective = "contrastive"  # contrastive | teacher
  c.semantic.text_width = 96
  c.semantic.text_depth = 2
  c.semantic.text_heads = 3
  c.semantic.teacher_checkpoint = ""  # Orbax params of a ViTEncoder
  c.semantic.teacher_width = 96
  c.semantic.teacher_depth = 2
  c.semantic.teacher_heads = 3
  c.semantic.teacher_mlp_dim = 192

  c.disc = ml_collections.ConfigDict()
  c.disc.channels = 32
  c.disc.num_layers = 2
  c.disc.num_groups = 8

  c.loss = ml_collections.ConfigDict()
  c.loss.recon_kind = "l1"
  c.loss.recon_weight = 1.0
  c.loss.perceptual_weight = 0.1
  c.loss.gan_weight = 0.05
  c.loss.gan_start_step = 400
  c.loss.codebook_weight = 1.0
  c.loss.entropy_weight = 0.0
  c.loss.semantic_weight = 0.1

  c.codes = ml_collections.ConfigDict()
  c.codes.ema_decay = 0.99  # use frequency (and k-means codebook) EMA
  # "gradient": the codebook loss trains the codebook; "kmeans": each code
  # is the EMA mean of the residuals it quantised (no codebook loss).
  c.codes.codebook_update = "gradient"
  c.codes.dead_threshold = 0.03  # x uniform frequency
  c.codes.restart_every_steps = 100  # 0 = never
  # Autoencoder warm-up: the decoder reads the continuous latent for this
  # many steps, then every code is seeded from residuals (0 = off).
  c.codes.autoencoder_steps = 0

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 3e-4
  c.optim.warmup_steps = 200
  c.optim.end_lr_ratio = 0.1
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.weight_decay = 0.0
  c.optim.grad_clip = 1.0
  c.disc_optim = c.optim.copy_and_resolve_references()

  c.sharding = ml_collections.ConfigDict()
  c.sharding.mesh = (-1, 1, 1)
  c.sharding.rules = "dp"
  c.sharding.rule_overrides = ()

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 100_000
  c.train.max_minutes = 20.0  # stop (and checkpoint) after this; 0 = off
  c.train.log_every_steps = 50
  c.train.ckpt_every_steps = 500
  c.train.eval_every_steps = 1000
  c.train.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 32
  c.eval.num_batches = 12  # 384 held-out images at batch 32; 0 = no eval
  c.eval.num_samples = 8
  # Prompt-following ceiling: shapes-GenEval of this many reconstructed
  # held-out shapes images (evals/shapes_geneval.py); 0 = off.
  c.eval.geneval_images = 96
  return c


def _mu(c):
  c.data.sources = ("shapes/32px", "twemoji/32px")
  c.data.image_size = 32
  c.data.global_batch_size = 8
  c.text.vocab_size = 512
  c.tokenizer.scales = "1,2,4"
  c.tokenizer.codebook_size = 64
  c.tokenizer.channels = 16
  c.tokenizer.num_groups = 8
  c.tokenizer.vit_width = 32
  c.tokenizer.vit_depth = 1
  c.tokenizer.vit_heads = 2
  c.tokenizer.vit_mlp_dim = 64
  c.tokenizer.semantic_out_dim = 32
  c.semantic.text_width = 32
  c.semantic.text_depth = 1
  c.semantic.text_heads = 2
  c.semantic.teacher_width = 32
  c.semantic.teacher_depth = 1
  c.semantic.teacher_heads = 2
  c.semantic.teacher_mlp_dim = 64
  c.disc.channels = 16
  c.loss.gan_start_step = 2
  c.codes.restart_every_steps = 2
  c.optim.warmup_steps = 1
  c.disc_optim.warmup_steps = 1
  c.train.num_steps = 4
  c.train.max_minutes = 0.0
  c.train.log_every_steps = 2
  c.train.ckpt_every_steps = 2
  c.train.eval_every_steps = 4
  c.eval.batch_size = 8
  c.eval.num_batches = 2
  c.eval.num_samples = 4
  c.eval.geneval_images = 8


def _cpu(c):
  del c  # The base is the CPU demo.


def _cpu_pixel(c):
  c.stage = "pixel"
  c.tokenizer.use_semantic = False
  c.loss.semantic_weight = 0.0


def _256(c):
  c.data.image_size = 256
  c.data.global_batch_size = 256
  c.data.max_text_len = 64
  c.text.vocab_size = 8192
  c.tokenizer.scales = "1,2,3,4,5,6,7,8,10,12,14,16"  # paper, 1:1, 256 px
  c.tokenizer.codebook_size = 16384
  c.tokenizer.channels = 128
  c.tokenizer.channel_mults = (1, 1, 2, 2, 4)  # 16x
  c.tokenizer.num_res_blocks = 2
  c.tokenizer.attention = True
  c.tokenizer.num_groups = 32
  c.tokenizer.vit_width = 768
  c.tokenizer.vit_depth = 12
  c.tokenizer.vit_heads = 12
  c.tokenizer.vit_mlp_dim = 3072
  c.tokenizer.semantic_decoder_depth = 3
  c.tokenizer.semantic_out_dim = 768
  c.tokenizer.dtype = "bfloat16"
  c.semantic.text_width = 512
  c.semantic.text_depth = 6
  c.semantic.text_heads = 8
  c.disc.channels = 64
  c.disc.num_layers = 3
  c.disc.num_groups = 32
  c.loss.perceptual_weight = 1.0
  c.loss.gan_weight = 0.5
  c.loss.gan_start_step = 20_000
  c.optim.lr = 1e-4
  c.optim.weight_decay = 0.05
  c.disc_optim.lr = 1e-4
  c.sharding.mesh = (1, -1, 1)
  c.sharding.rules = "fsdp"
  c.train.max_minutes = 0.0
  c.train.ckpt_every_steps = 2000
  c.train.eval_every_steps = 5000


def _shapes32(c):
  """The shapes32 recipe's tokenizer (experiments/shapes_pipeline.py):
  32 px shapes, pixel branch, 4x downsampling by a space-to-depth stem (the
  same 8x8 grid and 155 tokens as 64 px at 8x), plain L2 codes learned by
  k-means after an autoencoder warm-up (experiments/README.md)."""
  _cpu_pixel(c)
  # 512 training images are enough: it reconstructs the 500 held-out scenes
  # of shapes/32px_8k (which the recipe's model trains on) at 0.735.
  c.data.sources = ("shapes/32px",)
  c.data.weights = (1.0,)
  c.data.image_size = 32
  c.tokenizer.patch_size = 2
  c.tokenizer.channel_mults = (1, 2)
  c.tokenizer.channels = 64
  c.tokenizer.normalize = False
  c.tokenizer.scale_drop_prob = 0.0
  c.codes.codebook_update = "kmeans"
  c.codes.autoencoder_steps = 600
  c.loss.gan_start_step = 1_000_000  # no GAN
  c.optim.lr = 1e-3
  c.train.num_steps = 4000
  c.train.max_minutes = 0.0
  c.train.eval_every_steps = 1000


PRESETS = {"mu": _mu, "cpu": _cpu, "cpu_pixel": _cpu_pixel,
           "shapes32": _shapes32,
           "256": _256}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.from_presets(arg, _base, PRESETS, default="cpu")
