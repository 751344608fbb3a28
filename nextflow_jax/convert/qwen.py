# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Qwen2 / Qwen2.5 / Qwen2.5-VL language models -> NextFlow parameters.

NextFlow initialises its decoder from Qwen2.5-VL-7B (nextflow-method.md
section 2). This reads a Hugging Face checkpoint folder (`config.json` +
safetensors) and returns the parameters of our `NextFlow` with the language
model's weights in it, mapped tensor by tensor:

  embed_tokens (V, D)               -> token_embed rows [R, R + V)
  lm_head (V, D) (or the embedding  -> text_head columns [R, R + V)
    when tie_word_embeddings)
  layers.i.input_layernorm          -> decoder layers attn_norm scale [i]
  layers.i.self_attn.{q,k,v}_proj   -> attn {q,k,v}_kernel [i] (D, heads,
    weight (heads * K, D), bias        K) and {q,k,v}_bias [i] (heads, K)
  layers.i.self_attn.o_proj (D, N K) -> attn o_kernel [i] (N, K, D)
  layers.i.post_attention_layernorm -> mlp_norm scale [i]
  layers.i.mlp.{gate,up,down}_proj  -> mlp {gate,up,down}_kernel [i]
    (transposed)
  norm                              -> decoder final_norm scale

where R = `hf_tokenizer.NUM_RESERVED`: our id = Qwen's id + R, ids below R
are our own tokens (<pad>, <unk>, <bos>, <eos>, <boi>, <eoi>, chat roles,
...). New parameters, recorded by name in `Converted.new_params`:
  * rows [0, R) of the embedding and of the text head, and the rows past
    Qwen's vocabulary up to a multiple of `pad_vocab_multiple` (so the
    vocabulary axis shards evenly): mean-initialised, each to the mean of
    Qwen's rows (the embedding's for the embedding, the head's for the
    head, so a new token starts at the average logit instead of dominating
    or vanishing; the choice of HF `resize_token_embeddings(mean_resizing)`
    without its noise);
  * the visual code embedding (from a tokenizer's codebook when given,
    as pretraining does), the connector, the scale embedding and the visual
    head (or the code columns of a shared head): the model's own
    initialisers, seeded.
Qwen2.5-VL's vision tower (`visual.*`) is skipped: NextFlow sees images
through its own tokenizer. Its mRoPE sections come from the config's
`mrope_section`; a Qwen2 / Qwen2.5 text model gets our default sections,
which leave text positions (t, t, t) exactly 1-D RoPE, as Qwen's.

Everything that does not fit fails loudly, by name: an unsupported model
type or config field (sliding-window attention, RoPE scaling other than
mRoPE, an activation other than SiLU), a tensor we do not map, a missing or
mis-shaped tensor, a shard the index names but the folder lacks. (A head
count that keeps heads x head_dim, e.g. 8 heads of 8 for 4 of 16, leaves
every shape as it was: no converter can tell it from the tensors, and HF
loads such a config just as silently.)

With a mesh, every parameter is born sharded: `jax.make_array_from_callback`
asks each local device for its slice, which is read from the memory-mapped
safetensors shard, so a 7B model never materialises on one device (or on
one host, but for the two mean rows).

  python -m nextflow_jax.convert.qwen --hf_dir=Qwen2.5-VL-7B-Instruct \
      --output=runs/qwen7b [--tokenizer_workdir=runs/tok] [--bundle=...] \
      [--mesh=1,-1,1 --rules=fsdp] [--param_dtype=bfloat16]

