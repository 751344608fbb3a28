# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Qwen2 / Qwen2.5-VL -> NextFlow: logit and greedy parity with PyTorch,
Qwen's token ids, sharded loading, and loud failures on what does not fit.

The parity tests build tiny random models with `transformers` (the
`convert-test` extra: torch and transformers) and skip without them; the
rest write checkpoints with numpy and `safetensors` alone.
"""

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nextflow_jax import checkpoint
from nextflow_jax import config_lib
from nextflow_jax import sharding
from nextflow_jax import trainers
from nextflow_jax import workdirs
from nextflow_jax.convert import hf_checkpoint
from nextflow_jax.convert import qwen
from nextflow_jax.data import sequences
from nextflow_jax.sampling import config as sampling_config
from nextflow_jax.sampling import generator as generator_lib
from nextflow_jax.sampling import state as state_lib
from nextflow_jax.sampling import text as text_sampling
from nextflow_jax.text import hf_tokenizer
from nextflow_jax.trainers import extract
from nextflow_jax.trainers import pretrain

safetensors_numpy = pytest.importorskip("safetensors.numpy")
tokenizers = pytest.importorskip("tokenizers")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
R = hf_tokenizer.NUM_RESERVED
VOCAB = 416  # Qwen pads its embedding past the tokenizer, so do we.
# Qwen2's pre-tokenizer split (its tokenizer.json), then byte-level BPE.
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
                r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
STRINGS = ("two red circles left of a blue square", "三个黄色的菱形",
           "a cross 🔴 and a 🟦 square!", "<|im_start|>user\nhi<|im_end|>",
           "  spaces \n\n and 123 digits")
TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2)


def _transformers():
  return pytest.importorskip(
      "transformers", reason="the PyTorch parity tests need the convert-test "
      "extra: pip install -e '.[convert-test]'")


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
  """A small byte-level BPE with Qwen's pre-tokenizer and special tokens."""
  from tokenizers import decoders, models, normalizers, pre_tokenizers
  from tokenizers import trainers as bpe_trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(QWEN_PATTERN), "isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(list(STRINGS) * 20, bpe_trainers.BpeTrainer(
      vocab_size=380, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
  folder = tmp_path_factory.mktemp("qwen_tokenizer")
  tok.save(str(folder / "tokenizer.json"))
  with open(folder / "tokenizer_config.json", "w") as f:
    json.dump({"tokenizer_class": "Qwen2Tokenizer",
               "pad_token": "<|endoftext|>", "eos_token": "<|im_end|>"}, f)
  assert tok.get_vocab_size() <= VOCAB
  return str(folder)


def write_numpy_qwen(folder, *, tie=True, seed=0, **config_overrides):
  """A random Qwen2 checkpoint written with numpy + safetensors only."""
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  d, f = TINY["hidden_size"], TINY["intermediate_size"]
  n, g = TINY["num_attention_heads"], TINY["num_key_value_heads"]
  k = d // n
  w = lambda *shape: rng.normal(0, 0.1, shape).astype(np.float32)  # pylint: disable=g-long-lambda
  tensors = {"model.embed_tokens.weight": w(VOCAB, d),
             "model.norm.weight": 1 + w(d)}
  if not tie:
    tensors["lm_head.weight"] = w(VOCAB, d)
  for i in range(TINY["num_hidden_layers"]):
    p = f"model.layers.{i}."
    tensors.update({
        p + "input_layernorm.weight": 1 + w(d),
        p + "post_attention_layernorm.weight": 1 + w(d),
        p + "self_attn.q_proj.weight": w(n * k, d),
        p + "self_attn.q_proj.bias": w(n * k),
        p + "self_attn.k_proj.weight": w(g * k, d),
        p + "self_attn.k_proj.bias": w(g * k),
        p + "self_attn.v_proj.weight": w(g * k, d),
        p + "self_attn.v_proj.bias": w(g * k),
        p + "self_attn.o_proj.weight": w(d, n * k),
        p + "mlp.gate_proj.weight": w(f, d),
        p + "mlp.up_proj.weight": w(f, d),
        p + "mlp.down_proj.weight": w(d, f)})
  safetensors_numpy.save_file(tensors, os.path.join(folder,
                                                    "model.safetensors"))
  config = {"model_type": "qwen2", "vocab_size": VOCAB, "hidden_act": "silu",
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "tie_word_embeddings": tie, "use_sliding_window": False, **TINY}
  config.update(config_overrides)
  with open(os.path.join(folder, "config.json"), "w") as fh:
    json.dump(config, fh)
  return str(folder)


