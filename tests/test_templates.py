"""Template loading (schema errors name the key) and the pure parsers of model output."""

import textwrap
from pathlib import Path

import pytest
import yaml

from ospo.parsing import (
    ParseError, parse_densified, parse_elements, parse_perturbation, parse_prompt, parse_questions,
)
from ospo.templates import TemplateError, load_templates


@pytest.fixture(scope="module")
def sw():
    return load_templates("shapeworld")


def reason(fn, *args, **kwargs) -> str:
    with pytest.raises(ParseError) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    return info.value.reason


# ------------------------------------------------------------------------------------------- instructions
def test_shapeworld_instructions(sw):
    assert sw.name == "shapeworld"
    assert sw.elements("numbers") == "list number words :"
    assert sw.prompt("color1", ["a red circle", "a blue square"]) == "write a new prompt : a red circle . a blue square"
    assert sw.perturb("a red circle left of a blue square", "replace") == "replace : a red circle left of a blue square"
    assert sw.densify("a red circle", "a blue circle") == "dense : a red circle . a blue circle"
    assert sw.decompose("a red circle") == "questions : a red circle"
    assert sw.vqa("is there a red circle ?") == "is there a red circle ? please answer yes or no ."


def test_shapeworld_answers_parse_back(sw):
    answer = sw.perturb_answer("a green circle", objects="red circle", change="red to green")
    assert answer == "objects : red circle . edit : red to green . result : a green circle"
    assert sw.parse_perturbation(answer) == "a green circle"
    dense = sw.densify_answer("on a gray background, a red circle", "on a gray background, a blue circle")
    assert sw.parse_densified(dense) == ("on a gray background, a red circle", "on a gray background, a blue circle")
    assert sw.parse_elements(sw.elements_answer(["left of", "above"])) == ["left of", "above"]
    questions = ["is there a red circle ?", "is the background gray ?"]
    assert sw.parse_questions(sw.decompose_answer(questions)) == questions


def test_call_errors_name_the_value(sw):
    with pytest.raises(TemplateError, match="'planets'"):
        sw.elements("planets")
    with pytest.raises(TemplateError, match="'rotate'"):
        sw.perturb("a red circle", "rotate")
    with pytest.raises(TemplateError, match="at least one example"):
        sw.prompt("color1", [])


JANUS_LIKE = """
name: janus-like
tasks:
  elements:
    instruction: "List ten {kind}, one per line."
    separator: "\\n"
    kinds: {shapes: "everyday objects", colors: "colours"}
  prompt:
    instruction: "Here are prompts of the category {subcategory}:\\n{examples}\\nWrite one more.\\nPrompt:"
    example: "{index}. {text}"
    marker: "Prompt:"
    subcategories: {color1: "single-object colour"}
  perturb:
    instruction: "{edit}\\nPrompt: {prompt}\\nThink step by step, then write 'Final prompt:' and the result."
    marker: "Final prompt:"
    edits: {replace: "Replace one attribute.", swap: "Swap two attributes.", drop: "Remove one object."}
  densify:
    instruction: "Rewrite both prompts in detail.\\nA: {positive}\\nB: {negative}"
    positive_marker: "Dense A:"
    negative_marker: "Dense B:"
  decompose:
    instruction: "Split into yes/no questions: {prompt}"
  vqa:
    instruction: "{question} Please answer yes or no."
"""


def test_a_long_stepwise_set_fits_the_same_schema(tmp_path):
    path = tmp_path / "janus-like.yaml"
    path.write_text(JANUS_LIKE)
    t = load_templates(path)
    assert t.elements("shapes") == "List ten everyday objects, one per line."
    assert t.prompt("color1", ["a red car", "a blue cup"]) == (
        "Here are prompts of the category single-object colour:\n1. a red car\n2. a blue cup\nWrite one more.\nPrompt:")
    assert t.perturb("a red car", "swap").startswith("Swap two attributes.\nPrompt: a red car\n")
    assert t.parse_elements("1. car\n2. cup\n\n3. dog") == ["car", "cup", "dog"]
    assert t.parse_prompt("Prompt: a green apple on a table\nPrompt: another") == "a green apple on a table"
    out = "Step 1: objects are a car.\nStep 2: replace red with blue.\nFinal prompt: **a blue car**\nDone."
    assert t.parse_perturbation(out) == "a blue car"
    dense = t.parse_densified("Dense A: A red car.\nParked.\nDense B: A blue car.")
    assert dense == ("A red car. Parked", "A blue car")
    assert t.parse_questions("1. Is there a car?\n2. Is the car red?") == ["Is there a car?", "Is the car red?"]
    with pytest.raises(TemplateError, match="'texture'"):
        t.elements("texture")
    with pytest.raises(TemplateError, match="no answer format for perturb"):
        t.perturb_answer("x")


