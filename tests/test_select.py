"""Scoring math and the selection rules on hand-computed tables (pure, no model)."""

import pytest

from ospo.config import SelectConfig
from ospo.records import Image, Negative, Prompt, QuestionSet, Rejected, Score, TrainingPair
from ospo.scoring import (argmax_by, closest, histogram, image_score, question_scores, v1_gaps, v1_strengths,
                          v2_chosen, v2_rejected, v3_chosen, v3_rejected)
from ospo.selection import (Candidates, Slot, V2Plan, filter_stats, select_best_of_n, select_v1, select_v3,
                            v2_plan, v2_select)
from ospo.stages.select import build_candidates, stage_name

NEG_TEXT = {"p/n1": "neg one", "p/n2": "neg two", "p/n3": "neg three"}


def cands(local=None, global_=None, contradiction=None, slots=(1, 2, 3), missing=()):
    """Prompt 'p' ('x') with same-seed slots n1..n3; image ids 'p/n<k>/positive' and 'p/n<k>/negative'."""
    def img(k, role):
        i = f"p/n{k}/{role}"
        return None if i in missing else i
    return Candidates("p", "x", tuple(Slot(f"p/n{k}", k, f"p/n{k}", img(k, "positive"), img(k, "negative"))
                                      for k in slots), dict(NEG_TEXT), local or {}, global_ or {},
                      contradiction or {}, {"category": "attribute"})


def P(k):
    return f"p/n{k}/positive"


def N(k):
    return f"p/n{k}/negative"


# ------------------------------------------------------------------------------------------------ scoring math
def test_question_and_image_scores():
    assert question_scores((0.9, 0.25), (0.05, 0.75)) == pytest.approx((0.85, -0.5))
    assert image_score((0.85, -0.5)) == pytest.approx(0.175)
    assert image_score((0.5, 0.25, -0.75)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="differ in length"):
        question_scores((0.5,), ())


def test_zero_questions_make_S_undefined_and_every_filter_false():
    assert image_score(()) is None and image_score(None) is None
    for f in (v2_chosen, v2_rejected, v3_chosen, v3_rejected):
        assert f(()) is False and f(None) is False  # "every s_k > 0.5" must not hold vacuously


def test_v2_filters_are_strict():
    assert v2_chosen((0.6, 0.51)) and not v2_chosen((0.6, 0.5))
    assert v2_rejected((0.9, -0.6)) and not v2_rejected((-0.5, 0.9))
    assert v2_chosen((0.3,), threshold=0.25) and v2_rejected((-0.3,), threshold=-0.25)


def test_v3_filters():
    assert v3_chosen((0.75, 0.5))  # S = 0.625 >= 0.6, has a yes
    assert not v3_chosen((0.75, 0.25))  # S = 0.5
    assert not v3_chosen((-0.5, -0.5), tau=-1.0)  # S >= tau but no yes at all
    assert v3_rejected((0.9, 0.0))  # 0 is not a yes
    assert not v3_rejected((0.9, 0.1))


def test_v1_gaps_and_strengths():
    assert v1_gaps((0.5, 0.5), (0.0,), (1.0,), (0.5,)) == pytest.approx((0.5, 0.5))
    assert v1_gaps((0.5,), (), (1.0,), (0.5,)) is None
    s = v1_strengths([(0.5, 0.25), (0.25, 0.0), (1.0, 1.0)])
    assert s == pytest.approx([0.5 / (0.25 + 1e-8), 0.25 / 1e-8, 1.0 / (1.0 + 1e-8)])
    assert v1_strengths([(0.0, 0.0), (0.0, 0.0)]) == [0.0, 0.0]  # zero normalisers
    assert v1_strengths([]) == []


