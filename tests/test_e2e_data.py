"""Data path end to end through LLaMA-Factory's training run: JSON/JSONL loading, cutoff_len, duplicates.

The training runs in this process (what `llamafactory-cli train` runs), but for the first cutoff_len refusal,
which checks how the command itself ends."""

import json
import os
import re

import pandas as pd
import pytest

from conftest import base_recipe, run_cli, train_in_process, write_recipe
from iovqa_plugin.errors import input_errors

LENGTH = re.compile(
    r"longer than cutoff_len (\d+).*?\n  (.+?): (\d+) tokens \(prompt (\d+) tokens, (\d+) of them visual", re.S
)


def own_dataset(demo_dir, tmp_path, entries):
    """A dataset_dir with the demo's train rows (absolute video paths) in the files and entries given."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    table = pd.read_csv(os.path.join(demo_dir, "demo", "train.csv"))
    table["video_name"] = [os.path.join(demo_dir, v) for v in table["video_name"]]
    rows = table.to_dict(orient="records")
    info = {}
    for name, (file_name, edit) in entries.items():
        edited = edit([dict(r) for r in rows])
        path = data / file_name
        if file_name.endswith(".jsonl"):
            path.write_text("\n".join(json.dumps(r) for r in edited) + "\n")
        else:
            path.write_text(json.dumps(edited, indent=1))
        info[name] = {
            "file_name": file_name,
            "formatting": "iovqa",
            "columns": {"videos": "video_name", "prompt": "Prompt", "response": "score"},
        }
    (data / "dataset_info.json").write_text(json.dumps(info))
    return str(data)


def own_recipe(tiny_model, demo_dir, data, output_dir, **keys):
    """The test recipe on an own dataset_dir of the demo's videos: their frames are in the demo's frame cache."""
    return base_recipe(tiny_model, data, output_dir, iovqa_frame_cache_dir=os.path.join(demo_dir, "frame_cache"), **keys)


def with_text_mos(rows):
    """The MOS under an own column name, one of them written as text among numbers."""
    for r in rows:
        r["score"] = r.pop("Overall_MOS")
    rows[4]["score"] = "3.25"
    return rows


@pytest.mark.slow
def test_json_and_jsonl_with_a_mos_written_as_text(tiny_model, demo_dir, tmp_path):
    data = own_dataset(
        demo_dir, tmp_path, {"own_json": ("own.json", with_text_mos), "own_jsonl": ("own.jsonl", with_text_mos)}
    )
    recipe = own_recipe(tiny_model, demo_dir, data, str(tmp_path / "o"), dataset="own_json,own_jsonl", max_steps=1,
                        save_steps=1)
    log = train_in_process(recipe)
    assert "own.json): 30 rows, 30 used, 0 skipped" in log and "own.jsonl): 30 rows, 30 used, 0 skipped" in log
    assert re.search(r"Num examples = 60\b", log), log[-4000:]


@pytest.mark.slow
def test_a_bad_text_mos_in_json_names_file_row_and_field(tiny_model, demo_dir, tmp_path):
    def bad(rows):
        rows = with_text_mos(rows)
        rows[6]["score"] = "3,7"
        return rows

    data = own_dataset(demo_dir, tmp_path, {"own": ("own.jsonl", bad)})
    recipe = own_recipe(tiny_model, demo_dir, data, str(tmp_path / "o"), dataset="own", max_steps=1)
    with pytest.raises(input_errors()) as stopped:
        train_in_process(recipe)
    assert "own.jsonl: row 7 (line 7): field 'score' = '3,7': MOS is not a number" in str(stopped.value)


@pytest.mark.slow
def test_duplicated_video_under_skip_keeps_the_first_row(tiny_model, demo_dir, tmp_path):
    def duplicated(rows):
        rows = with_text_mos(rows)
        return rows + [dict(rows[0], Prompt="the same video again", score=1.0)]

    data = own_dataset(demo_dir, tmp_path, {"own": ("own.json", duplicated)})
    out = tmp_path / "o"
    recipe = own_recipe(tiny_model, demo_dir, data, str(out), dataset="own", max_steps=1, save_steps=1,
                        iovqa_on_bad_row="skip")
    log = train_in_process(recipe)
    assert "31 rows, 30 used, 1 skipped" in log
    assert re.search(r"Num examples = 30\b", log), log[-4000:]  # the first row once, the duplicate not at all
    report = pd.read_csv(out / "iovqa_skipped_rows.csv")
    assert report[["row", "field"]].values.tolist() == [[31, "video_name"]]
    assert "only its first row (own.json row 1) is used" in report["reason"][0]


@pytest.mark.slow
def test_cutoff_len_cutting_a_prompt_is_an_error(tiny_model, demo_dir, tmp_path):
    recipe = base_recipe(tiny_model, demo_dir, str(tmp_path / "o"), cutoff_len=6, max_steps=1)
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "r.yaml", recipe)])
    log = result.stdout + result.stderr
    assert result.returncode == 2 and "[iovqa] error: 30 IOVQA sample(s) longer than cutoff_len 6" in log
    assert "Traceback" not in log
    limit, name, total, prompt, visual = LENGTH.search(log).groups()
    assert re.fullmatch(r".*train\.csv row \d+ \(video '.+\.mp4'\)", name)
    assert int(limit) == 6 and int(total) > int(prompt) > int(visual) > 0
    assert "fits them all" in log and "video_max_pixels" in log

    # a limit just below one sample's length: still refused before any training step, never cut
    recipe["cutoff_len"] = int(total) - 1
    with pytest.raises(input_errors()) as stopped:
        train_in_process(recipe)
    limit2, _, total2, _, _ = LENGTH.search(str(stopped.value)).groups()
    assert int(limit2) == int(total) - 1 < int(total2)
    assert not os.path.exists(tmp_path / "o" / "trainer_log.jsonl")  # no training step was logged
