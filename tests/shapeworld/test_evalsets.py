"""Fixed evaluation sets, the dev split and bootstrap summaries."""

import math
from collections import Counter

import numpy as np
import pytest

from ospo.shapeworld import evalsets
from ospo.shapeworld.evalsets import (
    COMPBENCH_TASKS, DATA_DIR, EVAL_SETS, GENEVAL_TASKS, build_eval_set, dev_split, eval_prompt_texts,
    geneval_metadata, load_eval_set, write_dev_split, write_eval_sets,
)

GENEVAL_SUBCATEGORIES = {
    "single_object": "object1", "two_object": "object2", "counting": "numeracy1",
    "colors": "color1", "position": "spatial", "color_attr": "color2",
}


def test_shipped_files_are_exactly_what_the_generator_writes(tmp_path):
    for path in write_eval_sets(tmp_path):
        assert path.read_bytes() == (DATA_DIR / path.name).read_bytes(), path.name


def test_shipped_dev_split_is_exactly_what_the_code_builds(tmp_path):
    """data/dev_prompts.txt (which the shapeworld config's prompts.exclude_files lists) is the default `dev_split()`."""
    path = write_dev_split(tmp_path)
    assert path.read_bytes() == (DATA_DIR / "dev_prompts.txt").read_bytes()
    assert path.read_text().splitlines() == [r.prompt for r in dev_split()]


def test_loaded_sets_match_the_generator():
    for name in EVAL_SETS:
        assert load_eval_set(name) == build_eval_set(name)


def test_geneval_mirror_takes_at_most_half_of_each_task_space():
    counts = Counter(r.task for r in load_eval_set("geneval"))
    assert tuple(counts) == GENEVAL_TASKS
    for task in GENEVAL_TASKS:
        space = len(evalsets._geneval_space(task))
        assert counts[task] == min(100, math.ceil(space / 2)), task
    assert counts["color_attr"] == 100 and counts["position"] == 40


def test_compbench_mirror_has_100_prompts_per_category():
    counts = Counter(r.task for r in load_eval_set("compbench"))
    assert counts == {task: 100 for task in COMPBENCH_TASKS}


@pytest.mark.parametrize("name", EVAL_SETS)
def test_records_parse_and_carry_genevals_metadata(name):
    records = load_eval_set(name)
    assert len({r.prompt for r in records}) == len(records)
    assert len({r.id for r in records}) == len(records)
    expected = GENEVAL_SUBCATEGORIES if name == "geneval" else COMPBENCH_TASKS
    for record in records:
        spec = record.spec
        assert record.metadata == geneval_metadata(spec)
        assert spec.subcategory == expected[record.task]
        assert spec.background is None
        if record.task == "counting":
            count = spec.objects[0].count
            assert record.metadata["exclude"] == [{"shape": spec.objects[0].shape, "count": count + 1}]
        if record.task == "position":
            assert spec.relation.kind in ("left of", "right of", "above", "below")


def test_eval_prompt_texts_cover_both_sets_without_overlap():
    geneval = {r.prompt for r in load_eval_set("geneval")}
    compbench = {r.prompt for r in load_eval_set("compbench")}
    assert eval_prompt_texts() == geneval | compbench
    assert not geneval & compbench


def test_dev_split_is_deterministic_and_disjoint_from_evaluation():
    dev = dev_split()
    assert dev == dev_split()
    prompts = [r.prompt for r in dev]
    assert len(set(prompts)) == len(prompts)
    assert not set(prompts) & eval_prompt_texts()
    counts = Counter(r.task for r in dev)
    assert counts["complex"] == 50 and counts["spatial"] == 50
    assert counts["numeracy1"] == (15 - 8) // 2  # half of what evaluation leaves
    assert {r.prompt for r in dev_split(seed=8)} != set(prompts)


def test_geneval_dev_split_has_the_evaluations_tasks_and_the_rest_of_their_prompts():
    dev = evalsets.geneval_dev_split()
    assert dev == evalsets.geneval_dev_split()
    test = load_eval_set("geneval")
    assert not {r.prompt for r in dev} & {r.prompt for r in test}
    sizes = Counter(r.task for r in dev)
    # every task's space less the evaluation's half, at most 100: five shapes, 20 ordered pairs, 5 x 3 counts,
    # 5 x 10 colours, 20 x 4 directions, and far more colour bindings
    assert sizes == {"single_object": 5 - 3, "two_object": 20 - 10, "counting": 15 - 8, "colors": 50 - 25,
                     "position": 80 - 40, "color_attr": 100}
    for r in dev:  # scored by the same rules as the evaluation set's prompts of the task
        assert r.metadata == geneval_metadata(r.spec)
    same_task = {r.task: r for r in test}
    assert all(len(r.spec.objects) == len(same_task[r.task].spec.objects) for r in dev)
    assert {r.prompt for r in evalsets.geneval_dev_split(seed=8) if r.task == "color_attr"} != \
        {r.prompt for r in dev if r.task == "color_attr"}


def test_vqa_margins_keep_pair_order_and_auc_ranks_regardless_of_bias():
    import torch

    from ospo.unified import YesNo
    from ospo.shapeworld.scoring import roc_auc, vqa_accuracy, vqa_hits, vqa_margins

    class Judge:  # says "yes" to everything, more strongly for the questions that are true
        def yes_no_scores(self, images, questions):
            return [YesNo(torch.tensor([int(q[0]) / 10 for q in qs]), torch.tensor([int(q[1]) / 10 for q in qs]))
                    for qs in questions]

    questions, answers = [["91", "64"], ["73"]], [["yes", "no"], ["no"]]  # p(yes), p(no) in tenths
    margins, truth = vqa_margins(Judge(), [None, None], questions, answers)
    assert np.allclose(margins, [0.8, 0.2, 0.4]) and truth.tolist() == [True, False, False]
    assert vqa_hits(Judge(), [None, None], questions, answers) == [True, False, False]
    assert vqa_accuracy(Judge(), [None, None], questions, answers) == pytest.approx(1 / 3)
    assert roc_auc(margins, truth) == 1.0  # a biased judge can still rank perfectly
    assert roc_auc(-margins, truth) == 0.0
    assert roc_auc(np.zeros(4), np.array([True, False, True, False])) == 0.5  # ties count half
    assert math.isnan(roc_auc(margins, np.ones(3, dtype=bool)))


def test_generation_asked_batch_by_batch_for_its_progress_bar_gives_the_codes_of_one_call():
    """The evaluation asks the adapter for one `batch_size` batch at a time (a progress bar follows on a terminal):
    the adapter batches the same way, so the images and scores are those of one call."""
    import torch

    from ospo.model import JanusAdapter
    from ospo.sampling import ImageSampling, item_seed
    from ospo.shapeworld import checkpoint_path
    from ospo.shapeworld.scoring import generate_and_score

    model = JanusAdapter.from_pretrained(str(checkpoint_path()), batch_size=2)
    records, sampling = load_eval_set("geneval")[:3], ImageSampling(cfg_scale=3.0)
    scored, images = generate_and_score(model, records, 2, sampling, seed=5)  # 6 images: 3 batches of 2
    seeds = [item_seed(5, r.id, k) for r in records for k in range(2)]
    assert [s.seed for s in scored] == seeds and len(images) == 6
    whole = model.generate_image_tokens([r.prompt for r in records for _ in range(2)], seeds, sampling).codes
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, model.decode_images(whole)))
    assert isinstance(whole, torch.Tensor)
