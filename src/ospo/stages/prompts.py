"""Stage 1: the model writes a balanced pool of short prompts (method.md, stage 1).

Two modes (config.prompts.mode):

- "in-context" (v2/v3): per sub-category, rounds of up to `round_size` requests; each request shows
  `num_examples` prompts drawn from the sub-category's example pool and asks for one more. The pool starts
  from the template set's seed examples; every `refresh_every` rounds it is replaced by the prompts of the
  sub-category accepted so far (topped up with the seeds while fewer than `num_examples`). A sub-category
  stops when `counts[sub]` prompts are accepted or `oversample * count` requests are spent; a round asks for
  no more than are still wanted. Each round is one part file (`<sub>-r0000`) and depends only on earlier
  rounds, so a killed run resumes to the same records. Whole sub-categories go to ranks (index % world_size).
- "elements" (v1): the model lists the elements of every kind the sub-categories' composition patterns use
  (kept in `elements.json`), and prompts are composed from the patterns with seeded draws (ospo.compose);
  `Prompt.raw` holds the pattern. Rank 0 does all of it: composition is cheap.

Every request or composition ends as one Prompt or one Rejected record. Reasons: the parser's
("empty prompt", ...), "duplicate" (the prompt_key of an earlier prompt of the sub-category),
"eval-set overlap" (a prompt of a file in config.prompts.exclude_files, e.g. an evaluation or dev prompt),
"missing elements" / "too few elements" (detail: the kind). A failed element list is a Rejected record too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter, defaultdict
from typing import Mapping, Sequence

import numpy as np

from ospo import compose
from ospo.artifacts import atomic_write_text, lines, prompt_rows, read_jsonl
from ospo.schema import ConfigError, data_path
from ospo.errors import InputError
from ospo.parsing import ParseError, normalize_prompt, prompt_key
from ospo.records import Prompt, Rejected
from ospo.sampling import TextSampling, item_seed
from ospo.stages import run_chunked
from ospo.stages._shared import finish, start, text_sampling

NAME = "prompts"
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- pure core
def judge(item_id: str, raw: str, text: str | None, error: str | None, *, subcategory: str, category: str,
          source: str, index: int, seen: set, excluded: frozenset, detail: str = ""):
    """One attempt -> a Prompt (id `<sub>-<index>`; its key joins `seen`) or a Rejected with the reason."""
    if error is not None:
        return Rejected(item_id, NAME, error, raw, detail)
    text = normalize_prompt(text)
    key = prompt_key(text)
    if key in excluded:
        return Rejected(item_id, NAME, "eval-set overlap", raw, text)
    if key in seen:
        return Rejected(item_id, NAME, "duplicate", raw, text)
    seen.add(key)
    return Prompt(f"{subcategory}-{index:05d}", text, category, subcategory, source, raw)


def example_pool(seeds: Sequence[str], accepted_by_round: Sequence[Sequence[str]], round_index: int,
                 refresh_every: int, num_examples: int) -> list[str]:
    """The examples round `round_index` draws from: the prompts accepted before the last refresh (every
    `refresh_every` rounds), topped up with the seed examples while there are fewer than `num_examples`."""
    last_refresh = round_index - round_index % refresh_every
    own = [t for texts in accepted_by_round[:last_refresh] for t in texts]
    return own if len(own) >= num_examples else own + [s for s in seeds if s not in own]


def write_round(subcategory: str, round_index: int, pool: Sequence[str], num_requests: int, first_index: int,
                seen: set, excluded: frozenset, *, category: str, templates, model, sampling: TextSampling,
                run_seed: int, num_examples: int) -> list:
    """One round of in-context requests -> one record per request (Prompt or Rejected), in request order."""
    ids = [f"{subcategory}/r{round_index:04d}-{j:04d}" for j in range(num_requests)]
    instructions = []
    for j in range(num_requests):
        rng = np.random.default_rng(item_seed(run_seed, f"{subcategory}/r{round_index}", j))
        picks = rng.permutation(len(pool))[:num_examples]
        instructions.append(templates.prompt(subcategory, [pool[i] for i in picks]))
    outputs = model.generate_text(instructions, [item_seed(run_seed, i, 0) for i in ids], sampling)
    records, index = [], first_index
    for item_id, raw in zip(ids, outputs):
        try:
            text, error = templates.parse_prompt(raw), None
        except ParseError as err:
            text, error = None, err.reason
        record = judge(item_id, raw, text, error, subcategory=subcategory, category=category, source="in-context",
                       index=index, seen=seen, excluded=excluded)
        index += isinstance(record, Prompt)
        records.append(record)
    return records


def list_elements(kinds: Sequence[str], templates, model, sampling: TextSampling, run_seed: int) -> dict:
    """{kind: {"raw": ..., "items": [...]}} or {"raw": ..., "reason": parse reason} for a list that failed."""
    outputs = model.generate_text([templates.elements(k) for k in kinds],
                                  [item_seed(run_seed, f"elements/{k}", 0) for k in kinds], sampling)
    listed = {}
    for kind, raw in zip(kinds, outputs):
        try:
            listed[kind] = {"raw": raw, "items": templates.parse_elements(raw)}
        except ParseError as err:
            listed[kind] = {"raw": raw, "reason": err.reason}
    return listed


def compose_subcategory(subcategory: str, count: int, budget: int, patterns: Sequence[str],
                        elements: Mapping[str, Sequence[str]], *, category: str, run_seed: int,
                        excluded: frozenset) -> list:
    """Up to `budget` seeded compositions, stopping at `count` accepted prompts; one record per composition."""
    records, seen, index = [], set(), 0
    for k in range(budget):
        if index == count:
            break
        rng = np.random.default_rng(item_seed(run_seed, f"{subcategory}/compose", k))
        pattern = patterns[int(rng.integers(len(patterns)))]
        try:
            text, error, detail = compose.compose(pattern, elements, rng), None, ""
        except compose.ComposeError as err:
            text, error, detail = None, err.reason, err.detail
        record = judge(f"{subcategory}/c{k:05d}", pattern, text, error, subcategory=subcategory, category=category,
                       source="elements", index=index, seen=seen, excluded=excluded, detail=detail)
        index += isinstance(record, Prompt)
        records.append(record)
    return records


# ------------------------------------------------------------------------------------------- shell
def read_prompt_file(source) -> list[str]:
    """The prompts of one `prompts.exclude_files` entry (a Path or a package resource): the "prompt" field of every
    row of a `.jsonl` file, else every non-empty line."""
    try:
        rows = lines(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"prompts.exclude_files: cannot read {source} ({e})") from None
    if not source.name.endswith(".jsonl"):
        return [line.strip() for line in rows if line.strip()]
    return [row["prompt"] for row in prompt_rows("\n".join(rows), str(source))]


def excluded_prompt_keys(cfg) -> frozenset:
    """The prompt keys of every prompt in `cfg.exclude_files` (a PromptsConfig): prompts training must not write."""
    return frozenset(prompt_key(t) for path in cfg.exclude_files for t in read_prompt_file(data_path(path)))


def keys_digest(keys: frozenset) -> dict:
    """What the stage's identity records of the excluded prompts: their number and a hash of their sorted keys."""
    return {"count": len(keys), "sha256": hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]}


