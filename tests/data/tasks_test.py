# Copyright 2026 The nextflow_jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Every task's document: parts, supervision, condition dropout, errors."""

import numpy as np
import pytest

from nextflow_jax.data import sequences as seq
from nextflow_jax.data import tasks
from nextflow_jax.text import tokenizer as text_tokenizer
from nextflow_jax.text import vocab

SCHEDULE = "1x1,2x2"
K = 16


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tok") / "t.model")
  words = "two red circles how many move the square left blue green frame"
  text_tokenizer.train_sentencepiece([words] * 50, path, 400)
  return lambda **kw: tasks.TaskBuilder(path, **kw)


def codes(n=5, frames=None):
  shape = (frames, n) if frames else (n,)
  return np.arange(np.prod(shape)).reshape(shape) % K


RECORD = {"id": "r0", "schedule": SCHEDULE, "codebook_size": K,
          "caption": "two red circles", "questions": ["how many circles"],
          "answers": ["two"], "edit_instruction": "move the square left",
          "motion_caption": "a blue square moving left",
          "image.inputs": codes(), "image.targets": codes(),
          "edited_image.inputs": codes(), "edited_image.targets": codes(),
          "frames.inputs": codes(frames=3), "frames.targets": codes(frames=3)}


def images(parts):
  return [p for p in parts if isinstance(p, seq.Image)]


@pytest.mark.parametrize("task,num_images,supervised_images", [
    ("t2i", 1, 1), ("caption", 1, 0), ("vqa", 1, 0), ("edit", 2, 1),
    ("interleaved", 2, 2), ("video", 3, 3), ("text", 0, 0)])
def test_each_task(builder, task, num_images, supervised_images):
  parts = builder(condition_dropout=0.0).parts(task, RECORD,
                                               np.random.default_rng(0))
  imgs = images(parts)
  assert len(imgs) == num_images
  assert sum(i.loss for i in imgs) == supervised_images
  out = seq.build(parts, seq.Layout(), codebook_size=K)
  assert out["loss_weights"].sum() > 0
  assert out["tokens"][0] == vocab.BOS_ID
  if task == "video":
    frame = vocab.SPECIAL_IDS["<frame>"]
    assert (out["tokens"] == frame).sum() == 3
    assert (out["tokens"] == vocab.BOI_ID).sum() == 3
  if task in ("caption", "vqa"):  # the answer text is what is learned
    assert out["loss_weights"][out["target_is_visual"]].sum() == 0


def test_condition_dropout_removes_the_prompt(builder):
  rng = np.random.default_rng(0)
  kept = builder(condition_dropout=0.0).parts("t2i", RECORD, rng)
  dropped = builder(condition_dropout=1.0).parts("t2i", RECORD, rng)
  assert len(kept[0].ids) > 1 and list(dropped[0].ids) == [vocab.BOS_ID]
  assert images(dropped)[0].loss


@pytest.mark.parametrize("eos_loss", [False, True])
def test_t2i_end_of_sequence_is_supervised_only_on_request(builder, eos_loss):
  parts = builder(condition_dropout=1.0, t2i_eos_loss=eos_loss).parts(
      "t2i", RECORD, np.random.default_rng(0))
  out = seq.build(parts, seq.Layout(), codebook_size=K)
  predicts_eos = out["targets"] == vocab.EOS_ID
  predicts_eos &= ~out["target_is_visual"]
  assert predicts_eos.sum() == 1  # the <eoi> position
  assert out["loss_weights"][predicts_eos].sum() == float(eos_loss)


def test_sampling_prompts_are_prefixes_of_the_training_documents(builder):
  """The sampler's prompt builders lay out what training laid out."""
  rng = np.random.default_rng(0)
  b = builder(condition_dropout=0.0)
  doc = seq.build(b.parts("edit", RECORD, rng), seq.Layout(), codebook_size=K)
  source = seq.image_from_record(RECORD, "image")
  prompt = seq.build(tasks.edit_prompt(source, b.text(
      RECORD, RECORD["edit_instruction"])), seq.Layout(), codebook_size=K)
  n = len(prompt["tokens"])
  for field in ("tokens", "positions", "block_ids", "visual_codes",
                "scale_ids", "num_scales", "is_visual"):
    np.testing.assert_array_equal(prompt[field], doc[field][:n])
  assert doc["tokens"][n] == vocab.BOI_ID  # the sampler appends <boi> next


