import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iovqa_plugin.eval.evaluation import evaluate
from iovqa_plugin.eval.metrics import compute_metrics
from iovqa_plugin.eval.predictions import MatchError


def test_metrics_equal_scipy_on_known_vectors():
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 60)
    pred = mos + rng.normal(0, 0.6, 60)
    m = compute_metrics(pred, mos)
    assert m["srcc"] == pytest.approx(stats.spearmanr(pred, mos).statistic, abs=1e-12)
    assert m["plcc"] == pytest.approx(stats.pearsonr(pred, mos).statistic, abs=1e-12)
    assert m["krcc"] == pytest.approx(stats.kendalltau(pred, mos).statistic, abs=1e-12)
    assert m["final"] == pytest.approx((m["srcc"] + m["plcc"]) / 2)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred - mos) ** 2)))
    assert m["n"] == 60


def test_hand_computed_example():
    m = compute_metrics([1, 2, 3, 4], [1, 3, 2, 4])
    assert m["srcc"] == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert m["plcc"] == pytest.approx(0.8)


def test_logistic_plcc_beats_raw_plcc_on_a_monotone_nonlinear_relation():
    x = np.linspace(-3, 3, 80)
    mos = 1 + 4 / (1 + np.exp(-2.5 * x))  # a saturating, monotone map of the predictions
    m = compute_metrics(x, mos)
    assert m["srcc"] == pytest.approx(1.0)
    assert m["plcc"] < 0.97
    assert m["plcc_logistic"] > 0.999 and m["plcc_logistic"] >= m["plcc"]


