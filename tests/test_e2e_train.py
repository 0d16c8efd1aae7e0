"""End to end: the stock `llamafactory-cli train` (and `iovqa train`) in fresh interpreters."""

import json
import os
import re

import pandas as pd
import pytest

from conftest import base_recipe, run_cli, write_recipe

MASK_LINE = re.compile(r"\[iovqa(?: rank (\d))?\] INFO label mask active \(digits\): first batch targets (\[.*?\])")


def train_labels(demo_dir, fmt="integer"):
    from iovqa_plugin.data.label_formats import mos_to_label

    table = pd.read_csv(os.path.join(demo_dir, "demo", "train.csv"))
    return {mos_to_label(m, fmt) for m in table["Overall_MOS"]}


def first_batches(output: str) -> dict:
    """{rank: [targets the first batch trains on]} from the plugin's log."""
    return {int(rank or 0): eval(targets) for rank, targets in MASK_LINE.findall(output)}


def assert_adapter_saved(output_dir):
    assert os.path.isfile(os.path.join(output_dir, "adapter_model.safetensors"))
    with open(os.path.join(output_dir, "adapter_config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["peft_type"] == "LORA"


def test_stock_cli_trains_with_the_digit_mask(tiny_model, demo_dir, tmp_path):
    out = str(tmp_path / "run")
    recipe = base_recipe(tiny_model, demo_dir, out, eval_dataset="demo_val", do_eval=True, eval_strategy="steps", eval_steps=3)
    recipe = write_recipe(tmp_path / "r.yaml", recipe)
    result = run_cli(["llamafactory-cli", "train", recipe])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    batches = first_batches(log)
    assert set(batches) == {0}
    targets = batches[0]
    # the masked labels of a real batch are exactly the two-digit scores of real rows
    assert len(targets) == 4 and all(re.fullmatch(r"[1-5]\d", t) for t in targets)
    assert set(targets) <= train_labels(demo_dir)
    assert "demo/train.csv" in log and "30 rows, 30 used, 0 skipped" in log
    assert_adapter_saved(out)
    assert os.path.isdir(os.path.join(out, "checkpoint-3"))
    # in-training evaluation reports the paper's metrics
    with open(os.path.join(out, "eval_results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    for key in ("eval_srcc", "eval_plcc", "eval_final"):
        assert -1 <= results[key] <= 1
    assert results["eval_final"] == pytest.approx((results["eval_srcc"] + results["eval_plcc"]) / 2)
    # the run's plugin keys are kept next to the adapter for the scorer
    with open(os.path.join(out, "iovqa_config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["iovqa_label_mask"] == "digits"


def test_torchrun_two_processes(tiny_model, demo_dir, tmp_path):
    out = str(tmp_path / "ddp")
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, demo_dir, out, max_steps=2, save_steps=2))
    result = run_cli(["llamafactory-cli", "train", recipe], env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    batches = first_batches(log)
    assert set(batches) == {0, 1}, "every rank must run with the plugin active"
    assert all(set(targets) <= train_labels(demo_dir) for targets in batches.values())
    assert batches[0] != batches[1]  # each rank got its own shard
    assert_adapter_saved(out)


def test_console_script_with_decimal_labels(tiny_model, demo_dir, tmp_path):
    out = str(tmp_path / "dec")
    recipe = write_recipe(
        tmp_path / "r.yaml",
        base_recipe(tiny_model, demo_dir, out, iovqa_label_format="decimal", max_steps=1, save_steps=1),
    )
    result = run_cli(["iovqa", "train", recipe])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    targets = first_batches(log)[0]
    assert all(re.fullmatch(r"[1-5]\.\d", t) for t in targets) and set(targets) <= train_labels(demo_dir, "decimal")
    assert_adapter_saved(out)


def test_bad_row_stops_the_stock_cli_with_file_row_and_field(tiny_model, demo_dir, tmp_path):
    bad_dir = tmp_path / "data"
    bad_dir.mkdir()
    table = pd.read_csv(os.path.join(demo_dir, "demo", "train.csv"))
    table["video_name"] = [os.path.join(demo_dir, v) for v in table["video_name"]]
    table.loc[6, "Overall_MOS"] = 7.5
    table.to_csv(bad_dir / "train.csv", index=False)
    info = {"bad": {"file_name": "train.csv", "formatting": "iovqa"}}  # no `columns`: the plugin's defaults apply
    (bad_dir / "dataset_info.json").write_text(json.dumps(info))
    recipe = base_recipe(tiny_model, str(bad_dir), str(tmp_path / "o"), dataset="bad")
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "r.yaml", recipe)])
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "train.csv: row 7 (line 8): field 'Overall_MOS' = '7.5': MOS 7.5 is outside [1, 5]" in log

    recipe["iovqa_on_bad_row"] = "skip"
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "r2.yaml", recipe)])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "30 rows, 29 used, 1 skipped" in log
    report = pd.read_csv(tmp_path / "o" / "iovqa_skipped_rows.csv")
    assert report[["row", "field"]].values.tolist() == [[7, "Overall_MOS"]]