@pytest.fixture(scope="module")
def numpy_qwen(tmp_path_factory):
  return write_numpy_qwen(str(tmp_path_factory.mktemp("np_qwen") / "m"))


@pytest.fixture(scope="module")
def hf_models(tokenizer_json, tmp_path_factory):
  """Tiny random Qwen2 (tied) and Qwen2.5-VL (mRoPE, vision tower) models,
  saved with save_pretrained next to the tokenizer: {name: (folder, model)}."""
  transformers = _transformers()
  import torch
  torch.manual_seed(0)
  out = {}
  q2 = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
      vocab_size=VOCAB, tie_word_embeddings=True, initializer_range=0.1,
      rope_theta=10000.0, **TINY))
  vl = transformers.Qwen2_5_VLForConditionalGeneration(
      transformers.Qwen2_5_VLConfig(
          text_config=dict(vocab_size=VOCAB, initializer_range=0.1,
                           rope_scaling={"type": "mrope",
                                         "mrope_section": [2, 3, 3]},
                           **TINY),
          vision_config=dict(depth=1, hidden_size=32, intermediate_size=64,
                             num_heads=2, out_hidden_size=64,
                             fullatt_block_indexes=[0]),
          tie_word_embeddings=False))
  for name, model in (("qwen2", q2), ("qwen2_5_vl", vl)):
    folder = str(tmp_path_factory.mktemp(name))
    model.eval()
    model.save_pretrained(folder)
    for file in ("tokenizer.json", "tokenizer_config.json"):
      shutil.copy(os.path.join(tokenizer_json, file), folder)
    out[name] = (folder, model)
  return out


def text_batch(ids):
  """Our model inputs for one text document per row (no padding)."""
  docs = [sequences.build([sequences.Text([i + R for i in row])],
                          sequences.Layout(), codebook_size=16)
          for row in ids]
  batch = {k: jnp.asarray(np.stack([d[k] for d in docs])) for k in docs[0]}
  batch["segment_ids"] = jnp.ones(np.shape(ids), jnp.int32)
  return batch


def our_logits(converted, ids):
  model = converted.model
  hidden = model.apply({"params": converted.params}, text_batch(ids))
  logits = model.apply({"params": converted.params}, hidden,
                       method=model.text_logits)
  return np.asarray(logits)[..., R:R + VOCAB]


@pytest.mark.parametrize("name", ["qwen2", "qwen2_5_vl"])
def test_logits_equal_pytorch(hf_models, name):
  import torch
  folder, hf = hf_models[name]
  converted = qwen.convert(folder, codebook_size=16, code_dim=4)
  ids = np.random.default_rng(1).integers(0, VOCAB, (2, 24))
  with torch.no_grad():
    want = hf(input_ids=torch.tensor(ids)).logits.numpy()
  got = our_logits(converted, ids)
  assert np.abs(want).max() > 1.0  # Not a trivially small model.
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
  if name == "qwen2_5_vl":
    assert converted.section["mrope_sections"] == (2, 3, 3)
    assert converted.skipped and all(t.startswith("model.visual.") or
                                     t.startswith("visual.")
                                     for t in converted.skipped)


@pytest.mark.parametrize("name", ["qwen2", "qwen2_5_vl"])
def test_cached_greedy_decoding_equals_generate(hf_models, name):
  """32 greedy tokens through our KV-cached sampler = HF generate, and each
  cached step's logits = PyTorch's full forward at that position."""
  import torch
  folder, hf = hf_models[name]
  converted = qwen.convert(folder, codebook_size=16, code_dim=4)
  model, params = converted.model, converted.params
  tok = hf_tokenizer.HFTextTokenizer.load(os.path.join(folder,
                                                       "tokenizer.json"))
  prompts = [tok.hf_ids(tok.encode(s)) for s in STRINGS[:2]]
  docs = [sequences.build([sequences.Text([i + R for i in p])],
                          sequences.Layout(), codebook_size=16)
          for p in prompts]
  fields, time, block = state_lib.stack_prompts(
      docs, max(len(p) for p in prompts))
  state, last = state_lib.prefill(model, params, fields, time, block,
                                  max_len=80)
  _, out = text_sampling.sample_text(
      model, params, state, last, keys=state_lib.row_keys(0, 0, 2),
      # The whole vocabulary: random weights favour Qwen's padding ids too.
      max_new_tokens=32, vocab_size=R + VOCAB, stop_tokens=(),
      top_k=None, temperature=0.0, top_p=1.0, active=jnp.ones(2, bool),
      return_logits=True)
  for row, prompt in enumerate(prompts):
    ours = np.asarray(out["tokens"][row]) - R
    with torch.no_grad():
      want = hf.generate(torch.tensor([prompt]), max_new_tokens=32,
                         min_new_tokens=32, do_sample=False, eos_token_id=None,
                         pad_token_id=0)[0, len(prompt):].numpy()
      full = hf(input_ids=torch.tensor([prompt + list(want)])).logits[
          0, len(prompt) - 1:-1].numpy()
    np.testing.assert_array_equal(ours, want)
    np.testing.assert_allclose(
        np.asarray(out["logits"][row])[:, R:R + VOCAB], full, atol=5e-5,
        rtol=1e-5)


