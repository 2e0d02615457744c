"""Before/after comparisons of evaluated models: the statistics and every table that sets models against a base.

A model's evaluation is its per-image results (`ImageResult`: prompt id, task, score). `summarize` gives each task's
mean and the overall mean (the unweighted mean of the tasks, as GenEval's) with bootstrap 95% intervals over
prompts; `compare` the paired difference of two models evaluated on the same prompts and seeds. `by_task` prints
one model against the base task by task (the demo's table); `by_model` one row per model (the benchmarks' tables).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class ImageResult:
    """The score of one generated image: 1.0 / 0.0 for GenEval correctness, or a graded score."""

    prompt_id: str
    task: str
    score: float


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap 95% interval (prompts resampled with replacement)."""

    mean: float
    low: float
    high: float
    num_prompts: int
    num_images: int


@dataclass(frozen=True)
class Summary:
    tasks: dict[str, Estimate]
    overall: Estimate  # unweighted mean of the task means, as GenEval's overall


def summarize(results: Iterable[ImageResult], num_resamples: int = 1000, seed: int = 0) -> Summary:
    """Per-task mean over images and overall mean over tasks, each with a bootstrap 95% interval.

    Each resample draws every task's prompts with replacement (all images of a drawn prompt come
    along), so the interval reflects which prompts were asked, not only the image noise.
    """
    per_prompt: dict[str, dict[str, list[float]]] = {}
    for r in results:
        per_prompt.setdefault(r.task, {}).setdefault(r.prompt_id, []).append(float(r.score))
    if not per_prompt:
        raise ValueError("no results to summarize")
    rng = np.random.default_rng(seed)
    tasks, draws = {}, []
    for task in sorted(per_prompt):
        sums = np.array([sum(v) for v in per_prompt[task].values()])  # (P,)
        counts = np.array([len(v) for v in per_prompt[task].values()])  # (P,)
        picks = rng.integers(0, len(sums), size=(num_resamples, len(sums)))  # (B, P)
        means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)  # (B,)
        low, high = np.percentile(means, [2.5, 97.5])
        tasks[task] = Estimate(float(sums.sum() / counts.sum()), float(low), float(high), len(sums), int(counts.sum()))
        draws.append(means)
    overall_draws = np.mean(draws, axis=0)
    low, high = np.percentile(overall_draws, [2.5, 97.5])
    overall = Estimate(
        float(np.mean([e.mean for e in tasks.values()])), float(low), float(high),
        sum(e.num_prompts for e in tasks.values()), sum(e.num_images for e in tasks.values()),
    )
    return Summary(tasks, overall)


def compare(base: Iterable[ImageResult], other: Iterable[ImageResult], num_resamples: int = 1000,
            seed: int = 0) -> Summary:
    """Paired bootstrap of `other - base` on the same prompts: per-task and overall differences of the means,
    each with a 95% interval. Each resample draws every task's prompts with replacement and takes both models'
    images of the drawn prompts, so the interval reflects prompt sampling and image noise of both."""
    per_prompt: dict[str, dict[str, list[list[float]]]] = {}
    for k, results in enumerate((base, other)):
        for r in results:
            per_prompt.setdefault(r.task, {}).setdefault(r.prompt_id, [[], []])[k].append(float(r.score))
    if not per_prompt:
        raise ValueError("no results to compare")
    rng = np.random.default_rng(seed)
    tasks, draws = {}, []
    for task in sorted(per_prompt):
        rows = [v for v in per_prompt[task].values() if v[0] and v[1]]
        if len(rows) != len(per_prompt[task]):
            raise ValueError(f"task {task}: some prompts were evaluated for one model only")
        sums = np.array([[sum(a), sum(b)] for a, b in rows])  # (P, 2)
        counts = np.array([[len(a), len(b)] for a, b in rows])
        picks = rng.integers(0, len(rows), size=(num_resamples, len(rows)))
        means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)  # (B, 2)
        diff = means[:, 1] - means[:, 0]
        low, high = np.percentile(diff, [2.5, 97.5])
        delta = float(sums[:, 1].sum() / counts[:, 1].sum() - sums[:, 0].sum() / counts[:, 0].sum())
        tasks[task] = Estimate(delta, float(low), float(high), len(rows), int(counts[:, 1].sum()))
        draws.append(diff)
    low, high = np.percentile(np.mean(draws, axis=0), [2.5, 97.5])
    overall = Estimate(float(np.mean([e.mean for e in tasks.values()])), float(low), float(high),
                       sum(e.num_prompts for e in tasks.values()), sum(e.num_images for e in tasks.values()))
    return Summary(tasks, overall)