def _stock_dataset(demo_dir, tmp_path):
    """The demo rows as an ordinary alpaca dataset of frame lists (no iovqa formatting)."""
    from iovqa_plugin.data.annotations import Columns, load_annotations
    from iovqa_plugin.config import IOVQAArguments

    config = IOVQAArguments(frame_cache_dir=os.path.join(demo_dir, "frame_cache"))
    samples, _, _ = load_annotations(
        os.path.join(demo_dir, "demo", "train.csv"), Columns("video_name", "Prompt", "Overall_MOS"), config, demo_dir
    )
    rows = [{"instruction": s.prompt, "output": s.label, "videos": [s.frames]} for s in samples[:8]]
    data = tmp_path / "stock"
    data.mkdir()
    (data / "rows.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(
        json.dumps({"stock": {"file_name": "rows.json", "columns": {"prompt": "instruction", "response": "output", "videos": "videos"}}})
    )
    return str(data)


def test_recipe_without_plugin_keys_is_stock_llamafactory(tiny_model, demo_dir, tmp_path):
    data = _stock_dataset(demo_dir, tmp_path)
    recipe = base_recipe(tiny_model, data, None, dataset="stock", max_steps=2, save_steps=2, seed=7)
    recipe = {k: v for k, v in recipe.items() if not k.startswith("iovqa_")}
    losses = {}
    for mode, env in (("plugin installed", {}), ("plugin disabled", {"IOVQA_DISABLE_AUTOLOAD": "1"})):
        out = tmp_path / mode.replace(" ", "_")
        path = write_recipe(tmp_path / f"{out.name}.yaml", dict(recipe, output_dir=str(out)))
        result = run_cli(["llamafactory-cli", "train", path], env=env)
        log = result.stdout + result.stderr
        assert result.returncode == 0, log[-4000:]
        assert "[iovqa" not in log
        with open(out / "trainer_log.jsonl", encoding="utf-8") as handle:
            losses[mode] = [json.loads(line)["loss"] for line in handle if '"loss"' in line]
    assert losses["plugin installed"] == losses["plugin disabled"] and len(losses["plugin installed"]) == 2


def test_llamafactory_predict_path_with_the_plugin(tiny_model, demo_dir, tmp_path):
    """do_predict + predict_with_generate through the stock CLI; its output is read by `iovqa eval`."""
    from iovqa_plugin.eval.evaluation import evaluate
    from iovqa_plugin.eval.predictions import MatchError

    out = tmp_path / "predict"
    recipe = base_recipe(tiny_model, demo_dir, str(out), do_train=False, do_predict=True, predict_with_generate=True,
                         eval_dataset="demo_test", max_new_tokens=4, do_sample=False, max_steps=None,
                         save_strategy=None, save_steps=None)
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "p.yaml", recipe)])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    with open(out / "generated_predictions.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    test = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv"))
    from iovqa_plugin.data.label_formats import mos_to_label

    assert [r["label"] for r in rows] == [mos_to_label(m) for m in test["Overall_MOS"]]  # masked labels, in order
    labels = os.path.join(demo_dir, "demo", "test.csv")
    try:
        report = evaluate(str(out / "generated_predictions.jsonl"), labels)
    except MatchError as err:  # an untrained tiny model may answer without a number: said, not guessed
        assert "have no score" in str(err)
    else:
        assert report["n"] == len(test)
