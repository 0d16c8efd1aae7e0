"""Scoring a model with the settings of its run (iovqa_config.json): refused differences, warnings, hints.

No model is loaded: every check here runs before loading."""

import json
import os

import pytest

from conftest import base_recipe, write_recipe

COLUMNS = {"sharpness": "Traditional_MOS", "motion": "Temporal_MOS", "look": "Aesthetic_MOS"}


@pytest.fixture
def trained(tiny_model, demo_dir, tmp_path):
    """(training recipe, adapter folder): a LoRA run's folder as training leaves it, without weights."""
    from iovqa_plugin.recipe import save_run_config, split_recipe

    adapter = tmp_path / "run"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": tiny_model}))
    recipe = base_recipe(tiny_model, demo_dir, str(adapter), iovqa_dimensions="sharpness,motion,look,overall",
                         iovqa_dimension_columns=COLUMNS)
    save_run_config(split_recipe(dict(recipe))[1], str(adapter))
    return recipe, str(adapter)


def settings_of(tmp_path, recipe, **options):
    from iovqa_plugin.score.settings import ScorerSettings

    return ScorerSettings.from_recipe(write_recipe(tmp_path / "score.yaml", recipe), **options)


def test_the_run_saves_its_input_keys_and_a_bare_recipe_scores_with_them(trained, tmp_path):
    recipe, adapter = trained
    with open(os.path.join(adapter, "iovqa_config.json"), encoding="utf-8") as handle:
        saved = json.load(handle)
    assert saved["template"] == "qwen2_vl" and saved["video_max_pixels"] == 50176
    same = settings_of(tmp_path, recipe)
    assert same.iovqa_args.dimension_names == ("sharpness", "motion", "look", "overall") and same.warnings == []
    bare = {k: v for k, v in recipe.items() if not k.startswith("iovqa_") and k not in ("template", "video_max_pixels")}
    taken = settings_of(tmp_path, bare)  # what a scoring recipe leaves out is the run's
    assert taken.iovqa_args.dimension_names == same.iovqa_args.dimension_names and taken.template == "qwen2_vl"
    assert taken.model_keys["video_max_pixels"] == 50176 and taken.identity() == same.identity()


def test_keys_that_change_what_the_model_sees_or_answers_are_refused(trained, tmp_path, capsys):
    from iovqa_plugin.cli import main
    from iovqa_plugin.config import PluginConfigError

    recipe, adapter = trained
    changed = dict(recipe, iovqa_dimensions="look,overall,sharpness,motion", iovqa_num_frames=1,
                   video_max_pixels=12544, template="qwen2_vl_nothink")
    with pytest.raises(PluginConfigError) as refused:
        settings_of(tmp_path, changed)
    message = str(refused.value)
    for line in ("iovqa_dimensions: trained with 'sharpness,motion,look,overall', this recipe has "
                 "'look,overall,sharpness,motion'", "iovqa_num_frames: trained with 2, this recipe has 1",
                 "video_max_pixels: trained with 50176, this recipe has 12544",
                 "template: trained with 'qwen2_vl', this recipe has 'qwen2_vl_nothink'"):
        assert line in message
    assert os.path.join(adapter, "iovqa_config.json") in message and "delete them" in message
    score = ["score", "--recipe", write_recipe(tmp_path / "c.yaml", changed), "--data", "demo_test",
             "--out", str(tmp_path / "p.csv")]
    assert main(score) == 2
    assert "iovqa_num_frames: trained with 2, this recipe has 1" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "p.csv")


def test_training_only_keys_are_a_warning(trained, tmp_path):
    recipe, _ = trained
    settings = settings_of(tmp_path, dict(recipe, iovqa_labelled_logits=False, iovqa_frame_workers=4))
    assert len(settings.warnings) == 1  # frame workers are the scoring run's own
    assert settings.warnings[0].startswith("iovqa_labelled_logits: trained with True, this recipe has False")


def test_an_adapter_on_another_model_is_a_warning(trained, tmp_path):
    recipe, adapter = trained
    merged = tmp_path / "merged"
    merged.mkdir()
    settings = settings_of(tmp_path, recipe, model=str(merged), adapter=adapter)
    assert len(settings.warnings) == 1 and "was trained on" in settings.warnings[0]
    assert "applied twice" in settings.warnings[0] and str(merged) in settings.warnings[0]
    assert settings_of(tmp_path, recipe, adapter=adapter).warnings == []  # on its own base model


def test_a_head_model_scored_without_the_head_gets_a_hint():
    from iovqa_plugin.score.command import mode_hints
    from iovqa_plugin.config import IOVQAArguments

    head = IOVQAArguments(head="softmax_regression")
    assert "--mode head scores with the head it trained" in mode_hints(head, "expected")[0]
    assert mode_hints(head, "head") == [] and mode_hints(IOVQAArguments(), "expected") == []
