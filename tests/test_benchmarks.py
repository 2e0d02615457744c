"""The profile benchmark's bookkeeping (the numbers it prints are measured, not tested)."""

import json

import numpy as np
import pytest
import torch

from benchmarks import profile as bench_profile


def test_ops_are_grouped_by_kind():
    assert bench_profile.kind_of("aten::mm") == "matmul"
    assert bench_profile.kind_of("aten::cat") == "KV cache / copies"
    assert bench_profile.kind_of("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert bench_profile.kind_of("aten::cumsum") == "sampling"
    assert bench_profile.kind_of("aten::rsqrt") == "other aten"


def test_a_matmul_workload_is_attributed_to_matmul():
    a = torch.randn(256, 256)
    result = bench_profile.profile(lambda: [a @ a for _ in range(20)])
    assert result["by_kind"]["matmul"] > 0.5 * sum(result["by_kind"].values())
    assert result["top"][0]["op"] in ("aten::mm", "aten::matmul")


def test_inference_workloads_run_on_the_plain_model_and_the_train_step_comes_last(tiny_dir):
    from ospo.model import JanusAdapter

    tiny = JanusAdapter.from_pretrained(str(tiny_dir))  # its own copy: the train step would wrap it with LoRA
    plain = type(tiny.model)
    workloads = bench_profile.workloads(tiny, batch=2, vqa_images=2, questions=2)
    labels = list(workloads)
    assert "train" in labels[-1]
    for label in labels[:-1]:
        workloads[label]()
        assert type(tiny.model) is plain and not tiny.model.training, label
    assert tiny.preallocate_cache  # the DynamicCache variant restores the flag


def test_judge_rows_split_accuracy_by_true_answer_and_rank_regardless_of_bias():
    from benchmarks.shapeworld_targets import judge_rows

    rows = judge_rows(np.array([0.9, 0.5, 0.2, -0.1]), np.array([True, True, False, False]))
    assert rows == {"true yes": 1.0, "true no": 0.5, "AUC (ranking)": 1.0}


def test_blind_judge_scores_chance_on_form_balanced_questions_only():
    from benchmarks.shapeworld_targets import blind_accuracy
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.questions import parse_question

    for balanced, low, high in ((False, 0.58, 0.68), (True, 0.44, 0.55)):
        rng = np.random.default_rng([123, 1, int(balanced)])
        examples = [mixture.sample_vqa(rng, balanced=balanced) for _ in range(800)]
        questions = [parse_question(e.question.split("?")[0] + "?") for e in examples]
        truth = np.array([e.answer == "yes" for e in examples])
        assert low < blind_accuracy(questions, truth, balanced, num_fit=5000) < high


def test_blind_in_sample_answers_each_form_with_its_majority():
    from benchmarks.shapeworld_targets import blind_in_sample

    questions = ["is there a circle ? please answer yes or no .", "is there a square ?", "is there a cross ?",
                 "is there a red circle ?", "is there a blue square ?"]
    # shape-only form: 2 of 3 yes -> 2 right; coloured form: 1 yes, 1 no -> 1 right
    assert blind_in_sample(questions, np.array([True, True, False, True, False])) == 3 / 5

def test_text_measure_asks_every_sub_category_and_every_edit_and_counts_right_answers():
    """`text_tasks` takes its prompts in turn from every sub-category (the split lists them one sub-category after
    another) and asks each prompt for every distinct edit of its slots; a right stepwise answer counts as valid."""
    from benchmarks.shapeworld_targets import _interleaved, text_tasks
    from ospo.parsing import ParseError
    from ospo.shapeworld import evalsets, tasks
    from ospo.shapeworld.captions import parse_caption
    from ospo.shapeworld.edits import perturb
    from ospo.templates import load_templates

    templates = load_templates("shapeworld")
    first = _interleaved(evalsets.dev_split(20))[:10]
    assert len({r.task for r in first}) == 10
    by_text = {}
    for r in first:
        for edit in dict.fromkeys(tasks.perturbation_slots(r.spec)):
            new = perturb(parse_caption(r.prompt), edit, np.random.default_rng(0))
            by_text[templates.perturb(r.prompt, edit)] = (
                tasks.stepwise_perturbation(parse_caption(r.prompt), edit, new, templates) if new else "")

    class Model:  # answers every perturbation right (when the edit exists), decompositions not at all
        asked = []

        def generate_text(self, prompts, seeds, sampling):
            self.asked += prompts
            return [by_text.get(p, "") for p in prompts]

    model = Model()
    valid, covered, reasons = text_tasks(model, templates, 10)
    assert len(model.asked) == len(by_text) + 10 and covered == 0.0
    assert valid == pytest.approx(sum(bool(a) for a in by_text.values()) / len(by_text)) and valid > 0.8
    with pytest.raises(ParseError):
        templates.parse_perturbation("")


def test_relation_sets_are_exact_about_their_renders_and_balanced():
    """A judge that answers from the oracle's reading of the pixels scores 1 on every relation set; one that
    always says yes scores about one half: the sets' answers are true of their images and balanced."""
    from benchmarks.shapeworld_targets import RELATION_SETS, relation_sets
    from ospo.unified import YesNo
    from ospo.shapeworld import oracle
    from ospo.shapeworld.questions import answer_question

    class Judge:
        def __init__(self, always_yes: bool):
            self.always_yes = always_yes

        def yes_no_scores(self, images, questions):
            out = []
            for image, qs in zip(images, questions):
                scene = oracle.read_scene(np.asarray(image))
                yes = [self.always_yes or answer_question(q.split("?")[0] + "?", scene) == "yes" for q in qs]
                out.append(YesNo(torch.tensor([float(y) for y in yes]), torch.tensor([1.0 - y for y in yes])))
            return out

    exact, yes = relation_sets(Judge(False), 60), relation_sets(Judge(True), 60)
    assert list(exact) == [*RELATION_SETS, "vqa relation"]
    assert all(v == 1.0 for v in exact.values()), exact
    assert all(0.3 < v < 0.7 for v in yes.values()), yes


def test_selection_precision_splits_the_judge_and_the_chosen_by_subcategory():
    from benchmarks.selection_precision import auc, chosen_by_subcategory, judge_by_subcategory
    from ospo.records import Score, TrainingPair
    from ospo.shapeworld.codes import scene_to_codes
    from ospo.shapeworld.world import Obj, Scene

    assert auc([2, 3], [0, 1]) == 1.0 and auc([0], [1]) == 0.0 and auc([1], [1]) == 0.5
    assert np.isnan(auc([], [1]))
    red = scene_to_codes(Scene((Obj("circle", "red", "solid", 2, 2),), "gray"))
    blue = scene_to_codes(Scene((Obj("circle", "blue", "solid", 2, 2),), "gray"))
    codes = {"a/n0/positive": red, "a/n1/positive": blue, "a/n0/negative": blue, "b/n0/positive": red}
    prompts = {"a": "a red circle", "b": "a blue circle"}
    sub = {"a": "color1", "b": "color1x"}
    scores = [Score("1", "a/n0/positive", "a", (0.9,), (0.1,)), Score("2", "a/n1/positive", "a", (0.4,), (0.6,)),
              Score("3", "a/n0/negative", "a", (0.5,), (0.5,)), Score("4", "b/n0/positive", "b", (0.9,), (0.1,)),
              Score("5", "a/n0/positive", "a/n0", (0.9,), (0.1,))]  # a negative's questions: not the prompt's own
    judge = judge_by_subcategory(scores, codes, prompts, sub)
    assert judge["color1"] == {"images": 3, "correct": 1 / 3, "auc": 1.0, "positives": 2, "positives_correct": 0.5}
    assert judge["color1x"]["images"] == 1 and judge["color1x"]["correct"] == 0.0 and np.isnan(judge["color1x"]["auc"])
    pair = TrainingPair("a", "a red circle", None, "a/n1/positive", "a/n0/negative", "v2", {}, {"prompt_id": "a"})
    assert chosen_by_subcategory([pair], codes, prompts, sub) == {"color1": (1, 0.0)}


def test_recipes_evaluation_pools_seeds_and_reuses_finished_evaluations(tmp_path, monkeypatch):
    from benchmarks import recipes
    from ospo.evaluate import shapeworld as sw_eval
    from ospo.model import JanusAdapter
    from ospo.sampling import ImageSampling
    from ospo.shapeworld import checkpoint_path

    model = JanusAdapter.from_pretrained(str(checkpoint_path()), batch_size=16)
    sampling = ImageSampling(cfg_scale=3.0)
    weights = recipes.weights_identity(checkpoint_path(), None)
    assert weights["model_hash"]  # the content, not only the path
    drawn = []
    real = sw_eval.evaluate_shapeworld

    def spy(model, set_name, out, images_per_prompt, sampling, seed, **kw):
        drawn.append(seed)
        return real(model, set_name, out, images_per_prompt, sampling, seed, **kw)

    monkeypatch.setattr(sw_eval, "evaluate_shapeworld", spy)
    one = recipes.evaluate(model, "dev", tmp_path, 1, sampling, [0], 1, weights)
    two = recipes.evaluate(model, "dev", tmp_path, 1, sampling, [0, 1], 1, weights)
    assert drawn == [0, 1] and two["seeds"] == [0, 1]  # seed 0 drawn once, then reused
    assert len(two["images"]) == 2 * len(one["images"]) > 0
    n = len(one["images"])
    assert two["images"][:n] == one["images"]
    assert [i["prompt_id"] for i in two["images"][n:]] == [i["prompt_id"] for i in one["images"]]
    assert {i["seed"] for i in two["images"][n:]}.isdisjoint({i["seed"] for i in one["images"]})  # other draws
    assert recipes.evaluate(model, "dev", tmp_path, 1, sampling, [0, 1], 1, weights) == two
    assert drawn == [0, 1]
    # any other setting or other weights: drawn again, never another evaluation's scores
    recipes.evaluate(model, "dev", tmp_path, 1, sampling, [0], 1, {**weights, "model_hash": "other"})
    other = {**weights, "model_hash": "other"}
    recipes.evaluate(model, "dev", tmp_path, 1, ImageSampling(cfg_scale=2.0), [0], 1, other)
    recipes.evaluate(model, "dev", tmp_path, 2, ImageSampling(cfg_scale=2.0), [0], 1, other)
    assert drawn == [0, 1, 0, 0, 0]


def test_recipes_geneval_dev_split_counts_the_prompts_the_run_wrote(tmp_path):
    from benchmarks import recipes
    from ospo.artifacts import write_jsonl
    from ospo.records import Prompt
    from ospo.shapeworld import evalsets

    dev = recipes.split_records("geneval-dev", 8)
    assert dev == evalsets.geneval_dev_split() and recipes.split_records("test", 8) is None
    position = [r.prompt for r in dev if r.task == "position"]
    written = [Prompt("p0", position[0].upper() + " ", "layout", "spatial", "in-context"),  # same prompt key
               Prompt("p1", position[1], "layout", "spatial", "in-context"),
               Prompt("p2", "a red circle left of a blue square", "layout", "spatial", "in-context")]
    write_jsonl(tmp_path / "prompts" / "records.jsonl", written)
    counts = recipes.trained_on(tmp_path, dev)
    assert counts["position"] == 2 and sum(counts.values()) == 2 and set(counts) == set(evalsets.GENEVAL_TASKS)


def test_recipes_refuses_an_iteration_below_one(tmp_path, capsys):
    from benchmarks import recipes

    with pytest.raises(SystemExit):
        recipes.main(["--run", str(tmp_path), "--iteration", "0"])
    assert "--iteration must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--loop-seeds", "0,0"], "--loop-seeds repeats a seed: 0,0"),
    (["--loop-seeds", "0,one"], "--loop-seeds takes comma-separated integers, got '0,one'"),
    (["--set", "seed=3"], "the run seed is set by --loop-seeds"),
    (["--seeds", "0"], "--seeds must be >= 1, got 0")])
