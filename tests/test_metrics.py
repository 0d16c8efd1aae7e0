import json

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
    with pytest.raises(MatchError, match="have no score: \\['b'\\]"):
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
