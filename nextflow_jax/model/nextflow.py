# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""NextFlow: the unified model around the shared decoder.

  inputs (from `data/sequences.py`)
    text positions   -> token embedding (text vocabulary, incl. <boi>/<eoi>)
    visual positions -> sum_p w_p * E_code[c_p]   (upsampled residual codes;
                        E_code: K x code_dim, initialisable from the
                        tokenizer's codebook) -> connector MLP
    + learnable scale embedding (scale_ids > 0: the scale a block predicts)
    + sinusoidal scale-length embedding of the schedule's number of scales
      (num_scales > 0: <boi> and blocks)
  -> Transformer (Qwen2.5 shape, multi-scale 3-D RoPE, block-causal masks)
  -> heads: dual (default, the design card): a text head over the text
     vocabulary and a visual head over the K codes; or one shared head over
     text + codes (the paper's choice, `shared_head=True`), whose visual
     part starts at id `text_vocab_size` (`text/vocab.py`).

Choices where the paper is silent (fields): connector = 2-layer GELU MLP
(LLaVA / TokenFlow-T2I), scale-length embedding as a transformer-style
sinusoid of the count, <boi> gets the scale-length embedding but no scale
embedding (its input is a text token).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nextflow_jax.model import transformer as transformer_lib

ACT = ("act_batch", "act_len", "act_embed")


def sinusoid(values: jax.Array, width: int) -> jax.Array:
  """Transformer sin/cos embedding of (...,) numbers -> (..., width) f32."""
  half = width // 2
  freqs = np.exp(-np.log(10000.0) * np.arange(half) / max(half, 1))
  angles = values.astype(jnp.float32)[..., None] * jnp.asarray(freqs,
                                                                jnp.float32)
  emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1)
  return jnp.pad(emb, [(0, 0)] * values.ndim + [(0, width - 2 * half)])


class NextFlow(nn.Module):
  """The unified text + image decoder.

  Attributes:
    text_vocab_size: text ids (sentencepiece or Qwen vocabulary).
    codebook_size: K, visual codes.
    code_dim: width of the code embedding table (the tokenizer's latent
      width, e.g. 32 + 8, to initialise it from the codebook).
    num_layers, width, num_heads, num_kv_heads, head_dim, mlp_dim,
      rope_theta, mrope_sections, mrope_interleaved, qkv_bias, norm_eps:
      the decoder (`model/rope.py` on the frequency layout).
    max_scales: largest number of scales of any schedule (scale embeddings
      are 0 = none, 1..max_scales, and max_scales + 1 for context blocks).
    shared_head: one head over text + codes instead of two.
    attention, attention_block: the attention implementation
      (`layers`: "xla", "blocked", "cudnn", "pallas") and the block size of
      "blocked" (keys) and "pallas" (queries and keys).
    scan_layers, remat_policy: see `transformer.Transformer`.
    dtype, param_dtype: compute and parameter dtypes.
  """
  text_vocab_size: int
  codebook_size: int
  code_dim: int
  num_layers: int
  width: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rope_theta: float = 1_000_000.0
  mrope_sections: tuple[int, int, int] | None = None
  mrope_interleaved: bool = True
  qkv_bias: bool = True
  norm_eps: float = 1e-6
  max_scales: int = 18
  shared_head: bool = False
  attention: str = "xla"
  attention_block: int = 512
  scan_layers: bool = True
  remat_policy: str = "none"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def setup(self):
    def init(std, names):
      return nn.with_logical_partitioning(nn.initializers.normal(std), names)

    self.token_embed = self.param("token_embed", init(0.02, ("vocab", "embed")),
                                  (self.text_vocab_size, self.width),
                                  self.param_dtype)
    self.code_embed = self.param("code_embed",
                                 init(1.0, ("codebook", "code_dim")),
                                 (self.codebook_size, self.code_dim),
                                 self.param_dtype)
    dense = lambda n, d, names: nn.Dense(  # pylint: disable=g-long-lambda
        d, dtype=self.dtype, param_dtype=self.param_dtype, name=n,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.xavier_uniform(), names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                               (names[1],)))
    self.connector_in = dense("connector_in", self.width, ("code_dim", "embed"))
    self.connector_out = dense("connector_out", self.width, ("mlp", "embed"))
    self.scale_embed = self.param("scale_embed", init(0.02, (None, "embed")),
                                  (self.max_scales + 2, self.width),
                                  self.param_dtype)
    self.decoder = transformer_lib.Transformer(
        num_layers=self.num_layers, width=self.width,
        num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
        head_dim=self.head_dim, mlp_dim=self.mlp_dim,
        rope_theta=self.rope_theta, mrope_sections=self.mrope_sections,
        mrope_interleaved=self.mrope_interleaved, norm_eps=self.norm_eps,
        qkv_bias=self.qkv_bias,
        attention=self.attention, attention_block=self.attention_block,
        scan_layers=self.scan_layers, remat_policy=self.remat_policy,
        dtype=self.dtype, param_dtype=self.param_dtype)
    head_init = nn.initializers.normal(self.width ** -0.5)
    if self.shared_head:
      self.head = self.param(
          "head", nn.with_logical_partitioning(head_init, ("embed", "vocab")),
          (self.width, self.text_vocab_size + self.codebook_size),
          self.param_dtype)
    else:
      self.text_head = self.param(
          "text_head", nn.with_logical_partitioning(head_init,
                                                    ("embed", "vocab")),
          (self.width, self.text_vocab_size), self.param_dtype)
      self.visual_head = self.param(
          "visual_head", nn.with_logical_partitioning(head_init,
                                                      ("embed", "codebook")),
          (self.width, self.codebook_size), self.param_dtype)

  def embed(self, batch: dict[str, jax.Array]) -> jax.Array:
    """Model inputs (see `sequences.FIELDS`) -> (B, L, width) embeddings."""
    tokens = batch["tokens"]
    text = jnp.take(self.token_embed, tokens, axis=0).astype(self.dtype)
    codes = jnp.take(self.code_embed, batch["visual_codes"], axis=0)
    feats = jnp.einsum("blpc,blp->blc", codes.astype(jnp.float32),
                       batch["visual_weights"].astype(jnp.float32))
    visual = self.connector_out(nn.gelu(self.connector_in(
        feats.astype(self.dtype))))
    x = jnp.where(batch["is_visual"][..., None], visual, text)
    scale_ids = batch["scale_ids"]
    x = x + jnp.where((scale_ids > 0)[..., None],
                      jnp.take(self.scale_embed, scale_ids, axis=0),
                      0.0).astype(self.dtype)
    num_scales = batch["num_scales"]
    x = x + jnp.where((num_scales > 0)[..., None],
                      sinusoid(num_scales, self.width), 0.0).astype(self.dtype)
    return nn.with_logical_constraint(x, ACT)

  def __call__(self, batch: dict[str, jax.Array], *,
               decode: bool = False, kv_len: int | None = None) -> jax.Array:
    """(B, L) sequence inputs -> (B, L, width) final hidden states.

    `decode` and `kv_len`: the KV cache (`transformer.Transformer`).
    """
    ids = batch["tokens"]
    if batch["positions"].shape != ids.shape + (3,):
      raise ValueError(f"positions have shape {batch['positions'].shape}; "
                       f"expected {ids.shape + (3,)}.")
    return self.decoder(self.embed(batch), batch["positions"],
                        batch["segment_ids"], batch["block_ids"],
                        decode=decode, kv_len=kv_len)

  def text_logits(self, hidden: jax.Array) -> jax.Array:
    """(..., width) -> (..., text_vocab_size) float32 logits."""
    kernel = (self.head[:, :self.text_vocab_size] if self.shared_head else
              self.text_head)
    return jnp.einsum("...d,dv->...v", hidden, kernel.astype(self.dtype),
                      preferred_element_type=jnp.float32)

  def visual_logits(self, hidden: jax.Array) -> jax.Array:
    """(..., width) -> (..., codebook_size) float32 logits (visual only)."""
    kernel = (self.head[:, self.text_vocab_size:] if self.shared_head else
              self.visual_head)
    return jnp.einsum("...d,dv->...v", hidden, kernel.astype(self.dtype),
                      preferred_element_type=jnp.float32)

  def shared_logits(self, hidden: jax.Array) -> jax.Array:
    """(..., width) -> (..., text + codes) logits of the shared head."""
    if not self.shared_head:
      raise ValueError("shared_logits needs shared_head=True.")
    return jnp.einsum("...d,dv->...v", hidden, self.head.astype(self.dtype),
                      preferred_element_type=jnp.float32)