def test_loop_seeds_refuses_bad_arguments_before_running_anything(tmp_path, capsys, args, message):
    from benchmarks import loop_seeds

    with pytest.raises(SystemExit):
        loop_seeds.main(["--out", str(tmp_path / "loops"), *args])
    assert message in capsys.readouterr().err and not (tmp_path / "loops").exists()


def test_the_gpu_benchmark_builds_janus_pro_7b_at_its_published_size():
    """What `benchmarks.efficiency --janus-pro-7b` builds on a GPU is Janus-Pro-7B, checked on the meta device (no
    memory): ~7.4B parameters (14.8 GB in bf16), a 30-layer 4096-wide LM, 576 image tokens from 384 px, 16384
    codes; and its FLOP count of a guided image is ~2 FLOP per LM weight, image token and row."""
    from benchmarks import efficiency

    adapter = efficiency.janus_pro_7b("meta")
    params = sum(p.numel() for p in adapter.janus.parameters())
    assert 7.3e9 < params < 7.5e9
    assert all(p.dtype == torch.bfloat16 for p in adapter.janus.parameters())
    assert (adapter.num_image_tokens, adapter.image_size, adapter.codebook_size) == (576, 384, 16384)
    shapes = efficiency.model_shapes(adapter.janus)
    assert (shapes.L, shapes.d) == (30, 4096)
    per_image = efficiency.generation_flops(shapes, rows=2, P=16, N=576)  # one image with CFG: two rows
    assert 2 * 2 * 6.0e9 * 576 < per_image < 2 * 2 * 7.4e9 * 600  # 2 FLOP per LM weight, token and row


