"""Pretraining machinery: codes by construction, the decoder's training data, losses, exact resume."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ospo.shapeworld import codes as world_codes
from ospo.shapeworld import sampler
from ospo.shapeworld.captions import SUBCATEGORIES
from ospo.shapeworld.pretrain import PretrainConfig, lm_batch, pretrain, shapeworld_spec, vq_batch
from ospo.shapeworld.render import render


def test_codes_paint_exactly_what_the_renderer_draws_and_invert():
    rng = np.random.default_rng(0)
    for sub in SUBCATEGORIES:
        scene = sampler.sample_scene(sampler.sample_spec(rng, sub), rng)
        codes = world_codes.scene_to_codes(scene)
        assert codes.shape == (64,)
        assert np.array_equal(world_codes.paint_codes(codes), render(scene))
        assert world_codes.codes_to_scene(codes) == scene


def test_codes_to_scene_rejects_mixed_backgrounds_and_unknown_codes():
    table = world_codes.code_table()
    empties = [k for k, e in enumerate(table) if e[0] == "empty"]
    mixed = np.array([empties[0]] * 63 + [empties[1]])
    assert world_codes.codes_to_scene(mixed) is None
    assert world_codes.codes_to_scene(np.full(64, len(table))) is None
    assert world_codes.num_codes() == shapeworld_spec().codebook_size


def test_vq_batch_targets_match_codes():
    codes, target = vq_batch(np.random.default_rng(1), 3)
    assert codes.shape == (3, 8, 8) and target.shape == (3, 3, 128, 128)
    pixels = ((target[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    assert np.array_equal(pixels, world_codes.paint_codes(codes[0].numpy()))


SMALL = PretrainConfig(vq_steps=2, vq_batch=2, vision_steps=2, vision_batch=2, lm_steps=3, batch_t2i=3, batch_vqa=2, batch_text=2,
                       checkpoint_every=1, eval_every=0, warmup_steps=1)


def small_spec():
    return replace(shapeworld_spec(), hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                   vision_hidden_size=32, vision_layers=1)


def test_resume_after_a_crash_gives_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    pretrain(tmp_path / "a", SMALL, spec=small_spec())

    def crash(phase, step, total, metrics):
        if phase == "lm" and step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(tmp_path / "b", SMALL, progress=crash, spec=small_spec())
    assert not (tmp_path / "b" / "model.safetensors").exists()
    pretrain(tmp_path / "b", SMALL, spec=small_spec())
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "b" / "pretrain_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["phase"] == "lm"] == [1, 2, 3]  # the step redone after the crash: once
    assert [r["step"] for r in rows if r["phase"] == "vq"] == [1, 2]


def test_phases_are_independent(tmp_path):
    """The LM phase does not depend on the VQ phase (nor on the VQ's architecture): they can be trained apart."""
    from safetensors.torch import load_file

    pretrain(tmp_path / "with_vq", SMALL, spec=small_spec())
    pretrain(tmp_path / "no_vq", replace(SMALL, vq_steps=0), spec=replace(small_spec(), vq_num_res_blocks=1))
    a, b = load_file(tmp_path / "with_vq" / "model.safetensors"), load_file(tmp_path / "no_vq" / "model.safetensors")
    lm = [k for k in a if not k.startswith("model.vqmodel.")]
    assert all(torch.equal(a[k], b[k]) for k in lm)
    assert not all(torch.equal(a[k], b[k]) for k in a if k in b and k.startswith("model.vqmodel.decoder"))


def test_resuming_with_another_config_is_refused(tmp_path):
    from ospo.errors import OspoError

    pretrain(tmp_path, SMALL, spec=small_spec())
    with pytest.raises(OspoError, match="another config"):
        pretrain(tmp_path, replace(SMALL, lm_steps=4), spec=small_spec())


def test_bf16_auto_is_resolved_once_per_run_and_kept_on_resume(tmp_path, monkeypatch):
    """"auto" follows the CPU for a new run (emulated bf16 is ~10x slower than fp32) and is written resolved into
    the run's config; a resume asked for "auto" keeps what the run started with, even on another CPU; configs saved
    when bf16 was a bool still load; a bad value is refused by name."""
    from ospo.errors import InputError, OspoError
    from ospo.shapeworld import pretrain as pt

    monkeypatch.setattr(pt, "native_bf16", lambda: False)
    cfg = pt.load_config(tmp_path / "a", PretrainConfig())
    assert cfg.bf16 == "false"
    assert json.loads((tmp_path / "a/pretrain-state/pretrain_config.json").read_text())["bf16"] == "false"
    monkeypatch.setattr(pt, "native_bf16", lambda: True)
    assert pt.load_config(tmp_path / "a", PretrainConfig()).bf16 == "false"  # resumed: kept
    assert pt.load_config(tmp_path / "b", PretrainConfig()).bf16 == "true"  # new: this CPU's
    assert pt.load_config(tmp_path / "c", PretrainConfig(bf16="false")).bf16 == "false"  # asked: as asked
    with pytest.raises(OspoError, match="another config"):
        pt.load_config(tmp_path / "a", PretrainConfig(bf16="true"))
    old = tmp_path / "old/pretrain-state/pretrain_config.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"bf16": True}))
    assert pt.load_config(tmp_path / "old", PretrainConfig()).bf16 == "true"
    assert pt.config_fields({"bf16": False}, "")["bf16"] == "false"  # a YAML bool
    assert [pt.config_fields({"bf16": v}, "")["bf16"] for v in (" True", "1", "no", "AUTO")] == [
        "true", "true", "false", "auto"]
    with pytest.raises(InputError, match="bf16 takes auto, true or false"):
        pt.config_fields({"bf16": "maybe"}, "")
    with pytest.raises(InputError, match="bf16 takes auto, true or false, not 'fp32'"):
        PretrainConfig(bf16="fp32")


def test_a_checkpoint_flagged_as_code_painter_decodes_exactly(tmp_path):
    from ospo.model import JanusAdapter
    from ospo.shapeworld.world import vocabulary
    from ospo.tiny import build_tiny_janus

    model, processor = build_tiny_janus(small_spec(), vocabulary(), seed=0)
    model.config.ospo_code_decoder = "shapeworld"
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    adapter = JanusAdapter.from_pretrained(str(tmp_path))
    rng = np.random.default_rng(0)
    scenes = [sampler.sample_scene(sampler.sample_spec(rng, "color2"), rng) for _ in range(3)]
    images = adapter.decode_images(torch.tensor(np.stack([world_codes.scene_to_codes(s) for s in scenes])))
    assert all(np.array_equal(np.asarray(im), render(s)) for im, s in zip(images, scenes))


def test_packed_curriculum_examples_realise_their_caption_in_the_first_cells():
    from ospo.shapeworld import mixture, oracle
    from ospo.shapeworld.captions import parse_caption

    rng = np.random.default_rng(3)
    for _ in range(100):
        example = mixture.sample_t2i_packed(rng)
        scene = world_codes.codes_to_scene(example.codes)
        assert oracle.score_spec(parse_caption(example.prompt), scene).correct, example.prompt
        assert sorted(o.row * 8 + o.col for o in scene.objects) == list(range(len(scene.objects)))


def test_curriculum_steps_draw_packed_examples_then_random_scenes():
    cfg = replace(SMALL, t2i_packed_steps=2, batch_t2i=8)
    first = [world_codes.codes_to_scene(e.codes) for e in lm_batch(cfg, 1).t2i]
    later = [world_codes.codes_to_scene(e.codes) for e in lm_batch(cfg, 2).t2i]
    packed = lambda s: sorted(o.row * 8 + o.col for o in s.objects) == list(range(len(s.objects)))  # noqa: E731
    assert all(packed(s) for s in first) and not all(packed(s) for s in later)


def test_factor_head_folds_into_a_plain_linear_that_loads(tmp_path):
    from ospo.shapeworld.pretrain import add_factor_head, fold_factor_head, init_generation_head
    from ospo.shapeworld.world import vocabulary
    from ospo.tiny import build_tiny_janus
    from transformers import JanusForConditionalGeneration

    model, processor = build_tiny_janus(small_spec(), vocabulary(), seed=0)
    init_generation_head(model)
    head = model.model.generation_head
    assert torch.equal(head.proj_out.weight, torch.eye(head.proj_out.in_features))
    add_factor_head(model)
    with torch.no_grad():
        head.vision_head.parametrizations.weight[0].shared.normal_()
    hidden = torch.randn(2, 5, head.proj_out.in_features)
    before = head(hidden)
    assert head.vision_head.weight.shape == (world_codes.num_codes(), head.vision_head.in_features)
    fold_factor_head(model)
    assert torch.allclose(head(hidden), before, atol=1e-6)
    model.save_pretrained(tmp_path)
    loaded = JanusForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.allclose(loaded.model.generation_head(hidden), before, atol=1e-6)


ALIGNED = replace(SMALL, align_steps=2, freeze_vision=True, find_steps=2, find_batch=2, find_curriculum_steps=2,
                  vqa_curriculum_copies=4, text_steps=2, text_batch=2)


def test_aligner_find_and_text_phases_train_and_resume_exactly(tmp_path):
    """The aligner, find and text phases are part of the resumable state; a frozen vision
    tower stays bit-identical through the find, text and LM phases, the aligner through the find and text
    phases."""
    from safetensors.torch import load_file

    pretrain(tmp_path / "a", ALIGNED, spec=small_spec())
    rows = [json.loads(line) for line in (tmp_path / "a" / "pretrain_log.jsonl").read_text().splitlines()]
    assert list(dict.fromkeys(r["phase"] for r in rows)) == ["vq", "vision", "align", "find", "text", "lm"]

    for crash_phase in ("align", "find", "text", "lm"):
        def crash(phase, step, total, metrics):
            if phase == crash_phase and step == 2:
                raise KeyboardInterrupt

        out = tmp_path / f"crash-{crash_phase}"
        with pytest.raises(KeyboardInterrupt):
            pretrain(out, ALIGNED, progress=crash, spec=small_spec())
        seen = []
        info = pretrain(out, ALIGNED, progress=lambda phase, *_: seen.append(phase), spec=small_spec())
        phases = ("align", "find", "text", "lm")
        later = phases[phases.index(crash_phase):]
        assert set(seen) <= set(later) and crash_phase in seen  # finished phases are not redone
        b = load_file(out / "model.safetensors")
        a = load_file(tmp_path / "a" / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), crash_phase
        assert set(info["vision"]) == {"vision_ce", "align_ce"}  # each finished phase reports its own numbers
        assert set(info["find"]) == {"find"} and set(info["text"]) == {"text"}
        assert (out / "pretrain_log.jsonl").read_text() == (tmp_path / "a" / "pretrain_log.jsonl").read_text()
    again = pretrain(tmp_path / "a", ALIGNED, spec=small_spec())  # a finished run (optimizer states removed)
    assert again["final"] == json.loads((tmp_path / "a" / "pretrain.json").read_text())["final"]

    pretrain(tmp_path / "before_align", replace(ALIGNED, align_steps=0, lm_steps=0), spec=small_spec())
    pretrain(tmp_path / "before_find", replace(ALIGNED, find_steps=0, lm_steps=0), spec=small_spec())
    pretrain(tmp_path / "before_text", replace(ALIGNED, text_steps=0, lm_steps=0), spec=small_spec())
    pretrain(tmp_path / "before_lm", replace(ALIGNED, lm_steps=0), spec=small_spec())
    before_text = load_file(tmp_path / "before_text" / "model.safetensors")
    before_align = load_file(tmp_path / "before_align" / "model.safetensors")
    before_find = load_file(tmp_path / "before_find" / "model.safetensors")
    pretrain(tmp_path / "unfrozen", replace(ALIGNED, freeze_vision=False), spec=small_spec())
    before_lm = load_file(tmp_path / "before_lm" / "model.safetensors")
    unfrozen = load_file(tmp_path / "unfrozen" / "model.safetensors")
    vision = [k for k in a if k.startswith("model.vision_model.")]
    assert all(torch.equal(a[k], before_lm[k]) for k in vision)
    assert not all(torch.equal(a[k], unfrozen[k]) for k in vision)  # the LM phase moves an unfrozen tower
    aligner = [k for k in a if k.startswith("model.aligner.")]
    assert not any(torch.equal(before_align[k], before_lm[k]) for k in aligner)  # the align phase trains it
    assert all(torch.equal(before_align[k], before_lm[k]) for k in vision)  # ... with the vision tower frozen
    lm = [k for k in a if k.startswith("model.language_model.")]
    assert all(torch.equal(before_find[k], before_lm[k]) for k in aligner + vision)  # the find phase trains the
    assert not all(torch.equal(before_find[k], before_text[k]) for k in lm)  # language model only, and so
    assert all(torch.equal(before_text[k], before_lm[k]) for k in aligner + vision)  # does the text phase
    assert not all(torch.equal(before_text[k], before_lm[k]) for k in lm)
    assert not all(torch.equal(before_lm[k], a[k]) for k in aligner)  # ... and the LM phase trains the aligner again


def test_text_rows_are_of_the_asked_tasks_and_bad_task_names_are_refused():
    from ospo.errors import InputError
    from ospo.shapeworld import mixture
    from ospo.shapeworld.pretrain import text_rows

    cfg = replace(SMALL, text_steps=4, text_batch=12)
    rows = text_rows(cfg, 0)
    assert len(rows) == 12 and all(" edit : " in r.answer and "result :" in r.answer for r in rows)
    assert [r.answer for r in text_rows(cfg, 0)] == [r.answer for r in rows]
    both = text_rows(replace(cfg, text_tasks="perturb,decompose"), 1)
    assert {" edit : " in r.answer for r in both} == {True, False}
    with pytest.raises(InputError, match="text_tasks"):
        replace(SMALL, text_tasks="perturb,rewrite")
    with pytest.raises(ValueError, match="task must be one of"):
        mixture.sample_text(np.random.default_rng(0), task="rewrite")


def test_find_rows_ask_about_one_replicated_object_with_exact_answers():
    from ospo.shapeworld import mixture, oracle
    from ospo.shapeworld.pretrain import find_copies
    from ospo.shapeworld.questions import answer_question

    cfg = replace(SMALL, find_steps=20, find_curriculum_steps=10, vqa_curriculum_copies=16)
    assert [find_copies(cfg, s) for s in (0, 5, 10, 15)] == [16, 8, 1, 1]
    assert find_copies(SMALL, 0) == 1  # no curriculum: one copy throughout
    rng = np.random.default_rng(0)
    exists = 0
    for copies, questions in ((16, "shape"), (1, "shape"), (1, "all")):
        rows = [mixture.sample_find(rng, copies, questions) for _ in range(16)]
        assert {e.answer for e in rows} == {"yes", "no"}
        for e in rows:
            scene = oracle.read_scene(e.image)
            assert len(scene.objects) == copies and len({(o.shape, o.color, o.texture) for o in scene.objects}) == 1
            question = e.question.replace(" please answer yes or no .", "")
            assert answer_question(question, scene) == e.answer
            if questions == "shape" and question.startswith("is there"):  # names a shape only: "is there a circle ?"
                assert len(question.split()) == 5, question
                exists += 1
    assert exists >= 8
    near_misses = 0
    for _ in range(200):  # "color": a shape and its colour; a "no" is mostly the right shape in a wrong colour
        scene, question, yes = mixture.find_example(rng, 4, "color")
        if question.kind == "exists":
            assert question.subject.color is not None and question.subject.texture is None
            thing = scene.objects[0]
            near_misses += (not yes) and question.subject.shape == thing.shape and question.subject.color != thing.color
    assert near_misses >= 20
    with pytest.raises(ValueError, match="questions must be one of"):
        mixture.find_example(rng, questions="colours")


def test_find_stages_split_the_steps_restart_the_curriculum_and_name_colours_exactly():
    from ospo.errors import InputError
    from ospo.shapeworld import mixture, oracle
    from ospo.shapeworld.pretrain import find_plan, find_rows

    cfg = replace(SMALL, find_steps=20, find_curriculum_steps=10, vqa_curriculum_copies=16,
                  find_stages="name,color+name", find_batch=24)
    plan = [find_plan(cfg, s) for s in (0, 5, 9, 10, 15, 19)]
    assert plan == [(("name",), 16), (("name",), 1), (("name",), 1),
                    (("color", "name"), 16), (("color", "name"), 1), (("color", "name"), 1)]
    naming = find_rows(cfg, 0)
    for e in naming:  # "what color is the <shape> ?" -> the colour word, true of the rendered scene
        words = e.question.split()
        assert words[:4] == ["what", "color", "is", "the"] and words[-1] == "?"
        objects = oracle.read_scene(e.image).objects
        assert {(o.shape, o.color) for o in objects} == {(words[4], e.answer)}
    rng = np.random.default_rng(5)
    sizes = set()
    for _ in range(40):  # "name-all": colour or texture of one of up to four objects of distinct shapes
        e = mixture.sample_find(rng, 1, "name-all")
        _, attribute, _, _, shape, _ = e.question.split()
        objects = oracle.read_scene(e.image).objects
        assert len({o.shape for o in objects}) == len(objects)
        assert getattr(next(o for o in objects if o.shape == shape), attribute) == e.answer
        sizes.add((len(objects), attribute))
    assert {n for n, _ in sizes} >= {1, 2} and {a for _, a in sizes} == {"color", "texture"}
    mixed = find_rows(cfg, 12)
    assert {e.answer for e in mixed} >= {"yes", "no"} and any(e.question.startswith("what") for e in mixed)
    assert [e.question for e in find_rows(cfg, 12)] == [e.question for e in mixed]  # the step's own stream
    with pytest.raises(InputError, match="find_stages"):
        replace(SMALL, find_stages="shape,colour")
    with pytest.raises(ValueError, match="naming_example"):
        mixture.find_example(np.random.default_rng(0), questions="name")


def test_position_find_questions_are_exact_about_the_rendered_scene_and_balanced():
    """"where" names the region of the asked shape, "relation" answers by GenEval's rule on the pixels' cells;
    both are drawn once per object (copies ignored), in the tokenizer's words."""
    from ospo.shapeworld import mixture, oracle
    from ospo.shapeworld.pretrain import find_rows
    from ospo.shapeworld.world import region_of, relations_between, vocabulary

    words = set(vocabulary())
    rng = np.random.default_rng(11)
    answers, relations = [], set()
    for i in range(120):
        kind = ("where", "relation")[i % 2]
        e = mixture.sample_find(rng, 8, kind)
        assert set((e.question + " " + e.answer).split()) <= words
        objects = oracle.read_scene(e.image).objects
        assert len({o.shape for o in objects}) == len(objects)  # distinct shapes, one cell each
        by_shape = {o.shape: o for o in objects}
        if kind == "where":
            assert e.question.split()[:4] == ["what", "region", "is", "the"]
            thing = by_shape[e.question.split()[4]]
            assert e.answer == region_of(thing.row, thing.col)
        else:
            q = e.question.split(" ?")[0].split()
            a, b = by_shape[q[2]], by_shape[q[-1]]
            relation = " ".join(q[3:-2])
            holds = relation in relations_between((a.row, a.col), (b.row, b.col))
            assert e.answer == ("yes" if holds else "no")
            answers.append(e.answer)
            relations.add(relation)
    assert 0.35 < answers.count("yes") / len(answers) < 0.65 and relations >= {"left of", "right of", "above",
                                                                                 "below"}
    cfg = replace(SMALL, find_steps=4, find_stages="where,relation+where", find_batch=6)
    assert all(e.question.startswith("what region") for e in find_rows(cfg, 0))
    with pytest.raises(ValueError, match="position_example"):
        mixture.position_example(rng, "shape")


def test_replicate_draws_every_object_in_several_cells_and_answers_stay_exact():
    from ospo.shapeworld import mixture, oracle
    from ospo.shapeworld.questions import answer_question

    rng = np.random.default_rng(3)
    scene = mixture.random_scene(rng, 3)
    many = mixture.replicate(scene, 5, rng)
    assert len(many.objects) == 5 * len(scene.objects) and many.background == scene.background
    assert len({(o.row, o.col) for o in many.objects}) == len(many.objects)  # distinct cells
    for o in scene.objects:
        same = [m for m in many.objects if (m.shape, m.color, m.texture) == (o.shape, o.color, o.texture)]
        assert len(same) >= 5
    assert len(mixture.replicate(scene, 1000, rng).objects) <= 64  # the board caps the copies
    assert mixture.replicate(scene, 1, rng) is scene
    for step in range(20):  # VQA examples of replicated scenes: the answer is the oracle's on the pixels
        e = mixture.sample_vqa(np.random.default_rng([7, step]), copies=8)
        question = e.question.replace(" please answer yes or no .", "")
        assert answer_question(question, oracle.read_scene(e.image)) == e.answer


def test_vqa_curriculum_shrinks_copies_to_one_and_leaves_runs_without_it_unchanged():
    from ospo.shapeworld import oracle
    from ospo.shapeworld.pretrain import vqa_copies

    cfg = replace(SMALL, batch_vqa=12, vqa_curriculum_steps=10, vqa_curriculum_copies=16)
    assert [vqa_copies(cfg, s) for s in (0, 5, 9, 10, 50)] == [16, 8, 2, 1, 1]
    early = [len(oracle.read_scene(e.image).objects) for e in lm_batch(cfg, 0).vqa]
    late = [len(oracle.read_scene(e.image).objects) for e in lm_batch(cfg, 10).vqa]
    assert min(early) >= 16 and max(late) <= 12
    plain, off = lm_batch(replace(SMALL, batch_vqa=12), 10), lm_batch(cfg, 10)
    assert [e.question for e in plain.vqa] == [e.question for e in off.vqa]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(plain.vqa, off.vqa))



