import pytest

from iovqa_plugin.config import IOVQAArguments, PluginConfigError, RECIPE_FIELDS
from iovqa_plugin.config_parser import build_config, help_text
from iovqa_plugin.recipe import PluginArgList, PluginArgs, split_recipe


def test_recipe_without_plugin_keys_is_returned_untouched():
    recipe = {"stage": "sft", "model_name_or_path": "m", "lora_rank": 8}
    out, config = split_recipe(recipe)
    assert out is recipe and config is None
    argv = ["--stage", "sft", "--lora_rank", "8"]
    out, config = split_recipe(argv)
    assert out is argv and config is None


def test_plugin_keys_are_taken_out_and_validated():
    recipe = {"stage": "sft", "output_dir": "out", "iovqa_label_format": "decimal", "iovqa_num_frames": 1}
    out, config = split_recipe(recipe)
    assert isinstance(out, PluginArgs) and out == {"stage": "sft", "output_dir": "out"}
    assert config.label_format == "decimal" and config.num_frames == 1 and config.label_mask == "digits"
    assert config.output_dir == "out"
    assert recipe["iovqa_num_frames"] == 1  # the caller's dict is not changed
    again, same = split_recipe(out)  # a nested read of the stripped recipe keeps the configuration
    assert again is out and same is config


def test_command_line_form():
    argv = ["--stage", "sft", "--iovqa_num_frames", "1", "--iovqa_label_mask=none", "--output_dir", "o"]
    out, config = split_recipe(argv)
    assert isinstance(out, PluginArgList) and list(out) == ["--stage", "sft", "--output_dir", "o"]
    assert config.num_frames == 1 and config.label_mask == "none" and config.output_dir == "o"


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(PluginConfigError, match="iovqa_num_frame.*did you mean iovqa_num_frames"):
        split_recipe({"iovqa_num_frame": 2})


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"iovqa_label_format": "float"}, "iovqa_label_format must be one of"),
        ({"iovqa_label_mask": "all"}, "iovqa_label_mask must be one of"),
        ({"iovqa_num_frames": 0}, "iovqa_num_frames must be between"),
        ({"iovqa_num_frames": "two"}, "must be an integer"),
        ({"iovqa_num_frames": True}, "must be an integer"),
        ({"iovqa_frame_strategy": "random"}, "iovqa_frame_strategy must be one of"),
        ({"iovqa_frame_strategy": "pairs", "iovqa_num_frames": 3}, "iovqa_num_frames must be even"),
        ({"iovqa_frame_format": "gif"}, "iovqa_frame_format must be one of"),
        ({"iovqa_on_bad_row": "ignore"}, "iovqa_on_bad_row must be one of"),
        ({"iovqa_frame_workers": 0}, "iovqa_frame_workers"),
        ({"iovqa_prompt_template": "no field"}, r"\{prompt\}"),
        ({"iovqa_prompt_template": "{prompt} {score}"}, "unknown fields"),
        ({"iovqa_prompt_template_file": "/nonexistent/t.txt"}, "no such file"),
        ({"iovqa_video_column": 3}, "must be a string"),
    ],
)
def test_invalid_values(keys, message):
    with pytest.raises(PluginConfigError, match=message):
        build_config(keys)


@pytest.mark.parametrize("key", ["train_on_prompt", "packing", "neat_packing"])
def test_options_that_defeat_the_mask_are_rejected(key):
    with pytest.raises(PluginConfigError, match=key):
        split_recipe({key: True, "iovqa_label_mask": "digits"})
    with pytest.raises(PluginConfigError, match=key):
        split_recipe([f"--{key}", "true", "--iovqa_num_frames", "2"])
    _, config = split_recipe({key: True, "iovqa_label_mask": "none"})  # no mask: allowed
    assert config.label_mask == "none"
    _, config = split_recipe([f"--{key}", "false", "--iovqa_num_frames", "2"])
    assert config is not None


def test_template_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Rate {prompt}. {answer_format}")
    config = build_config({"iovqa_prompt_template_file": str(path)})
    assert config.prompt_template == "Rate {prompt}. {answer_format}"


def test_defaults_and_help():
    config = IOVQAArguments()
    assert (config.label_format, config.label_mask, config.num_frames, config.frame_strategy) == (
        "integer",
        "digits",
        2,
        "segment",
    )
    text = help_text()
    for name in RECIPE_FIELDS:
        assert f"iovqa_{name}" in text
    assert set(config.to_recipe()) == {f"iovqa_{n}" for n in RECIPE_FIELDS}


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("IOVQA_CACHE_DIR", str(tmp_path / "env"))
    assert IOVQAArguments().cache_dir == str(tmp_path / "env")
    assert IOVQAArguments(frame_cache_dir=str(tmp_path / "x")).cache_dir == str(tmp_path / "x")
    assert IOVQAArguments(output_dir="o").skip_report_path.endswith("o/iovqa_skipped_rows.csv")
