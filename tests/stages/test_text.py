"""The text stages of the data loop (prompts, perturb, densify, questions): cores on hand-made records with every
rejection path, and the shells' resumability, sharding and identity checks, with a scripted fake model."""

import ast
import json
import threading
from pathlib import Path

import pytest

from ospo.artifacts import StageDir, StageMismatch, read_jsonl
from ospo.config import load_config
from ospo.schema import ConfigError
from ospo.errors import InputError
from ospo.records import DensePair, Negative, Prompt, QuestionSet, Rejected
from ospo.sampling import TextSampling
from ospo.shapeworld.evalsets import eval_prompt_texts
from ospo.stages import RunContext, densify, perturb, prompts, questions
from ospo.templates import TemplateError, load_templates

SW = load_templates("shapeworld")
EVAL_TEXT = sorted(eval_prompt_texts())[0]
SAMPLING = TextSampling()
# the shipped shapeworld config's exclusion (the evaluation sets and the dev split), as the stages' tests run with it
EXCLUDE = f"prompts.exclude_files={json.dumps(load_config('shapeworld').prompts.exclude_files)}"


class Crash(RuntimeError):
    pass


class FakeModel:
    """generate_text answers with respond(instruction, seed); raises Crash once `fail_after` items were answered."""

    def __init__(self, respond, fail_after=None):
        self.respond, self.fail_after = respond, fail_after
        self.calls, self.batches = [], []

    def generate_text(self, instructions, seeds, sampling):
        assert len(instructions) == len(seeds) and isinstance(sampling, TextSampling)
        out = []
        for instruction, seed in zip(instructions, seeds):
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise Crash("killed")
            self.calls.append((instruction, seed))
            out.append(self.respond(instruction, seed))
        self.batches.append(list(instructions))
        return out


def respond(instruction: str, seed: int) -> str:
    """Scripted ShapeWorld-format answers; the seed picks among good and bad outputs."""
    head, _, rest = instruction.partition(" : ")
    if head == "write a new prompt":
        options = [EVAL_TEXT, "", "A  hollow red circle .", "a hollow red circle", f"a red cross number {seed % 997}",
                   f"a blue cross number {seed % 997}"]
        return options[(seed >> 8) % len(options)]
    if head in ("replace", "swap", "drop"):
        return {0: "objects : x . edit : y", 1: f"result : {rest.upper()} ."}.get(
            seed % 5, f"objects : x . edit : y . result : {rest} and a cross")
    if head == "dense":
        pos, neg = rest.split(" . ", 1)
        return f"positive : on a gray background , {pos} . negative : on a gray background , {neg}"
    if head == "questions":
        return "" if seed % 4 == 0 else f"is there {rest} ? is it {seed % 3} ?"
    if instruction.startswith("list "):
        return {"list shapes :": "circle , square , cross", "list colors :": "red , blue",
                "list relations :": "left of , above", "list textures :": "solid , solid"}[instruction]
    raise AssertionError(f"unexpected instruction {instruction!r}")


def make_ctx(run_dir, *overrides, model=None, rank=0, world_size=1):
    ctx = RunContext(Path(run_dir), load_config(None, [EXCLUDE, *overrides]), rank=rank, world_size=world_size,
                     progress=False, wait_timeout_s=30)
    ctx._model = model if model is not None else FakeModel(respond)
    return ctx


def seed_stage(run_dir, name, records):
    """A finished stage holding `records`, standing in for an upstream stage."""
    stage = StageDir(run_dir, name)
    stage.parts.mkdir(parents=True)
    stage.write_part("c00000", records)
    stage.finish({})


def stage_files(run_dir, name):
    path = Path(run_dir) / name
    return (path / "records.jsonl").read_text(), (path / "rejected.jsonl").read_text()


def outcome(record, field="id"):
    """A Rejected record's reason, else the record's `field`."""
    return record.reason if isinstance(record, Rejected) else getattr(record, field)


def counts_add_up(manifest):
    c = manifest["counts"]
    return c["in"] == c["out"] + c["rejected"]


PROMPTS = [Prompt("color2-00000", "a red circle and a blue square", "attribute", "color2", "in-context"),
           Prompt("color1-00000", "a green cross", "attribute", "color1", "in-context"),
           Prompt("spatial-00000", "a circle left of a square", "layout", "spatial", "in-context")]