def test_argmax_closest_and_histogram_ties_and_empty():
    assert argmax_by(["b", "a", "c"], key=lambda x: {"a": 1, "b": 1, "c": 0}[x], tie=str) == "a"
    assert argmax_by([], key=float, tie=str) is None
    assert closest(0.0, {"b": 0.5, "a": -0.5, "c": 2.0}) == "a"
    assert closest(0.0, {}) is None
    assert histogram([-1.0, -0.95, 0.0, 0.99, 1.0], bins=4) == [2, 0, 1, 2]
    assert histogram([-0.8, -0.6], bins=10) == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # bin edges go up


# ------------------------------------------------------------------------------------------------ v2
V2_LOCAL = {P(1): (0.9, 0.8), P(2): (0.95, 0.6), P(3): (0.99, 0.4),  # S .85, .775; P3 fails (0.4)
            N(1): (0.9, -0.75), N(2): (0.25, 0.125), N(3): (-0.875, -0.875)}  # N2 fails
V2_CONTRA = {(P(1), "p/n1"): (-0.8, 0.9), (P(1), "p/n2"): (0.25,), (P(1), "p/n3"): (-0.625,)}


def test_v2_plan_and_selection():
    c = cands(V2_LOCAL, contradiction=V2_CONTRA)
    plan = v2_plan(c)
    assert plan == V2Plan(P(1), (N(1), N(3)), ("p/n1", "p/n3"), 2)
    assert plan.requests(c) == [("x", P(1)), ("x", N(1)), ("x", N(3)), ("neg one", P(1)), ("neg three", P(1))]
    logp = {("x", P(1)): -2.0, ("x", N(1)): -2.5, ("x", N(3)): -1.75, ("neg one", P(1)): -2.125,
            ("neg three", P(1)): -3.0}
    pair = v2_select(c, plan, logp)
    assert isinstance(pair, TrainingPair)
    assert (pair.chosen_image_id, pair.rejected_image_id, pair.negative_prompt) == (P(1), N(3), "neg one")
    assert pair.rule == "v2" and pair.prompt == "x" and pair.id == "p"
    assert pair.scores["chosen_S"] == pytest.approx(0.85) and pair.scores["rejected_S"] == pytest.approx(-0.875)
    assert pair.scores["l_rejected"] == -1.75 and pair.scores["l_chosen_given_negative"] == -2.125
    assert pair.provenance["negative_id"] == "p/n1" and pair.provenance["rejected_pair_id"] == "p/n3"


def test_v2_ties_go_to_the_smallest_id():
    local = {**V2_LOCAL, P(2): (0.9, 0.8)}  # P1 and P2 tie on S
    c = cands(local, contradiction={(P(1), "p/n1"): (-0.75,), (P(1), "p/n3"): (-0.75,)})
    plan = v2_plan(c)
    assert plan.chosen == P(1)
    logp = {("x", P(1)): -2.0, ("x", N(1)): -2.5, ("x", N(3)): -1.5, ("neg one", P(1)): -1.0,
            ("neg three", P(1)): -3.0}  # both rejected at distance 0.5, both negatives at distance 1.0
    pair = v2_select(c, plan, logp)
    assert pair.rejected_image_id == N(1) and pair.negative_prompt == "neg one"


def test_v2_without_contradicted_negative_has_no_negative_prompt():
    c = cands(V2_LOCAL, contradiction={(P(1), "p/n2"): (0.75,)})
    plan = v2_plan(c)
    assert plan.contradicted_negatives == ()
    pair = v2_select(c, plan, {("x", P(1)): -2.0, ("x", N(1)): -2.5, ("x", N(3)): -1.75})
    assert pair.negative_prompt is None and pair.scores["l_chosen_given_negative"] is None


@pytest.mark.parametrize("local,reason", [
    ({**V2_LOCAL, P(1): (0.4, 0.9), P(2): (0.1,)}, "no-chosen-candidate"),
    ({**V2_LOCAL, N(1): (0.0,), N(3): (-0.5,)}, "no-rejected-candidate"),
    ({**V2_LOCAL, P(1): (), P(2): ()}, "no-chosen-candidate"),  # zero questions: cannot be chosen
    ({N(1): (-0.9,)}, "no-chosen-candidate"),  # positives unscored
])
def test_v2_drops_prompts_without_survivors(local, reason):
    out = v2_plan(cands(local))
    assert isinstance(out, Rejected) and out.reason == reason and out.id == "p" and out.stage == "select"


