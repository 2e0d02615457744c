"""The research probes in experiments/ (not part of the package): run with `python -m pytest -q -m experiments`."""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.experiments


def test_vqa_probe_examples_are_exact_and_replicated():
    from experiments.vqa_probe import one_object_example
    from ospo.shapeworld import oracle
    from ospo.shapeworld.questions import answer_question
    from ospo.shapeworld.render import render

    rng = np.random.default_rng(0)
    for copies in (1, 9):
        for _ in range(15):
            scene, text, answer, kind = one_object_example(rng, "all", copies)
            assert len(scene.objects) == copies
            assert answer_question(text.split("?")[0] + "?", oracle.read_scene(render(scene))) == answer
    shape_only = [one_object_example(rng, "shape") for _ in range(30)]
    assert all(len(t.split("?")[0].split()) == 4 for _, t, _, k in shape_only if k == "exists")  # "is there a X"


def test_vqa_probe_runs_each_token_kind_and_prints_a_table(monkeypatch, capsys, tmp_path):
    import json
    import sys

    from experiments import vqa_probe

    for tokens in ("aligner", "words", "realign"):
        out = tmp_path / f"{tokens}.json"
        frozen = ["--freeze-aligner"] if tokens == "realign" else []
        monkeypatch.setattr(sys, "argv", ["vqa_probe", *frozen, "--tokens", tokens, "--steps", "2", "--batch", "2",
                                          "--eval-size", "6", "--eval-every", "1", "--align-steps", "2",
                                          "--copies", "8", "--threads", str(torch.get_num_threads()),  # leave the
                                          "--json", str(out)])  # process's thread count as other tests expect it
        vqa_probe.main()
        rows = json.loads(out.read_text())["rows"]
        assert [r["step"] for r in rows] == [0, 1, 2] and rows[1]["copies"] == 8
        assert all(0.0 <= r["all"] <= 1.0 for r in rows)
    assert "| step | all |" in capsys.readouterr().out


def test_vqa_probe_realigns_towards_the_position_target_and_asks_left_of_only(monkeypatch, capsys, tmp_path):
    import json
    import sys

    from experiments import aligner, vqa_probe

    targets, train_aligner = [], aligner.train_aligner
    monkeypatch.setattr(aligner, "train_aligner",
                        lambda model, processor, cfg, state, position, train_vision:
                        targets.append((position, train_vision)) or train_aligner(model, processor, cfg, state,
                                                                                  position, train_vision))
    rng = np.random.default_rng(4)
    assert all("left of" in vqa_probe.one_object_example(rng, "left-of")[1] for _ in range(20))
    out = tmp_path / "p.json"
    monkeypatch.setattr(sys, "argv", ["vqa_probe", "--freeze-aligner", "--tokens", "realign+position", "--questions",
                                      "left-of", "--steps", "1", "--batch", "2", "--eval-size", "6",
                                      "--align-steps", "2", "--align-vision", "--threads",
                                      str(torch.get_num_threads()), "--json", str(out)])
    vqa_probe.main()
    assert targets == [(True, True)]
    assert [r["step"] for r in json.loads(out.read_text())["rows"]] == [0, 1]
    assert "aligner re-trained" in capsys.readouterr().out


def test_vqa_probe_naming_stage_comes_first_and_is_scored_on_colour_words(monkeypatch, capsys, tmp_path):
    import json
    import sys

    from experiments import vqa_probe

    out = tmp_path / "name.json"
    monkeypatch.setattr(sys, "argv", ["vqa_probe", "--freeze-aligner", "--questions", "color", "--name-steps", "2",
                                      "--steps", "1", "--batch", "2", "--eval-size", "6", "--eval-every", "5",
                                      "--order", "question-first", "--token-scale", "2",
                                      "--threads", str(torch.get_num_threads()), "--json", str(out)])
    vqa_probe.main()
    rows = json.loads(out.read_text())["rows"]
    assert [r["step"] for r in rows] == [0, 2, 3]  # evaluated at the end of each stage
    assert all(0.0 <= r["name"] <= 1.0 and 0.0 <= r["exists"] <= 1.0 for r in rows)
    assert "| name |" in capsys.readouterr().out