IC = ["prompts.counts={color1: 4, spatial: 3}", "prompts.round_size=2", "prompts.oversample=4"]


# ------------------------------------------------------------------------------------------- stage 1 core
def test_judge_prompt_every_path():
    kw = dict(subcategory="color1", category="attribute", source="in-context", excluded=frozenset({"a red circle"}))
    seen = set()
    assert prompts.judge("x/0", "??", None, "empty prompt", index=0, seen=seen, **kw).reason == "empty prompt"
    assert prompts.judge("x/1", "", "A red circle .", None, index=0, seen=seen, **kw).reason == "eval-set overlap"
    ok = prompts.judge("x/2", "raw", " a blue  circle .", None, index=0, seen=seen, **kw)
    assert ok == Prompt("color1-00000", "a blue circle", "attribute", "color1", "in-context", "raw")
    dup = prompts.judge("x/3", "", "A Blue circle", None, index=1, seen=seen, **kw)
    assert isinstance(dup, Rejected) and (dup.reason, dup.detail) == ("duplicate", "A Blue circle")


def test_example_pool_refreshes_with_accepted_prompts():
    seeds = ["s1", "s2", "s3"]
    accepted = [["a", "b"], ["c"], ["d"]]
    assert prompts.example_pool(seeds, accepted, 1, 2, 2) == seeds  # before the first refresh
    assert prompts.example_pool(seeds, accepted, 2, 2, 2) == ["a", "b", "c"]
    assert prompts.example_pool(seeds, accepted, 3, 2, 2) == ["a", "b", "c"]  # no refresh between
    assert prompts.example_pool(seeds, [["s2"]], 1, 1, 2) == ["s2", "s1", "s3"]  # topped up with seeds


def test_write_round_one_record_per_request():
    outputs = iter(["a teal cross", "", "A teal cross .", EVAL_TEXT, "a blue cross"])
    model = FakeModel(lambda i, s: next(outputs))
    excluded = prompts.excluded_prompt_keys(load_config("shapeworld").prompts)
    records = prompts.write_round("color1", 3, ["a red circle", "a blue circle", "a green circle"], 5, 7, set(),
                                  excluded, category="attribute", templates=SW, model=model, sampling=SAMPLING,
                                  run_seed=0, num_examples=2)
    assert [outcome(r) for r in records] == [
        "color1-00007", "empty prompt", "duplicate", "eval-set overlap", "color1-00008"]
    assert records[1].id == "color1/r0003-0001"
    for instruction, _ in model.calls:
        shown = instruction.removeprefix("write a new prompt : ").split(" . ")
        assert len(shown) == 2 and set(shown) <= {"a red circle", "a blue circle", "a green circle"}


def test_compose_subcategory_and_list_elements_every_path():
    listed = prompts.list_elements(["shapes", "textures"], SW, FakeModel(respond), SAMPLING, 0)
    assert listed["shapes"]["items"] == ["circle", "square", "cross"]
    assert listed["textures"]["reason"] == "repeated element"
    elements = {"shapes": ["circle", "square"], "colors": ["red"]}
    kw = dict(category="attribute", run_seed=0, excluded=frozenset({"a red circle"}))
    one = prompts.compose_subcategory("color1", 5, 20, ["{a} {colors} {shapes}"], elements, **kw)
    assert [r.text for r in one if isinstance(r, Prompt)] == ["a red square"]  # the space is tiny:
    assert {r.reason for r in one if isinstance(r, Rejected)} == {"eval-set overlap", "duplicate"}
    assert len(one) == 20 and one[-1].id == "color1/c00019"  # budget spent, count not reached
    two = prompts.compose_subcategory("color2", 1, 3, ["{a} {colors} {shapes} and {a} {colors} {shapes}"],
                                      elements, **kw)
    assert [(r.reason, r.detail) for r in two] == [("too few elements", "colors")] * 3
    none = prompts.compose_subcategory("texture1", 1, 2, ["{a} {textures} {shapes}"], elements, **kw)
    assert [(r.reason, r.detail) for r in none] == [("missing elements", "textures")] * 2