# ------------------------------------------------------------------------------------------- load errors
def write(tmp_path, text: str):
    path = tmp_path / "set.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def valid_text() -> str:
    from importlib import resources

    return (resources.files("ospo") / "templates" / "shapeworld.yaml").read_text()


@pytest.mark.parametrize("old, new, message", [
    ("name: shapeworld", "name: shapeworld\ncolour: red", "unknown key 'colour'"),
    ("    separator: \" \"\n", "    separator: \" \"\n    sep: \",\"\n", "unknown key 'sep'"),
    ("  vqa:\n", "  vqa2:\n", "unknown task 'vqa2'"),
    ('    instruction: "questions : {prompt}"', '    instruction: "questions : {prompt} {style}"',
     "unknown placeholder {style}"),
    ('    instruction: "{edit} : {prompt}"', '    instruction: "{edit} :"', "missing placeholder {prompt}"),
    ('    marker: "result :"\n', "", "missing key 'marker'"),
    ('answer: "objects : {objects} . edit : {change} . result : {result}"',
     'answer: "objects : {objects} . edit : {change} . {result}"', "does not parse back"),
    ("      regions: regions\n", "      regions: \"\"\n", "kinds must map"),
    ('    instruction: "{edit} : {prompt}"', '    instruction: "{edit} : {prompt}"\n    edits: {replace: r}',
     "edits must name exactly"),
    ('    instruction: "{edit} : {prompt}"', '    instruction: "{edit : {prompt}"', "bad braces"),
])
def test_schema_errors_name_the_key(tmp_path, old, new, message):
    text = valid_text()
    assert old in text
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_templates(write(tmp_path, text.replace(old, new, 1)))


def test_missing_task_and_missing_tasks(tmp_path):
    text = valid_text()
    cut = text[:text.index("  vqa:")]
    with pytest.raises(TemplateError, match="missing task 'vqa'"):
        load_templates(write(tmp_path, cut))
    with pytest.raises(TemplateError, match="missing key 'tasks'"):
        load_templates(write(tmp_path, "name: x\n"))
    with pytest.raises(TemplateError, match="not valid YAML"):
        load_templates(write(tmp_path, "tasks: [\n"))


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(TemplateError, match="unknown template set 'janus-pro-9000'.*shapeworld"):
        load_templates("janus-pro-9000")
    with pytest.raises(TemplateError, match="does not exist"):
        load_templates(tmp_path / "nope.yaml")


# ------------------------------------------------------------------------------------------- parsers
def test_parse_perturbation():
    answer = "objects : red circle . edit : red to green . result : a green circle"
    assert parse_perturbation(answer) == "a green circle"
    assert parse_perturbation("Objects: red circle. Result: a green circle") == "a green circle"
    assert parse_perturbation("result : a wrong one . result : a green circle") == "a green circle"  # last marker
    assert parse_perturbation('result: "a green circle"\nextra text') == "a green circle"
    assert parse_perturbation("the results : x . final answer : a cup", marker="final answer :") == "a cup"
    assert reason(parse_perturbation, "objects : red circle . edit : red to green") == "no result marker"
    assert reason(parse_perturbation, "the results : a cup") == "no result marker"  # not a word prefix
    assert reason(parse_perturbation, "objects : red circle . result :") == "empty result"
    assert parse_perturbation("result :\n\n a green circle\nmore") == "a green circle"  # next non-empty line
    assert reason(parse_perturbation, "objects : red circle . result : .") == "empty result"
    with pytest.raises(TypeError):
        parse_perturbation(None)


def test_parse_densified():
    text = "positive : on a gray background , a red circle . negative : on a gray background , a blue circle"
    assert parse_densified(text) == ("on a gray background , a red circle", "on a gray background , a blue circle")
    assert parse_densified("Positive: a red circle.\nNegative: a blue circle.") == ("a red circle", "a blue circle")
    assert reason(parse_densified, "negative : a blue circle") == "no positive marker"
    assert reason(parse_densified, "positive : a red circle") == "no negative marker"
    assert reason(parse_densified, "negative : a . positive : b") == "no negative marker"  # order matters
    assert reason(parse_densified, "positive : . negative : a blue circle") == "empty positive"
    assert reason(parse_densified, "positive : a red circle . negative : .") == "empty negative"