def test_word_targets_sum_the_embeddings_of_each_cells_words():
    from ospo.shapeworld.pretrain import cell_labels, word_targets
    from ospo.tiny import build_tiny_janus
    from ospo.shapeworld.world import vocabulary

    model, processor = build_tiny_janus(small_spec(), vocabulary())
    table, labels, tok = word_targets(model, processor.tokenizer), cell_labels(), processor.tokenizer
    emb = model.get_input_embeddings().weight.detach()
    for code in (0, 5, len(labels) - 1):  # an empty cell and two glyphs
        entry = world_codes.code_table()[code]
        words = ([tok.pad_token] * 3 + [entry[1]]) if entry[0] == "empty" else [entry[1], entry[2], entry[3], entry[4]]
        expected = sum(emb[tok.convert_tokens_to_ids(w)] for w in words)
        assert torch.allclose(table[tuple(labels[code])], expected, atol=1e-6), entry


def test_aligner_words_target_trains_and_a_bad_target_is_refused(tmp_path):
    from safetensors.torch import load_file

    from ospo.errors import InputError

    cfg = replace(SMALL, align_steps=40, align_target="words", lm_steps=0)
    info = pretrain(tmp_path / "w", cfg, spec=small_spec())
    first = pretrain(tmp_path / "w1", replace(cfg, align_steps=1), spec=small_spec())
    assert set(info["vision"]) == {"vision_ce", "align_rel_mse"}
    assert info["vision"]["align_rel_mse"] < 0.5 * first["vision"]["align_rel_mse"]
    pretrain(tmp_path / "c", replace(cfg, align_target="cells"), spec=small_spec())
    w, c = load_file(tmp_path / "w" / "model.safetensors"), load_file(tmp_path / "c" / "model.safetensors")
    assert not all(torch.equal(w[k], c[k]) for k in w if k.startswith("model.aligner."))
    with pytest.raises(InputError, match="align_target takes cells or words"):
        replace(cfg, align_target="pixels")