# ------------------------------------------------------------------------------------------- stage 1 shell
def test_prompts_stage_dedupes_excludes_eval_prompts_and_counts(tmp_path):
    ctx = make_ctx(tmp_path, *IC)
    manifest = prompts.run(ctx)
    records = StageDir(tmp_path, "prompts").records()
    rejected = read_jsonl(tmp_path / "prompts" / "rejected.jsonl")
    reasons = {r.reason for r in rejected}
    assert {"duplicate", "eval-set overlap", "empty prompt"} <= reasons
    c = manifest["counts"]
    assert c["eval_overlap_removed"] == sum(r.reason == "eval-set overlap" for r in rejected) > 0
    assert c["in"] == len(ctx._model.calls) == c["out"] + c["rejected"]
    for sub, want in (("color1", 4), ("spatial", 3)):
        mine = [r for r in records if r.subcategory == sub]
        assert [r.id for r in mine] == [f"{sub}-{i:05d}" for i in range(len(mine))] and len(mine) <= want
        assert manifest["subcategories"][sub]["accepted"] == len(mine)
        assert manifest["shortfall"].get(sub, 0) == want - len(mine)
    assert {r.category for r in records} == {"attribute", "layout"}
    assert EVAL_TEXT not in {r.text for r in records} and "a hollow red circle" in {r.text for r in records}
    assert len({(r.subcategory, r.text.lower()) for r in records}) == len(records)
    assert prompts.run(ctx) == manifest and len(ctx._model.calls) == c["in"]  # complete: nothing redone


def test_in_context_pool_is_refreshed_with_the_models_own_prompts(tmp_path):
    model = FakeModel(lambda i, s: f"a red cross number {s}")
    prompts.run(make_ctx(tmp_path, "prompts.counts={color1: 8}", "prompts.round_size=2", "prompts.refresh_every=2",
                         model=model))
    texts = [r.text for r in StageDir(tmp_path, "prompts").records()]
    rounds = [[i.removeprefix("write a new prompt : ").split(" . ") for i in batch] for batch in model.batches]
    assert len(rounds) == 4 and all(len(b) == 2 for b in rounds)
    seeds = set(SW.subcategory("color1").seeds)
    assert all(set(shown) <= seeds for batch in rounds[:2] for shown in batch)
    own = {f"a red cross number {s}" for _, s in model.calls[:4]}
    assert own <= set(texts)
    assert all(set(shown) <= own for batch in rounds[2:] for shown in batch)


def test_the_shipped_shapeworld_config_excludes_exactly_the_evaluation_and_dev_prompts():
    """prompts.exclude_files of the shapeworld config: the keys of every evaluation prompt and every dev prompt the
    code builds, no more; the default config excludes nothing."""
    from ospo.parsing import prompt_key
    from ospo.shapeworld.evalsets import dev_split

    held_out = eval_prompt_texts() | {r.prompt for r in dev_split()}
    assert prompts.excluded_prompt_keys(load_config("shapeworld").prompts) == frozenset(map(prompt_key, held_out))
    assert prompts.excluded_prompt_keys(load_config().prompts) == frozenset()
    assert prompts.excluded_prompt_keys(load_config("janus-pro-1b").prompts) == frozenset()


def test_exclude_files_read_jsonl_and_text_relative_to_the_config_and_refuse_bad_input(tmp_path, monkeypatch):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "a.jsonl").write_text('{"prompt": "A Red circle ."}\n\n{"prompt": "two squares", "x": 1}\n')
    (tmp_path / "bench" / "b.txt").write_text("a blue cross\n\n  a green square  \n")
    config = tmp_path / "run.yaml"
    config.write_text("prompts:\n  exclude_files: [bench/a.jsonl, bench/b.txt]\n")
    monkeypatch.chdir(tmp_path / "bench")  # relative paths in a file: from the file's folder, not the working dir
    cfg = load_config(config)
    assert cfg.prompts.exclude_files == [str(tmp_path / "bench" / "a.jsonl"), str(tmp_path / "bench" / "b.txt")]
    assert prompts.excluded_prompt_keys(cfg.prompts) == {"a red circle", "two squares", "a blue cross",
                                                          "a green square"}
    assert load_config(None, ["prompts.exclude_files=[b.txt]"]).prompts.exclude_files == [  # --set: working dir
        str(tmp_path / "bench" / "b.txt")]
    with pytest.raises(ConfigError, match="prompts.exclude_files: no such file .*nope.txt.*config file"):
        load_config(None, ["prompts.exclude_files=[nope.txt]"])
    with pytest.raises(ConfigError, match="no installed package 'ospo.nope'"):
        load_config(None, ["prompts.exclude_files=['package:ospo.nope/x.txt']"])
    with pytest.raises(ConfigError, match="prompts.exclude_files must be a list of strings"):
        load_config(None, ["prompts.exclude_files=b.txt"])
    (tmp_path / "bench" / "c.jsonl").write_text('{"text": "a red circle"}\n')
    with pytest.raises(InputError, match="c.jsonl: line 1 has no \"prompt\" string"):
        prompts.excluded_prompt_keys(load_config(None, ["prompts.exclude_files=[c.jsonl]"]).prompts)