def test_markdown_table_takes_every_rows_keys_and_prints_words_and_counts_as_they_are():
    from benchmarks.tables import markdown_table

    table = markdown_table([{"step": 0, "phase": "a", "acc": 0.5}, {"step": 9, "phase": "b", "loss": 0.25,
                                                                     "acc": 1.0, "n": 3}], "step", digits=2)
    assert table.splitlines() == ["| step | phase | acc | loss | n |", "|---|---|---|---|---|",
                                  "| 0 | a | 0.50 |  |  |", "| 9 | b | 1.00 | 0.25 | 3 |"]


def test_janus_pro_1b_is_built_at_its_published_size():
    from benchmarks import efficiency
    from benchmarks.janus_pro import build

    adapter = build("1b", "meta")
    assert 2.0e9 < sum(p.numel() for p in adapter.janus.parameters()) < 2.15e9
    assert (efficiency.model_shapes(adapter.janus).L, efficiency.model_shapes(adapter.janus).d) == (24, 2048)
    assert (adapter.num_image_tokens, adapter.image_size, adapter.codebook_size) == (576, 384, 16384)


def test_the_gpu_check_runs_every_section_on_the_cpu_layout(tmp_path, monkeypatch, capsys):
    """`benchmarks.gpu --arch mini --device cpu` runs every code path of the device check (what a GPU session
    cannot afford to debug): every section and generation variant gives rows, none records an error, and the
    adapter's switches are restored after each variant."""
    import sys

    from benchmarks import gpu

    out = tmp_path / "gpu.json"
    monkeypatch.setattr(sys, "argv", ["gpu", "--arch", "mini", "--device", "cpu", "--batches", "1,2",
                                      "--matmul-size", "64", "--vqa-images", "2", "--questions", "2",
                                      "--pairs", "2", "--micro-batch", "1", "--steps", "1", "--profile-tokens", "2",
                                      "--json", str(out)])
    gpu.main()
    report = json.loads(out.read_text())
    m = report["models"]["mini Janus-Pro layout"]
    assert not [k for k in m if k.endswith("_error")]
    assert [(r["variant"], r["batch"]) for r in m["generation"]] == [
        ("one-at-a-time", 1), ("dynamic", 2), ("4d-mask", 2), ("ours", 1), ("ours", 2)]
    assert all("codes_equal_to_ours" not in r for r in m["generation"])
    assert all(r["repeats"] == 2 and r["first_call_s"] > 0 and r["images_per_s"] > 0 for r in m["generation"])
    assert [r["questions_per_image"] for r in m["vqa"]] == [2]
    assert [r["variant"] for r in m["training"]] == ["stored codes", "re-encode PNG", "stored codes + grad ckpt"]
    assert [r["batch"] for r in m["profile"]] == [1, 2]
    assert "| ours (batched, preallocated cache) | 2 |" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["gpu", "--arch", "mini", "--sections", "generation,speed"])
    with pytest.raises(SystemExit, match="unknown speed; choose from generation"):
        gpu.main()


