"""Label formats and scoring modes are registries: a format or mode added as one entry runs through the config,
the formatter, the mask and the scorer with no other change."""

import os
import re

import pandas as pd
import pytest
import torch

from conftest import base_recipe, write_recipe
from iovqa_plugin.data.label_formats import (
    LABEL_FORMATS, LabelFormat, get_label_format, read_number, register_label_format,
)
from iovqa_plugin.data.labels import INTEGER_MAX, INTEGER_MIN, mos_to_integer
from iovqa_plugin.score.modes import SCORING_MODES, ScoringMode, get_scoring_mode, register_scoring_mode

NAME = "out_of_fifty"  # "37/50": the paper's integer, written over its scale


def _on_grid(number):
    return float(number / 10) if number == number.to_integral_value() and INTEGER_MIN <= number <= INTEGER_MAX else None


@pytest.fixture
def out_of_fifty():
    """A throw-away label format, registered for one test and removed after it."""
    answers = register_label_format(LabelFormat(
        name=NAME,
        help="the integer label over its scale, e.g. '37/50'.",
        to_label=lambda value: f"{mos_to_integer(value)}/50",
        to_mos=lambda label: int(label.split("/")[0]) / 10,
        read=lambda text: read_number(text, _on_grid, "integers 10..50 (over 50)"),
        answer_format="an integer from 10 (worst) to 50 (best) followed by /50",
        complete=re.compile(r"\d\d"),
        probes=("37", "10", "50"),  # the scores as the mask keeps them
        expected="grid",
    ))
    yield answers
    del LABEL_FORMATS[NAME]


@pytest.fixture
def greedy_first():
    """A throw-away scoring mode: both decoders, greedy's number as pred_mos."""
    mode = register_scoring_mode(ScoringMode("greedy_first", greedy=True, expected=True, score="greedy_mos"))
    yield mode
    del SCORING_MODES[mode.name]


def test_a_registered_format_is_a_config_choice_until_removed(out_of_fifty):
    from iovqa_plugin.config import PluginConfigError
    from iovqa_plugin.config_parser import build_config

    config = build_config({"iovqa_label_format": NAME})
    assert config.format is out_of_fifty and config.integer_scores  # read off the grid like integer labels
    del LABEL_FORMATS[NAME]
    try:
        with pytest.raises(PluginConfigError, match="iovqa_label_format must be one of"):
            build_config({"iovqa_label_format": NAME})
    finally:
        LABEL_FORMATS[NAME] = out_of_fifty


def test_the_registry_refuses_a_second_entry_of_a_name():
    with pytest.raises(ValueError, match="registered already"):
        register_label_format(get_label_format("integer"))
    with pytest.raises(ValueError, match="registered already"):
        register_scoring_mode(ScoringMode("expected", expected=True))
    with pytest.raises(ValueError, match="mode must be one of"):
        get_scoring_mode("median")


def test_the_formatter_writes_the_new_format(out_of_fifty, demo_dir):
    from iovqa_plugin.config_parser import build_config
    from iovqa_plugin.data.annotations import Columns, load_annotations

    config = build_config({"iovqa_label_format": NAME, "iovqa_frame_cache_dir": os.path.join(demo_dir, "frame_cache")})
    path = os.path.join(demo_dir, "demo", "test.csv")
    samples, issues, _ = load_annotations(path, Columns("video_name", "Prompt", "Overall_MOS"), config, demo_dir,
                                          progress=False)
    table = pd.read_csv(path)
    assert not issues and len(samples) == len(table)
    assert [s.label for s in samples] == [f"{mos_to_integer(m)}/50" for m in table["Overall_MOS"]]
    assert all(out_of_fifty.answer_format in s.prompt for s in samples)


def test_the_mask_keeps_the_new_formats_digits(out_of_fifty, qwen_tokenizer):
    from iovqa_plugin.data.labels import IGNORE_INDEX
    from iovqa_plugin.train.mask import mask_labels, token_tables

    end = [qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")]
    rows = [[IGNORE_INDEX] * 3 + qwen_tokenizer.encode(out_of_fifty.to_label(m), add_special_tokens=False) + end
            for m in (3.666, 1.0, 5.0)]
    labels = torch.tensor(rows)
    is_number, digits = token_tables(qwen_tokenizer, NAME)
    kept = mask_labels(labels, is_number, digits, out_of_fifty.score_digits)
    assert [qwen_tokenizer.decode(row[row != IGNORE_INDEX]) for row in kept] == ["37", "10", "50"]


@pytest.mark.slow
def test_the_scorer_decodes_the_new_format_and_mode(out_of_fifty, greedy_first, tiny_model, demo_dir, tmp_path):
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    recipe = base_recipe(tiny_model, demo_dir, str(tmp_path / "none"), iovqa_label_format=NAME)
    scorer = Scorer(ScorerSettings.from_recipe(write_recipe(tmp_path / "r.yaml", recipe), adapter=""))
    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv")).head(2)
    rows = [(v, os.path.join(demo_dir, v), p) for v, p in zip(table["video_name"], table["Prompt"])]
    assert out_of_fifty.answer_format in scorer.prompts(rows[0][2])[0][1]
    results = list(scorer.score_rows(rows, mode=greedy_first.name, batch_size=2))
    assert [r.error for r in results] == [None, None]
    for result in results:
        assert result.expected_mos is not None and 1 <= result.expected_mos <= 5  # read over the grid
        assert result.greedy_text is not None
        assert (result.greedy_mos, result.greedy_error) == out_of_fifty.read(result.greedy_text)
        assert result.pred_mos == result.greedy_mos  # the new mode's score
        assert result.row()["mode"] == greedy_first.name
