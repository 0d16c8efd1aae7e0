"""Pairwise accuracy of pointwise predictions: 'diff', 'tau' (with and without tie calibration), pairs files."""

import json

import pandas as pd
import pytest

from iovqa_plugin.cli import main
from iovqa_plugin.eval.pairwise import PairColumns, pairs_report, pairwise_accuracy
from iovqa_plugin.eval.predictions import MatchError


def test_diff_and_tau_against_hand_counts_ties_included():
    pred_diff = [0.5, -0.2, 0.0, 0.3, 0.1, -0.4]
    human = [1, 1, 0, 0, -1, -1]
    # human ties: pairs 2, 3. Of the other four the model agrees on 0 and 5: diff 2/4.
    # tau at epsilon 0: right are 0, 5 and pair 2 (both tie): 3/6
    result = pairwise_accuracy(pred_diff, human)
    assert result["diff"] == pytest.approx(0.5) and result["diff_pairs"] == 4
    assert result["tau"] == pytest.approx(0.5) and result["model_ties"] == 1 and result["human_ties"] == 2
    assert result["tie_epsilon"] == 0.0
    # tie calibration: epsilon 0.3 ties pairs 2, 4, 1, 3 (gaps 0, 0.1, 0.2, 0.3): right are 2, 3 (both tie) and
    # 5, 0 (agree): 4/6, the best of 3/6, 3/6, 3/6, 4/6, 3/6, 2/6 at epsilon 0, 0.1, 0.2, 0.3, 0.4, 0.5
    calibrated = pairwise_accuracy(pred_diff, human, tie_calibration=True)
    assert calibrated["tau"] == pytest.approx(4 / 6) and calibrated["tie_epsilon"] == pytest.approx(0.3)
    assert calibrated["model_ties"] == 4 and calibrated["diff"] == pytest.approx(0.5)  # diff is not calibrated
    # magnitudes of the human side do not matter, only their signs
    assert pairwise_accuracy(pred_diff, [2.5, 0.1, 0, 0, -3, -0.2])["tau"] == pytest.approx(0.5)
    no_distinct = pairwise_accuracy([0.1, 0.0], [0, 0])
    assert no_distinct["diff_pairs"] == 0 and no_distinct["tau"] == pytest.approx(0.5)