def test_the_tokenizer_gives_qwens_ids(tokenizer_json):
  transformers = _transformers()
  theirs = transformers.AutoTokenizer.from_pretrained(tokenizer_json)
  ours = hf_tokenizer.HFTextTokenizer.load(
      os.path.join(tokenizer_json, "tokenizer.json"))
  for text in STRINGS:
    want = theirs(text, add_special_tokens=False)["input_ids"]
    ids = ours.encode(text)
    assert ours.hf_ids(ids) == want, text
    assert ids == [i + R for i in want]
    assert ours.decode(ids) == text
  assert ours.vocab_size == R + len(theirs)


def test_tokenizer_keeps_our_specials_and_layout(tokenizer_json):
  tok = hf_tokenizer.HFTextTokenizer.load(
      os.path.join(tokenizer_json, "tokenizer.json"))
  ids = tok.encode("a<boi>b", add_bos=True, add_eos=True)
  assert ids[0] == 2 and ids[-1] == 3 and 4 in ids  # <bos>, <eos>, <boi>
  assert tok.decode(ids) == "a<boi>b"
  assert tok.id_to_piece(4) == "<boi>"
  with pytest.raises(ValueError, match=r"nextflow_jax's own tokens"):
    tok.hf_ids(ids)
  with pytest.raises(ValueError, match="not a Hugging Face tokenizer.json"):
    hf_tokenizer.HFTextTokenizer("{not json")


def test_numpy_checkpoint_maps_every_tensor(numpy_qwen):
  converted = qwen.convert(numpy_qwen, codebook_size=16, code_dim=4,
                           scan_layers=False)
  ckpt = hf_checkpoint.HFCheckpoint(numpy_qwen)
  p = converted.params
  embed = ckpt.read("model.embed_tokens.weight")
  np.testing.assert_array_equal(p["token_embed"][R:R + VOCAB], embed)
  # Tied: the head is the embedding; new rows are the mean row.
  np.testing.assert_array_equal(p["text_head"][:, R:R + VOCAB], embed.T)
  np.testing.assert_allclose(p["token_embed"][:R],
                             np.broadcast_to(embed.mean(0), (R, 64)),
                             atol=1e-6)
  np.testing.assert_allclose(p["token_embed"][R + VOCAB:],
                             np.broadcast_to(embed.mean(0),
                                             (512 - R - VOCAB, 64)),
                             atol=1e-6)
  q = ckpt.read("model.layers.1.self_attn.q_proj.weight")  # (N K, D)
  np.testing.assert_array_equal(p["decoder"]["layers_1"]["attn"]["q_kernel"],
                                q.reshape(4, 16, 64).transpose(2, 0, 1))
  o = ckpt.read("model.layers.0.self_attn.o_proj.weight")  # (D, N K)
  np.testing.assert_array_equal(p["decoder"]["layers_0"]["attn"]["o_kernel"],
                                o.reshape(64, 4, 16).transpose(1, 2, 0))
  np.testing.assert_array_equal(
      p["decoder"]["layers_0"]["mlp"]["down_kernel"],
      ckpt.read("model.layers.0.mlp.down_proj.weight").T)
  assert converted.section["text_vocab_size"] == 512  # R + 416 -> 128s


def test_sharded_load_equals_the_unsharded_one(numpy_qwen):
  single = qwen.convert(numpy_qwen, codebook_size=16, code_dim=4)
  mesh = sharding.make_mesh((1, 2, 2))
  sharded = qwen.convert(numpy_qwen, codebook_size=16, code_dim=4,
                         mesh=mesh, rules=sharding.get_rules("fsdp_tp"))
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(sharded.params), jax.device_get(single.params))
  q = sharded.params["decoder"]["layers"]["attn"]["q_kernel"]
  assert q.sharding.mesh.devices.size == 4
  # Each device holds a quarter: born sharded, not replicated.
  assert q.addressable_shards[0].data.size == q.size // 4
  embed = sharded.params["token_embed"]
  assert embed.addressable_shards[0].data.size < embed.size