def test_every_rule_handles_a_prompt_without_images():
    c = cands(slots=())
    assert v2_plan(c).reason == select_v1(c).reason == select_v3(c).reason == "no-images"
    assert select_best_of_n(c).reason == "too-few-images"


# ------------------------------------------------------------------------------------------------ v1
V1_LOCAL = {P(1): (0.5,), N(1): (0.0,), P(2): (0.25,), N(2): (0.0,), P(3): (1.0,), N(3): (0.0,)}
V1_GLOBAL = {P(1): (0.75,), N(1): (0.5,), P(2): (0.5,), N(2): (0.5,), P(3): (0.0,), N(3): (0.5,)}


def test_v1_picks_the_largest_preference_strength():
    # gaps: n1 (0.5, 0.25), n2 (0.25, 0.0), n3 (1.0, -0.5) -> n3 dropped; n2: 0.5 / (0 + 1e-8) beats n1: 1 / (1 + 1e-8)
    pair = select_v1(cands(V1_LOCAL, V1_GLOBAL))
    assert (pair.chosen_image_id, pair.rejected_image_id, pair.negative_prompt) == (P(2), N(2), "neg two")
    assert pair.scores["local_gap"] == 0.25 and pair.scores["global_gap"] == 0.0 and pair.scores["num_pairs"] == 2
    assert pair.scores["strength"] == pytest.approx(0.5 / 1e-8)


def test_v1_ties_and_empty_sets():
    same = {**V1_GLOBAL, P(2): (0.75,), N(2): (0.5,), P(1): (0.75,)}
    local = {**V1_LOCAL, P(2): (0.5,)}  # n1 and n2 identical gaps (0.5, 0.25)
    assert select_v1(cands(local, same)).chosen_image_id == P(1)
    assert select_v1(cands(V1_LOCAL)).reason == "no-global-scores"
    negative = {k: ((-0.5,) if k.endswith("positive") else (0.5,)) for k in V1_GLOBAL}
    assert select_v1(cands(V1_LOCAL, negative)).reason == "no-pair-with-nonnegative-gaps"


# ------------------------------------------------------------------------------------------------ v3
V3_LOCAL = {P(1): (0.75, 0.5), N(1): (0.875, 0.75),  # chosen ok (S .625), negative all yes: not rejected
            P(2): (0.75, 0.25), N(2): (0.5, -0.5),  # S .5 < .6; rejected ok
            P(3): (1.0, 0.5), N(3): (0.0, 0.5)}  # chosen ok (S .75); rejected ok (0 is not yes)


def test_v3_pairs_by_slot_and_picks_the_highest_chosen_S():
    pair = select_v3(cands(V3_LOCAL))
    assert (pair.chosen_image_id, pair.rejected_image_id, pair.negative_prompt) == (P(3), N(3), "neg three")
    assert pair.scores["chosen_S"] == 0.75 and pair.scores["num_slots"] == 1
    tie = select_v3(cands({**V3_LOCAL, N(1): (0.5, -0.25), P(1): (1.0, 0.5)}))
    assert tie.chosen_image_id == P(1) and tie.scores["num_slots"] == 2


def test_v3_empty_candidate_sets():
    no_both = {**V3_LOCAL, N(3): (0.5, 0.5), P(3): (0.5, 0.5)}  # chosen only in n1, rejected only in n2
    assert select_v3(cands(no_both)).reason == "no-slot-with-both"
    assert select_v3(cands({N(2): (-1.0,)})).reason == "no-chosen-candidate"
    assert select_v3(cands({P(1): (1.0,)})).reason == "no-rejected-candidate"


