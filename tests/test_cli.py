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
    assert len(table) == 10 and table["pred_mos"].between(1, 5).all() and (table["mode"] == "expected").all()

    labels = os.path.join(demo_dir, "demo", "test.csv")
    report = str(tmp_path / "m.json")
    assert main(["eval", "--pred", preds, "--labels", labels, "--report", report, "--plot", str(tmp_path / "p.png")]) == 0
    assert json.load(open(report))["n"] == 10 and os.path.isfile(tmp_path / "p.png")

    config = tmp_path / "ens.yaml"
    config.write_text(yaml.safe_dump({"members": [{"predictions": preds, "weight": 0.4}, {"predictions": preds, "weight": 0.6}]}))
    assert main(["ensemble", "--config", str(config), "--out", str(tmp_path / "e.csv")]) == 0
    ensemble = pd.read_csv(tmp_path / "e.csv").set_index("video")["pred_mos"]
    assert (ensemble - table.set_index("video")["pred_mos"]).abs().max() < 1e-9
