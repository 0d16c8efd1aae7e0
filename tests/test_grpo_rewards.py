"""The GRPO rewards on hand-made answers: each formula, unparseable answers, a user reward."""

import math

import pytest

from iovqa_plugin.rl.answers import parse_answer, read_choice
from iovqa_plugin.rl.rewards import RewardInputError, combine, reward_function


def ans(text, mode="answer_only", fmt="integer", dims=()):
    return parse_answer(text, mode, fmt, dims)


def test_answer_parsing_in_both_modes_never_raises():
    a = ans("<think>sharp, little noise</think>\n<answer>37</answer>", "thinking")
    assert (a.score, a.reasoning, a.well_formed) == (3.7, "sharp, little noise", True)
    # tags but an answer off the label grid, missing tags, text around the blocks: not well formed
    assert not ans("<think>x</think><answer>99</answer>", "thinking").well_formed
    late = ans("I think <answer>40</answer>", "thinking")
    assert late.score == 4.0 and not late.well_formed
    assert ans("no tags at all", "thinking").answer is None
    assert ans("37").score == 3.7 and ans("good", fmt="level").score == 4.0
    assert ans("").score is None and ans(None).score is None and ans("\x00<answer>").score is None
    joint = ans("traditional 37, overall 41", dims=("traditional", "overall"))
    assert joint.dimensions == {"traditional": 3.7, "overall": 4.1}
    assert ans("traditional 37", dims=("traditional", "overall")).dimensions == {}
    assert [read_choice(t) for t in ("Video A", "b.", "Yes", "no", "maybe", "A and B")] == ["A", "B", "yes", "no",
                                                                                          None, None]


def run(name, texts, rows, mode="answer_only", **arguments):
    answers = [ans(t, mode) for t in texts]
    return reward_function(name)(answers, rows, **arguments)


def test_score_rewards_by_their_formulas():
    rows = [{"mos": 4.0}] * 4
    texts = ["40", "30", "10", "nothing"]
    assert run("score_relative", texts, rows) == pytest.approx([1.0, 0.75, 0.25, 0.0])
    assert run("score_threshold", ["40", "43", "44", "x"], rows) == [1.0, 1.0, 0.0, 0.0]
    assert run("score_gaussian", ["40", "35", "30", "x"], rows) == pytest.approx(
        [1.0, math.exp(-0.25 / 0.5), math.exp(-1 / 0.5), 0.0])
    assert run("score_gaussian", ["35"], rows[:1], sigma=1.0) == pytest.approx([math.exp(-0.125)])


def test_score_tiered_videoscore2_tiers():
    rows = [{"mos": 3.0, "dimensions": {"a": 3.0, "b": 4.0, "c": 2.0}}] * 6
    dims = ("a", "b", "c")
    texts = ["a 30, b 40, c 20", "a 40, b 40, c 20", "a 40, b 30, c 20", "a 40, b 30, c 30", "a 50, b 40, c 20",
             "a 30, b 40"]
    answers = [ans(t, dims=dims) for t in texts]
    assert reward_function("score_tiered")(answers, rows) == [1.0, 0.7, 0.4, 0.1, 0.0, 0.0]


def test_fidelity_rank_against_a_hand_computation():
    # two prompts (groups), MOS 4 > 2; scores read 40, 30 (group 0) and 20, 20 (group 1) plus an unparseable one
    rows = [{"mos": 4.0, "group": 0}] * 2 + [{"mos": 2.0, "group": 1}] * 3
    out = run("fidelity_rank", ["40", "30", "20", "20", "??"], rows)
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
    var0, var1 = 0.25, 0.0  # population variances of (4, 3) and (2, 2)
    p = phi((4.0 - 2.0) / math.sqrt(var0 + var1 + 1e-6))
    expected0 = math.sqrt(p + 1e-8) + math.sqrt(1e-8)  # target g = 1
    q = phi((2.0 - 3.5) / math.sqrt(var1 + var0 + 1e-6))
    expected2 = math.sqrt(1e-8) + math.sqrt(1 - q + 1e-8)  # g = 0
    assert out[0] == pytest.approx(expected0) and out[2] == pytest.approx(expected2) and out[4] == 0.0
    assert run("fidelity_rank", ["40"], rows[:1]) == [0.0]  # one prompt: nothing to rank against