# ------------------------------------------------------------------------------------------------ best-of-n
def test_best_of_n_pairs_best_and_worst_image_of_the_same_prompt():
    pair = select_best_of_n(cands(V3_LOCAL))  # positive S: n1 .625, n2 .5, n3 .75
    assert (pair.chosen_image_id, pair.rejected_image_id) == (P(3), P(2))
    assert pair.negative_prompt is None and pair.rule == "best-of-n" and pair.scores["num_images"] == 3
    tie = select_best_of_n(cands({P(1): (0.5,), P(2): (0.0,), P(3): (0.0,)}))
    assert tie.rejected_image_id == P(2)
    assert select_best_of_n(cands({P(1): (0.5,), P(2): ()})).reason == "too-few-images"  # zero questions
    assert select_best_of_n(cands({P(1): (0.5,), P(2): (0.5,)})).reason == "equal-scores"


# ------------------------------------------------------------------------------------------------ joins, stats
def test_build_candidates_joins_records_by_id():
    prompts = [Prompt("p", "x", "attribute", "color1", "in-context"), Prompt("q", "y", "layout", "spatial", "x")]
    negatives = [Negative("p/n1", "p", 1, "replace", "neg one"), Negative("p/n2", "p", 2, "swap", "neg two")]
    images = [Image(f"p/n{k}/{r}", f"p/n{k}", "p", k, r, "d", 7, -1.0) for k in (1, 2) for r in ("positive",
                                                                                                  "negative")]
    images = [i for i in images if i.id != N(2)]  # stage 2.3 lost one image
    sets = [QuestionSet("p", "p", "positive", "x", ("a?", "b?")), QuestionSet("p/global", "p", "positive", "x",
                                                                              ("all?",), kind="global"),
            QuestionSet("p/n1", "p", "negative", "neg one", ("c?",))]
    scores = [Score(f"{i}@p", i, "p", (0.75, 0.5), (0.25, 0.25)) for i in (P(1), N(1), P(2))]
    scores += [Score(f"{P(1)}@p/n1", P(1), "p/n1", (0.0,), (1.0,)), Score(f"{P(1)}@p/global", P(1), "p/global",
                                                                         (1.0,), (0.0,))]
    p, q = build_candidates(prompts, negatives, images, sets, scores)
    assert p.slots == (Slot("p/n1", 1, "p/n1", P(1), N(1)), Slot("p/n2", 2, "p/n2", P(2), None))
    assert p.local == {P(1): (0.5, 0.25), N(1): (0.5, 0.25), P(2): (0.5, 0.25)}
    assert p.global_ == {P(1): (1.0,)} and p.contradiction == {(P(1), "p/n1"): (-1.0,)}
    assert p.negatives == {"p/n1": "neg one", "p/n2": "neg two"} and p.provenance["subcategory"] == "color1"
    assert q.slots == () and select_v3(q).reason == "no-images"


def test_filter_stats_count_passes_per_rule():
    c = cands(V2_LOCAL)
    assert filter_stats([c], "v2") == {"chosen": [2, 3], "rejected": [2, 3]}
    assert filter_stats([cands(V3_LOCAL)], "v3") == {"chosen": [2, 3], "rejected": [2, 3]}
    assert filter_stats([cands(V1_LOCAL, V1_GLOBAL)], "v1") == {"pairs": [2, 3]}
    assert filter_stats([cands({P(1): (0.5,)})], "best-of-n") == {"scored": [1, 3]}


def test_stage_name_has_the_rule_and_a_hash_for_non_default_thresholds():
    assert stage_name(SelectConfig()) == "select-v2"
    assert stage_name(SelectConfig(rule="v3")) == "select-v3"
    odd = stage_name(SelectConfig(rule="v2", chosen_threshold=0.25))
    assert odd.startswith("select-v2-") and odd != stage_name(SelectConfig(rule="v2", chosen_threshold=0.375))
    assert stage_name(SelectConfig(rule="v3", chosen_threshold=0.25)) == "select-v3"  # v3 does not read it
    assert stage_name(SelectConfig(rule="v3", v3_tau=0.5)).startswith("select-v3-")