def test_vqa_probe_position_tokens_band_naming_and_relation_questions(monkeypatch, capsys, tmp_path):
    import json
    import sys

    from experiments import vqa_probe
    from ospo.shapeworld import oracle
    from ospo.shapeworld.render import render
    from ospo.shapeworld.world import COL_BANDS, ROW_BANDS

    rng = np.random.default_rng(3)
    for _ in range(30):  # "is the circle upper middle or lower ?" -> the band of the circle in the pixels
        scene, question, answer, kind = vqa_probe.naming_example(rng, 4, "band")
        thing = next(o for o in oracle.read_scene(render(scene)).objects if o.shape == question.split()[2])
        bands, value = (ROW_BANDS, thing.row) if "upper" in question else (COL_BANDS, thing.col)
        assert kind == "name" and value in bands[answer]
    from ospo.shapeworld.questions import answer_question

    answers = []
    for _ in range(40):  # the easiest relation: two objects on one row, answered by the pixels
        scene, text, answer, kind = vqa_probe.one_object_example(rng, "left-right")
        objects = oracle.read_scene(render(scene)).objects
        assert len(objects) == 2 and objects[0].row == objects[1].row and kind == "relation"
        assert answer_question(text.split("?")[0] + "?", oracle.read_scene(render(scene))) == answer
        answers.append(answer)
    assert 10 < answers.count("yes") < 30
    out = tmp_path / "rel.json"
    monkeypatch.setattr(sys, "argv", ["vqa_probe", "--freeze-aligner", "--tokens", "words+position", "--questions",
                                      "relation", "--name-kind", "band", "--name-steps", "1", "--steps", "1",
                                      "--batch", "2", "--eval-size", "6", "--eval-every", "5",
                                      "--threads", str(torch.get_num_threads()), "--json", str(out)])
    vqa_probe.main()
    rows = json.loads(out.read_text())["rows"]
    assert [r["step"] for r in rows] == [0, 1, 2] and all(0.0 <= r["relation"] <= 1.0 for r in rows)
    assert "| relation |" in capsys.readouterr().out


def test_hidden_probe_reads_back_what_the_input_holds(monkeypatch, capsys, tmp_path):
    import json
    import sys

    from experiments import hidden_probe

    out = tmp_path / "hidden.json"
    monkeypatch.setattr(sys, "argv", ["hidden_probe", "--scenes", "150", "--threads", str(torch.get_num_threads()),
                                      "--json", str(out)])
    hidden_probe.main()
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) >= 2 and rows[0]["layer"] == 0
    # layer 0 is the input: the cell's own token holds its colour and the last prompt token does not
    assert rows[0]["answer: object colour"] < 0.5
    saved = json.loads(out.read_text())
    assert set(saved["tower"]) == {"object column", "object row"} and "cell: object column" in rows[0]
    assert all(0.0 <= v <= 1.0 for v in saved["tower"].values())
    printed = capsys.readouterr().out
    assert "| layer |" in printed and "The vision tower's output" in printed


def test_linear_probe_separates_separable_classes_and_not_noise():
    from experiments.hidden_probe import linear_probe

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (300,), generator=g)
    x = torch.randn(300, 8, generator=g)
    assert linear_probe(x, y, 4, 200) < 0.45
    x[:, :4] += 3 * torch.nn.functional.one_hot(y, 4)
    assert linear_probe(x, y, 4, 200) > 0.9


def test_vqa_probe_saves_a_checkpoint_that_loads_and_holds_the_trained_weights(monkeypatch, capsys, tmp_path):
    import sys

    from experiments import vqa_probe
    from ospo.model import JanusAdapter
    from ospo.shapeworld import checkpoint_path

    out = tmp_path / "probe"
    monkeypatch.setattr(sys, "argv", ["vqa_probe", "--freeze-aligner", "--steps", "1", "--batch", "2", "--eval-size",
                                      "2", "--threads", str(torch.get_num_threads()), "--save", str(out)])
    vqa_probe.main()
    shipped, saved = (JanusAdapter.from_pretrained(str(p)).janus.state_dict() for p in (checkpoint_path(), out))
    changed = [k for k in shipped if not torch.equal(shipped[k], saved[k])]
    assert any(k.startswith("model.language_model.") for k in changed)
    assert not [k for k in changed if k.startswith(("model.vision_model.", "model.aligner.", "model.vqmodel."))]

    monkeypatch.setattr(sys, "argv", ["vqa_probe", "--tokens", "words", "--save", str(tmp_path / "x")])
    with pytest.raises(SystemExit) as exit_info:
        vqa_probe.main()
    assert exit_info.value.code == 2 and "--save needs pixel tokens" in capsys.readouterr().err