def test_the_prompts_stage_identity_records_the_excluded_prompts(tmp_path):
    """Another set of excluded prompts is another stage output: the directory refuses it."""
    (tmp_path / "x.txt").write_text("a red circle\n")
    prompts.run(make_ctx(tmp_path / "run", *IC, f"prompts.exclude_files=[{tmp_path / 'x.txt'}]"))
    (tmp_path / "x.txt").write_text("a blue circle\n")
    with pytest.raises(StageMismatch, match="different excluded_prompts"):
        prompts.run(make_ctx(tmp_path / "run", *IC, f"prompts.exclude_files=[{tmp_path / 'x.txt'}]"))


def test_elements_mode(tmp_path):
    ctx = make_ctx(tmp_path, "prompts.mode=elements", "prompts.counts={color1: 2, texture1: 1, spatial: 2}")
    manifest = prompts.run(ctx)
    records = StageDir(tmp_path, "prompts").records()
    assert {r.source for r in records} == {"elements"} and all(r.raw for r in records)
    assert manifest["elements"]["textures"] == {"rejected": "repeated element"}
    assert manifest["elements"]["colors"] == ["red", "blue"]
    assert manifest["subcategories"]["texture1"]["accepted"] == 0 and manifest["shortfall"]["texture1"] == 1
    assert counts_add_up(manifest) and (tmp_path / "prompts" / "elements.json").is_file()
    assert sorted({i for i, _ in ctx._model.calls}) == ["list colors :", "list relations :", "list shapes :",
                                                          "list textures :"]


@pytest.mark.parametrize("mode", ["in-context", "elements"])
def test_prompts_resume_after_a_crash_and_after_lost_parts(tmp_path, mode):
    args = (*IC, f"prompts.mode={mode}")
    full = make_ctx(tmp_path / "a", *args)
    prompts.run(full)
    with pytest.raises(Crash):  # in-context: after the first round (2 requests) was written
        prompts.run(make_ctx(tmp_path / "b", *args, model=FakeModel(respond, fail_after=2)))
    resumed = make_ctx(tmp_path / "b", *args)
    prompts.run(resumed)
    assert stage_files(tmp_path / "a", "prompts") == stage_files(tmp_path / "b", "prompts")
    if mode == "in-context":
        assert len(resumed._model.calls) == len(full._model.calls) - 2
    parts = sorted((tmp_path / "a" / "prompts" / "parts").glob("*.jsonl"))
    (tmp_path / "a" / "prompts" / "manifest.json").unlink()
    for p in parts[1::2]:
        p.unlink()
    if mode == "elements":  # composition needs no model: lose the element lists too
        (tmp_path / "a" / "prompts" / "elements.json").unlink()
    again = make_ctx(tmp_path / "a", *args)
    prompts.run(again)
    assert 0 < len(again._model.calls)
    assert stage_files(tmp_path / "a", "prompts") == stage_files(tmp_path / "b", "prompts")


def run_two_ranks(run, run_dir, *args):
    """Rank 1 in a thread, rank 0 here (each with its own fake model), as two processes would."""
    errors = []

    def rank1():
        try:
            run(make_ctx(run_dir, *args, rank=1, world_size=2))
        except Exception as err:  # re-raised below, in the test's thread
            errors.append(err)

    thread = threading.Thread(target=rank1)
    thread.start()
    rank0 = make_ctx(run_dir, *args, rank=0, world_size=2)
    manifest = run(rank0)
    thread.join()
    assert not errors, errors
    return manifest, len(rank0._model.calls)


def test_prompts_two_ranks_equal_one(tmp_path):
    one = make_ctx(tmp_path / "one", *IC)
    prompts.run(one)
    _, rank0_calls = run_two_ranks(prompts.run, tmp_path / "two", *IC)
    assert stage_files(tmp_path / "one", "prompts") == stage_files(tmp_path / "two", "prompts")
    assert 0 < rank0_calls < len(one._model.calls)  # rank 1 wrote the other sub-category


