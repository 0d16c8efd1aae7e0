"""Target: ``llamafactory.train.sft.workflow.SFTDataCollatorWith4DAttentionMask`` (looked up by run_sft)."""

from __future__ import annotations

from typing import Any

from iovqa_plugin import config

from .support import is_patched, mark_patched, target


def apply_sft_collator() -> None:
    """Make run_sft build the digit-only label-mask collator when a recipe asks for it."""
    module, original = target("llamafactory.train.sft.workflow", "SFTDataCollatorWith4DAttentionMask")
    if is_patched(original):
        return

    def SFTDataCollatorWith4DAttentionMask(*args: Any, **kwargs: Any):
        plugin = config.active()
        if plugin is None or plugin.label_mask == "none":
            return original(*args, **kwargs)
        from iovqa_plugin.collator import DigitMaskCollator

        return DigitMaskCollator(*args, label_format=plugin.label_format, **kwargs)

    module.SFTDataCollatorWith4DAttentionMask = mark_patched(SFTDataCollatorWith4DAttentionMask, original)
