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
    from iovqa_plugin.score.command import _prediction_warnings

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


def test_eval_and_ensemble_know_the_dimensions_from_the_prediction_files(demo_dir, tmp_path, capsys):
    """No --recipe: the scorer's .meta.json names the dimensions and their MOS columns; the ensemble writes one
    too and keeps the input order; a file with per-dimension columns and no meta is refused."""
    import json

    import pandas as pd

    from iovqa_plugin.config_parser import build_config
    from iovqa_plugin.score.scoring_loop import run_identity
    from iovqa_plugin.score.settings import ScorerSettings

    columns = {"sharpness": "Traditional_MOS", "motion": "Temporal_MOS", "look": "Aesthetic_MOS"}
    iovqa_args = build_config({"iovqa_dimensions": "sharpness,motion,look,overall", "iovqa_dimension_columns": columns})
    identity = run_identity(ScorerSettings(model="m", adapter=None, iovqa_args=iovqa_args), "expected")
    labels = os.path.join(demo_dir, "demo", "test.csv")
    table = pd.read_csv(labels).iloc[::-1]  # not in sorted order
    preds = pd.DataFrame({"video": table["video_name"], "pred_mos": 3.0})
    for name, column in {**columns, "overall": "Overall_MOS"}.items():
        preds[f"pred_mos_{name}"] = table[column].to_numpy() ** 2  # each dimension ranks its own MOS exactly
    preds["pred_mos"] = preds[[c for c in preds if c.startswith("pred_mos_")]].mean(axis=1)
    path = str(tmp_path / "preds.csv")
    preds.to_csv(path, index=False)
    with open(path + ".meta.json", "w", encoding="utf-8") as handle:  # as the scorer writes it
        json.dump(identity, handle)

    assert main(["eval", "--pred", path, "--labels", labels]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["dimensions"]) == ["sharpness", "motion", "look", "overall"]
    assert all(report["dimensions"][name]["srcc"] == 1.0 for name in report["dimensions"])

    out = str(tmp_path / "ens.csv")
    assert main(["ensemble", "--pred", path, path, "--out", out]) == 0
    capsys.readouterr()
    assert pd.read_csv(out)["video"].tolist() == preds["video"].tolist()
    assert json.load(open(out + ".meta.json"))["dimensions"] == ["sharpness", "motion", "look", "overall"]
    assert main(["eval", "--pred", out, "--labels", labels]) == 0
    assert json.loads(capsys.readouterr().out)["dimensions"]["motion"]["srcc"] == 1.0

    os.remove(path + ".meta.json")
    assert main(["eval", "--pred", path, "--labels", labels]) == 2
    assert "has per-dimension columns (pred_mos_sharpness" in capsys.readouterr().err


def test_eval_and_ensemble_refuse_labels_training_refuses(demo_dir, tmp_path, capsys):
    import json

    import pandas as pd

    from iovqa_plugin.config_parser import build_config
    from iovqa_plugin.score.scoring_loop import run_identity
    from iovqa_plugin.score.settings import ScorerSettings

    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv"), dtype=str)
    table.loc[2, "Overall_MOS"] = "37"  # a label written as the integer, not the MOS
    table.loc[4, "Temporal_MOS"] = "7"
    labels = str(tmp_path / "labels.csv")
    table.to_csv(labels, index=False)
    preds = pd.DataFrame({"video": table["video_name"], "pred_mos": range(10), "pred_mos_temporal": range(10),
                          "pred_mos_overall": range(10)})
    single, multi = str(tmp_path / "single.csv"), str(tmp_path / "multi.csv")
    preds[["video", "pred_mos"]].to_csv(single, index=False)
    preds.to_csv(multi, index=False)
    iovqa_args = build_config({"iovqa_dimensions": "temporal,overall"})
    with open(multi + ".meta.json", "w", encoding="utf-8") as handle:
        json.dump(run_identity(ScorerSettings(model="m", adapter=None, iovqa_args=iovqa_args), "expected"), handle)

    overall = "labels.csv: row 3 (line 4): field 'Overall_MOS' = '37': MOS 37 is outside [1, 5]"
    assert main(["eval", "--pred", single, "--labels", labels]) == 2
    assert overall in capsys.readouterr().err
    assert main(["ensemble", "--pred", single, single, "--out", str(tmp_path / "e.csv"), "--fit-labels", labels]) == 2
    assert overall in capsys.readouterr().err
    assert main(["eval", "--pred", multi, "--labels", labels]) == 2
    assert "row 5 (line 6): field 'Temporal_MOS' = '7': MOS 7 is outside [1, 5]" in capsys.readouterr().err


def _own_columns(demo_dir, tmp_path, rename):
    """A dataset_dir whose `own` dataset is the demo's validation rows with columns renamed (absolute videos)."""
    import json

    import pandas as pd

    table = pd.read_csv(os.path.join(demo_dir, "demo", "val.csv"))
    table["video_name"] = [os.path.join(demo_dir, v) for v in table["video_name"]]
    table.rename(columns=rename).to_csv(tmp_path / "own.csv", index=False)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"own": {"file_name": "own.csv", "formatting": "iovqa"}}))
    return str(tmp_path)