def test_stage_refuses_a_directory_made_with_another_config(tmp_path):
    prompts.run(make_ctx(tmp_path, *IC))
    with pytest.raises(StageMismatch, match="different config"):
        prompts.run(make_ctx(tmp_path, *IC, "prompts.refresh_every=3"))
    perturb.run(make_ctx(tmp_path))
    with pytest.raises(StageMismatch):
        perturb.run(make_ctx(tmp_path, "perturb.num_negatives=2"))


def test_prompts_config_errors_name_the_key(tmp_path):
    with pytest.raises(TemplateError, match="no sub-category 'bogus'"):
        prompts.run(make_ctx(tmp_path, "prompts.counts={bogus: 2}"))
    with pytest.raises(ConfigError, match="prompts.round_size must be >= 1"):
        prompts.run(make_ctx(tmp_path, "prompts.round_size=0"))


# ------------------------------------------------------------------------------------------- stage 2.1
def test_perturb_core_every_path():
    outputs = {"a red circle and a blue square": ["", "objects : x . edit : y", "result : ."],
               "a green cross": ["result : A Green  cross .", "result : a blue cross", "result : a red cross"],
               "a circle left of a square": ["result : a square left of a circle", "result : a circle", "x"]}
    model = FakeModel(lambda i, s: outputs[i.split(" : ", 1)[1]].pop(0))
    records = perturb.perturb_prompts(PROMPTS, SW, model, SAMPLING, 0, 3)
    assert [outcome(r, "text") for r in records] == [
        "empty", "no result marker", "empty result", "unchanged", "a blue cross", "a red cross",
        "a square left of a circle", "a circle", "no result marker"]
    assert records[4] == Negative("color1-00000/n1", "color1-00000", 1, "replace", "a blue cross",
                                  "result : a blue cross")
    assert [r.edit for r in records[6:8]] == ["replace", "swap"]
    assert [i.split(" : ")[0] for i, _ in model.calls[:3]] == ["replace", "swap", "drop"]
    assert perturb.slot_edits(SW, "color2", 4) == ["replace", "swap", "drop", "replace"]  # the plan repeats
    with pytest.raises(TemplateError, match="no sub-category 'shape1'"):
        perturb.slot_edits(SW, "shape1", 3)


def test_a_replace_x3_plan_gets_three_distinct_negatives_by_redrawing_repeats():
    prompt = Prompt("color1-00000", "a green cross", "attribute", "color1", "in-context")
    first = {perturb.draw_seed(0, f"color1-00000/n{s}", 0) for s in range(3)}
    later = iter(["a blue cross", "a red cross", "a blue cross", "a pink cross"])

    def answer(instruction, seed):  # every first draw says the same; redraws give new (or again repeated) texts
        return "result : a blue cross" if seed in first else f"result : {next(later)}"

    sampled = TextSampling(temperature=1.0, top_p=0.9)
    records = perturb.perturb_prompts([prompt], SW, FakeModel(answer), sampled, 0, 3, max_redraws=3)
    assert [r.edit for r in records] == ["replace"] * 3
    assert [(r.text, r.draw) for r in records] == [("a blue cross", 0), ("a pink cross", 3), ("a red cross", 1)]
    # the redraw seeds are new, one per slot and round
    model = FakeModel(answer)
    later = iter(["a blue cross"] * 6)
    records = perturb.perturb_prompts([prompt], SW, model, sampled, 0, 3, max_redraws=2)
    assert [outcome(r, "text") for r in records] == ["a blue cross", "duplicate", "duplicate"]
    assert records[1].detail == "a blue cross" and len(model.calls) == 3 + 2 + 2
    assert len({seed for _, seed in model.calls}) == 7
    # greedy decoding would repeat itself: no redraws, the repeats are rejected
    model = FakeModel(answer)
    records = perturb.perturb_prompts([prompt], SW, model, TextSampling(), 0, 3, max_redraws=3)
    assert [outcome(r, "text") for r in records] == ["a blue cross", "duplicate", "duplicate"]
    assert len(model.calls) == 3


