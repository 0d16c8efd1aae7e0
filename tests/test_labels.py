from decimal import Decimal

import pytest

from iovqa_plugin.data.labels import OUT_OF_RANGE, LabelError, mos_to_integer, round_mos
from iovqa_plugin.data.label_formats import label_to_mos, mos_to_label, parse_score, read_answer


@pytest.mark.parametrize(
    "mos, label",
    [
        (1.0, 10),
        (5.0, 50),
        (3.666, 37),
        (2.65, 27),  # binary float 2.65 is 2.6499...; decimal half-up gives 2.7
        (4.96, 50),
        (3.25, 33),  # half up, not half to even
        (3.35, 34),
        (1.04, 10),
        (4.95, 50),
        (11 / 3, 37),  # challenge MOS are k/3 means
        (7 / 3, 23),
        (2.2666666666666666, 23),
        ("3.666", 37),
        (" 2.65 ", 27),
        (Decimal("2.05"), 21),
        (3, 30),
    ],
)
def test_integer_labels(mos, label):
    assert mos_to_integer(mos) == label
    assert mos_to_label(mos) == str(label)


def test_decimal_labels():
    assert mos_to_label(3.666, "decimal") == "3.7"
    assert mos_to_label(1, "decimal") == "1.0"
    assert mos_to_label(2.65, "decimal") == "2.7"
    assert round_mos(4.96) == Decimal("5.0")


@pytest.mark.parametrize(
    "bad, message",
    [
        (float("nan"), "NaN"),
        ("", "empty"),
        ("   ", "empty"),
        (None, "missing"),
        ("abc", "not a number"),
        (0.5, "outside"),
        (5.4, "outside"),
        (-3.0, "outside"),
        (0.99, "outside"),
        (5.01, "outside"),
        (float("inf"), "finite"),
        ("inf", "finite"),
        (True, "number"),
        ([3.0], "number"),
    ],
)
def test_bad_mos_is_an_error(bad, message):
    with pytest.raises(LabelError, match=message):
        mos_to_label(bad)


def test_unknown_label_format():
    with pytest.raises(ValueError, match="label_format"):
        mos_to_label(3.0, "percent")


def test_round_trip_and_parse():
    for k in range(3, 16):
        mos = k / 3
        assert abs(label_to_mos(mos_to_label(mos)) - float(round_mos(mos))) < 1e-12
    assert label_to_mos("3.7", "decimal") == 3.7
    assert parse_score("37") == 3.7
    assert parse_score("Score: 42.") == 4.2
    assert parse_score("3.7", "decimal") == 3.7
    assert parse_score("no idea") is None
    assert parse_score("") is None


@pytest.mark.parametrize(
    "text, fmt, mos",
    [("37", "integer", 3.7), ("Score: 42.", "integer", 4.2), ("10", "integer", 1.0), ("50", "integer", 5.0),
     ("3.7", "decimal", 3.7), ("1.0", "decimal", 1.0), ("5", "decimal", 5.0)],
)
def test_answers_on_the_label_grid_become_a_mos(text, fmt, mos):
    assert read_answer(text, fmt) == (mos, None)


@pytest.mark.parametrize(
    "text, fmt",
    [("100", "integer"), ("9", "integer"), ("55", "integer"), ("-12", "integer"), ("37.5", "integer"),
     ("0", "integer"), ("5.5", "decimal"), ("0.9", "decimal"), ("-1.2", "decimal"), ("37", "decimal")],
)
def test_answers_off_the_label_grid_are_out_of_range_never_a_mos(text, fmt):
    mos, reason = read_answer(text, fmt)
    assert mos is None and reason.startswith(OUT_OF_RANGE) and repr(text) in reason
    assert parse_score(text, fmt) is None


def test_answer_without_a_number():
    assert read_answer("no idea") == (None, "no number in answer 'no idea'")
    assert read_answer("")[0] is None