def test_the_generation_variants_restore_the_adapters_switches(tiny):
    from benchmarks.gpu import SWITCHES, bench_generation

    before = {k: getattr(tiny, k) for k in SWITCHES}
    tiny.batch_size, tiny.decode_bucket = 3, 5  # not the defaults, so that a reset to defaults would show
    try:
        rows = bench_generation(tiny, [1, 2], 1, peak=1e12, bandwidth=1e12,
                                variants=["4d-mask", "dynamic", "ours", "static", "graphs"], repeats=1)
        assert tiny.batch_size == 3 and tiny.decode_bucket == 5
        assert {k: getattr(tiny, k) for k in SWITCHES if k != "batch_size"} == {
            k: v for k, v in before.items() if k != "batch_size"}
    finally:
        tiny.batch_size, tiny.decode_bucket = before["batch_size"], 64
    assert [(r["variant"], r["batch"]) for r in rows] == [
        ("4d-mask", 2), ("dynamic", 2), ("ours", 1), ("ours", 2), ("static", 2), ("graphs", 1), ("graphs", 2)]
    # fp32 on the CPU: the static step draws our codes exactly ("graphs" runs it eagerly without CUDA)
    assert [r["codes_equal_to_ours"] for r in rows if r["variant"] in ("static", "graphs")] == [1.0, 1.0, 1.0]
    assert tiny.num_image_tokens == tiny.janus.config.vision_config.num_image_tokens  # the 8-token warm-up undone


