import numpy as np
import pandas as pd
import pytest
import yaml

from iovqa_plugin.eval.ensemble import combine, fit_weights, load_config, run_ensemble
from iovqa_plugin.eval.metrics import compute_metrics
from iovqa_plugin.eval.predictions import MatchError


def write_member(tmp_path, name, ids, scores):
    path = tmp_path / f"{name}.csv"
    pd.DataFrame({"video": ids, "pred_mos": scores}).to_csv(path, index=False)
    return str(path)


def test_paper_weights_reproduce_a_hand_computed_average(tmp_path):
    ids = ["v1", "v2", "v3"]
    scores = {
        "m1": [3.0, 2.0, 4.0],
        "m2": [3.5, 2.5, 4.5],
        "m3": [2.0, 1.0, 5.0],
        "m4": [4.0, 3.0, 3.0],
        "m5": [3.0, 3.0, 3.0],
    }
    weights = [0.25, 0.15, 0.25, 0.10, 0.25]
    members = []
    for (name, values), weight in zip(scores.items(), weights):
        # each file lists the videos in its own order: the ensemble must match by id
        order = np.random.default_rng(len(members)).permutation(3)
        members.append({"name": name, "weight": weight,
                         "predictions": write_member(tmp_path, name, [ids[i] for i in order], [values[i] for i in order])})
    config = tmp_path / "ens.yaml"
    config.write_text(yaml.safe_dump({"members": members}))
    summary = run_ensemble(str(config), str(tmp_path / "out.csv"))
    out = pd.read_csv(tmp_path / "out.csv").set_index("video")["pred_mos"]
    # v1: .25*3 + .15*3.5 + .25*2 + .1*4 + .25*3 = 2.925
    assert out["v1"] == pytest.approx(2.925)
    assert out["v2"] == pytest.approx(0.25 * 2 + 0.15 * 2.5 + 0.25 * 1 + 0.10 * 3 + 0.25 * 3)
    assert out["v3"] == pytest.approx(0.25 * 4 + 0.15 * 4.5 + 0.25 * 5 + 0.10 * 3 + 0.25 * 3)
    assert summary["used_weights"] == weights


def test_shipped_paper_config():
    import os

    from conftest import REPO

    members = load_config(os.path.join(REPO, "examples", "ensemble_paper.yaml"))
    assert [m.weight for m in members] == [0.25, 0.15, 0.25, 0.10, 0.25]
    assert [m.name for m in members][-1] == "qwen2-vl-7b-softmax-regression"


def test_weights_must_be_a_convex_combination():
    matrix = np.ones((3, 2))
    with pytest.raises(ValueError, match="sum to 1"):
        combine(matrix, np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="non-negative"):
        combine(matrix, np.array([1.5, -0.5]))


def test_mismatched_members_are_an_error(tmp_path):
    a = write_member(tmp_path, "a", ["v1", "v2", "v3"], [1, 2, 3])
    b = write_member(tmp_path, "b", ["v1", "v2", "v4"], [1, 2, 3])
    config = tmp_path / "e.yaml"
    config.write_text(yaml.safe_dump({"members": [{"predictions": a, "weight": 0.5}, {"predictions": b, "weight": 0.5}]}))
    with pytest.raises(MatchError, match="score different videos"):
        run_ensemble(str(config), str(tmp_path / "o.csv"))


@pytest.mark.slow
def test_fitted_weights_are_a_convex_combination_and_help(tmp_path):
    rng = np.random.default_rng(1)
    mos = rng.uniform(1, 5, 80)
    good = mos + rng.normal(0, 0.3, 80)
    noisy = mos + rng.normal(0, 1.5, 80)
    useless = rng.uniform(1, 5, 80)
    matrix = np.stack([useless, good, noisy], axis=1)
    weights = fit_weights(matrix, mos)
    assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0)
    assert weights[1] > weights[0] and weights[1] > weights[2]
    equal = compute_metrics(matrix.mean(axis=1), mos)["final"]
    assert compute_metrics(matrix @ weights, mos)["final"] > equal

    ids = [f"v{i}" for i in range(80)]
    members = [{"name": n, "weight": 1 / 3, "predictions": write_member(tmp_path, n, ids, matrix[:, i])}
               for i, n in enumerate(["useless", "good", "noisy"])]
    config = tmp_path / "e.yaml"
    config.write_text(yaml.safe_dump({"members": members}))
    labels = tmp_path / "val.csv"
    pd.DataFrame({"video_name": ids, "Overall_MOS": mos}).to_csv(labels, index=False)
    summary = run_ensemble(str(config), str(tmp_path / "o.csv"), fit_labels=str(labels))
    assert summary["gain_over_equal"] > 0
    assert summary["fitted"]["final"] == pytest.approx(compute_metrics(matrix @ np.array(summary["fitted_weights"]), mos)["final"])
