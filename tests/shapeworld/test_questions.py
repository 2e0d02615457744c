"""Atomic yes/no questions: grammar, decomposition and exact truth."""

import pytest

from ospo.shapeworld.captions import CaptionError, ObjectClause, parse_caption
from ospo.shapeworld.questions import Question, answer_question, decompose, parse_question, question_text, truth
from ospo.shapeworld.world import Obj, Scene

SCENE = Scene((
    Obj("circle", "red", "striped", 3, 1),
    Obj("square", "blue", "solid", 3, 4),
    Obj("triangle", "green", "hollow", 0, 0),
    Obj("triangle", "green", "solid", 7, 7),
), "beige")

CASES = [
    ("is there a red circle ?", True),
    ("is there a blue circle ?", False),
    ("is there a striped circle ?", True),
    ("is there a solid red circle ?", False),
    ("is there a triangle in the upper left ?", True),
    ("is there a circle in the upper left ?", False),
    ("are there two triangles ?", True),
    ("are there two green triangles ?", True),
    ("are there three triangles ?", False),
    ("are there two hollow triangles ?", False),
    ("is the red circle left of the blue square ?", True),
    ("is the red circle right of the blue square ?", False),
    ("is the blue square right of the red circle ?", True),
    ("is the red circle above the blue square ?", False),
    ("is the hollow triangle above the red circle ?", True),  # offset (-1, -3): dy = -0.885
    ("is the red circle next to the blue square ?", False),
    ("is the background beige ?", True),
    ("is the background gray ?", False),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_truth_and_round_trip(text, expected):
    question = parse_question(text)
    assert question_text(question) == text
    assert truth(question, SCENE) is expected
    assert answer_question(text, SCENE) == ("yes" if expected else "no")


def test_truth_accepts_a_list_of_objects_but_background_needs_a_scene():
    assert truth(parse_question("is there a blue square ?"), list(SCENE.objects))
    with pytest.raises(TypeError, match="Scene"):
        truth(parse_question("is the background beige ?"), list(SCENE.objects))


@pytest.mark.parametrize("text,fragment", [
    ("is there a red circle", "must end with '?'"),
    ("is there two circles ?", "does not agree with the count"),
    ("are there a circle ?", "does not agree with the count"),
    ("is the red circle the blue square ?", "expected a relation"),
    ("does the circle exist ?", "a question starts with"),
    ("is the background purple ?", "unknown background 'purple'"),
    ("is there a red hexagon ?", "unknown shape 'hexagon'"),
])
def test_bad_questions_raise(text, fragment):
    with pytest.raises(CaptionError) as err:
        parse_question(text)
    assert fragment in str(err.value)


def test_questions_validate_their_fields():
    with pytest.raises(CaptionError, match="count of two"):
        Question("count", ObjectClause("circle"))
    with pytest.raises(CaptionError, match="exactly the fields"):
        Question("relation", ObjectClause("circle"))
    with pytest.raises(CaptionError, match="single objects"):
        Question("exists", ObjectClause("circle", 2))


def test_decompose_gives_one_question_per_clause_relation_and_background():
    spec = parse_caption(
        "on a teal background, a striped red circle in the upper left above a blue square and three crosses"
    )
    assert [question_text(q) for q in decompose(spec)] == [
        "is there a striped red circle in the upper left ?",
        "is there a blue square ?",
        "are there three crosses ?",
        "is the striped red circle in the upper left above the blue square ?",
        "is the background teal ?",
    ]
