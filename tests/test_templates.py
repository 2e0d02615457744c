"""Template loading (schema errors name the key) and the pure parsers of model output."""

import textwrap

import pytest

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
