"""Target: ``llamafactory.train.sft.workflow.SFTDataCollatorWith4DAttentionMask`` (looked up by run_sft)."""

from __future__ import annotations

import os
from typing import Any

from iovqa_plugin import config

from .support import is_patched, mark_patched, target


def save_run_config(plugin: config.IOVQAArguments) -> None:
    """Keep the run's plugin keys next to its adapter (written once per node), for the scorer."""
    if plugin.output_dir and os.environ.get("LOCAL_RANK", "0") == "0":
        from iovqa_plugin.scoring import save_plugin_config

        save_plugin_config(plugin, plugin.output_dir)


def apply_sft_collator() -> None:
    """Make run_sft build the digit-only label-mask collator when a recipe asks for it."""
    module, original = target("llamafactory.train.sft.workflow", "SFTDataCollatorWith4DAttentionMask")
    if is_patched(original):
        return

    def SFTDataCollatorWith4DAttentionMask(*args: Any, **kwargs: Any):
        plugin = config.active()
        if plugin is not None:
            save_run_config(plugin)
        if plugin is None or plugin.label_mask == "none":
            return original(*args, **kwargs)
        from iovqa_plugin.collator import DigitMaskCollator

        return DigitMaskCollator(*args, label_format=plugin.label_format, with_mos=_head_on(), **kwargs)

    module.SFTDataCollatorWith4DAttentionMask = mark_patched(SFTDataCollatorWith4DAttentionMask, original)


def _head_on() -> bool:
    plugin = config.active()
    return plugin is not None and plugin.head != "none"


def _scores_evaluated() -> bool:
    plugin = config.active()
    return plugin is not None and plugin.label_mask == "digits" and plugin.label_format == "integer"


def apply_sft_accuracy_metric() -> None:
    """Make run_sft's ``compute_accuracy`` metric report SRCC / PLCC / final for IOVQA runs."""
    module, original = target("llamafactory.train.sft.workflow", "ComputeAccuracy")
    if is_patched(original):
        return

    def ComputeAccuracy(*args: Any, **kwargs: Any):
        if not _scores_evaluated():
            return original(*args, **kwargs)
        from iovqa_plugin.trainer_metrics import ComputeScoreMetrics

        return ComputeScoreMetrics()

    module.ComputeAccuracy = mark_patched(ComputeAccuracy, original)


def apply_sft_logit_processor() -> None:
    """Reduce evaluation logits to score distributions (instead of argmax tokens) for IOVQA runs."""
    module, original = target("llamafactory.train.sft.workflow", "eval_logit_processor")
    if is_patched(original):
        return

    def eval_logit_processor(logits: Any, labels: Any):
        if not _scores_evaluated():
            return original(logits, labels)
        if _head_on():  # the head trainer's evaluation step already returns (expected score, MOS)
            return logits
        from iovqa_plugin.trainer_metrics import score_logits

        return score_logits(logits, labels)

    module.eval_logit_processor = mark_patched(eval_logit_processor, original)


def apply_sft_load_tokenizer() -> None:
    """Add ``<LABEL_1>`` to the tokenizer run_sft loads when the softmax-regression head is on."""
    module, original = target("llamafactory.train.sft.workflow", "load_tokenizer")
    if is_patched(original):
        return

    def load_tokenizer(*args: Any, **kwargs: Any):
        modules = original(*args, **kwargs)
        if _head_on():
            from iovqa_plugin.head import add_label_token

            add_label_token(modules["tokenizer"])
        return modules

    module.load_tokenizer = mark_patched(load_tokenizer, original)


def apply_sft_trainer() -> None:
    """Make run_sft train and evaluate the softmax-regression head when the recipe turns it on."""
    module, original = target("llamafactory.train.sft.workflow", "CustomSeq2SeqTrainer")
    if is_patched(original):
        return

    def CustomSeq2SeqTrainer(*args: Any, **kwargs: Any):
        if not _head_on():
            return original(*args, **kwargs)
        from iovqa_plugin.head_trainer import HeadTrainer

        return HeadTrainer(*args, **kwargs)

    module.CustomSeq2SeqTrainer = mark_patched(CustomSeq2SeqTrainer, original)