def _write(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.fixture
def predictions(tmp_path):
    return _write(tmp_path / "preds.csv", {"video": ["v1", "v2", "v3", "v4"], "pred_mos": [3.0, 2.5, 3.0, 4.0]})


def test_pairs_file_with_preference_labels(predictions, tmp_path):
    pairs = _write(tmp_path / "pairs.csv", {
        "video_a": ["v1", "v1", "v2", "v4", "v3"],
        "video_b": ["v2", "v3", "v4", "v3", "v4"],
        "preference": ["A", "tie", "A", "B", "b"],
    })
    # s_A - s_B: 0.5 (A: right), 0 (tie: right for tau only), -1.5 (A: wrong), 1.0 (B: wrong), -1.0 (b: right)
    result = pairs_report(predictions, pairs, {None: "pred_mos"})
    assert result["diff"] == pytest.approx(2 / 4) and result["tau"] == pytest.approx(3 / 5)
    assert result["pairs"] == 5 and result["human_ties"] == 1 and result["model_ties"] == 1
    # the same pairs given by their MOS, in a JSONL file with its own column names
    jsonl = tmp_path / "pairs.jsonl"
    rows = [{"left": a, "right": b, "ma": ma, "mb": mb}
            for a, b, ma, mb in (("v1", "v2", 3.4, 2.0), ("v1", "v3", 3.0, 3.0), ("v2", "v4", 4.1, 3.9),
                                 ("v4", "v3", 2.2, 4.5), ("v3", "v4", 1.0, 2.0))]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = PairColumns(video_a="left", video_b="right", mos_a="ma", mos_b="mb")
    assert pairs_report(predictions, str(jsonl), {None: "pred_mos"}, columns) == result


def test_bad_pair_rows_stop_with_file_row_and_field(predictions, tmp_path):
    pairs = _write(tmp_path / "bad.csv", {
        "video_a": ["v1", "v2", "v3", "v1", "v9"],
        "video_b": ["", "v2", "v1", "v2", "v1"],
        "preference": ["A", "B", "C", "tie", "A"],
    })
    with pytest.raises(MatchError) as err:
        pairs_report(predictions, pairs, {None: "pred_mos"})
    message = str(err.value)
    assert "4 bad pair row(s)" in message
    assert "bad.csv: row 1 (line 2): field 'video_b' = '': missing second video" in message
    assert "row 2 (line 3): field 'video_b' = 'v2': the same video as video A" in message
    assert "row 3 (line 4): field 'preference' = 'C': not one of 'A', 'B', 'tie'" in message
    assert "row 5 (line 6): field 'video_a' = 'v9': no prediction in" in message
    mos = _write(tmp_path / "mos.csv", {"video_a": ["v1"], "video_b": ["v2"], "mos_a": ["high"], "mos_b": ["2"]})
    with pytest.raises(MatchError, match=r"row 1 \(line 2\): field 'mos_a' = 'high': not a number"):
        pairs_report(predictions, mos, {None: "pred_mos"})
    neither = _write(tmp_path / "neither.csv", {"video_a": ["v1"], "video_b": ["v2"]})
    with pytest.raises(MatchError, match="neither a 'preference' column nor both 'mos_a' and 'mos_b'"):
        pairs_report(predictions, neither, {None: "pred_mos"})


def test_pairs_per_dimension(tmp_path):
    preds = _write(tmp_path / "multi.csv", {"video": ["v1", "v2", "v3"], "pred_mos_overall": [3.0, 2.0, 4.0],
                                            "pred_mos_temporal": [1.0, 2.0, 3.0]})
    pairs = _write(tmp_path / "pairs.csv", {"video_a": ["v1", "v1", "v3"], "video_b": ["v2", "v2", "v2"],
                                            "preference": ["A", "A", "A"], "dimension": ["", "temporal", "temporal"]})
    columns = {"overall": "pred_mos_overall", "temporal": "pred_mos_temporal"}
    result = pairs_report(preds, pairs, columns)
    assert result["dimensions"]["overall"]["diff"] == 1.0 and result["dimensions"]["overall"]["pairs"] == 1
    assert result["dimensions"]["temporal"]["diff"] == pytest.approx(0.5)  # v1 < v2 wrong, v3 > v2 right
    wrong = _write(tmp_path / "wrong.csv", {"video_a": ["v1"], "video_b": ["v2"], "preference": ["A"],
                                            "dimension": ["aesthetic"]})
    with pytest.raises(MatchError, match=r"field 'dimension' = 'aesthetic': not a dimension of"):
        pairs_report(preds, wrong, columns)


def test_eval_cli_all_labelled_pairs_within_groups_and_a_pairs_file(tmp_path, capsys):
    preds = _write(tmp_path / "preds.csv", {"video": ["a", "b", "c", "d"], "pred_mos": [1.0, 2.0, 3.0, 3.0]})
    labels = _write(tmp_path / "labels.csv", {"video_name": ["a", "b", "c", "d"], "Overall_MOS": [1.0, 3.0, 2.0, 3.0],
                                              "scene": ["x", "x", "y", "y"]})
    report = str(tmp_path / "report.json")
    assert main(["eval", "--pred", preds, "--labels", labels, "--pairwise", "--by", "scene", "--report", report,
                 "--plot", str(tmp_path / "p.png")]) == 0
    with open(report, encoding="utf-8") as handle:
        pairwise = json.load(handle)["pairwise"]
    # pairs (a,b) (a,c) (a,d) (b,c) (b,d) (c,d): s diffs -1 -2 -2 -1 -1 0, MOS diffs -2 -1 -2 1 0 -1
    # human tie (b,d); of the other five the model agrees on (a,b) (a,c) (a,d): diff 3/5; tau: 3/6
    assert pairwise["all_pairs"]["diff"] == pytest.approx(3 / 5) and pairwise["all_pairs"]["tau"] == pytest.approx(0.5)
    # within scenes: (a,b) right, (c,d) a model tie against a preference: wrong
    assert pairwise["within_groups"]["pairs"] == 2 and pairwise["within_groups"]["diff"] == pytest.approx(0.5)
    assert "all pairs: pairwise accuracy diff 0.6000" in capsys.readouterr().err
    # a pairs file without labels: its own report
    pairs = _write(tmp_path / "pairs.csv", {"video_a": ["a", "c"], "video_b": ["b", "d"], "preference": ["B", "tie"]})
    assert main(["eval", "--pred", preds, "--pairs", pairs, "--tie-calibration"]) == 0
    with open(tmp_path / "preds_pairwise.json", encoding="utf-8") as handle:
        only = json.load(handle)["pairs_file"]
    assert only["diff"] == 1.0 and only["tau"] == 1.0 and only["tie_calibration"] is True
    assert main(["eval", "--pred", preds]) == 2
    assert "give --labels" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.csv", {"video_a": ["a"], "video_b": ["a"], "preference": ["A"]})
    assert main(["eval", "--pred", preds, "--labels", labels, "--pairs", bad]) == 2
    assert "row 1 (line 2): field 'video_b' = 'a'" in capsys.readouterr().err


def test_all_labelled_pairs_per_dimension(tmp_path):
    from iovqa_plugin.eval.evaluation import evaluate_dimensions

    preds = _write(tmp_path / "multi.csv", {"video": ["a", "b", "c"], "pred_mos_overall": [1.0, 2.0, 3.0],
                                            "pred_mos_temporal": [3.0, 2.0, 1.0]})
    labels = _write(tmp_path / "labels.csv", {"video_name": ["a", "b", "c"], "Overall_MOS": [1.0, 2.0, 3.0],
                                              "Temporal_MOS": [1.0, 2.0, 2.0]})
    result = evaluate_dimensions(preds, labels, {"overall": "Overall_MOS", "temporal": "Temporal_MOS"}, "video_name",
                                 report=str(tmp_path / "r.json"), pairwise=True)
    overall = result["dimensions"]["overall"]["pairwise"]["all_pairs"]
    temporal = result["dimensions"]["temporal"]["pairwise"]["all_pairs"]
    assert overall["diff"] == 1.0 and overall["tau"] == 1.0
    # temporal: every pair ranked backwards; (b, c) is a human tie the model does not tie
    assert temporal["diff"] == 0.0 and temporal["tau"] == 0.0 and temporal["human_ties"] == 1