def test_skewed_relation_and_line_questions_ask_the_asked_share_of_reverse_words_and_are_exact():
    """"relation~P": "right of" / "below" with probability P, else "left of" / "above", a fair yes/no coin, each
    answer true of the rendered scene; "line~P" the same about two objects on one row ("left of" / "right of");
    a bad share is refused where the config is read."""
    from ospo.errors import InputError
    from ospo.shapeworld import mixture, oracle
    from ospo.shapeworld.pretrain import find_rows
    from ospo.shapeworld.world import relations_between

    for share in (0.0, 0.2, 1.0):
        rng = np.random.default_rng(3)
        answers, reverse = [], 0
        for _ in range(200):
            e = mixture.sample_find(rng, 4, f"relation~{share}")
            by_shape = {o.shape: o for o in oracle.read_scene(e.image).objects}
            q = e.question.split(" ?")[0].split()
            a, b, relation = by_shape[q[2]], by_shape[q[-1]], " ".join(q[3:-2])
            assert relation in mixture.FORWARD_RELATIONS + mixture.REVERSE_RELATIONS
            assert e.answer == ("yes" if relation in relations_between((a.row, a.col), (b.row, b.col)) else "no")
            answers.append(e.answer)
            reverse += relation in mixture.REVERSE_RELATIONS
        assert 0.4 < answers.count("yes") / 200 < 0.6
        assert abs(reverse / 200 - share) < 0.07, (share, reverse)
    rng = np.random.default_rng(5)
    lines = [mixture.sample_find(rng, 4, kind) for kind in ("line~0",) * 40 + ("line~1",) * 40]
    for e in lines:
        objects = oracle.read_scene(e.image).objects
        assert len(objects) == 2 and objects[0].row == objects[1].row
        by_shape = {o.shape: o for o in objects}
        q = e.question.split(" ?")[0].split()
        left = by_shape[q[2]].col < by_shape[q[-1]].col
        assert e.answer == ("yes" if left == (q[3] == "left") else "no")
    assert [e.question.split()[3] for e in lines] == ["left"] * 40 + ["right"] * 40
    assert 0.3 < [e.answer for e in lines].count("yes") / 80 < 0.7
    assert mixture.relation_share("relation~0.25") == 0.25 and mixture.is_find_kind("relation~1")
    assert mixture.is_find_kind("line~0.2")
    for bad in ("relation~", "relation~1.5", "relation~x", "where~0.2"):
        assert not mixture.is_find_kind(bad)
        with pytest.raises(ValueError, match="relation~P"):
            mixture.relation_share(bad)
    with pytest.raises(InputError, match="relation~P"):
        replace(SMALL, find_stages="relation~0,relation~2")
    with pytest.raises(ValueError, match="relation~P"):  # a bad "<kind>~P" reaching the sampler names the form
        mixture.sample_find(np.random.default_rng(0), 1, "shape~1")
    cfg = replace(SMALL, find_steps=4, find_stages="relation~0,relation", find_batch=8)
    assert all(any(w in e.question for w in ("left of", "above")) for e in find_rows(cfg, 0))


