"""Pretraining phases (ospo.shapeworld.pretrain: vq, vision, lm, loop, state, surgery): the decoder's training data,
exact resume, independent phases, the factor head, the aligner and the find and text phases."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ospo.shapeworld import codes as world_codes
from ospo.shapeworld import sampler
from ospo.shapeworld.pretrain import PretrainConfig, pretrain, shapeworld_spec, vq_batch
from ospo.shapeworld.render import render


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
    from ospo.shapeworld.pretrain.state import _optimizer_step

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1)
    assert _optimizer_step(opt, (w * 2).sum(), "find", 0, [w]) == pytest.approx(12 ** 0.5)  # gradient 2 per weight
    before = w.detach().clone()
    with pytest.raises(OspoError, match="loss became nan in the align phase at step 7"):
        _optimizer_step(opt, (w * float("nan")).sum(), "align", 7)
    assert torch.equal(w.detach(), before)