def results_from_payload(payload: dict) -> list[ImageResult]:
    """The per-image results of an evaluation's results.json payload."""
    return [ImageResult(i["prompt_id"], i["task"], i["score"]) for i in payload["images"]]


def _cell(e: Estimate) -> str:
    return f"{e.mean:.3f} [{e.low:.3f}, {e.high:.3f}]"


def _signed(e: Estimate) -> str:
    return f"{e.mean:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"


def _as_dict(s: Summary) -> dict:
    return {k: asdict(v) for k, v in s.tasks.items()} | {"overall": asdict(s.overall)}


def by_task(base: Sequence[ImageResult], trained: Sequence[ImageResult], label: str) -> tuple[str, dict]:
    """Markdown table per task: base and trained means with 95% intervals, and the paired difference with its
    interval (prompts resampled together); `*` marks a difference whose interval excludes 0. Returns the table and
    its numbers."""
    b, t, d = summarize(base), summarize(trained), compare(base, trained)
    lines = [f"| task | base | {label} | difference (paired) |", "|---|---|---|---|"]
    rows = [(task, b.tasks[task], t.tasks[task], d.tasks[task]) for task in b.tasks]
    rows.append(("**overall**", b.overall, t.overall, d.overall))
    for task, eb, et, ed in rows:
        star = " *" if ed.low > 0 or ed.high < 0 else ""
        lines.append(f"| {task} | {_cell(eb)} | {_cell(et)} | {_signed(ed)}{star} |")
    lines.append(f"\n{b.overall.num_prompts} prompts, {b.overall.num_images} images per model; 95% bootstrap "
                 f"intervals over prompts; * = the paired interval excludes 0.")
    return "\n".join(lines), {"base": _as_dict(b), label: _as_dict(t), "difference": _as_dict(d)}


@dataclass(frozen=True)
class Row:
    """One model of a `by_model` table: its label, extra cells before the task columns, its results."""

    label: str
    results: Sequence[ImageResult]
    extra: tuple[str, ...] = ()


def by_model(base: Sequence[ImageResult], rows: Iterable[Row], extra_headers: Sequence[str] = (),
             overall_interval: bool = True) -> tuple[str, dict]:
    """Markdown table, one row per model (base first): each task's mean, the overall mean (with its interval when
    `overall_interval`) and the paired difference to base with its interval. Returns the table and its numbers."""
    summary = summarize(base)
    tasks = list(summary.tasks)
    lines = ["| model | " + "".join(f"{h} | " for h in extra_headers) + " | ".join(tasks) + " | overall | vs base |",
             "|---" * (len(tasks) + 3 + len(extra_headers)) + "|"]

    def line(label, extra, s, overall, vs):
        return (f"| {label} | " + "".join(f"{c} | " for c in extra) + " | ".join(f"{s.tasks[t].mean:.3f}" for t in tasks)
                + f" | {overall} | {vs} |")

    lines.append(line("base", [""] * len(extra_headers), summary, _cell(summary.overall), ""))
    numbers = {"base": {"tasks": {t: summary.tasks[t].mean for t in tasks}, "overall": summary.overall.mean,
                        "interval": [summary.overall.low, summary.overall.high]}}
    for row in rows:
        s, d = summarize(row.results), compare(base, row.results)
        overall = _cell(s.overall) if overall_interval else f"{s.overall.mean:.3f}"
        lines.append(line(row.label, row.extra, s, overall, _signed(d.overall)))
        numbers[row.label] = {"tasks": {t: s.tasks[t].mean for t in tasks}, "overall": s.overall.mean,
                              "interval": [s.overall.low, s.overall.high],
                              "vs_base": [d.overall.mean, d.overall.low, d.overall.high],
                              "vs_base_tasks": {t: d.tasks[t].mean for t in tasks}}
    return "\n".join(lines), numbers