def test_relation_probe_phases_parse_and_bad_ones_say_the_form():
    import argparse

    from experiments.relation_probe import format_phases, parse_phases

    phases = parse_phases("left-of:600,left-right~0.2:300,left-right:5")
    assert phases == [("left-of", 0.0, 600), ("left-right", 0.2, 300), ("left-right", 0.5, 5)]
    assert parse_phases(format_phases(phases)) == phases  # what a run records can be passed again
    for bad in ("up:3", "left-of:0", "left-of~0.5:3", "left-of~:3", "left-right~:3", "left-right~2:3",
                "left-right~x:3", "left-right", "left-of:\u00b2"):
        with pytest.raises(argparse.ArgumentTypeError, match="KIND"):
            parse_phases(bad)


def test_relation_probe_examples_follow_the_pixels_and_the_asked_share_of_right_of():
    from experiments.vqa_probe import left_right_example
    from ospo.shapeworld import oracle
    from ospo.shapeworld.questions import answer_question
    from ospo.shapeworld.render import render

    def fair_coin(rng):  # the example before p_right existed: the documented runs' stream
        from ospo.shapeworld.world import BACKGROUNDS, COLORS, GRID, SHAPES, TEXTURES

        shapes = rng.choice(SHAPES, size=2, replace=False)
        rng.integers(GRID), rng.choice(GRID, size=2, replace=False)
        [(rng.choice(list(COLORS)), rng.choice(list(TEXTURES))) for _ in shapes]
        relation = "left of" if rng.random() < 0.5 else "right of"
        rng.choice(list(BACKGROUNDS))
        return f"is the {shapes[0]} {relation} the {shapes[1]}"

    old, new = np.random.default_rng(8), np.random.default_rng(8)
    for _ in range(50):
        assert left_right_example(new, 0.5)[1].startswith(fair_coin(old))
    only_left = np.random.default_rng(8)
    for _ in range(20):  # no draw for the relation at p_right 0: the fair-coin stream minus those draws
        assert "left of" in left_right_example(only_left, 0.0)[1]
    rng = np.random.default_rng(5)
    for p_right, low, high in ((0.0, 0, 0), (0.2, 5, 35), (0.5, 35, 65)):
        questions = []
        for _ in range(100):
            scene, question, answer = left_right_example(rng, p_right)
            if len(questions) < 20:
                assert answer_question(question, oracle.read_scene(render(scene))) == answer
            questions.append(question)
        assert low <= sum("right of" in q for q in questions) <= high


def test_relation_probe_lm_path_equals_the_full_model_with_the_same_image_tokens(monkeypatch, capsys, tmp_path):
    """The probe skips the vision tower by writing the exact tokens into the LM's input: the full model, its
    aligner's output replaced by the same tokens, must give the same answer logits."""
    import json
    import sys

    from experiments import aligner, relation_probe
    from ospo.model import JanusAdapter
    from ospo.shapeworld import checkpoint_path, tasks
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld import codes as world_codes
    from ospo.shapeworld.render import render

    adapter = JanusAdapter.from_pretrained(str(checkpoint_path()))
    lm = relation_probe.ExactTokenLM(adapter, position_scale=1.0)
    rng = np.random.default_rng(1)
    examples = [relation_probe.left_right_example(rng, 0.5) for _ in range(3)]
    examples.append((examples[0][0], "is the circle above the square ?", "no"))  # another length: left padding
    with torch.no_grad():
        fast = lm.answer_logits(examples)
        cells = lm.labels[torch.from_numpy(np.stack([world_codes.scene_to_codes(s) for s, _, _ in examples]))]
        code = aligner.cell_position_code(lm.table.shape[-1]) * lm.table.norm(dim=-1).mean()
        exact = lm.table[cells.unbind(-1)] + code
        hook = adapter.janus.model.aligner.register_forward_hook(lambda m, i, out: exact.to(out.dtype))
        questions = [mixture.spaced(tasks.shapeworld_templates().vqa(q)) for _, q, _ in examples]
        texts = [adapter.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
            add_generation_prompt=True) for q in questions]
        enc = adapter.processor(text=texts, images=[render(s) for s, _, _ in examples], return_tensors="pt",
                                padding=True)
        full = adapter.janus(**enc, logits_to_keep=1).logits[:, -1]
        hook.remove()
    assert torch.allclose(fast, full, atol=1e-4), (fast - full).abs().max()

    out = tmp_path / "rel.json"
    monkeypatch.setattr(sys, "argv", ["relation_probe", "--phases", "left-of:2,left-right~0.3:1", "--batch", "2",
                                      "--eval-every", "1", "--threads", str(torch.get_num_threads()),
                                      "--json", str(out)])
    relation_probe.main()
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    assert [(r["step"], r["phase"]) for r in rows] == [(0, "left-of"), (1, "left-of"), (2, "left-of"),
                                                       (3, "left-right")]
    assert saved["args"]["phases"] == "left-of:2,left-right~0.3:1"
    held_out = [relation_probe.left_right_example(np.random.default_rng([9, i]), 0.0) for i in range(300)]
    with torch.no_grad():  # step 0 is the untrained model's accuracy on the left-of held-out questions
        said_yes = lm.answer_logits(held_out)[:, adapter.tokenizer.convert_tokens_to_ids(["yes", "no"])].argmax(-1) == 0
    assert rows[0]["left-of"] == np.mean([bool(y) == (a == "yes") for y, (_, _, a) in zip(said_yes.tolist(), held_out)])
    assert rows[1]["loss"] > 0 and "| left-right |" in capsys.readouterr().out