def test_degenerate_inputs():
    assert np.isnan(compute_metrics([3, 3, 3], [1, 2, 3])["srcc"])
    with pytest.raises(ValueError, match="equal length"):
        compute_metrics([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 3"):
        compute_metrics([1, 2], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        compute_metrics([1, np.nan, 3], [1, 2, 3])


def write(tmp_path, name, frame):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def test_eval_matches_by_video_id_and_writes_report_and_plot(tmp_path):
    labels = pd.DataFrame({"video_name": [f"v{i}.mp4" for i in range(6)], "Overall_MOS": [1.2, 2.0, 2.9, 3.5, 4.1, 4.8]})
    pred = pd.DataFrame({"video": [f"v{i}.mp4" for i in (5, 3, 1, 0, 2, 4)], "pred_mos": [4.5, 3.0, 2.2, 1.5, 2.5, 4.4]})
    result = evaluate(write(tmp_path, "p.csv", pred), write(tmp_path, "l.csv", labels))
    by_id = pred.set_index("video").loc[labels["video_name"], "pred_mos"].to_numpy()
    assert result["srcc"] == pytest.approx(stats.spearmanr(by_id, labels["Overall_MOS"]).statistic)
    assert json.load(open(result["report"]))["plcc"] == pytest.approx(result["plcc"])
    with open(result["plot"], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "pred_ids, label_ids, message",
    [
        (["a", "b", "c"], ["a", "b", "c", "d"], "1 labelled video"),
        (["a", "b", "c", "x"], ["a", "b", "c"], "prediction\\(s\\) without label"),
        (["a", "b", "b", "c"], ["a", "b", "c"], "duplicate video ids: 'b' x2"),
        (["a", "b", "c"], ["a", "a", "b", "c"], "duplicate video ids: 'a' x2"),
    ],
)
def test_eval_rejects_missing_or_duplicate_ids(tmp_path, pred_ids, label_ids, message):
    pred = pd.DataFrame({"video": pred_ids, "pred_mos": np.linspace(1, 5, len(pred_ids))})
    labels = pd.DataFrame({"video_name": label_ids, "Overall_MOS": np.linspace(1, 5, len(label_ids))})
    with pytest.raises(MatchError, match=message):
        evaluate(write(tmp_path, "p.csv", pred), write(tmp_path, "l.csv", labels))


def test_eval_rejects_unscored_videos(tmp_path):
    pred = pd.DataFrame({"video": ["a", "b", "c"], "pred_mos": [1.0, None, 3.0], "error": ["", "VideoError: bad", ""]})
    labels = pd.DataFrame({"video_name": ["a", "b", "c"], "Overall_MOS": [1, 2, 3]})
    with pytest.raises(MatchError, match="1 of 3 video\\(s\\) have no score \\(b: VideoError: bad\\)"):
        evaluate(write(tmp_path, "p.csv", pred), write(tmp_path, "l.csv", labels))


def test_eval_reads_llamafactory_generated_predictions(tmp_path):
    labels = pd.DataFrame({"video_name": ["a", "b", "c", "d"], "Overall_MOS": [1.0, 2.0, 3.0, 4.0]})
    lines = [{"prompt": "...", "predict": p, "label": l} for p, l in (("12", "10"), ("25", "20"), ("31", "30"), ("38", "40"))]
    path = tmp_path / "generated_predictions.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    result = evaluate(str(path), write(tmp_path, "l.csv", labels))
    assert result["srcc"] == pytest.approx(1.0) and result["n"] == 4


def test_logistic_plcc_has_the_sign_of_the_relation():
    rng = np.random.default_rng(1)
    mos = rng.uniform(1, 5, 40)
    pred = 6 - mos + rng.normal(0, 0.8, 40)  # a model that ranks videos backwards
    m = compute_metrics(pred, mos)
    assert m["srcc"] < 0 and m["plcc"] < 0
    assert m["plcc_logistic"] < 0
    assert abs(m["plcc_logistic"]) == pytest.approx(abs(compute_metrics(-pred, mos)["plcc_logistic"]), abs=1e-6)


def test_eval_of_a_labelled_subset_reports_the_predictions_left_out(tmp_path):
    labels = pd.DataFrame({"video_name": ["a", "b", "c", "d"], "Overall_MOS": [1.0, 2.0, 3.0, 4.0]})
    pred = pd.DataFrame({"video": list("xabcdyz"), "pred_mos": [4.9, 1.1, 2.2, 2.9, 4.2, 1.0, 3.0]})
    pred_path, labels_path = write(tmp_path, "p.csv", pred), write(tmp_path, "l.csv", labels)
    with pytest.raises(MatchError, match="3 prediction\\(s\\) without label.*--labelled-only"):
        evaluate(pred_path, labels_path)
    result = evaluate(pred_path, labels_path, labelled_only=True)
    assert result["n"] == 4 and result["left_out"] == 3 and result["srcc"] == pytest.approx(1.0)
    assert json.load(open(result["report"]))["left_out"] == 3
    # a labelled video without a prediction is still an error
    with pytest.raises(MatchError, match="1 labelled video"):
        evaluate(write(tmp_path, "p2.csv", pred[pred["video"] != "b"]), labels_path, labelled_only=True)


def test_eval_cli_labelled_only(tmp_path, capsys):
    from iovqa_plugin.cli import main

    labels = pd.DataFrame({"video_name": ["a", "b", "c"], "Overall_MOS": [1.0, 2.0, 3.0]})
    pred = pd.DataFrame({"video": ["a", "b", "c", "z"], "pred_mos": [1.5, 2.5, 3.5, 2.0]})
    assert main(["eval", "--pred", write(tmp_path, "p.csv", pred), "--labels", write(tmp_path, "l.csv", labels),
                 "--labelled-only"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["left_out"] == 1 and report["n"] == 3 and "sign of PLCC" in report["notes"]["plcc_logistic"]


# ---- answered rows only, groups, per-column reports, constant predictions, empty files

LADDER = pd.DataFrame({"video_name": list("abcdefgh"), "Overall_MOS": [1.0, 2.0, 3.0, 4.0, 2.0, 3.0, 3.0, 5.0],
                       "scene": ["x", "x", "x", "y", "y", "y", "z", "x"]})


def both_mode_file(tmp_path):
    """A `--mode both` file: greedy answers of b and e hold no score, the reason in greedy_error (not error)."""
    return write(tmp_path, "p.csv", pd.DataFrame({
        "video": list("abcdefgh"), "pred_mos": [1.2, 2.1, 2.8, 4.2, 2.5, 2.4, 2.4, 4.6], "mode": "both",
        "greedy_mos": [1.0, None, 3.1, 3.9, None, 3.3, 2.8, 4.9],
        "greedy_error": ["", "no number in answer 'ok'", "", "", "out of range: answer '9' reads 9", "", "", ""],
        "expected_mos": [1.2, 2.1, 2.8, 4.2, 2.5, 2.4, 2.4, 4.6], "error": ""}))


def test_eval_names_greedy_reasons_and_evaluates_the_answered_rows_only(tmp_path, capsys):
    from iovqa_plugin.cli import main

    preds, labels = both_mode_file(tmp_path), write(tmp_path, "l.csv", LADDER)
    with pytest.raises(MatchError, match="2 of 8 video\\(s\\) have no score \\(b: no number in answer 'ok'; "
                                         "e: out of range.*--answered-only"):
        evaluate(preds, labels, score_column="greedy_mos")
    result = evaluate(preds, labels, score_column="greedy_mos", answered_only=True)
    kept = [0, 2, 3, 5, 6, 7]
    greedy = [1.0, 3.1, 3.9, 3.3, 2.8, 4.9]
    assert result["n"] == 6 and result["srcc"] == pytest.approx(
        stats.spearmanr(greedy, LADDER["Overall_MOS"].iloc[kept]).statistic)
    assert result["unanswered"] == {"count": 2, "column": "greedy_error", "videos": {
        "b": "no number in answer 'ok'", "e": "out of range: answer '9' reads 9"}}
    assert json.load(open(result["report"]))["unanswered"]["count"] == 2
    assert main(["eval", "--pred", preds, "--labels", labels, "--score-column", "greedy_mos", "--answered-only"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 6
    assert "2 video(s) without greedy_mos left out (reasons from greedy_error" in captured.err


def test_eval_by_column_reports_groups_and_the_within_group_srcc(tmp_path, capsys):
    from iovqa_plugin.cli import main

    preds, labels = both_mode_file(tmp_path), write(tmp_path, "l.csv", LADDER)
    result = evaluate(preds, labels, by="scene")
    groups = result["by"]["groups"]
    pred = np.array([1.2, 2.1, 2.8, 4.2, 2.5, 2.4, 2.4, 4.6])
    x, y = [0, 1, 2, 7], [3, 4, 5]
    assert {name: g["n"] for name, g in groups.items()} == {"x": 4, "y": 3, "z": 1}
    assert groups["x"]["srcc"] == pytest.approx(stats.spearmanr(pred[x], LADDER["Overall_MOS"].iloc[x]).statistic)
    assert groups["y"]["plcc"] == pytest.approx(stats.pearsonr(pred[y], LADDER["Overall_MOS"].iloc[y]).statistic)
    assert groups["z"]["srcc"] is None  # one video: no correlation
    assert result["by"]["within_group_srcc"] == pytest.approx(np.mean([groups["x"]["srcc"], groups["y"]["srcc"]]))
    assert (result["by"]["groups_used"], result["by"]["groups_total"]) == (2, 3)
    assert json.load(open(result["report"]))["by"]["groups_used"] == 2

    # a column of the prediction file works too; an unknown one is an error naming both files' columns
    assert set(evaluate(preds, labels, by="mode")["by"]["groups"]) == {"both"}
    with pytest.raises(MatchError, match="--by place: no such column in .*l.csv"):
        evaluate(preds, labels, by="place")
    assert main(["eval", "--pred", preds, "--labels", labels, "--by", "scene"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["by"]["groups"]["x"]["n"] == 4
    assert "within-group SRCC" in captured.err and "over 2 of 3 groups" in captured.err


def test_another_score_column_writes_its_own_report_and_constant_predictions_warn(tmp_path, capsys):
    from iovqa_plugin.cli import main

    preds, labels = both_mode_file(tmp_path), write(tmp_path, "l.csv", LADDER)
    default = evaluate(preds, labels)
    expected = evaluate(preds, labels, score_column="expected_mos")
    assert default["report"] == str(tmp_path / "p_metrics.json")
    assert expected["report"] == str(tmp_path / "p_expected_mos_metrics.json")
    assert expected["plot"] == str(tmp_path / "p_expected_mos_scatter.png")
    assert json.load(open(default["report"]))["score_column"] == "pred_mos"

    flat = pd.read_csv(preds).assign(expected_mos=3.0)
    flat_path = write(tmp_path, "flat.csv", flat)
    result = evaluate(flat_path, labels, score_column="expected_mos")
    assert np.isnan(result["srcc"])
    assert "every expected_mos of the 8 videos is 3: SRCC, PLCC and KRCC are NaN" in result["warnings"][0]
    assert main(["eval", "--pred", flat_path, "--labels", labels, "--score-column", "expected_mos"]) == 0
    assert "iovqa eval: warning: " in capsys.readouterr().err


def test_per_dimension_plots_name_their_dimension_and_columns_do_not_overwrite(tmp_path, monkeypatch):
    from iovqa_plugin.eval import evaluation

    labels = write(tmp_path, "l.csv", LADDER.assign(Temporal_MOS=LADDER["Overall_MOS"][::-1].to_numpy()))
    table = {"video": list("abcdefgh")}
    for column in ("pred_mos", "greedy_mos"):
        for name, offset in (("temporal", 0.3), ("overall", 0.1)):
            table[f"{column}_{name}"] = LADDER["Overall_MOS"].to_numpy() + offset
    preds = write(tmp_path, "p.csv", pd.DataFrame(table))
    titles = []
    real = evaluation.scatter_plot
    monkeypatch.setattr(evaluation, "scatter_plot", lambda *a, title="": titles.append(title) or real(*a, title=title))
    columns = {"temporal": "Temporal_MOS", "overall": "Overall_MOS"}
    first = evaluation.evaluate_dimensions(preds, labels, columns)
    second = evaluation.evaluate_dimensions(preds, labels, columns, score_column="greedy_mos")
    assert titles == ["p.csv: temporal (pred_mos_temporal vs Temporal_MOS)",
                      "p.csv: overall (pred_mos_overall vs Overall_MOS)",
                      "p.csv: temporal (greedy_mos_temporal vs Temporal_MOS)",
                      "p.csv: overall (greedy_mos_overall vs Overall_MOS)"]
    assert first["report"] != second["report"]
    files = {first["dimensions"][n][k] for n in columns for k in ("report", "plot")}
    files |= {second["dimensions"][n][k] for n in columns for k in ("report", "plot")}
    assert len(files) == 8 and all(os.path.isfile(f) for f in files)
    assert json.load(open(first["report"]))["dimensions"]["temporal"]["score_column"] == "pred_mos_temporal"


@pytest.mark.parametrize("content, message", [
    ("", "empty file, no predictions"),
    ("video,pred_mos,error\n", "no prediction rows"),
])
def test_eval_of_a_file_without_rows_is_a_clear_error(tmp_path, capsys, content, message):
    from iovqa_plugin.cli import main

    (tmp_path / "p.csv").write_text(content)
    labels = write(tmp_path, "l.csv", LADDER)
    assert main(["eval", "--pred", str(tmp_path / "p.csv"), "--labels", labels]) == 2
    assert capsys.readouterr().err.strip() == f"iovqa eval: error: {tmp_path / 'p.csv'}: {message}"
    (tmp_path / "l2.csv").write_text("video_name,Overall_MOS\n")
    assert main(["eval", "--pred", both_mode_file(tmp_path), "--labels", str(tmp_path / "l2.csv")]) == 2
    assert "no label rows" in capsys.readouterr().err


def test_reading_a_prediction_file_gives_no_pandas_warning(tmp_path):
    import warnings

    from iovqa_plugin.eval.predictions import read_predictions

    path = tmp_path / "p.csv"
    path.write_text("video,pred_mos,greedy_mos,head_mos,error\na,3.1,,,\nb,,,,VideoError: x\nc,2.0,,,\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a FutureWarning (pandas' replace downcasting) fails the test
        for column in ("pred_mos", "greedy_mos", "head_mos"):
            frame = read_predictions(str(path), score_column=column)
    assert frame["pred_mos"].isna().all() and frame["pred_mos"].dtype == float