writes `output/params/` (Orbax; pretraining's `init_from`), the visual
parameters apart in `output/visual_params/`,
`output/conversion.json` (the `model` config section to train it with, the
new parameters, the source config) and `output/text_tokenizer.json` (when
the folder has Qwen's tokenizer.json). Then:

  python -m nextflow_jax.main --config=configs/nextflow.py:7b \
      --config.init_from=runs/qwen7b \
      --config.data.text_tokenizer=runs/qwen7b/text_tokenizer.json ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import json
import os
from typing import Any

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nextflow_jax import bundle as bundle_lib
from nextflow_jax import checkpoint
from nextflow_jax import cli
from nextflow_jax import sharding
from nextflow_jax import workdirs
from nextflow_jax.convert import hf_checkpoint
from nextflow_jax.data import sequences
from nextflow_jax.model import nextflow
from nextflow_jax.model import rope
from nextflow_jax.text import hf_tokenizer

FORMAT = "nextflow_jax.qwen_conversion"
PARAMS_DIR = "params"  # What the language model gave (and new text rows).
VISUAL_DIR = "visual_params"  # VISUAL_PARAMS, initialised here.
CONVERSION_FILE = "conversion.json"
SUPPORTED_TYPES = ("qwen2", "qwen2_vl", "qwen2_5_vl")
R = hf_tokenizer.NUM_RESERVED
# Our per-layer leaf (module, param) <- (HF name suffix, how it maps).
_LAYER_MAP = {
    ("attn_norm", "scale"): ("input_layernorm.weight", "vector"),
    ("mlp_norm", "scale"): ("post_attention_layernorm.weight", "vector"),
    ("attn", "q_kernel"): ("self_attn.q_proj.weight", "heads_in"),
    ("attn", "k_kernel"): ("self_attn.k_proj.weight", "heads_in"),
    ("attn", "v_kernel"): ("self_attn.v_proj.weight", "heads_in"),
    ("attn", "q_bias"): ("self_attn.q_proj.bias", "heads_bias"),
    ("attn", "k_bias"): ("self_attn.k_proj.bias", "heads_bias"),
    ("attn", "v_bias"): ("self_attn.v_proj.bias", "heads_bias"),
    ("attn", "o_kernel"): ("self_attn.o_proj.weight", "heads_out"),
    ("mlp", "gate_kernel"): ("mlp.gate_proj.weight", "transpose"),
    ("mlp", "up_kernel"): ("mlp.up_proj.weight", "transpose"),
    ("mlp", "down_kernel"): ("mlp.down_proj.weight", "transpose"),
}
_VISION_PREFIXES = ("visual.", "model.visual.")
# NextFlow's parameters for images, which no language model has.
VISUAL_PARAMS = ("code_embed", "connector_in", "connector_out", "scale_embed",
                 "visual_head")


@dataclasses.dataclass(frozen=True)
class QwenConfig:
  """The fields of a Qwen config.json that shape the language model."""
  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float
  rms_norm_eps: float
  tie_word_embeddings: bool
  mrope_section: tuple[int, int, int] | None


def read_config(config: dict[str, Any]) -> QwenConfig:
  """Validates a Qwen config.json (flat, or with `text_config`).

  Raises:
    ValueError: a model type or a field value we cannot reproduce, named.
  """
  model_type = config.get("model_type")
  if model_type not in SUPPORTED_TYPES:
    raise ValueError(f"model_type={model_type!r} is not supported; this "
                     f"converter reads {list(SUPPORTED_TYPES)} (Qwen3 adds "
                     "q/k norms, which NextFlow's decoder does not have).")
  text = {**config, **(config.get("text_config") or {})}
  problems = []
  if text.get("hidden_act", "silu") != "silu":
    problems.append(f"hidden_act={text['hidden_act']!r} (NextFlow's MLP is "
                    "SwiGLU: 'silu')")
  if text.get("use_sliding_window"):
    problems.append("use_sliding_window=true (sliding-window attention is "
                    "not implemented; every layer attends to all keys)")
  kinds = set(text.get("layer_types") or ()) - {"full_attention"}
  if kinds:
    problems.append(f"layer_types {sorted(kinds)} (only full_attention)")
  rope_cfg = text.get("rope_scaling") or text.get("rope_parameters") or {}
  rope_types = {rope_cfg.get("type"), rope_cfg.get("rope_type")} - {
      None, "default", "mrope"}
  if rope_types:
    problems.append(f"RoPE scaling {sorted(rope_types)} (only plain RoPE and "
                    "mRoPE)")
  for key in ("hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "vocab_size"):
    if not isinstance(text.get(key), int) or text[key] < 1:
      problems.append(f"{key}={text.get(key)!r} (a positive int is needed)")
  if problems:
    raise ValueError("the Qwen config has fields NextFlow cannot reproduce: "
                     + "; ".join(problems) + ".")
  heads = text["num_attention_heads"]
  kv_heads = text.get("num_key_value_heads") or heads
  head_dim = text.get("head_dim") or text["hidden_size"] // heads
  if not text.get("head_dim") and text["hidden_size"] % heads:
    raise ValueError(f"hidden_size={text['hidden_size']} is not a multiple of "
                     f"num_attention_heads={heads}.")
  if heads % kv_heads:
    raise ValueError(f"num_attention_heads={heads} is not a multiple of "
                     f"num_key_value_heads={kv_heads}.")
  section = rope_cfg.get("mrope_section")
  if section is not None:
    section = rope.check_sections(section, head_dim)
  theta = text.get("rope_theta", rope_cfg.get("rope_theta", 10000.0))
  return QwenConfig(
      model_type=model_type, vocab_size=text["vocab_size"],
      hidden_size=text["hidden_size"],
      intermediate_size=text["intermediate_size"],
      num_layers=text["num_hidden_layers"], num_heads=heads,
      num_kv_heads=kv_heads, head_dim=head_dim, rope_theta=float(theta),
      rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
      tie_word_embeddings=bool(config.get(
          "tie_word_embeddings", text.get("tie_word_embeddings", False))),
      mrope_section=section)


def model_section(qwen: QwenConfig, *, pad_vocab_multiple: int = 128,
                  **overrides: Any) -> dict[str, Any]:
  """The `model` config section (NextFlow fields) of a Qwen language model:
  what `configs/nextflow.py` must say to train the converted parameters.

  `overrides` set the fields Qwen has no say in (max_scales, shared_head,
  scan_layers, remat_policy, dtype, param_dtype)."""
  rows = R + qwen.vocab_size
  section = dict(
      text_vocab_size=-(-rows // pad_vocab_multiple) * pad_vocab_multiple,
      num_layers=qwen.num_layers, width=qwen.hidden_size,
      num_heads=qwen.num_heads, num_kv_heads=qwen.num_kv_heads,
      head_dim=qwen.head_dim, mlp_dim=qwen.intermediate_size,
      rope_theta=qwen.rope_theta,
      mrope_sections=tuple(qwen.mrope_section or
                           rope.default_sections(qwen.head_dim)),
      qkv_bias=True, norm_eps=qwen.rms_norm_eps)
  unknown = set(overrides) - set(workdirs.model_keys())
  if unknown:
    raise ValueError(f"model fields {sorted(unknown)} do not exist; NextFlow "
                     f"has {list(workdirs.model_keys())}.")
  fixed = set(overrides) & set(section)
  if fixed:
    raise ValueError(f"model fields {sorted(fixed)} come from the Qwen "
                     "config and cannot be overridden.")
  section.update(overrides)
  return section


@dataclasses.dataclass
class Converted:
  """A converted model.

  Attributes:
    model: the NextFlow module.
    params: its parameters (jax arrays, sharded as asked).
    qwen: the source config.
    section: the `model` config section that builds `model`.
    new_params: names (`a/b/c`, with row or column ranges) of what Qwen did
      not provide.
    skipped: HF tensors not converted (the vision tower).
    text_tokenizer: Qwen's tokenizer.json in our layout, if the folder has
      one.
  """
  model: nextflow.NextFlow
  params: Any
  qwen: QwenConfig
  section: dict[str, Any]
  new_params: list[str]
  skipped: list[str]
  text_tokenizer: hf_tokenizer.HFTextTokenizer | None


def _ranges(index: Sequence[slice], shape: Sequence[int]) -> list[slice]:
  return [slice(*s.indices(n)[:2]) for s, n in zip(index, shape)]


class _Reader:
  """Reads our parameter slices out of a Qwen checkpoint."""

  def __init__(self, ckpt: hf_checkpoint.HFCheckpoint, qwen: QwenConfig):
    self.ckpt, self.qwen = ckpt, qwen
    names = ckpt.names()
    self.prefix = ("model.language_model." if
                   "model.language_model.embed_tokens.weight" in names
                   else "model.")
    self.used: set[str] = set()
    self._means: dict[str, np.ndarray] = {}

  def name(self, suffix: str) -> str:
    return self.prefix + suffix

  def expect(self, name: str, shape: tuple[int, ...]) -> None:
    """Raises unless the checkpoint has `name` with `shape`."""
    if not self.ckpt.has(name):
      raise ValueError(f"{self.ckpt.folder}: tensor {name!r} is missing "
                       f"(expected shape {shape} from config.json).")
    found = self.ckpt.shape(name)
    if found != shape:
      raise ValueError(f"{self.ckpt.folder}: tensor {name!r} has shape "
                       f"{found}, but config.json implies {shape}.")
    self.used.add(name)

  def layer_leaf(self, layer: int, kind: str, suffix: str,
                 index: list[slice]) -> np.ndarray:
    """One layer's slice of our leaf (index over our per-layer shape)."""
    name = f"{self.prefix}layers.{layer}.{suffix}"
    k = self.qwen.head_dim
    if kind == "vector":
      return self.ckpt.read(name, index)
    if kind == "transpose":  # HF (out, in) -> ours (in, out)
      return self.ckpt.read(name, index[::-1]).T
    if kind == "heads_in":  # HF (N K, D) -> ours (D, N, K)
      d, n, kk = index
      w = self.ckpt.read(name, (slice(n.start * k, n.stop * k), d))
      return w.reshape(n.stop - n.start, k, -1)[:, kk, :].transpose(2, 0, 1)
    if kind == "heads_bias":  # HF (N K,) -> ours (N, K)
      n, kk = index
      b = self.ckpt.read(name, (slice(n.start * k, n.stop * k),))
      return b.reshape(n.stop - n.start, k)[:, kk]
    if kind == "heads_out":  # HF (D, N K) -> ours (N, K, D)
      n, kk, d = index
      w = self.ckpt.read(name, (d, slice(n.start * k, n.stop * k)))
      return w.reshape(-1, n.stop - n.start, k)[:, :, kk].transpose(1, 2, 0)
    raise AssertionError(kind)

  def mean_row(self, name: str) -> np.ndarray:
    """(D,) float32 mean of a (V, D) tensor's rows, read in chunks."""
    if name not in self._means:
      rows = self.ckpt.shape(name)[0]
      total = 0.0
      for start in range(0, rows, 8192):
        chunk = self.ckpt.read(name, (slice(start, min(rows, start + 8192)),
                                      slice(None)))
        total = total + chunk.astype(np.float64).sum(0)
      self._means[name] = (total / rows).astype(np.float32)
    return self._means[name]

  def vocab_rows(self, name: str, rows: slice, cols: slice,
                 fill: (Callable[[slice, slice, np.ndarray], np.ndarray]
                        | None) = None) -> np.ndarray:
    """Our (rows, cols) of a (V', D) table whose rows [R, R + V) are Qwen's
    (V, D) `name`; rows [0, R) and [R + V, vocab) are the mean row; rows
    beyond the text vocabulary (a shared head's codes) come from `fill`."""
    vocab = self.qwen.vocab_size
    mean = self.mean_row(name)[cols]
    out = np.broadcast_to(mean, (rows.stop - rows.start, mean.shape[0]))
    out = np.array(out, np.float32)
    lo, hi = max(rows.start, R), min(rows.stop, R + vocab)
    if lo < hi:
      out[lo - rows.start:hi - rows.start] = self.ckpt.read(
          name, (slice(lo - R, hi - R), cols))
    if fill is not None:
      return fill(rows, cols, out)
    return out


def _path(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", k)) for k in path)


def convert(hf_dir: str, *, mesh: jax.sharding.Mesh | None = None,
            rules: Any = None, codebook_size: int = 16384,
            code_dim: int = 40, codebook: np.ndarray | None = None,
            pad_vocab_multiple: int = 128, seed: int = 0,
            **model_overrides: Any) -> Converted:
  """Converts a Qwen checkpoint folder into NextFlow parameters.

  Args:
    hf_dir: the Hugging Face folder (config.json + safetensors).
    mesh, rules: shard the parameters over `mesh` by the logical `rules`
      (`sharding.get_rules`); None: one device, replicated.
    codebook_size, code_dim: the vision tokenizer's codebook (K, C).
    codebook: (K, C) code vectors to initialise the visual code embedding
      (the tokenizer's `code_vectors`), as pretraining does; None keeps the
      model's random init.
    pad_vocab_multiple: the text vocabulary is padded to a multiple of this.
    seed: seeds the new parameters.
    **model_overrides: NextFlow fields Qwen does not fix (max_scales,
      shared_head, scan_layers, remat_policy, dtype, param_dtype as str).

  Returns:
    The `Converted` model.

  Raises:
    ValueError, FileNotFoundError: unsupported config, missing, extra or
      mis-shaped tensors, a missing shard (each named).
  """
  ckpt = hf_checkpoint.HFCheckpoint(hf_dir)
  qwen = read_config(ckpt.config)
  section = model_section(qwen, pad_vocab_multiple=pad_vocab_multiple,
                          **model_overrides)
  model = workdirs.build_model(section,
                               text_vocab_size=section["text_vocab_size"],
                               codebook_size=codebook_size, code_dim=code_dim)
  if codebook is not None and codebook.shape != (codebook_size, code_dim):
    raise ValueError(f"codebook has shape {codebook.shape}; expected "
                     f"({codebook_size}, {code_dim}).")
  if mesh is None:
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  rules = rules if rules is not None else sharding.get_rules("dp")
  example = sequences.example_batch(sequences.Layout(), codebook_size, 8)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(model.init, jax.random.key(seed), example)
    shardings = sharding.logical_shardings(abstract, mesh, rules)["params"]
  abstract = nn.unbox(abstract)["params"]
  reader = _Reader(ckpt, qwen)
  d, v, k = qwen.hidden_size, qwen.vocab_size, qwen.head_dim
  n, g, f = qwen.num_heads, qwen.num_kv_heads, qwen.intermediate_size
  layer_shapes = {
      "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
      "self_attn.q_proj.weight": (n * k, d), "self_attn.q_proj.bias": (n * k,),
      "self_attn.k_proj.weight": (g * k, d), "self_attn.k_proj.bias": (g * k,),
      "self_attn.v_proj.weight": (g * k, d), "self_attn.v_proj.bias": (g * k,),
      "self_attn.o_proj.weight": (d, n * k), "mlp.gate_proj.weight": (f, d),
      "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f)}
  for layer in range(qwen.num_layers):
    for suffix, shape in layer_shapes.items():
      reader.expect(f"{reader.prefix}layers.{layer}.{suffix}", shape)
  embed = reader.name("embed_tokens.weight")
  reader.expect(embed, (v, d))
  reader.expect(reader.name("norm.weight"), (d,))
  head = embed if qwen.tie_word_embeddings else "lm_head.weight"
  if qwen.tie_word_embeddings and "lm_head.weight" in ckpt.names():
    reader.used.add("lm_head.weight")  # HF ties it to the embedding.
  reader.expect(head, (v, d))
  skipped = [t for t in ckpt.names() if t.startswith(_VISION_PREFIXES)]
  extra = sorted(set(ckpt.names()) - reader.used - set(skipped))
  if extra:
    raise ValueError(f"{hf_dir}: {len(extra)} tensor(s) this converter does "
                     f"not map: {extra[:8]}{' ...' if len(extra) > 8 else ''}"
                     "; is it a Qwen2 / Qwen2.5(-VL) checkpoint?")

  # The parameters Qwen does not have: the model's own initialisers.
  fresh_keys = [key for key in VISUAL_PARAMS if key in abstract]
  shared = "head" in abstract
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    init_keys = fresh_keys + (["head"] if shared else [])

    def init_new(rng):  # XLA drops the unused (language model) part.
      params = nn.unbox(model.init(rng, example))["params"]
      return {key: params[key] for key in init_keys}

    fresh = jax.jit(init_new, out_shardings={
        key: shardings[key] for key in init_keys})(jax.random.key(seed))
  if codebook is not None:
    fresh["code_embed"] = jax.device_put(
        jnp.asarray(codebook, model.param_dtype), shardings["code_embed"])
  text_vocab = section["text_vocab_size"]
  new = [f"token_embed rows [0, {R}) and [{R + v}, {text_vocab})"]
  new += [f"{key}" for key in fresh_keys]
  dtype = model.param_dtype

  def leaf(path, value, target):
    keys = _path(path)
    shape = value.shape

    def make(read: Callable[[list[slice]], np.ndarray]) -> jax.Array:
      return jax.make_array_from_callback(
          shape, target,
          lambda index: np.asarray(read(_ranges(index, shape)), dtype))

    if keys[0] in fresh_keys:
      node = fresh
      for key in keys:
        node = node[key]
      return node
    if keys == ("token_embed",):
      return make(lambda ix: reader.vocab_rows(embed, ix[0], ix[1]))
    if keys in (("text_head",), ("head",)):
      fresh_head = (np.asarray(jax.device_get(fresh["head"]), np.float32)
                    if shared else None)

      def fill(rows, cols, out):
        if fresh_head is not None and rows.stop > text_vocab:
          lo = max(rows.start, text_vocab)
          out[lo - rows.start:] = fresh_head[cols, lo:rows.stop].T
        return out

      return make(lambda ix: reader.vocab_rows(head, ix[1], ix[0], fill).T)
    if keys == ("decoder", "final_norm", "scale"):
      return make(lambda ix: reader.ckpt.read(reader.name("norm.weight"),
                                              ix))
    if keys[0] == "decoder":
      if keys[1] == "layers":  # scanned: leading layer axis
        suffix, kind = _LAYER_MAP[keys[2:]]
        return make(lambda ix: np.stack(
            [reader.layer_leaf(i, kind, suffix, ix[1:])
             for i in range(ix[0].start, ix[0].stop)]))
      layer = int(keys[1].split("_")[1])
      suffix, kind = _LAYER_MAP[keys[2:]]
      return make(lambda ix: reader.layer_leaf(layer, kind, suffix, ix))
    raise AssertionError(f"unmapped NextFlow parameter {keys}")

  params = jax.tree_util.tree_map_with_path(leaf, abstract, shardings)
  new.insert(1, f"text_head{'' if not shared else ' (shared head)'} "
             f"columns [0, {R}) and [{R + v}, {text_vocab})" +
             (" and the code columns" if shared else ""))
  tok_path = os.path.join(hf_dir, "tokenizer.json")
  text_tok = (hf_tokenizer.HFTextTokenizer.load(tok_path)
              if os.path.exists(tok_path) else None)
  if text_tok is not None and text_tok.vocab_size > text_vocab:
    raise ValueError(f"{tok_path} has {text_tok.hf_vocab_size} ids, more "
                     f"than the model's vocab_size={v}.")
  return Converted(model=model, params=params, qwen=qwen, section=section,
                   new_params=new, skipped=skipped, text_tokenizer=text_tok)


def save(converted: Converted, output: str, *, source: str) -> str:
  """Writes `output/params` (every parameter but `VISUAL_PARAMS`),
  `output/visual_params`, `output/conversion.json` and the tokenizer.

  Raises:
    FileExistsError: `output` has a conversion already.
  """
  if os.path.exists(os.path.join(output, CONVERSION_FILE)):
    raise FileExistsError(f"{output} holds a conversion already; choose "
                          "another --output.")
  os.makedirs(output, exist_ok=True)
  params = dict(converted.params)
  visual = {k: params.pop(k) for k in VISUAL_PARAMS if k in params}
  checkpoint.save_tree(os.path.join(output, PARAMS_DIR), params)
  checkpoint.save_tree(os.path.join(output, VISUAL_DIR), visual)
  if converted.text_tokenizer is not None:
    converted.text_tokenizer.save(os.path.join(
        output, hf_tokenizer.HFTextTokenizer.file_name))
  record = {
      "format": FORMAT, "version": 1, "source": source,
      "model": {**converted.section,
                "mrope_sections": list(converted.section["mrope_sections"])},
      "codebook_size": converted.model.codebook_size,
      "code_dim": converted.model.code_dim,
      "new_params": converted.new_params,
      # In visual_params/; pretraining (init_from) initialises its own.
      "visual_params": [k for k in VISUAL_PARAMS if k in converted.params],
      "skipped_tensors": len(converted.skipped),
      "qwen": dataclasses.asdict(converted.qwen),
  }
  tmp = os.path.join(output, CONVERSION_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(record, f, indent=2)
  os.replace(tmp, os.path.join(output, CONVERSION_FILE))
  return output


def read_conversion(folder: str) -> dict[str, Any]:
  """The `conversion.json` of a folder `save` wrote."""
  path = os.path.join(folder, CONVERSION_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{folder} is not a Qwen conversion (no "
                            f"{CONVERSION_FILE}); run python -m "
                            "nextflow_jax.convert.qwen first.")
  with open(path) as f:
    return json.load(f)


# ------------------------------------------------------------------- CLI


def vision_tokenizer(path: str) -> tuple[Any, Any, Any]:
  """(model, params, schedule) of a tokenizer workdir, or of the vision
  tokenizer inside a model bundle."""
  model, params, schedule, _ = workdirs.load_tokenizer(path)
  return model, params, schedule


def main(argv: Sequence[str]) -> None:
  """python -m nextflow_jax.convert.qwen --hf_dir=H --output=O [...]."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  if values.bundle and not values.tokenizer_workdir:
    raise app.UsageError("--bundle needs --tokenizer_workdir (a bundle holds "
                         "the vision tokenizer too).")
  mesh = sharding.make_mesh([int(s) for s in values.mesh])
  rules = sharding.get_rules(values.rules)
  codebook, trained_tok = None, None
  sizes = dict(codebook_size=values.codebook_size, code_dim=values.code_dim)
  if values.tokenizer_workdir:
    trained_tok = vision_tokenizer(values.tokenizer_workdir)
    tok_model, tok_params = trained_tok[0], trained_tok[1]
    codebook = np.asarray(jax.device_get(tok_model.apply(
        {"params": tok_params}, method=tok_model.code_vectors)))
    sizes = dict(codebook_size=codebook.shape[0], code_dim=codebook.shape[1])
  source = os.path.basename(os.path.normpath(values.hf_dir))
  converted = convert(values.hf_dir, mesh=mesh, rules=rules,
                      codebook=codebook, param_dtype=values.param_dtype,
                      scan_layers=values.scan_layers, **sizes)
  if values.bundle and converted.text_tokenizer is None:
    raise FileNotFoundError(f"{values.hf_dir} has no tokenizer.json; a "
                            "bundle needs the text tokenizer.")
  save(converted, values.output, source=source)
  print(f"wrote {values.output}: model section "
        f"{json.dumps(read_conversion(values.output)['model'])}; new: "
        f"{converted.new_params}; skipped {len(converted.skipped)} vision "
        "tensors.")
  if values.bundle:
    tok_model, tok_params, schedule = trained_tok
    bundle_lib.export(workdirs.TrainedModel(
        model=converted.model, params=jax.device_get(converted.params),
        tokenizer=tok_model, tokenizer_params=tok_params,
        text_tokenizer=converted.text_tokenizer, schedule=schedule,
        layout=sequences.Layout(upsample_method=tok_model.upsample_method)),
                      values.bundle, provenance={"converted_from": source})
    print(f"wrote bundle {values.bundle}")


def _define_flags() -> None:
  flags.DEFINE_string("hf_dir", None, "Hugging Face checkpoint folder "
                      "(config.json + safetensors).")
  flags.DEFINE_string("output", None, "Folder for params/, conversion.json "
                      "and text_tokenizer.json.")
  flags.DEFINE_string("tokenizer_workdir", "", "A vision tokenizer workdir "
                      "or a model bundle (its tokenizer): the codebook sizes "
                      "the visual parameters and initialises the code "
                      "embedding.")
  flags.DEFINE_string("bundle", "", "Also write a model bundle here (needs "
                      "--tokenizer_workdir and Qwen's tokenizer.json).")
  flags.DEFINE_list("mesh", ["-1", "1", "1"], "data,fsdp,tensor sizes (-1 = "
                    "the remaining devices).")
  flags.DEFINE_string("rules", "dp", "Sharding rule set: dp, fsdp, fsdp_tp.")
  flags.DEFINE_string("param_dtype", "float32", "Parameter dtype of the "
                      "converted model.")
  flags.DEFINE_bool("scan_layers", True, "Stack the layers (as the presets "
                    "do).")
  flags.DEFINE_integer("codebook_size", 16384, "K, without "
                       "--tokenizer_workdir.")
  flags.DEFINE_integer("code_dim", 40, "Code width, without "
                       "--tokenizer_workdir.")
  flags.mark_flags_as_required(["hf_dir", "output"])


if __name__ == "__main__":
  _define_flags()
  app.run(cli.one_line_errors(main))