def test_the_aligner_phase_reinitialises_an_aligner_loaded_with_from_pretrained(tmp_path):
    from transformers import JanusForConditionalGeneration

    from ospo.shapeworld.pretrain import train_aligner
    from ospo.shapeworld.world import vocabulary
    from ospo.tiny import build_tiny_janus

    model, processor = build_tiny_janus(small_spec(), vocabulary())
    with torch.no_grad():
        for p in model.model.aligner.parameters():
            p.fill_(0.5)
    model.save_pretrained(tmp_path / "m")
    loaded = JanusForConditionalGeneration.from_pretrained(tmp_path / "m")
    train_aligner(loaded, processor, replace(SMALL, align_steps=1, vision_lr=0.0), tmp_path / "state")
    weights = [p for n, p in loaded.model.aligner.named_parameters() if n.endswith("weight")]
    assert all(abs(float(w.detach().std()) - loaded.config.text_config.initializer_range) < 0.01 for w in weights)


def test_word_targets_refuse_a_tokenizer_without_the_world_words():
    from ospo.shapeworld.pretrain import word_targets
    from ospo.tiny import build_tiny_janus

    model, processor = build_tiny_janus(small_spec())  # no ShapeWorld vocabulary
    with pytest.raises(ValueError, match="no token for the ShapeWorld words"):
        word_targets(model, processor.tokenizer)


