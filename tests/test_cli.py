import os

from conftest import base_recipe, write_recipe
from iovqa_plugin.cli import main


def test_prepare_fills_the_cache_and_reports(tiny_model, demo_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    recipe = base_recipe(tiny_model, demo_dir, str(tmp_path / "o"), eval_dataset="demo_val", iovqa_frame_cache_dir=str(cache))
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["prepare", path, "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "demo_train: 30 rows, 30 ready, 0 skipped" in out and "demo_val: 10 rows, 10 ready, 0 skipped" in out
    frames = [f for _, _, files in os.walk(cache) for f in files if f.endswith(".png")]
    assert len(frames) == 2 * 40


def test_prepare_reports_bad_rows(tiny_model, demo_dir, tmp_path, capsys):
    import json

    import pandas as pd

    table = pd.read_csv(os.path.join(demo_dir, "demo", "val.csv"))
    table["video_name"] = [os.path.join(demo_dir, v) for v in table["video_name"]]
    table.loc[2, "video_name"] = "gone.mp4"
    (tmp_path / "val.csv").write_text(table.to_csv(index=False))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"v": {"file_name": "val.csv", "formatting": "iovqa"}}))
    recipe = base_recipe(tiny_model, str(tmp_path), str(tmp_path / "o"), dataset="v", iovqa_frame_cache_dir=str(tmp_path / "c"))
    assert main(["prepare", write_recipe(tmp_path / "r.yaml", recipe)]) == 1
    assert "val.csv: row 3 (line 4): field 'video_name' = 'gone.mp4'" in capsys.readouterr().err
    recipe["iovqa_on_bad_row"] = "skip"
    assert main(["prepare", write_recipe(tmp_path / "r2.yaml", recipe)]) == 0
    out = capsys.readouterr().out
    assert "v: 10 rows, 9 ready, 1 skipped" in out and os.path.isfile(tmp_path / "o" / "iovqa_skipped_rows.csv")


def test_keys(capsys):
    assert main(["keys"]) == 0
    assert "iovqa_label_mask (default: 'digits')" in capsys.readouterr().out


def test_score_eval_ensemble_commands(tiny_model, demo_dir, tmp_path, capsys):
    import json

    import pandas as pd
    import yaml

    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, demo_dir, str(tmp_path / "o")))
    preds = str(tmp_path / "preds.csv")
    assert main(["score", "--recipe", recipe, "--adapter", "", "--data", "demo_test", "--out", preds,
                 "--mode", "both", "--batch-size", "3"]) == 0
    assert "10 scored, 0 failed, 0 already done" in capsys.readouterr().out
    table = pd.read_csv(preds)
    assert len(table) == 10 and table["pred_mos"].between(1, 5).all() and (table["mode"] == "both").all()

    labels = os.path.join(demo_dir, "demo", "test.csv")
    report = str(tmp_path / "m.json")
    assert main(["eval", "--pred", preds, "--labels", labels, "--report", report, "--plot", str(tmp_path / "p.png")]) == 0
    assert json.load(open(report))["n"] == 10 and os.path.isfile(tmp_path / "p.png")
    capsys.readouterr()

    config = tmp_path / "ens.yaml"
    config.write_text(yaml.safe_dump({"members": [{"predictions": preds, "weight": 0.4}, {"predictions": preds, "weight": 0.6}]}))
    assert main(["ensemble", "--config", str(config), "--out", str(tmp_path / "e.csv")]) == 0
    ensemble = pd.read_csv(tmp_path / "e.csv").set_index("video")["pred_mos"]
    assert (ensemble - table.set_index("video")["pred_mos"]).abs().max() < 1e-9
    capsys.readouterr()

    # labels by dataset name (the recipe's dataset_info.json), prediction files without a YAML
    assert main(["eval", "--pred", preds, "--labels", "demo_test", "--recipe", recipe]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 10
    out = str(tmp_path / "e2.csv")
    assert main(["ensemble", "--pred", preds, preds, "--out", out, "--fit-labels", "demo_test", "--recipe", recipe]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["weights"] == [0.5, 0.5] and os.path.isfile(summary["report"]) and "fitted" in summary


def test_user_errors_are_one_line_without_traceback(tiny_model, demo_dir, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, demo_dir, str(tmp_path / "o")))
    assert main(["score", "--recipe", recipe, "--adapter", "", "--data", "demo_test", "--out", "x.csv",
                 "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
    assert main(["score", "--recipe", recipe, "--adapter", "", "--data", "nope", "--out", "x.csv"]) == 2
    err = capsys.readouterr().err
    assert "'nope' is neither a file nor a dataset" in err and "demo_test" in err and "Traceback" not in err
    bad = write_recipe(tmp_path / "bad.yaml", dict(base_recipe(tiny_model, demo_dir, "o"), iovqa_num_frame=2))
    assert main(["prepare", bad]) == 2
    assert "did you mean iovqa_num_frames" in capsys.readouterr().err


def test_version_and_help_show_defaults(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--version"])
    assert "iovqa-plugin" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    assert "(default: 4)" in capsys.readouterr().out


def test_score_summary_flags_answers_without_a_mos_and_low_integer_mass(tmp_path):
    from iovqa_plugin.cli import _prediction_warnings

    path = tmp_path / "p.csv"
    path.write_text(
        "video,pred_mos,greedy_error,integer_mass\n"
        "a,3.1,,0.9\n"
        "b,2.0,\"out of range: answer '100' reads 100, the labels are integers 10..50\",0.01\n"
        "c,2.5,no number in answer 'ok',0.5\n"
    )
    warnings = _prediction_warnings(str(path))
    assert "2 of 3 greedy answers gave no MOS (1 out of range, 1 no number)" in warnings[0]
    assert warnings[1].startswith("1 of 3 videos: the model put under 50%")


def test_eval_picks_a_decoding_column(tmp_path, capsys):
    import json

    (tmp_path / "l.csv").write_text("video_name,Overall_MOS\na,1.0\nb,2.0\nc,3.0\nd,4.0\n")
    (tmp_path / "p.csv").write_text(
        "video,pred_mos,mode,expected_mos,greedy_mos\na,4,both,4,1.1\nb,3,both,3,2.2\nc,2,both,2,3.3\nd,1,both,1,4.4\n"
    )
    labels, preds = str(tmp_path / "l.csv"), str(tmp_path / "p.csv")
    assert main(["eval", "--pred", preds, "--labels", labels]) == 0
    assert json.loads(capsys.readouterr().out)["srcc"] == -1.0
    assert main(["eval", "--pred", preds, "--labels", labels, "--score-column", "greedy_mos"]) == 0
    assert json.loads(capsys.readouterr().out)["srcc"] == 1.0
