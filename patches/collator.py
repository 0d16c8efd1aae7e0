"""The masking collator: LLaMA-Factory's SFT collator followed by the digit-only label mask."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from llamafactory.data import SFTDataCollatorWith4DAttentionMask

from iovqa_plugin.config import IOVQAArguments
from iovqa_plugin.logs import get_logger
from iovqa_plugin.train.head import MOS_KEY, add_label_token, check_label_counts
from iovqa_plugin.train.mask import IGNORE_INDEX, LabelMaskError, mask_labels, masked_texts, mos_from_labels, token_tables

logger = get_logger()


@dataclass
class DigitMaskCollator(SFTDataCollatorWith4DAttentionMask):
    """Collates like LLaMA-Factory, then keeps only the score's tokens in the labels.

    With the softmax-regression head it also carries each row's MOS (read back
    from the integer label) under ``MOS_KEY`` for the head's loss.
    """

    run: Optional[IOVQAArguments] = field(default=None)

    def __post_init__(self):
        super().__post_init__()
        if self.run is None:
            raise ValueError("DigitMaskCollator needs the run's plugin configuration")
        self._is_number, self._digit_count = token_tables(self.tokenizer, self.run.label_format)
        self._logged_first_batch = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.run.head_on:  # before collating: cutoff_len cuts prompts from the end, <LABEL_1> included
            label_id = add_label_token(self.tokenizer)
            check_label_counts([list(f["input_ids"]).count(label_id) for f in features])
        batch = super().__call__(features)
        try:
            batch["labels"] = mask_labels(batch["labels"], self._is_number, self._digit_count,
                                          scores=self.run.scores_per_answer)
        except LabelMaskError as err:
            rows = [self.tokenizer.decode([t for t in f["labels"] if t != IGNORE_INDEX]) for f in features]
            raise LabelMaskError(f"{err} Decoded response labels of the batch: {rows}") from None
        if self.run.head_on:
            batch[MOS_KEY] = mos_from_labels(batch["labels"], self.tokenizer)
        if not self._logged_first_batch:
            self._logged_first_batch = True
            logger.info("label mask active (digits): first batch targets %s", masked_texts(batch["labels"], self.tokenizer))
        return batch
