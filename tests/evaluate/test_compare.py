"""ospo.evaluate.compare: the statistics and tables that set models against a base."""

import numpy as np
import pytest

from ospo.evaluate.compare import ImageResult, Row, by_model, by_task, compare, results_from_payload, summarize


def _results(scores_per_prompt: dict[str, list[float]], task: str = "colors"):
    return [ImageResult(p, task, s) for p, scores in scores_per_prompt.items() for s in scores]


def test_summarize_means_over_images_and_over_tasks():
    results = _results({"a": [1, 1], "b": [0, 0], "c": [1, 0]}) + _results({"d": [1]}, task="position")
    summary = summarize(results)
    colors, position = summary.tasks["colors"], summary.tasks["position"]
    assert (colors.mean, colors.num_prompts, colors.num_images) == (0.5, 3, 6)
    assert (position.mean, position.low, position.high) == (1.0, 1.0, 1.0)
    assert summary.overall.mean == 0.75
    for estimate in (colors, summary.overall):
        assert estimate.low <= estimate.mean <= estimate.high


def test_bootstrap_interval_narrows_with_more_prompts_and_is_seeded():
    rng = np.random.default_rng(0)
    def width(num_prompts):
        scores = {f"p{i}": [float(s) for s in rng.random(4) < 0.6] for i in range(num_prompts)}
        estimate = summarize(_results(scores)).tasks["colors"]
        assert estimate.low <= estimate.mean <= estimate.high
        return estimate.high - estimate.low
    assert width(400) < width(25) / 2
    results = _results({f"p{i}": [i % 2] for i in range(30)})
    assert summarize(results, seed=3) == summarize(results, seed=3)
    with pytest.raises(ValueError, match="no results"):
        summarize([])


def test_the_paired_difference_is_the_difference_of_the_means_with_an_interval_around_it():
    base = _results({"a": [0, 0], "b": [1, 0], "c": [0, 1]}) + _results({"d": [0]}, task="position")
    better = _results({"a": [1, 1], "b": [1, 1], "c": [0, 1]}) + _results({"d": [1]}, task="position")
    d = compare(base, better)
    assert d.tasks["colors"].mean == pytest.approx(5 / 6 - 2 / 6)
    assert d.tasks["position"].mean == 1.0 and d.overall.mean == pytest.approx((0.5 + 1.0) / 2)
    assert d.tasks["colors"].low <= d.tasks["colors"].mean <= d.tasks["colors"].high
    with pytest.raises(ValueError, match="one model only"):
        compare(base, better[:-1])


def test_by_task_is_the_demos_table_and_stars_a_difference_whose_interval_excludes_zero():
    base = _results({f"p{i}": [0, 0] for i in range(20)})
    trained = _results({f"p{i}": [1, 1] for i in range(20)})
    text, numbers = by_task(base, trained, "ospo-v2")
    lines = text.splitlines()
    assert lines[0] == "| task | base | ospo-v2 | difference (paired) |"
    assert lines[2] == "| colors | 0.000 [0.000, 0.000] | 1.000 [1.000, 1.000] | +1.000 [+1.000, +1.000] * |"
    assert lines[-1] == "20 prompts, 40 images per model; 95% bootstrap intervals over prompts; * = the paired " \
                        "interval excludes 0."
    assert numbers["difference"]["overall"]["mean"] == 1.0 and set(numbers) == {"base", "ospo-v2", "difference"}


def test_by_model_prints_a_row_per_model_with_its_paired_difference():
    base = _results({"a": [0, 1], "b": [1, 1]})
    rows = [Row("x", _results({"a": [1, 1], "b": [1, 1]}), ("7",)), Row("y", base)]
    text, numbers = by_model(base, rows, ("pairs",), overall_interval=False)
    lines = text.splitlines()
    assert lines[0] == "| model | pairs | colors | overall | vs base |" and lines[1] == "|---|---|---|---|---|"
    assert lines[2].startswith("| base |  | 0.750 | 0.750 [") and lines[2].endswith("|  |")
    assert lines[3].startswith("| x | 7 | 1.000 | 1.000 | +0.250 [")
    assert numbers["y"]["vs_base"] == [0.0, 0.0, 0.0] and numbers["x"]["tasks"] == {"colors": 1.0}


def test_results_come_from_an_evaluation_payload():
    payload = {"images": [{"prompt_id": "p", "task": "colors", "score": 1.0, "seed": 3}]}
    assert results_from_payload(payload) == [ImageResult("p", "colors", 1.0)]