def test_perturb_manifest_counts_redrawn_and_duplicate_slots(tmp_path):
    seed_stage(tmp_path, "prompts", PROMPTS[1:2])
    first = {perturb.draw_seed(0, f"color1-00000/n{s}", 0) for s in range(3)}
    answer = lambda i, seed: "result : a blue cross" if seed in first else "result : a red cross"
    manifest = perturb.run(make_ctx(tmp_path, "perturb.max_redraws=2", model=FakeModel(answer)))
    counts = manifest["counts"]
    assert counts["redrawn"] == 1 and counts["rejected_by_reason"] == {"duplicate": 1} and counts["out"] == 2
    with pytest.raises(ConfigError, match="perturb.max_redraws must be >= 0, got -1"):
        perturb.run(make_ctx(tmp_path / "bad", "perturb.max_redraws=-1"))


def test_perturb_stage_resumes_and_shards(tmp_path):
    for d in ("one", "crash", "two", "big"):
        seed_stage(tmp_path / d, "prompts", PROMPTS)
    one = make_ctx(tmp_path / "one", "chunk_size=1")
    manifest = perturb.run(one)
    assert counts_add_up(manifest) and manifest["counts"]["in"] == 9
    assert len(one._model.calls) > 9  # repeats were drawn again
    head = min(PROMPTS, key=lambda p: p.id)  # records are read in id order
    first = sum(i.endswith(f" : {head.text}") for i, _ in one._model.calls)  # the first chunk's draws and redraws
    with pytest.raises(Crash):
        perturb.run(make_ctx(tmp_path / "crash", "chunk_size=1", model=FakeModel(respond, fail_after=first + 1)))
    resumed = make_ctx(tmp_path / "crash", "chunk_size=1")
    perturb.run(resumed)
    assert len(resumed._model.calls) == len(one._model.calls) - first  # the first chunk was kept
    run_two_ranks(perturb.run, tmp_path / "two", "chunk_size=1")
    perturb.run(make_ctx(tmp_path / "big", "chunk_size=2"))
    for d in ("crash", "two", "big"):
        assert stage_files(tmp_path / "one", "perturb") == stage_files(tmp_path / d, "perturb")


# ------------------------------------------------------------------------------------------- stage 2.2
NEGATIVES = [Negative(f"color1-00000/n{i}", "color1-00000", i, "replace", f"a {c} cross")
             for i, c in enumerate(["red", "blue", "pink", "white", "black", "gray", "teal"])]


def test_densify_core_every_path():
    outputs = iter(["", "negative : a", "positive : a red cross", "positive : . negative : b",
                    "positive : a . negative : .", "positive : On a gray background , a cross . negative : "
                    "on a gray  background , A cross", "positive : a green cross . negative : a teal cross"])
    records = densify.densify_negatives(NEGATIVES, {"color1-00000": "a green cross"}, SW,
                                        FakeModel(lambda i, s: next(outputs)), SAMPLING, 0)
    assert [outcome(r, "prompt_id") for r in records] == [
        "empty", "no positive marker", "no negative marker", "empty positive", "empty negative",
        "identical dense pair", "color1-00000"]
    assert records[-1] == DensePair("color1-00000/n6", "color1-00000", 6, "a green cross", "a teal cross",
                                    "positive : a green cross . negative : a teal cross")
    copies = densify.densify_negatives(NEGATIVES[:2], {"color1-00000": "a green cross"}, SW, None, SAMPLING, 0,
                                       enabled=False)
    assert copies[1] == DensePair("color1-00000/n1", "color1-00000", 1, "a green cross", "a blue cross")
    with pytest.raises(InputError, match="color1-00000"):
        densify.densify_negatives(NEGATIVES, {}, SW, None, SAMPLING, 0)


def test_densify_stage_disabled_calls_no_model(tmp_path):
    seed_stage(tmp_path, "prompts", PROMPTS)
    seed_stage(tmp_path, "perturb", [Negative("color1-00000/n0", "color1-00000", 0, "replace", "a red cross")])
    model = FakeModel(respond)
    manifest = densify.run(make_ctx(tmp_path, "densify.enabled=false", model=model))
    assert model.calls == [] and manifest["enabled"] is False and manifest["counts"]["out"] == 1


