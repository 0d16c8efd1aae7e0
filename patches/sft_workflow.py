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

        return DigitMaskCollator(*args, label_format=plugin.label_format, **kwargs)

    module.SFTDataCollatorWith4DAttentionMask = mark_patched(SFTDataCollatorWith4DAttentionMask, original)


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
        from iovqa_plugin.trainer_metrics import score_logits

        return score_logits(logits, labels)

    module.eval_logit_processor = mark_patched(eval_logit_processor, original)