def test_shards_with_an_index_and_bfloat16(numpy_qwen, tmp_path):
  """A checkpoint split over two files with an index, stored in bf16."""
  import ml_dtypes
  ckpt = hf_checkpoint.HFCheckpoint(numpy_qwen)
  names = ckpt.names()
  halves = (names[:len(names) // 2], names[len(names) // 2:])
  weight_map = {}
  for i, part in enumerate(halves):
    file = f"model-0000{i + 1}-of-00002.safetensors"
    safetensors_numpy.save_file(
        {n: ckpt.read(n).astype(ml_dtypes.bfloat16) for n in part},
        str(tmp_path / file))
    weight_map.update({n: file for n in part})
  with open(tmp_path / "model.safetensors.index.json", "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  shutil.copy(os.path.join(numpy_qwen, "config.json"), tmp_path)
  converted = qwen.convert(str(tmp_path), codebook_size=16, code_dim=4,
                           param_dtype="bfloat16")
  reference = qwen.convert(numpy_qwen, codebook_size=16, code_dim=4)
  got = converted.params["decoder"]["layers"]["mlp"]["up_kernel"]
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(
      np.asarray(got, np.float32),
      reference.params["decoder"]["layers"]["mlp"]["up_kernel"], rtol=1e-2)
  os.remove(tmp_path / "model-00002-of-00002.safetensors")
  with pytest.raises(FileNotFoundError, match=r"shard\(s\) "
                     r"\['model-00002-of-00002.safetensors'\] listed in "
                     r"model.safetensors.index.json are missing"):
    qwen.convert(str(tmp_path), codebook_size=16, code_dim=4)


def _edit(folder, tmp_path, **config):
  copy = str(tmp_path / "edited")
  shutil.copytree(folder, copy)
  with open(os.path.join(copy, "config.json")) as f:
    values = json.load(f)
  values.update(config)
  with open(os.path.join(copy, "config.json"), "w") as f:
    json.dump(values, f)
  return copy


@pytest.mark.parametrize("config, message", [
    (dict(num_key_value_heads=4),
     r"'model.layers.0.self_attn.k_proj.weight' has shape \(32, 64\), but "
     r"config.json implies \(64, 64\)"),
    (dict(head_dim=32), r"'model.layers.0.self_attn.q_proj.weight' has shape "
     r"\(64, 64\), but config.json implies \(128, 64\)"),
    (dict(num_key_value_heads=3), r"num_attention_heads=4 is not a multiple "
     r"of num_key_value_heads=3"),
    (dict(tie_word_embeddings=False), r"tensor 'lm_head.weight' is missing"),
    (dict(use_sliding_window=True), r"use_sliding_window=true \(sliding-"
     r"window attention is not implemented"),
    (dict(rope_scaling={"type": "yarn", "factor": 4.0}),
     r"RoPE scaling \['yarn'\]"),
    (dict(model_type="qwen3"), r"model_type='qwen3' is not supported"),
    (dict(hidden_act="gelu"), r"hidden_act='gelu'"),
    (dict(rope_scaling={"type": "mrope", "mrope_section": [2, 3, 2]}),
     r"mrope_sections=\(2, 3, 2\) sum to 7 but head_dim=16"),
])
def test_bad_input_configs_that_do_not_fit(numpy_qwen, tmp_path, config,
                                           message):
  with pytest.raises(ValueError, match=message):
    qwen.convert(_edit(numpy_qwen, tmp_path, **config), codebook_size=16,
                 code_dim=4)


def test_bad_input_extra_and_pickle_tensors(numpy_qwen, tmp_path):
  folder = _edit(numpy_qwen, tmp_path)
  safetensors_numpy.save_file(
      {"model.layers.0.self_attn.q_norm.weight": np.ones(16, np.float32)},
      os.path.join(folder, "extra.safetensors"))
  with pytest.raises(ValueError, match=r"1 tensor\(s\) this converter does "
                     r"not map: \['model.layers.0.self_attn.q_norm.weight'\]"):
    qwen.convert(folder, codebook_size=16, code_dim=4)
  pickled = tmp_path / "pickled"
  pickled.mkdir()
  shutil.copy(os.path.join(numpy_qwen, "config.json"), pickled)
  (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
  with pytest.raises(FileNotFoundError, match=r"pickle weights, which are "
                     r"never loaded here"):
    qwen.convert(str(pickled), codebook_size=16, code_dim=4)
  with pytest.raises(FileNotFoundError, match=r"has no config.json"):
    qwen.convert(str(tmp_path / "nowhere"), codebook_size=16, code_dim=4)


def test_bad_input_model_overrides(numpy_qwen):
  with pytest.raises(ValueError, match=r"\['width'\] come from the Qwen "
                     "config"):
    qwen.convert(numpy_qwen, codebook_size=16, code_dim=4, width=32)
  with pytest.raises(ValueError, match=r"\['num_head'\] do not exist"):
    qwen.convert(numpy_qwen, codebook_size=16, code_dim=4, num_head=2)


def test_save_writes_params_conversion_and_tokenizer(numpy_qwen,
                                                     tokenizer_json,
                                                     tmp_path):
  folder = _edit(numpy_qwen, tmp_path)
  shutil.copy(os.path.join(tokenizer_json, "tokenizer.json"), folder)
  converted = qwen.convert(folder, codebook_size=16, code_dim=4,
                           shared_head=True)
  out = qwen.save(converted, str(tmp_path / "out"), source="tiny")
  record = qwen.read_conversion(out)
  assert record["model"]["text_vocab_size"] == 512
  assert record["visual_params"] == ["code_embed", "connector_in",
                                     "connector_out", "scale_embed"]
  assert record["skipped_tensors"] == 0
  assert os.path.exists(os.path.join(out, "text_tokenizer.json"))
  loaded = checkpoint.load_tree(os.path.join(out, qwen.PARAMS_DIR))
  head = loaded["head"]  # shared: text columns Qwen's, code columns new
  assert head.shape == (64, 512 + 16)
  np.testing.assert_array_equal(
      head[:, R:R + VOCAB],
      hf_checkpoint.HFCheckpoint(folder).read("model.embed_tokens.weight").T)
  with pytest.raises(FileExistsError, match="holds a conversion already"):
    qwen.save(converted, out, source="tiny")


def load_config(name, arg):
  return config_lib.load_config(os.path.join(ROOT, "configs",
                                             f"{name}.py:{arg}"))


def test_cli_writes_a_bundle_that_continues_text_like_pytorch(
    hf_models, tok_dir, tmp_path):
  """python -m nextflow_jax.convert.qwen --bundle: the bundle's Generator
  continues a prompt with the same 12 greedy tokens as PyTorch."""
  import torch
  folder, hf = hf_models["qwen2"]
  out, bundle = str(tmp_path / "conv"), str(tmp_path / "bundle")
  result = subprocess.run(
      [sys.executable, "-m", "nextflow_jax.convert.qwen",
       f"--hf_dir={folder}", f"--output={out}",
       f"--tokenizer_workdir={tok_dir}", f"--bundle={bundle}"],
      cwd=ROOT, capture_output=True, text=True, check=False,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr[-2000:]
  assert "wrote bundle" in result.stdout
  gen = generator_lib.Generator.from_pretrained(bundle)
  prompt = "two red circles"
  ids = gen.text_tokenizer.encode(prompt)
  text = gen.continue_text([prompt], sampling_config.SamplingConfig(
      text_max_new_tokens=12, stop_tokens=()), bos=False)[0]
  with torch.no_grad():  # The Generator writes only the tokenizer's ids.
    want = hf.generate(torch.tensor([[i - R for i in ids]]),
                       max_new_tokens=12, min_new_tokens=12,
                       do_sample=False, eos_token_id=None, pad_token_id=0,
                       suppress_tokens=list(range(
                           gen.text_tokenizer.hf_vocab_size, VOCAB)))[
                               0, len(ids):].tolist()
  assert text == gen.text_tokenizer.decode([i + R for i in want])
  # The bundle's code embedding is the tokenizer's codebook; a bundle can
  # serve as the next conversion's tokenizer.
  tok_model, tok_params, _, _ = workdirs.load_tokenizer(tok_dir)
  codebook = tok_model.apply({"params": tok_params},
                             method=tok_model.code_vectors)
  np.testing.assert_allclose(gen.params["code_embed"], codebook, rtol=1e-6)
  model, params, schedule = qwen.vision_tokenizer(bundle)
  np.testing.assert_allclose(
      model.apply({"params": params}, method=model.code_vectors), codebook,
      rtol=1e-6)
  assert tuple(map(tuple, schedule)) == gen.schedule


@pytest.mark.slow  # cold: over a minute of compilation
def test_pretraining_starts_from_a_conversion(numpy_qwen, tokenizer_json,
                                              tok_dir, tfds_dir, tmp_path):
  """init_from: the decoder and text rows are Qwen's (a tiny lr keeps them), the
  visual parameters fresh (code embedding = the tokenizer's code vectors),
  the text tokenizer the conversion's; a model section that differs is
  refused up front, naming the fields to set."""
  folder = _edit(numpy_qwen, tmp_path)
  shutil.copy(os.path.join(tokenizer_json, "tokenizer.json"), folder)
  tok_model, tok_params, _, _ = workdirs.load_tokenizer(tok_dir)
  codebook = np.asarray(tok_model.apply({"params": tok_params},
                                        method=tok_model.code_vectors))
  conversion = qwen.save(qwen.convert(
      folder, codebook_size=codebook.shape[0], code_dim=codebook.shape[1]),
                         str(tmp_path / "conv"), source="tiny")
  codes = str(tmp_path / "codes")
  ext = load_config("extract", "mu")
  ext.tokenizer_workdir = tok_dir
  ext.data.data_dir = tfds_dir
  ext.data.sources = ("shapes/32px",)
  trainers.validate(ext, codes)
  extract.run(ext, codes)

  config = load_config("nextflow", "mu")
  config.data.codes_dir = codes
  config.init_from = conversion
  with pytest.raises(config_lib.ConfigError, match=r"init_from.*another "
                     r"shape than config.model; set --config.model.mlp_dim=96 "
                     r"--config.model.rope_theta=10000.0 \(from its "
                     r"conversion.json\)"):
    trainers.validate(config, str(tmp_path / "refused"))
  for key, value in qwen.read_conversion(conversion)["model"].items():
    config.model[key] = tuple(value) if isinstance(value, list) else value
  config.optim.lr = 1e-12  # One update that leaves every weight as it was.
  config.train.num_steps = 1
  config.eval.num_batches = 0
  workdir = str(tmp_path / "pretrain")
  trainers.validate(config, workdir)
  pretrain.run(config, workdir)
  trained = workdirs.load_pretrain_run(workdir)
  converted = checkpoint.load_tree(os.path.join(conversion, qwen.PARAMS_DIR))
  same = functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-9)
  for key in ("token_embed", "text_head"):
    same(trained.params[key], converted[key])
  jax.tree.map(same, trained.params["decoder"], converted["decoder"])
  np.testing.assert_allclose(trained.params["code_embed"], codebook,
                             rtol=1e-6)
  assert isinstance(trained.text_tokenizer, hf_tokenizer.HFTextTokenizer)
  assert os.path.exists(os.path.join(workdir, "text_tokenizer.json"))


# config.json of the checkpoints the 1b and 7b presets start from (the
# fields that shape the language model, as published by Qwen).
QWEN25_15B = {"model_type": "qwen2", "hidden_size": 1536,
              "intermediate_size": 8960, "num_hidden_layers": 28,
              "num_attention_heads": 12, "num_key_value_heads": 2,
              "vocab_size": 151936, "rope_theta": 1000000.0,
              "rms_norm_eps": 1e-06, "tie_word_embeddings": True,
              "hidden_act": "silu", "use_sliding_window": False}
QWEN25_VL_7B = {"model_type": "qwen2_5_vl", "hidden_size": 3584,
                "intermediate_size": 18944, "num_hidden_layers": 28,
                "num_attention_heads": 28, "num_key_value_heads": 4,
                "vocab_size": 152064, "rope_theta": 1000000.0,
                "rms_norm_eps": 1e-06, "tie_word_embeddings": False,
                "hidden_act": "silu", "use_sliding_window": False,
                "rope_scaling": {"type": "mrope",
                                 "mrope_section": [16, 24, 24]},
                "vision_config": {"depth": 32}}


@pytest.mark.parametrize("preset, hf_config", [("1b", QWEN25_15B),
                                               ("7b", QWEN25_VL_7B)])
def test_the_large_presets_fit_their_qwen_checkpoints(preset, hf_config):
  section = qwen.model_section(qwen.read_config(hf_config))
  model = load_config("nextflow", preset).model
  for key, value in section.items():
    assert model[key] == value, (preset, key)