def test_freeze_aligner_keeps_the_aligner_of_the_align_phase_through_the_lm_phase(tmp_path):
    from safetensors.torch import load_file

    cfg = replace(SMALL, align_steps=2, align_target="words", freeze_vision=True, freeze_aligner=True)
    pretrain(tmp_path / "before_lm", replace(cfg, lm_steps=0), spec=small_spec())
    pretrain(tmp_path / "after", cfg, spec=small_spec())
    pretrain(tmp_path / "unfrozen", replace(cfg, freeze_aligner=False), spec=small_spec())
    before, after = load_file(tmp_path / "before_lm" / "model.safetensors"), load_file(tmp_path / "after" / "model.safetensors")
    unfrozen = load_file(tmp_path / "unfrozen" / "model.safetensors")
    aligner = [k for k in before if k.startswith("model.aligner.")]
    assert aligner and all(torch.equal(before[k], after[k]) for k in aligner)
    assert not all(torch.equal(before[k], unfrozen[k]) for k in aligner)
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("model.language_model."))


def test_every_phase_step_stops_on_a_non_finite_loss_before_touching_the_weights():
    from ospo.errors import OspoError
    from ospo.shapeworld.pretrain import _optimizer_step

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1)
    assert _optimizer_step(opt, (w * 2).sum(), "find", 0, [w]) == pytest.approx(12 ** 0.5)  # gradient 2 per weight
    before = w.detach().clone()
    with pytest.raises(OspoError, match="loss became nan in the align phase at step 7"):
        _optimizer_step(opt, (w * float("nan")).sum(), "align", 7)
    assert torch.equal(w.detach(), before)


def test_a_saved_config_with_removed_options_at_their_off_value_loads_and_any_other_value_is_named():
    from dataclasses import asdict

    from ospo.errors import InputError
    from ospo.shapeworld.pretrain import REMOVED_FIELDS, saved_config

    old = {**asdict(SMALL), **REMOVED_FIELDS}  # a config written before the options were removed
    assert saved_config(old) == SMALL
    with pytest.raises(InputError, match="removed pretraining option\\(s\\) \\['rewarm'\\].*notebook-2026-12-07"):
        saved_config({**old, "rewarm": True})
    with pytest.raises(TypeError):
        saved_config({**old, "no_such_field": 1})
