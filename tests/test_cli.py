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