def test_dimensions_choice_length_temporal():
    dims = ("a", "b")
    answers = [ans("a 40, b 20", dims=dims), ans("a 40", dims=dims)]
    rows = [{"dimensions": {"a": 4.0, "b": 4.0}}] * 2
    assert reward_function("dimensions")(answers, rows, weights={"a": 3, "b": 1}) == pytest.approx([(3 + 0.5) / 4, 0.0])
    with pytest.raises(RewardInputError, match="dimension MOS"):
        reward_function("dimensions")(answers, [{"mos": 3}] * 2)
    assert run("choice", ["Video A", "B", "yes", "??"], [{"choice": "A"}, {"choice": "A"}, {"choice": "yes"},
                                                          {"choice": "no"}]) == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(RewardInputError, match="choice label"):
        run("choice", ["A"], [{"mos": 3.0}])
    think = "<think>" + " ".join(["w"] * 25) + "</think><answer>30</answer>"
    assert run("length", [think, "<think>short</think><answer>30</answer>", "30"], [{}] * 3, "thinking") == [1.0, 0, 0]
    # group 0: 2 of 2 ordered right, 1 of 2 shuffled right -> bonus; group 1: 1 of 2 ordered, 2 of 2 shuffled -> none
    rows = ([{"mos": 3.0, "group": 0}] * 2 + [{"mos": 3.0, "group": 0, "shuffled": True}] * 2
            + [{"mos": 3.0, "group": 1}] * 2 + [{"mos": 3.0, "group": 1, "shuffled": True}] * 2)
    out = run("temporal", ["30", "31", "30", "45", "30", "45", "30", "30"], rows)
    assert out == [0.3, 0.3, 0, 0, 0, 0, 0, 0]


def test_combine_weights_and_a_user_reward(tmp_path, monkeypatch):
    (tmp_path / "user_rw.py").write_text(
        "def parsed(answers, rows, bonus=1.0):\n    return [bonus if a.score is not None else 0.0 for a in answers]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    answers = [ans("40"), ans("zz")]
    total, each = combine(answers, [{"mos": 4.0}] * 2, {"score_relative": {"weight": 2.0},
                                                          "user_rw:parsed": {"weight": 1.0, "bonus": 0.5}})
    assert each == {"score_relative": [1.0, 0.0], "user_rw:parsed": [0.5, 0.0]} and total == [2.5, 0.0]


def test_the_scorer_reads_the_answer_block_after_a_think_block():
    from iovqa_plugin.data.label_formats import read_answer
    from iovqa_plugin.score.decoding import answer_text

    assert answer_text("<think>frames 1 and 2 are sharp</think>\n<answer>37</answer>") == "37"
    assert answer_text("<think>sharp</think><answer>42") == "42"  # stopped once the score was complete
    assert answer_text("<think>still thinking about 45") == ""
    assert answer_text("41") == "41"  # answer-only models as before
    assert read_answer(answer_text("<think>a</think><answer>good</answer>"), "level")[0] == 4.0


def test_a_rows_label_is_a_score_or_a_choice_in_the_runs_words():
    from iovqa_plugin.rl.answers import label_row

    assert label_row("37") == {"mos": 3.7} and label_row("good", "level") == {"mos": 4.0}
    assert label_row("B") == {"choice": "B"} and label_row("Yes.") == {"choice": "yes"}
    assert label_row("a lovely clip") is None
    words = ("first", "second", "same", "yes", "no")  # iovqa_choice_words: first,second,same
    assert label_row("Second", words=words) == {"choice": "second"} and label_row("A", words=words) is None
    assert ans("video first").choice is None and parse_answer("first", words=words).choice == "first"


def test_a_batch_mixing_score_and_choice_rows_rewards_each_with_its_own_reward():
    answers = [ans("37"), ans("zz"), ans("A"), ans("B")]
    rows = [{"mos": 3.7, "group": 0}, {"mos": 3.7, "group": 0}, {"choice": "A", "group": 1},
            {"choice": "A", "group": 1}]
    total, each = combine(answers, rows, {"score_relative": {"weight": 1.0}, "choice": {"weight": 2.0}})
    assert each == {"score_relative": [1.0, 0.0, None, None], "choice": [None, None, 1.0, 0.0]}
    assert total == [1.0, 0.0, 2.0, 0.0]
    # choice rows and no reward that compares their answers with their label: refused, not rewarded 0
    with pytest.raises(RewardInputError, match="preference or yes/no rows.*add choice"):
        combine(answers, rows, {"score_relative": {"weight": 1.0}})
    with pytest.raises(RewardInputError, match="score rows.*score reward"):
        combine(answers, rows, {"choice": {"weight": 1.0}})