def test_missing_columns_are_one_message_in_prepare_score_and_train(tiny_model, demo_dir, tmp_path, capsys,
                                                                     monkeypatch, clean_plugin_state):
    import pytest

    data = _own_columns(demo_dir, tmp_path, {"Overall_MOS": "score", "Prompt": "text"})
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, data, str(tmp_path / "o"), dataset="own"))
    assert main(["prepare", recipe]) == 2
    err = capsys.readouterr().err
    # no traceback (whose last line would name the exception); LLaMA-Factory's log handlers may print a
    # "Logging error" of their own under pytest's capture, which swaps stderr between tests
    assert "own.csv: missing column(s) ['Prompt', 'Overall_MOS']" in err and "AnnotationFileError" not in err
    assert main(["score", "--recipe", recipe, "--adapter", "", "--data", "own", "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "own.csv: no 'Prompt' column" in err and "AnnotationFileError" not in err

    monkeypatch.setattr("sys.argv", ["iovqa"])  # `iovqa train` hands its arguments to llamafactory-cli
    with pytest.raises(SystemExit) as stopped:
        main(["train", recipe])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    last = err.rstrip().splitlines()[-1]  # the message ends the output
    assert last.startswith("[iovqa] error: ") and "own.csv: missing column(s) ['Prompt', 'Overall_MOS']" in last
    assert "AnnotationFileError" not in err


def test_prepare_runs_the_checks_training_runs_before_the_model(tiny_model, demo_dir, tmp_path, capsys,
                                                                 clean_plugin_state):
    import re

    recipe = base_recipe(tiny_model, demo_dir, str(tmp_path / "o"), eval_dataset="demo_val")
    no_template = {k: v for k, v in recipe.items() if k != "template"}
    assert main(["prepare", write_recipe(tmp_path / "t.yaml", no_template)]) == 2
    assert "needs a `template`" in capsys.readouterr().err

    # every sample longer than cutoff_len is named at once, with the cutoff_len that fits them all
    assert main(["prepare", write_recipe(tmp_path / "c.yaml", dict(recipe, cutoff_len=6))]) == 2
    err = capsys.readouterr().err
    assert "30 IOVQA sample(s) longer than cutoff_len 6" in err and "... and 10 more" in err
    assert "PromptCutError" not in err  # no traceback
    rows = re.findall(r"train\.csv row (\d+) \(video '[^']+'\): (\d+) tokens \(prompt (\d+) tokens, (\d+) of them visual",
                      err)
    assert [int(r[0]) for r in rows] == list(range(1, 21))
    assert all(int(total) > int(prompt) > int(visual) > 0 for _, total, prompt, visual in rows)
    needed = int(re.search(r"cutoff_len: (\d+) fits them all", err).group(1))
    assert needed >= max(int(r[1]) for r in rows)

    assert main(["prepare", write_recipe(tmp_path / "ok.yaml", dict(recipe, cutoff_len=needed))]) == 0
    out = capsys.readouterr().out
    assert "ready to train (30 train samples, 10 eval samples)" in out
    assert "iovqa label mask: trains on '" in out  # after LLaMA-Factory's example, whose labels end with <|im_end|>


def test_help_shows_each_default_once_and_where_relative_paths_are_read(capsys):
    import pytest

    for command in ("train", "prepare", "score", "eval", "ensemble", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and "(default: False)" not in text, command
        if command in ("prepare", "score", "eval", "ensemble"):
            assert "Relative paths in a recipe" in text and "are read from the current folder" in text, command
        if command == "score":
            assert "(default: 4)" in text and "--frame-cache-dir" in text


def test_score_places_the_frame_cache(tiny_model, demo_dir, tmp_path, capsys):
    import pandas as pd

    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv")).head(2)
    table["video_name"] = [os.path.join(demo_dir, v) for v in table["video_name"]]
    table.to_csv(tmp_path / "two.csv", index=False)
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, demo_dir, str(tmp_path / "o")))
    cache = tmp_path / "my cache"
    assert main(["score", "--recipe", recipe, "--adapter", "", "--data", str(tmp_path / "two.csv"),
                 "--out", str(tmp_path / "p.csv"), "--frame-cache-dir", str(cache)]) == 0
    frames = [f for _, _, files in os.walk(cache) for f in files if f.endswith(".png")]
    assert len(frames) == 2 * 2 and "2 scored" in capsys.readouterr().out


def test_level_answers_without_a_level_word_are_named_so():
    import tempfile

    from iovqa_plugin.score.command import _prediction_warnings
    from iovqa_plugin.data.label_formats import read_answer

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "p.csv")
        reason = read_answer("37", "level")[1].replace('"', '""')
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f'video,pred_mos,greedy_error\na,3.0,\nb,2.0,"{reason}"\n')
        assert _prediction_warnings(path)[0] == "1 of 2 greedy answers gave no MOS (1 no level word)"


def test_a_torchrun_training_run_ends_with_the_plugins_message(tiny_model, demo_dir, tmp_path):
    """Under torchrun, torchrun and the launcher report the failed rank after it: the message still comes last."""
    from conftest import run_cli

    data = _own_columns(demo_dir, tmp_path, {"Prompt": "text"})
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, data, str(tmp_path / "o"), dataset="own"))
    result = run_cli(["llamafactory-cli", "train", recipe], env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "1"})
    lines = (result.stdout + result.stderr).rstrip().splitlines()
    assert result.returncode == 2, "\n".join(lines[-40:])
    assert lines[-1].startswith("[iovqa] error: ") and "own.csv: missing column(s) ['Prompt']" in lines[-1]
    assert "CalledProcessError" not in result.stderr  # the launcher's own traceback is gone