def test_build_sequence_picks_only_tasks_the_record_supports(builder):
  record = {k: v for k, v in RECORD.items()
            if not k.startswith(("edited_image", "frames"))}
  build = tasks.BuildSequence(builder(), ("edit", "caption"), (100.0, 1.0),
                              seq.Layout(), K)
  for seed in range(5):
    out = build.random_map(record, np.random.default_rng(seed))
    assert set(out["task_ids"]) == {tasks.TASKS.index("caption")}


def test_missing_fields_and_bad_tasks(builder):
  with pytest.raises(ValueError, match=r"task 'vqa' needs \['questions'"):
    builder().parts("vqa", {"id": "r1", "image.targets": codes()},
                    np.random.default_rng(0))
  with pytest.raises(ValueError, match="give one positive weight per task"):
    tasks.BuildSequence(builder(), ("t2i", "dance"), (1, 1), seq.Layout(), K)


def test_sequence_batches_from_worker_processes_equal_threads(builder):
  """`data.num_workers` (Grain worker processes) lays out and packs the
  same batches as threads, and its iterator state resumes exactly."""
  from nextflow_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  records = [dict(RECORD, id=f"r{i}", caption=("two red circles", "a blue "
                                               "square")[i % 2])
             for i in range(12)]
  build = tasks.BuildSequence(builder(), tasks.TASKS, (1.0,) * 7,
                              seq.Layout(), K)

  def batches(num_workers, n=4, state=None):
    it = iter(pipeline.make_sequence_dataset(
        [records], build=build, seq_len=64, batch_size=2, packing="first_fit",
        num_packing_bins=2, seed=3, num_workers=num_workers))
    if state is not None:
      it.set_state(state)
    out = [next(it) for _ in range(n)]
    return out, it.get_state()

  threads, _ = batches(0)
  workers, _ = batches(1)
  for a, b in zip(threads, workers):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  _, state = batches(1, n=2)
  resumed, _ = batches(1, n=2, state=state)
  for a, b in zip(threads[2:], resumed):
    np.testing.assert_array_equal(a["tokens"], b["tokens"])


def test_prompt_variants_draw_category_prompts_of_the_scene(builder):
  from nextflow_jax.data import shapes  # pylint: disable=g-import-not-at-top
  from nextflow_jax.data import shapes_grammar  # pylint: disable=g-import-not-at-top
  scene = shapes.sample_scene(np.random.default_rng(3), 64)
  record = dict(RECORD, scene=scene.to_json(), caption=shapes.caption(scene))
  variants = shapes_grammar.scene_prompts(scene)
  never = builder(prompt_variants=0.0)
  always = builder(prompt_variants=1.0)
  seen = set()
  for seed in range(40):
    rng = np.random.default_rng(seed)
    assert never._t2i_caption(record, rng) == record["caption"]  # pylint: disable=protected-access
    seen.add(always._t2i_caption(record, rng))  # pylint: disable=protected-access
  assert seen == {v for k, v in variants.items() if k != "full"}
  no_scene = {k: v for k, v in record.items() if k != "scene"}
  assert always._t2i_caption(no_scene, np.random.default_rng(0)) == (  # pylint: disable=protected-access
      record["caption"])
  # A scene that only a full caption states ("two red circles left of a
  # blue square") keeps its caption.
  groups = shapes.Scene("black", (
      shapes.ShapeObject("circle", "red", (2, 2, 12, 12)),
      shapes.ShapeObject("circle", "red", (20, 2, 30, 12)),
      shapes.ShapeObject("square", "blue", (10, 40, 20, 50))), 64)
  assert set(shapes_grammar.scene_prompts(groups)) == {"full"}
  only_full = dict(RECORD, scene=groups.to_json(),
                   caption=shapes.caption(groups))
  assert always._t2i_caption(only_full, np.random.default_rng(0)) == (  # pylint: disable=protected-access
      only_full["caption"])