def _budget(cfg, subcategory: str) -> int:
    return math.ceil(cfg.oversample * cfg.counts[subcategory])


def _fill_subcategory(ctx, stage, subcategory: str, excluded: frozenset) -> None:
    """Walks the sub-category's rounds: reads those already written, writes the missing ones."""
    cfg, templates = ctx.config.prompts, ctx.templates
    entry = templates.subcategory(subcategory, needs="seeds")
    count, budget = cfg.counts[subcategory], _budget(cfg, subcategory)
    accepted_by_round: list[list[str]] = []
    seen: set[str] = set()
    requests = round_index = 0
    while (accepted := sum(map(len, accepted_by_round))) < count and requests < budget:
        key = f"{subcategory}-r{round_index:04d}"
        if stage.has_part(key):
            records = read_jsonl(stage.part_path(key))
        else:
            pool = example_pool(entry.seeds, accepted_by_round, round_index, cfg.refresh_every, cfg.num_examples)
            num_requests = min(cfg.round_size, budget - requests, count - accepted)  # never more than still wanted
            records = write_round(subcategory, round_index, pool, num_requests, accepted, set(seen), excluded,
                                  category=entry.category, templates=templates, model=ctx.model,
                                  sampling=text_sampling(cfg.sampling), run_seed=ctx.config.seed,
                                  num_examples=cfg.num_examples)
            stage.write_part(key, records)
        texts = [r.text for r in records if isinstance(r, Prompt)]
        accepted_by_round.append(texts)
        seen |= {prompt_key(t) for t in texts}
        requests += len(records)
        round_index += 1