def test_parse_questions():
    assert parse_questions("is there a red circle ? is the red circle left of the blue square ?") == [
        "is there a red circle ?", "is the red circle left of the blue square ?"]
    assert parse_questions("- Is there a car?\n- Is the car red?\n") == ["Is there a car?", "Is the car red?"]
    assert parse_questions("questions: is there a cup ?", marker="questions:") == ["is there a cup ?"]
    assert reason(parse_questions, "is there a red circle") == "no question mark"
    assert reason(parse_questions, "is there a red circle ? is there a blue") == "unfinished question"
    assert reason(parse_questions, "is there a red circle ? ?") == "empty question"
    assert reason(parse_questions, "1. ?") == "empty question"
    assert reason(parse_questions, "is there a cup ? Is there a  cup?") == "repeated question"
    assert reason(parse_questions, "is there a cup ?", marker="questions:") == "no questions marker"


def test_parse_elements():
    assert parse_elements("red , green , blue") == ["red", "green", "blue"]
    assert parse_elements("left of, right of.") == ["left of", "right of"]
    assert parse_elements("1. cat\n2. dog\n", separator="\n") == ["cat", "dog"]
    assert parse_elements("colours: red, blue", marker="colours:") == ["red", "blue"]
    assert reason(parse_elements, "  ") == "empty list"
    assert reason(parse_elements, ".") == "empty list"
    assert reason(parse_elements, "red , , blue") == "empty element"
    assert reason(parse_elements, "red , blue , Red") == "repeated element"
    assert reason(parse_elements, "red", marker="colours:") == "no elements marker"


def test_parse_prompt():
    assert parse_prompt("a red circle") == "a red circle"
    assert parse_prompt('\n "a red circle"\nsecond line') == "a red circle"
    assert parse_prompt("Prompt: a cup on a table", marker="prompt:") == "a cup on a table"
    assert reason(parse_prompt, "  \n ") == "empty prompt"
    assert reason(parse_prompt, "a cup", marker="prompt:") == "no prompt marker"


# ------------------------------------------------------------------------------------------- sub-category data
def test_shapeworld_subcategories_match_the_world(sw):
    import numpy as np

    from ospo.compose import compose
    from ospo.shapeworld import tasks
    from ospo.shapeworld.captions import SUBCATEGORIES
    from ospo.shapeworld.evalsets import eval_prompt_texts
    from ospo.shapeworld.world import vocabulary

    assert {s: e.category for s, e in sw.subcategories.items()} == SUBCATEGORIES
    assert {s: e.slots for s, e in sw.subcategories.items()} == tasks.PERTURBATION_SLOTS
    vocab, rng, texts = set(vocabulary()), np.random.default_rng(0), [sw.global_question("a red circle")]
    evaluation = eval_prompt_texts()
    for sub, entry in sw.subcategories.items():
        assert len(entry.seeds) >= 2 and len(entry.compose) >= 1
        assert all(tasks.check_prompt(s, sub) == (True, "ok") for s in entry.seeds)
        assert sub == "object1" or not set(entry.seeds) & evaluation  # object1 has one prompt outside them
        composed = [compose(p, tasks.ELEMENTS, rng) for p in entry.compose for _ in range(30)]
        assert all(tasks.check_prompt(t, sub) == (True, "ok") for t in composed), sub
        texts += list(entry.seeds) + composed
    assert not {w for t in texts for w in t.split()} - vocab


