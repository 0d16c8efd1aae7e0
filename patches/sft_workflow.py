"""Targets in ``llamafactory.train.sft.workflow``: module globals that run_sft looks up at call time.

Every replacement does exactly what the original does unless the active recipe turns the
plugin on (and, for the head targets, the softmax-regression head).
"""

from __future__ import annotations

import os
from typing import Any

from iovqa_plugin import config

from .support import patch_attribute

WORKFLOW = "llamafactory.train.sft.workflow"


def _head_on() -> bool:
    plugin = config.active()
    return plugin is not None and plugin.head != "none"


def _scores_evaluated() -> bool:
    plugin = config.active()
    return plugin is not None and plugin.label_mask == "digits" and plugin.label_format == "integer"


def save_run_config(plugin: config.IOVQAArguments) -> None:
    """Keep the run's plugin keys next to its adapter (written once per node), for the scorer."""
    if plugin.output_dir and os.environ.get("LOCAL_RANK", "0") == "0":
        from iovqa_plugin.scoring import save_plugin_config

        save_plugin_config(plugin, plugin.output_dir)


def apply_sft_collator() -> None:
    """Make run_sft build the digit-only label-mask collator when a recipe asks for it."""

    def replacement(original):
        def SFTDataCollatorWith4DAttentionMask(*args: Any, **kwargs: Any):
            plugin = config.active()
            if plugin is not None:
                save_run_config(plugin)
            if plugin is None or plugin.label_mask == "none":
                return original(*args, **kwargs)
            from iovqa_plugin.collator import DigitMaskCollator

            return DigitMaskCollator(*args, label_format=plugin.label_format, with_mos=_head_on(), **kwargs)

        return SFTDataCollatorWith4DAttentionMask

    patch_attribute(WORKFLOW, "SFTDataCollatorWith4DAttentionMask", replacement)


def apply_sft_accuracy_metric() -> None:
    """Make run_sft's ``compute_accuracy`` metric report SRCC / PLCC / final for IOVQA runs."""

    def replacement(original):
        def ComputeAccuracy(*args: Any, **kwargs: Any):
            if not _scores_evaluated():
                return original(*args, **kwargs)
            from iovqa_plugin.trainer_metrics import ComputeScoreMetrics

            return ComputeScoreMetrics()

        return ComputeAccuracy

    patch_attribute(WORKFLOW, "ComputeAccuracy", replacement)


def apply_sft_logit_processor() -> None:
    """Reduce evaluation logits to score distributions (instead of argmax tokens) for IOVQA runs."""

    def replacement(original):
        def eval_logit_processor(logits: Any, labels: Any):
            if not _scores_evaluated():
                return original(logits, labels)
            if _head_on():  # the head trainer's evaluation step already returns (expected score, MOS)
                return logits
            from iovqa_plugin.trainer_metrics import score_logits

            return score_logits(logits, labels)

        return eval_logit_processor

    patch_attribute(WORKFLOW, "eval_logit_processor", replacement)


def apply_sft_load_tokenizer() -> None:
    """Add ``<LABEL_1>`` to the tokenizer run_sft loads when the softmax-regression head is on."""

    def replacement(original):
        def load_tokenizer(*args: Any, **kwargs: Any):
            modules = original(*args, **kwargs)
            if _head_on():
                from iovqa_plugin.head import add_label_token

                add_label_token(modules["tokenizer"])
            return modules

        return load_tokenizer

    patch_attribute(WORKFLOW, "load_tokenizer", replacement)


def apply_sft_trainer() -> None:
    """Make run_sft train with the softmax-regression head, or with labelled-position logits, per the recipe."""

    def replacement(original):
        def CustomSeq2SeqTrainer(*args: Any, **kwargs: Any):
            plugin = config.active()
            if _head_on():
                from iovqa_plugin.head_trainer import HeadTrainer

                return HeadTrainer(*args, **kwargs)
            if plugin is not None and plugin.labelled_logits:
                from .labelled_logits import LabelledLogitsTrainer

                return LabelledLogitsTrainer(*args, **kwargs)
            return original(*args, **kwargs)

        return CustomSeq2SeqTrainer

    patch_attribute(WORKFLOW, "CustomSeq2SeqTrainer", replacement)