def _run_elements(ctx, stage, excluded: frozenset) -> dict:
    cfg, templates = ctx.config.prompts, ctx.templates
    entries = {sub: templates.subcategory(sub, needs="compose") for sub in cfg.counts}
    kinds = sorted(set().union(*(compose.element_kinds(p) for e in entries.values() for p in e.compose)))
    path = stage.path / "elements.json"
    if path.exists():
        listed = json.loads(path.read_text())
    else:
        listed = list_elements(kinds, templates, ctx.model, text_sampling(cfg.sampling), ctx.config.seed)
        atomic_write_text(path, json.dumps(listed, indent=1, sort_keys=True))
    if not stage.has_part("elements"):
        stage.write_part("elements", [Rejected(f"elements/{k}", NAME, v["reason"], v["raw"], k)
                                      for k, v in sorted(listed.items()) if "reason" in v])
    elements = {k: v["items"] for k, v in listed.items() if "items" in v}
    for sub, entry in entries.items():
        if not stage.has_part(f"{sub}-compose"):
            stage.write_part(f"{sub}-compose", compose_subcategory(
                sub, cfg.counts[sub], _budget(cfg, sub), entry.compose, elements, category=entry.category,
                run_seed=ctx.config.seed, excluded=excluded))
    return listed


def summarize(records: Sequence, counts: Mapping[str, int], mode: str, listed: dict | None = None) -> dict:
    """The stage manifest (before StageDir.finish adds out/rejected): per sub-category wanted/accepted/attempts,
    the shortfall, eval-set overlaps removed, and prompts that two sub-categories both produced."""
    accepted, attempts = Counter(), Counter()
    keys = defaultdict(set)
    for r in records:
        sub = r.subcategory if isinstance(r, Prompt) else r.id.split("/")[0]
        attempts[sub] += 1
        if isinstance(r, Prompt):
            accepted[sub] += 1
            keys[prompt_key(r.text)].add(sub)
    per_sub = {s: {"wanted": n, "accepted": accepted[s], "attempts": attempts[s]} for s, n in counts.items()}
    shortfall = {s: n - accepted[s] for s, n in counts.items() if accepted[s] < n}
    if shortfall:
        log.warning("prompts: fewer prompts than wanted in %s", ", ".join(f"{s} (-{n})" for s, n in shortfall.items()))
    manifest = {"mode": mode, "subcategories": per_sub, "shortfall": shortfall,
                "counts": {"in": len(records), "wanted": sum(counts.values()),
                           "eval_overlap_removed": sum(isinstance(r, Rejected) and r.reason == "eval-set overlap"
                                                       for r in records),
                           "cross_subcategory_duplicates": sum(len(s) > 1 for s in keys.values())}}
    if listed is not None:
        manifest["elements"] = {k: v.get("items", {"rejected": v.get("reason")}) for k, v in sorted(listed.items())}
    return manifest


def _check(cfg, templates) -> None:
    for key in ("num_examples", "refresh_every", "round_size"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"prompts.{key} must be >= 1, got {getattr(cfg, key)}")
    for sub, n in cfg.counts.items():
        if not isinstance(n, int) or n < 0:
            raise ConfigError(f"prompts.counts.{sub} must be a count >= 0, got {n!r}")
        templates.subcategory(sub, needs="seeds" if cfg.mode == "in-context" else "compose")


def run(ctx) -> dict:
    cfg = ctx.config.prompts
    _check(cfg, ctx.templates)
    excluded = excluded_prompt_keys(cfg)
    stage = start(ctx, NAME, [cfg], [], True, excluded_prompts=keys_digest(excluded))
    if stage.complete:
        return stage.manifest()
    listed = None
    if cfg.mode == "in-context":
        def fill(items: list[str]) -> list:
            _fill_subcategory(ctx, stage, items[0], excluded)
            return []  # a sub-category's chunk is an empty "done" part; its rounds are part files of their own

        run_chunked(ctx, stage, [(f"{sub}-done", [sub]) for sub in cfg.counts], fill)
        if ctx.rank == 0:
            for sub in cfg.counts:  # reads every round back; redoes any round whose part file was lost
                fill([sub])
    elif ctx.rank == 0:
        listed = _run_elements(ctx, stage, excluded)
    return finish(ctx, stage, lambda: summarize(stage.read_parts(), cfg.counts, cfg.mode, listed))