def test_janus_pro_set(tmp_path):
    t = load_templates("janus-pro")
    categories = {s: e.category for s, e in t.subcategories.items()}
    assert set(categories.values()) == {"attribute", "layout", "non-spatial", "complex"} and len(categories) == 12
    plan = {s: e.slots for s, e in t.subcategories.items()}
    assert plan["color1"] == plan["numeracy1"] == ("replace",) * 3
    assert plan["color2"] == plan["spatial3d"] == plan["numeracy2"] == plan["complex"] == ("replace", "swap", "drop")
    assert plan["non-spatial"] == ("replace", "drop", "replace")
    for config in (Path(__file__).parents[1] / "src" / "ospo" / "configs").glob("janus-pro*.yaml"):  # the recipes name these sub-categories
        assert set(yaml.safe_load(config.read_text())["prompts"]["counts"]) <= set(categories), config
    assert all(len(e.seeds) >= 6 and e.compose for e in t.subcategories.values())
    assert t.vqa("Is there a red car?") == "Is there a red car? Please answer 'yes' or 'no' without explanation."
    assert t.global_question("a red car") == 'Does this picture match the description "a red car"?'
    # the worked examples inside the instructions parse with the set's own parsers
    perturb = t.perturb("a red car", "drop")
    assert "remove one attribute, object or relation" in perturb and perturb.endswith("Prompt: a red car")
    shown = perturb[perturb.index("Example of a swap edit."):perturb.index("Example of a drop edit.")]
    assert t.parse_perturbation(shown) == "four mugs and two plates"
    dense = t.densify("a cat", "a dog")
    a, b = t.parse_densified(dense[dense.index("Description A: A glossy"):])
    assert a.replace("red", "green") == b
    decomposed = t.decompose("a red car")
    assert len(t.parse_questions(decomposed[decomposed.index("Questions:"):decomposed.index("Prompt: a red car")])) == 6
    assert t.parse_prompt(t.prompt("color1", ["a red car", "a blue cup"]).splitlines()[2]) == "a red car"
    assert t.parse_elements("cup, bicycle, kettle.") == ["cup", "bicycle", "kettle"]


def test_subcategory_lookups_name_what_is_missing(tmp_path, sw):
    with pytest.raises(TemplateError, match="no sub-category 'shape1'.*object1"):
        sw.subcategory("shape1")
    path = tmp_path / "janus-like.yaml"
    path.write_text(JANUS_LIKE + "subcategories:\n  color1: {category: attribute}\n")
    t = load_templates(path)
    assert t.subcategory("color1").category == "attribute"
    with pytest.raises(TemplateError, match="subcategories.color1.seeds is missing"):
        t.subcategory("color1", needs="seeds")
    with pytest.raises(TemplateError, match="no tasks.decompose.global_question"):
        t.global_question("a red car")


@pytest.mark.parametrize("entry, message", [
    ("{category: object, colour: red}", "unknown key 'colour'"),
    ("{slots: [replace]}", "category must be a non-empty string"),
    ("{category: object, slots: [rotate]}", "unknown edit 'rotate'"),
    ("{category: object, seeds: a circle}", "seeds must be a list"),
    ("{category: object, compose: ['{a} {planets}']}", "unknown element kind {planets}"),
    ("{category: object, compose: ['{shapes:singular}']}", "unknown form 'singular'"),
    ("{category: object, compose: ['{two||three} {shapes}']}", "empty choice"),
])
def test_subcategory_schema_errors(tmp_path, entry, message):
    text = valid_text()
    text = text[:text.index("subcategories:")] + f"subcategories:\n  object1: {entry}\n"
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_templates(write(tmp_path, text))


# ------------------------------------------------------------------------------------------- composition
def test_compose_patterns():
    import numpy as np

    from ospo.compose import ComposeError, compose, element_kinds, pluralize

    assert [pluralize(w) for w in ("circle", "cross", "box", "berry", "day", "traffic light", "bench")] == [
        "circles", "crosses", "boxes", "berries", "days", "traffic lights", "benches"]
    assert element_kinds("{a} {colors} {shapes:plural} and {two|three} {shapes}") == {"colors", "shapes"}
    rng = np.random.default_rng(0)
    assert compose("{a} {colors} {shapes}", {"colors": ["orange"], "shapes": ["cup"]}, rng) == "an orange cup"
    assert compose("{a} {shapes}", {"shapes": ["Umbrella"]}, rng) == "an Umbrella"
    assert compose("{two|three} {shapes:plural}", {"shapes": ["cross"]}, rng) in ("two crosses", "three crosses")
    texts = {compose("{a} {shapes} and {a} {shapes}", {"shapes": ["cup", "box"]}, rng) for _ in range(20)}
    assert texts == {"a cup and a box", "a box and a cup"}  # a kind used twice draws two different elements
    a, b = (compose("{a} {colors} {shapes}", {"colors": list("rgbcmy"), "shapes": ["o"]}, np.random.default_rng(5))
            for _ in range(2))
    assert a == b  # a seed composes one text
    with pytest.raises(ComposeError) as info:
        compose("{a} {colors} {shapes} and {a} {colors} {shapes}", {"colors": ["red"], "shapes": ["a", "b"]}, rng)
    assert (info.value.reason, info.value.detail) == ("too few elements", "colors")
    with pytest.raises(ComposeError, match="missing elements: textures"):
        compose("{textures}", {"textures": []}, rng)
