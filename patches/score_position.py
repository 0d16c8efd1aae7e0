"""Where the score sits in a template's assistant turn, and whether the plugin can run a template at all.

Decided from the template and the tokenizer, not from model names: a sample's
assistant turn is rendered by the template as LLaMA-Factory renders training
labels (``encode_multiturn``), and the digit-only mask is applied to it. The
template is supported when the template has a video token, the tokenizer's
digits are number tokens, and the mask keeps exactly the score's tokens.

The rendering also gives what the template puts before the score in the
assistant turn (the ``prefix``): a reasoning template (``qwen3_vl``,
``qwen3_5``, ...) with ``enable_thinking`` on puts an empty think block
there, ``<think>\\n\\n</think>\\n\\n``, in the training labels (the mask
drops it: its tokens hold no digit). The scorer appends the prefix to the
prompt, so the model is asked where the score really starts, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from iovqa_plugin.config import PluginConfigError
from iovqa_plugin.data.label_formats import get_label_format
from iovqa_plugin.data.labels import LEVEL_WORDS
from iovqa_plugin.data.levels import LevelTokens
from iovqa_plugin.data.labels import IGNORE_INDEX
from iovqa_plugin.train.mask import LabelMaskError, mask_labels, token_tables

from .transformers_fixes import check_video_positions

PROBE_PROMPT = "Rate the video."


class TemplateSupportError(PluginConfigError):
    """A template or tokenizer the plugin cannot train or score with."""


@dataclass(frozen=True)
class ScoreLayout:
    """A rendered assistant turn split around the score: prefix + score + suffix == the turn's label tokens."""

    prefix: list[int]
    score: list[int]
    suffix: list[int]


def render_answer(template: Any, tokenizer: Any, label: str) -> tuple[list[int], list[int]]:
    """(prompt ids, label ids) of a one-turn sample answered ``label``, as LLaMA-Factory renders SFT labels."""
    messages = [{"role": "user", "content": PROBE_PROMPT}, {"role": "assistant", "content": label}]
    (prompt_ids, target_ids), = template.encode_multiturn(tokenizer, messages, None, None)
    if template.efficient_eos:  # LLaMA-Factory appends the eos to the labels of such templates
        target_ids = target_ids + [tokenizer.eos_token_id]
    return prompt_ids, target_ids


def score_layout(template: Any, tokenizer: Any, name: str, label: str = "37",
                 label_format: str = "integer") -> ScoreLayout:
    """The assistant turn of a sample answered ``label``, split around the tokens the digit mask keeps.

    Raises :class:`TemplateSupportError` (naming the template) unless the mask keeps exactly ``label``.
    """
    _, target = render_answer(template, tokenizer, label)
    is_number, digit_count = token_tables(tokenizer, label_format)
    labels = torch.tensor([target])
    try:
        kept = mask_labels(labels, is_number, digit_count, get_label_format(label_format).score_digits)[0]
    except LabelMaskError:
        kept = None
    positions = [] if kept is None else (kept != IGNORE_INDEX).nonzero().flatten().tolist()
    kept_text = tokenizer.decode([target[i] for i in positions]) if positions else ""
    if kept_text != label or positions != list(range(positions[0], positions[-1] + 1)):
        raise TemplateSupportError(
            f"template {name!r}: the score cannot be located in its assistant turn: for the answer {label!r} the "
            f"turn renders as {tokenizer.decode(target)!r} and the digit-only mask keeps {kept_text!r} (it trains "
            "the first run of number tokens, so nothing before the score may contain a digit)"
        )
    start, end = positions[0], positions[-1] + 1
    return ScoreLayout(prefix=target[:start], score=target[start:end], suffix=target[end:])


def check_digits(tokenizer: Any, name: str, label_format: str = "integer") -> None:
    """Every probe score must tokenize into number tokens of the tokenizer's vocabulary."""
    is_number, digit_count = token_tables(tokenizer, label_format)
    answers = get_label_format(label_format)
    for label in answers.probes:
        ids = tokenizer.encode(label, add_special_tokens=False)
        if not ids or not all(bool(is_number[i]) for i in ids) or int(digit_count[ids].sum()) != answers.score_digits:
            pieces = tokenizer.convert_ids_to_tokens(ids)
            raise TemplateSupportError(
                f"template {name!r}: the tokenizer's digits cannot be found: {label!r} tokenizes as {pieces}, "
                "not as tokens whose text is the score's digits"
            )


def level_tokens(template: Any, tokenizer: Any) -> LevelTokens:
    """The five level words' token paths as the template renders each as the answer (as training labels are).

    The template's own tokens before any answer (the lead: a reasoning template's empty think block) are
    what an empty answer's turn shares with every level answer's.
    """
    answers = [render_answer(template, tokenizer, word)[1] for word in LEVEL_WORDS]
    lead = render_answer(template, tokenizer, "")[1]
    for answer in answers:
        lead = lead[: next((i for i, (a, b) in enumerate(zip(lead, answer)) if a != b), min(len(lead), len(answer)))]
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return LevelTokens.from_answers(answers, name, decode=lambda token: tokenizer.decode([token]), lead=lead)


def check_video_token(template: Any, name: str) -> None:
    if not getattr(template.mm_plugin, "video_token", None):
        raise TemplateSupportError(
            f"template {name!r} has no video token: it cannot take the videos of an IOVQA dataset; use a video "
            "template of your model family (e.g. qwen2_vl, qwen3_vl_nothink)"
        )


def check_template_support(template: Any, tokenizer: Any, name: str, label_format: str = "integer") -> ScoreLayout:
    """Stop with a message naming the template and what is missing, unless the plugin can run it; the layout."""
    check_video_token(template, name)
    check_video_positions(template, name)
    answers = get_label_format(label_format)
    if answers.words:  # level words instead of digits; the scoring prompt ends with the lead
        return ScoreLayout(prefix=list(level_tokens(template, tokenizer).lead), score=[], suffix=[])
    check_digits(tokenizer, name, label_format)
    layouts = [score_layout(template, tokenizer, name, label, label_format) for label in answers.probes]
    if len({tuple(layout.prefix) for layout in layouts}) != 1:
        raise TemplateSupportError(f"template {name!r}: what precedes the score in its assistant turn depends on "
                                   "the score, so the score's position cannot be asked for")
    return layouts[0]
