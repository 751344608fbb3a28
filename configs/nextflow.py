# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Pretrains the unified NextFlow model on extracted codes.

One decoder (Qwen2.5 shape) reads and writes text by next token and images
by next scale; see nextflow_jax/trainers/pretrain.py. It reads the shards of
configs/extract.py (`data.codes_dir` = that job's --workdir), which also
name the tokenizer (schedule, codebook, text tokenizer).

  # unit-test size:
  python -m nextflow_jax.main --config=configs/nextflow.py:mu \
      --workdir=/tmp/nf --config.data.codes_dir=/tmp/codes
  # 2-core CPU demo on the embedded data:
  python -m nextflow_jax.main --config=configs/nextflow.py:cpu \
      --workdir=runs/nextflow --config.data.codes_dir=runs/codes
  # Qwen2.5-1.5B / -7B shapes on a GPU/TPU slice (bf16, FSDP), starting
  # from Qwen2.5-VL-7B's weights (convert once, nextflow_jax/convert/qwen.py):
  python -m nextflow_jax.convert.qwen --hf_dir=Qwen2.5-VL-7B-Instruct \
      --output=runs/qwen7b --mesh=1,-1,1 --rules=fsdp --param_dtype=float32
  python -m nextflow_jax.main --config=configs/nextflow.py:7b \
      --config.init_from=runs/qwen7b ...
  # The raster-order baseline: single-scale codes of the same tokenizer
  # (rate 0: plain teacher forcing), then the same model in raster order:
  python -m nextflow_jax.main --config=configs/extract.py:cpu \
      --workdir=runs/codes_raster --config.tokenizer_workdir=runs/tok \
      --config.extract.schedule=8 --config.extract.rate=0
  python -m nextflow_jax.main --config=configs/nextflow.py:cpu \
      --workdir=runs/raster --config.data.codes_dir=runs/codes_raster \
      --config.layout.image_order=raster
"""

import ml_collections

from nextflow_jax import config_lib


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = "pretrain"
  c.seed = 0
  # A Qwen conversion (python -m nextflow_jax.convert.qwen --output=...) to
  # start the decoder from; its conversion.json gives the model section.
  c.init_from = ""

  c.data = ml_collections.ConfigDict()
  c.data.codes_dir = ""  # required: --workdir of configs/extract.py
  # Text tokenizer file; "": the init_from conversion's tokenizer.json, else
  # the tokenizer workdir's sentencepiece model.
  c.data.text_tokenizer = ""
  c.data.split = "train"
  c.data.eval_split = "test"
  c.data.seq_len = 512
  c.data.global_batch_size = 8
  c.data.packing = "first_fit"  # or "none" (one document per row)
  c.data.num_packing_bins = 8
  c.data.tasks = ("t2i", "caption", "vqa", "edit", "interleaved", "text")
  c.data.task_weights = (4.0, 1.0, 1.0, 1.0, 1.0, 1.0)
  c.data.condition_dropout = 0.1  # CFG: drop the text condition
  c.data.prompt_loss = False  # supervise t2i captions too
  c.data.t2i_eos_loss = False  # supervise <eos> after t2i images (tasks.py)
  # Shapes t2i captions replaced by a GenEval-category prompt of the scene
  # ("a triangle", "three crosses", ...) with this probability (tasks.py).
  c.data.prompt_variants = 0.0
  c.data.num_threads = 2
  c.data.num_workers = 0
  c.data.prefetch = 4

  c.layout = ml_collections.ConfigDict()
  c.layout.rope_range = 64.0  # C of the multi-scale 3-D RoPE
  c.layout.alpha = 0.0  # scale reweighting (paper: 0.9 from 512 px on)
  c.layout.context_final_block = False
  # "raster": the baseline writing one token at a time in raster order; it
  # needs single-scale codes (configs/extract.py, extract.schedule).
  c.layout.image_order = "next_scale"

  c.model = ml_collections.ConfigDict()
  c.model.text_vocab_size = 1024  # >= the text tokenizer's size
  c.model.num_layers = 4
  c.model.width = 256
  c.model.num_heads = 4
  c.model.num_kv_heads = 2
  c.model.head_dim = 64
  c.model.mlp_dim = 704
  c.model.rope_theta = 1_000_000.0
  c.model.mrope_sections = ()  # () = scale (16, 24, 24) to head_dim
  # Interleaved RoPE frequencies; False: Qwen2.5-VL's contiguous layout, in
  # which the column stream is too slow to tell columns apart (model/rope.py).
  c.model.mrope_interleaved = True
  c.model.qkv_bias = True
  c.model.norm_eps = 1e-6  # RMSNorm epsilon (Qwen2.5: 1e-6)
  c.model.max_scales = 18
  c.model.shared_head = False  # True: the paper's single head
  # "xla" | "blocked" (online softmax over key blocks, any backend: long
  # sequences) | "cudnn" (GPU) | "pallas" (TPU flash kernel; block a
  # multiple of 128); model/layers.py.
  c.model.attention = "xla"
  c.model.attention_block = 512
  c.model.scan_layers = True
  c.model.remat_policy = "none"
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"

  c.loss = ml_collections.ConfigDict()
  c.loss.text_weight = 1.0
  c.loss.visual_weight = 1.0
  c.loss.chunk_size = 256

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.optim.end_lr_ratio = 0.1
  c.optim.b1 = 0.9
  c.optim.b2 = 0.95
  c.optim.weight_decay = 0.05
  c.optim.grad_clip = 1.0
  c.optim.grad_accum_steps = 1

  c.sharding = ml_collections.ConfigDict()
  c.sharding.mesh = (-1, 1, 1)
  c.sharding.rules = "dp"
  c.sharding.rule_overrides = ()

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 3000
  c.train.max_minutes = 0.0
  c.train.log_every_steps = 20
  c.train.ckpt_every_steps = 500
  c.train.eval_every_steps = 500
  c.train.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.num_batches = 4
  return c


def _mu(c):
  c.data.seq_len = 128
  c.data.global_batch_size = 4
  c.data.num_packing_bins = 2
  c.model.text_vocab_size = 512
  c.model.num_layers = 2
  c.model.width = 64
  c.model.num_heads = 4
  c.model.num_kv_heads = 2
  c.model.head_dim = 16
  c.model.mlp_dim = 128
  c.model.max_scales = 4
  c.loss.chunk_size = 64
  c.optim.warmup_steps = 2
  c.train.num_steps = 6
  c.train.log_every_steps = 1
  c.train.ckpt_every_steps = 3
  c.train.eval_every_steps = 6
  c.eval.num_batches = 1


def _cpu(c):
  del c  # The base is the CPU demo.


def _qwen(c, layers, width, heads, kv_heads, mlp, text_vocab_size):
  """Qwen2.5 shapes. Start from the real weights with
  `python -m nextflow_jax.convert.qwen --hf_dir=... --output=Q` and
  `--config.init_from=Q`: text_vocab_size is what the converter makes of
  Qwen's vocabulary (our 11 reserved ids + Qwen's rows, padded to 128s)."""
  c.model.text_vocab_size = text_vocab_size
  c.model.num_layers = layers
  c.model.width = width
  c.model.num_heads = heads
  c.model.num_kv_heads = kv_heads
  c.model.head_dim = 128
  c.model.mlp_dim = mlp
  c.model.mrope_sections = (16, 24, 24)
  c.model.remat_policy = "nothing_saveable"
  c.model.dtype = "bfloat16"
  c.data.seq_len = 4096
  c.data.global_batch_size = 256
  c.data.num_packing_bins = 64
  c.data.tasks = ("t2i", "caption", "vqa", "edit", "interleaved", "video",
                  "text")
  c.data.task_weights = (4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
  c.loss.chunk_size = 512
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 2000
  c.sharding.mesh = (1, -1, 1)
  c.sharding.rules = "fsdp"
  c.train.num_steps = 200_000
  c.train.log_every_steps = 50
  c.train.ckpt_every_steps = 2000
  c.train.eval_every_steps = 2000


def _1b(c):
  # Qwen2.5-1.5B (151,936 rows + 11 -> 152,064).
  _qwen(c, layers=28, width=1536, heads=12, kv_heads=2, mlp=8960,
        text_vocab_size=152_064)


def _7b(c):
  # Qwen2.5-VL-7B / Qwen2.5-7B (152,064 rows + 11 -> 152,192).
  _qwen(c, layers=28, width=3584, heads=28, kv_heads=4, mlp=18944,
        text_vocab_size=152_192)


def _shapes32(c):
  """The shapes32 recipe's model (experiments/shapes_pipeline.py): the cpu
  model on 32 px shapes codes, t2i-heavy, half of the t2i prompts in the
  GenEval categories' wording. Measured before the interleaved RoPE:
  shapes-GenEval 0.034, VQA 0.44 after these 1000 steps
  (experiments/README.md)."""
  c.data.tasks = ("t2i", "caption", "vqa")
  c.data.task_weights = (4.0, 1.0, 1.0)
  c.data.prompt_variants = 0.5
  # 1000 steps: 47 minutes on the 2-core AMD EPYC (0.36 steps/s).
  c.train.num_steps = 1000
  c.train.eval_every_steps = 500


def _shapes32_grid(c):
  """The shapes32_grid recipe's model: the cpu model on the codes of
  configs/extract.py:shapes32_grid, text-to-image at 8:1:1 with captions
  and VQA. With num_steps=4000 and a 65-minute cap (3681 steps on 2 cores)
  it is the shipped pretrained/shapes-cpu: shapes-GenEval 0.102, VQA 0.56
  (experiments/README.md)."""
  _shapes32(c)
  c.data.task_weights = (8.0, 1.0, 1.0)


PRESETS = {"mu": _mu, "cpu": _cpu, "shapes32": _shapes32,
           "shapes32_grid": _shapes32_grid,
           "1b": _1b, "7b": _7b}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.from_presets(arg, _base, PRESETS, default="cpu")