# ------------------------------------------------------------------------------------------- stage 3.1
def test_questions_core_every_path():
    items = [questions.Item(f"p{i}", f"p{i}", "positive", "a red circle") for i in range(7)]
    outputs = iter(["", "is there a red circle", "is there a circle ? is it", "is there a circle ? ?",
                    "is there a circle ? Is there a  circle?", "a ? b ? c ?", "is there a red circle ?"])
    records = questions.decompose_items(items, SW, FakeModel(lambda i, s: next(outputs)), SAMPLING, 0,
                                        max_questions=2, global_questions=True)
    assert [outcome(r, "kind") for r in records[:7]] == [
        "empty", "no question mark", "unfinished question", "empty question", "repeated question",
        "too many questions", "local"]
    assert records[6] == QuestionSet("p6", "p6", "positive", "a red circle", ("is there a red circle ?",), "local",
                                     "is there a red circle ?")
    assert records[7] == QuestionSet("p0/global", "p0", "positive", "a red circle",
                                     ("does this image accurately show a red circle ?",), "global")
    assert len(records) == 14


def test_questions_stage_roles_globals_and_shards(tmp_path):
    negatives = [Negative("color1-00000/n0", "color1-00000", 0, "replace", "a red cross")]
    for d in ("one", "two"):
        seed_stage(tmp_path / d, "prompts", PROMPTS)
        seed_stage(tmp_path / d, "perturb", negatives)
    manifest = questions.run(make_ctx(tmp_path / "one", "select.rule=v1", "chunk_size=2"))
    records = StageDir(tmp_path / "one", "questions").records()
    assert {(r.id, r.role, r.kind) for r in records if r.id.startswith("color1")} >= {
        ("color1-00000/global", "positive", "global")}
    assert counts_add_up(manifest) and manifest["counts"]["global"] == 3 and manifest["counts"]["negative"] == 1
    assert all(r.kind == "global" or r.id in {p.id for p in PROMPTS} | {"color1-00000/n0"} for r in records)
    run_two_ranks(questions.run, tmp_path / "two", "select.rule=v1", "chunk_size=2")
    assert stage_files(tmp_path / "one", "questions") == stage_files(tmp_path / "two", "questions")
    seed_stage(tmp_path / "three", "prompts", PROMPTS)  # no perturb stage needed without negatives
    counts = questions.run(make_ctx(tmp_path / "three", "questions.decompose_negatives=false"))["counts"]
    assert (counts["in"], counts["negative"], counts["global"]) == (6, 0, 3)  # globals whatever the rule


# ------------------------------------------------------------------------------------------- guards and wiring
def test_no_stage_imports_the_oracle_or_the_evaluator():
    import ospo.stages

    banned = ("ospo.shapeworld.oracle", "ospo.evaluate")
    for path in Path(ospo.stages.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value]  # importlib.import_module("...")
            bad = [n for n in names if any(n == b or n.startswith(b + ".") for b in banned)]
            assert not bad, f"{path.name} imports {bad[0]}"


class Counting:
    """The real adapter, counting the items each stage asks it to answer."""

    def __init__(self, adapter):
        self.adapter, self.items = adapter, 0

    def generate_text(self, instructions, seeds, sampling):
        self.items += len(instructions)
        return self.adapter.generate_text(instructions, seeds, sampling)


def test_text_stages_end_to_end_on_the_tiny_random_janus(tmp_path, tiny):
    model = Counting(tiny)
    ctx = make_ctx(tmp_path, "prompts.counts={color1: 2, spatial: 2}", "prompts.round_size=2",
                   "prompts.sampling.max_new_tokens=6", "perturb.sampling.max_new_tokens=8",
                   "densify.sampling.max_new_tokens=8", "questions.sampling.max_new_tokens=8", model=model)
    for stage in (prompts, perturb, densify, questions):
        before = model.items
        manifest = stage.run(ctx)
        assert counts_add_up(manifest), (stage.NAME, manifest)
        # one record per model answer, plus the global question sets (no model call)
        assert manifest["counts"]["in"] == model.items - before + manifest["counts"].get("global", 0)
    for name in ("prompts", "perturb", "densify", "questions"):
        rejected = read_jsonl(tmp_path / name / "rejected.jsonl")
        assert all(r.reason and r.stage == name for r in rejected)
    # garbage rarely holds a result marker, so densify the core way too: one record per negative
    dense = densify.densify_negatives(NEGATIVES[:3], {"color1-00000": "a green cross"}, SW, tiny,
                                      TextSampling(max_new_tokens=8), 0)
    assert [r.id for r in dense] == [n.id for n in NEGATIVES[:3]]
    assert all(isinstance(r, DensePair) or r.reason for r in dense)