def test_a_generation_variant_that_fails_costs_its_row_alone(tiny):
    """A GPU session cannot afford to lose a whole section to one variant (a capture error, out of memory): the
    failing row records the error and the others are measured."""
    from benchmarks.gpu import bench_generation

    tiny.decode_bucket = 0  # the static decode refuses it
    try:
        rows = bench_generation(tiny, [1], 1, peak=1e12, bandwidth=1e12, variants=["static", "ours"], repeats=1)
    finally:
        tiny.decode_bucket = 64
    assert rows[0]["variant"] == "static" and "bucket must be >= 1" in rows[0]["error"]
    assert rows[1]["variant"] == "ours" and rows[1]["images_per_s"] > 0 and "error" not in rows[1]
    assert not tiny.static_decode
    late = bench_generation(tiny, [1], 1, peak=1e12, bandwidth=1e12, variants=["ours"], repeats=1,
                            past_deadline=lambda: True)
    assert late == [{"variant": "ours", "method": "ours (batched, preallocated cache)", "batch": 1,
                     "error": "skipped: past --deadline"}]


def test_pretrain_speed_times_every_phase_of_every_stage_and_counts_the_recipes_steps(tmp_path):
    from dataclasses import replace

    from benchmarks import pretrain_speed
    from ospo.shapeworld.pretrain import PretrainConfig, shapeworld_spec

    spec = replace(shapeworld_spec(), hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                   vision_hidden_size=32, vision_layers=1)
    recipe = tmp_path / "two.yaml"
    recipe.write_text(
        "stages:\n"
        "  - name: vq\n    set: {vq_steps: 700, vq_stop_at: 160, vq_batch: 2, lm_steps: 0, vision_steps: 0}\n"
        "  - name: S\n    assemble: {vq: vq, rest: vq}\n"
        "  - name: B\n    set: {init_from: S, vq_steps: 0, vision_steps: 30, vision_batch: 2, lm_steps: 250,\n"
        "                      find_steps: 40, find_batch: 2, text_steps: 20, text_batch: 2,\n"
        "                      batch_t2i: 2, batch_vqa: 2, batch_text: 2, eval_every: 100, checkpoint_every: 50}\n")
    rows = pretrain_speed.estimate(str(recipe), 3, spec=spec, evaluation_seconds=2.0)
    got = [(r["stage"], r["phase"], r["steps"]) for r in rows]
    # the vq run stopped at 160 of 700; evaluations at 100, 200 and at the last step
    assert got == [("vq", "vq", 160), ("B", "vision", 30), ("B", "find", 40), ("B", "text", 20),
                   ("B", "lm", 250), ("B", "dev evaluation", 3)]
    for r in rows:
        assert r["s/step"] > 0 and r["minutes"] == pytest.approx(r["steps"] * r["s/step"] / 60)
    assert pretrain_speed.evaluations(PretrainConfig(lm_steps=2400, eval_every=400)) == 6
    assert pretrain_speed.evaluations(PretrainConfig(lm_steps=800, eval_every=600)) == 2  # 600 and the last, 800
    assert pretrain_speed.evaluations(PretrainConfig(lm_steps=300, eval_every=0)) == 0
    assert pretrain_speed.seconds_per_step([0.0, 5.0, 6.0, 7.5, 8.5]) == 1.0  # the first step's 5 s left out