def test_the_words_and_position_target_is_the_word_sum_plus_each_cells_own_code():
    from experiments.aligner import aligned_tokens, cell_position_code

    words = torch.randn(3, 4, 2, 2, 16)
    labels = torch.tensor([[[1, 2, 1, 0]] * 64])  # (1, 64, 4): the same contents in every cell
    plain, placed = aligned_tokens(words, labels), aligned_tokens(words, labels, 1.0)
    assert torch.equal(plain[0, 0], words[1, 2, 1, 0]) and torch.equal(plain[0, 0], plain[0, 63])
    code = cell_position_code(16)
    assert torch.allclose(placed - plain, (code * words.norm(dim=-1).mean())[None], atol=1e-6)
    assert len({tuple(row.tolist()) for row in code}) == 64 and torch.allclose(code.norm(dim=-1), torch.ones(64))


def test_the_words_and_position_aligner_learns_its_target_and_the_tower_trains_only_when_asked(tmp_path):
    """experiments.aligner: the "words+position" align phase lowers its relative error (0.55 vs 1.0 after one step
    on this small model), and `train_vision` decides whether the vision tower moves."""
    from dataclasses import replace

    from experiments.aligner import train_aligner
    from ospo.shapeworld.pretrain import PretrainConfig, shapeworld_spec
    from ospo.shapeworld.world import vocabulary
    from ospo.tiny import build_tiny_janus

    spec = replace(shapeworld_spec(), hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                   vision_hidden_size=32, vision_layers=1)
    cfg = PretrainConfig(vision_batch=2, align_target="words", threads=torch.get_num_threads())
    losses, moved = {}, {}
    for steps, tower in ((1, False), (40, False), (40, True)):
        model, processor = build_tiny_janus(spec, vocabulary())
        before = {k: v.clone() for k, v in model.model.vision_model.state_dict().items()}
        losses[steps, tower] = train_aligner(model, processor, replace(cfg, align_steps=steps), tmp_path,
                                             position=True, train_vision=tower)["align_rel_mse"]
        after = model.model.vision_model.state_dict()
        moved[steps, tower] = any(not torch.equal(before[k], after[k]) for k in before)
    assert losses[40, False] < 0.7 * losses[1, False]
    assert moved == {(1, False): False, (40, False): False, (40, True): True}


def test_negative_sampling_prints_a_table_per_task_with_every_setting(tmp_path, capsys):
    from experiments import negative_sampling
    from ospo.artifacts import StageDir
    from ospo.records import Negative, Prompt

    prompts = [Prompt("color1-00000", "a red circle", "attribute", "color1", "in-context"),
               Prompt("spatial-00000", "a circle left of a square", "layout", "spatial", "in-context")]
    negatives = [Negative("color1-00000/n0", "color1-00000", 0, "replace", "a blue circle")]
    for name, records in (("prompts", prompts), ("perturb", negatives)):
        stage = StageDir(tmp_path, name)
        stage.parts.mkdir(parents=True)
        stage.write_part("c00000", records)
        stage.finish({})
    negative_sampling.main(["--run", str(tmp_path), "--num", "2", "--max-redraws", "1"])
    out = capsys.readouterr().out
    assert "perturbation (3 slots a prompt)" in out and "densification" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(negative_sampling.SETTINGS) + 2
    assert all(line.split(" | ")[-2].strip() == "6" for line in rows[:4])  # 2 prompts x 3 slots
