"""Which LLaMA-Factory templates the plugin can run, decided from the template and the tokenizer.

Every registered template with a video token renders a sample's assistant turn
as LLaMA-Factory renders training labels; the digit-only mask must keep
exactly the score's tokens. Qwen-family templates render with Qwen's
vocabulary (one token per digit, Qwen3's think tags), the others with a
digit-grouping tokenizer ("37" is one token). The table printed here is the
one in README.md.
"""

import copy
import os

import pytest
import torch

from conftest import REPO
from iovqa_plugin.patches.score_position import (
    TemplateSupportError,
    check_template_support,
    render_answer,
    score_layout,
)
from iovqa_plugin.data.labels import IGNORE_INDEX
from iovqa_plugin.train.mask import mask_labels, token_tables

TABLE_HEADER = (
    "| template | multimodal plugin | tokenizer checked | assistant turn before the score | supported |\n"
    "|---|---|---|---|---|"
)


def video_templates():
    from llamafactory.data.template import TEMPLATES

    return sorted(name for name, template in TEMPLATES.items() if getattr(template.mm_plugin, "video_token", None))


@pytest.fixture(scope="module")
def qwen3_tokenizer():
    from iovqa_plugin.demo.tiny_qwen3 import build_qwen3_tokenizer

    return build_qwen3_tokenizer()


def prepared(name, tokenizer, enable_thinking=True):
    """A copy of the template fixed for a copy of the tokenizer, as get_template_and_fix_tokenizer does."""
    from llamafactory.data.template import TEMPLATES, ReasoningTemplate

    template, tokenizer = copy.deepcopy(TEMPLATES[name]), copy.deepcopy(tokenizer)
    if isinstance(template, ReasoningTemplate):
        template.enable_thinking = enable_thinking
    template.fix_special_tokens(tokenizer)
    return template, tokenizer


def tokenizer_for(name, qwen3_tokenizer, grouping_tokenizer):
    return (qwen3_tokenizer, "Qwen") if name.startswith("qwen") else (grouping_tokenizer, "digit-grouping")


def support_row(name, qwen3_tokenizer, grouping_tokenizer):
    """(table row, masked text of the rendered labels) of one template."""
    base, kind = tokenizer_for(name, qwen3_tokenizer, grouping_tokenizer)
    template, tokenizer = prepared(name, base)
    plugin = type(template.mm_plugin).__name__
    try:
        layout = check_template_support(template, tokenizer, name)
    except TemplateSupportError as err:
        return f"| `{name}` | {plugin} | {kind} | - | no: {err} |", None
    # independently of the layout: the mask applied to the full rendered sample (prompt ignored, as in training)
    prompt, target = render_answer(template, tokenizer, "37")
    labels = torch.tensor([[IGNORE_INDEX] * len(prompt) + target])
    is_number, digit_count = token_tables(tokenizer)
    kept = mask_labels(labels, is_number, digit_count)[0]
    kept_ids = kept[kept != IGNORE_INDEX].tolist()
    assert kept_ids == layout.score and layout.prefix + layout.score + layout.suffix == target
    before = repr(tokenizer.decode(layout.prefix)) if layout.prefix else "nothing"
    return f"| `{name}` | {plugin} | {kind} | {before.replace('|', '&#124;')} | yes |", tokenizer.decode(kept_ids)


def support_table(qwen3_tokenizer, grouping_tokenizer):
    rows = [support_row(name, qwen3_tokenizer, grouping_tokenizer) for name in video_templates()]
    return TABLE_HEADER + "\n" + "\n".join(row for row, _ in rows), rows


@pytest.mark.slow
def test_every_video_template_masks_exactly_the_score(qwen3_tokenizer, grouping_tokenizer):
    table, rows = support_table(qwen3_tokenizer, grouping_tokenizer)
    print("\n" + table)
    names = video_templates()
    assert {"qwen2_vl", "qwen3_vl", "qwen3_vl_nothink", "qwen3_5", "qwen3_5_nothink", "intern_vl", "glm4v",
            "minicpm_v", "keye_vl"} <= set(names)
    for name, (row, kept) in zip(names, rows):
        assert kept == "37" or "| no: " in row, row
    supported = {name for name, (row, _) in zip(names, rows) if row.endswith("| yes |")}
    assert {"qwen2_vl", "qwen3_vl", "qwen3_vl_nothink", "qwen3_5", "qwen3_5_nothink"} <= supported
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        assert table in handle.read(), "README.md's template table is out of date: paste the table printed above"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3_vl", "qwen3_5"])
def test_reasoning_templates_put_the_empty_think_block_before_the_score(name, qwen3_tokenizer):
    # enable_thinking (LLaMA-Factory's default): the empty block is in the labels; the mask drops it
    template, tokenizer = prepared(name, qwen3_tokenizer)
    layout = score_layout(template, tokenizer, name)
    assert tokenizer.decode(layout.prefix) == "<think>\n\n</think>\n\n"
    assert tokenizer.decode(layout.score) == "37" and tokenizer.decode(layout.suffix) == "<|im_end|>\n"
    # enable_thinking: false: the block ends the prompt, nothing precedes the score in the labels
    template, tokenizer = prepared(name, qwen3_tokenizer, enable_thinking=False)
    prompt, target = render_answer(template, tokenizer, "37")
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert score_layout(template, tokenizer, name).prefix == [] and tokenizer.decode(target) == "37<|im_end|>\n"


def test_unsupported_templates_and_tokenizers_are_named(qwen3_tokenizer, grouping_tokenizer):
    from llamafactory.data.template import TEMPLATES

    with pytest.raises(TemplateSupportError, match="template 'qwen' has no video token"):
        check_template_support(TEMPLATES["qwen"], qwen3_tokenizer, "qwen")
    # a template whose assistant turn writes a number before the score
    template, tokenizer = prepared("qwen2_vl", grouping_tokenizer)
    template.format_assistant = type(template.format_assistant)(slots=["Grade 1 of 1: {{content}}<|im_end|>\n"])
    with pytest.raises(TemplateSupportError, match="template 'graded': the score cannot be located"):
        check_template_support(template, tokenizer, "graded")
    # a tokenizer without digit tokens (digits are unknown to its vocabulary)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<unk>": 0, "<|im_end|>": 1, "score": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    no_digits = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>")
    template, tokenizer = prepared("qwen2_vl", no_digits)
    with pytest.raises(TemplateSupportError, match="template 'qwen2_vl': the tokenizer's digits cannot be found"):
        check_template_support(template, tokenizer, "qwen2_vl")


def test_training_stops_before_data_when_the_template_cannot_be_run(grouping_tokenizer, clean_plugin_state):
    """The patched run_sft step: the check runs on the template and tokenizer of the run, before any data."""
    from llamafactory.hparams import DataArguments
    from llamafactory.train.sft import workflow

    from iovqa_plugin.config import IOVQAArguments
    from iovqa_plugin.patches import apply_sft_template_check
    from iovqa_plugin.patches.run import set_active_run

    apply_sft_template_check()
    set_active_run(IOVQAArguments())
    tokenizer = copy.deepcopy(grouping_tokenizer)
    template = workflow.get_template_and_fix_tokenizer(tokenizer, DataArguments(template="qwen3_vl"))
    assert template.mm_plugin.video_token == "<|video_pad|>"
    with pytest.raises(TemplateSupportError, match="template 'qwen'"):
        workflow.get_template_and_fix_tokenizer(copy.deepcopy(grouping_tokenizer), DataArguments(template="qwen"))
