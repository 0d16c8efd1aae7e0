"""The masking collator: LLaMA-Factory's SFT collator followed by the digit-only label mask (or, for level
labels, the level-word mask with each row's MOS and soft-target sigma); on comparison rows (two media) the
choice word's tokens only, and with ``iovqa_pair_soft_targets`` each pair's soft choice target (``CHOICE_KEY``).

The mask is applied to the run's IOVQA samples only (``run.run_samples``: the rows whose media the iovqa
formatter gave). A row of a stock dataset mixed into the run (free-text questions and answers about a video or
image, VQA²-style) keeps LLaMA-Factory's labels, its full answer; with ``iovqa_yes_no_mask`` a stock row whose
whole answer is yes or no trains on that word only (``train.answer_words``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from llamafactory.data import SFTDataCollatorWith4DAttentionMask

from iovqa_plugin.config import IOVQAArguments
from iovqa_plugin.logs import get_logger
from iovqa_plugin.train.head import MOS_KEY, add_label_token, check_label_counts
from iovqa_plugin.data.labels import IGNORE_INDEX
from iovqa_plugin.train.mask import LabelMaskError, mask_labels, mask_level_labels, mos_from_labels
from iovqa_plugin.train.mask import token_tables, trained_texts
from iovqa_plugin.train.soft_targets import CHOICE_KEY, SIGMA_KEY, choice_targets, row_sigmas

from .run import pair_targets, run_samples, sample_media, sample_targets
from .score_position import level_tokens, render_answer

MEDIA_PER_COMPARISON = 2  # a comparison sample shows two media; a scoring sample one


def is_comparison(feature: dict[str, Any]) -> bool:
    """A comparison sample (two media), told apart from a scoring sample by what it shows."""
    return len(feature.get("videos") or []) + len(feature.get("images") or []) == MEDIA_PER_COMPARISON

logger = get_logger()


def label_mask(iovqa_args: IOVQAArguments, template: Any, tokenizer: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The run's label mask, as a function of (B, L) labels (LabelMaskError for rows without a score)."""
    if iovqa_args.format.words:
        levels = level_tokens(template, tokenizer)
        return lambda labels: mask_level_labels(labels, levels)[0]
    is_number, digit_count = token_tables(tokenizer, iovqa_args.label_format)
    digits = iovqa_args.format.score_digits
    return lambda labels: mask_labels(labels, is_number, digit_count, digits, scores=iovqa_args.scores_per_answer)


class RowMask:
    """The run's label mask on scoring rows; on comparison rows only the choice word's tokens are kept."""

    def __init__(self, iovqa_args: IOVQAArguments, template: Any, tokenizer: Any):
        self.iovqa_args, self.template, self.tokenizer = iovqa_args, template, tokenizer
        self.score = label_mask(iovqa_args, template, tokenizer)
        self.choices = None  # the choice words' token paths, found at the first comparison sample

    def __call__(self, labels: torch.Tensor, comparison: list[bool]) -> torch.Tensor:
        if not any(comparison):
            return self.score(labels)
        if self.choices is None:
            self.choices = level_tokens(self.template, self.tokenizer, self.iovqa_args.choices.answers)
        rows = torch.tensor(comparison, device=labels.device)
        masked = labels.clone()
        masked[rows] = mask_level_labels(labels[rows], self.choices)[0]
        if not all(comparison):
            masked[~rows] = self.score(labels[~rows])
        return masked


@dataclass
class DigitMaskCollator(SFTDataCollatorWith4DAttentionMask):
    """Collates like LLaMA-Factory, then keeps only the score's tokens in the labels.

    With the softmax-regression head it also carries each row's MOS (read back
    from the integer label) under ``MOS_KEY`` for the head's loss. With level
    labels it keeps the level word's tokens and carries each row's MOS (from the
    annotation row, ``run.sample_targets`` (patches/run.py)) under ``MOS_KEY`` and its soft-target
    sigma under ``SIGMA_KEY``, for the level trainer's loss and metrics.
    """

    iovqa_args: Optional[IOVQAArguments] = field(default=None)

    def __post_init__(self):
        super().__post_init__()
        if self.iovqa_args is None:
            raise ValueError("DigitMaskCollator needs the run's plugin configuration")
        self._masked = RowMask(self.iovqa_args, self.template, self.tokenizer)
        self._answer_words = None
        if self.iovqa_args.yes_no_mask:
            from iovqa_plugin.train.answer_words import AnswerWords

            self._answer_words = AnswerWords.from_template(
                lambda answer: render_answer(self.template, self.tokenizer, answer)[1])
        self._logged_first_batch = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        scored = run_samples([sample_media(f) for f in features])
        stock = [row for row, is_run in enumerate(scored) if not is_run]
        if stock and (self.iovqa_args.head_on or self.iovqa_args.format.words or self.iovqa_args.rank_on):
            raise ValueError(
                f"batch row(s) {stock} are samples of a dataset mixed into the run (not formatting iovqa): their "
                "answers are text, and iovqa_head, level labels and iovqa_rank_loss read a score from every row. "
                "Mix question/answer datasets into runs with integer or decimal labels and neither of those."
            )
        if self.iovqa_args.head_on:  # before collating: cutoff_len cuts prompts from the end, <LABEL_1> included
            label_id = add_label_token(self.tokenizer)
            check_label_counts([list(f["input_ids"]).count(label_id) for f in features])
        targets = sample_targets([sample_media(f) for f in features]) if self.iovqa_args.format.words else None
        comparison = [is_comparison(f) for f in features]  # before the stock collator pops the media
        soft_choices = None
        if self.iovqa_args.pair_soft_targets and any(comparison):
            found = pair_targets([sample_media(f) for f in features])
            soft_choices = [p if is_pair else None for p, is_pair in zip(found, comparison)]
        batch = super().__call__(features)
        labels, rows = batch["labels"], [row for row, is_run in enumerate(scored) if is_run]
        try:
            if not stock:
                masked = self._masked(labels, comparison)
            else:
                masked = labels.clone()
                if rows:
                    masked[rows] = self._masked(labels[rows], [comparison[row] for row in rows])
        except LabelMaskError as err:
            texts = [self.tokenizer.decode([t for t in f["labels"] if t != IGNORE_INDEX]) for f in features]
            among = f" (counted among the batch's IOVQA rows {rows})" if stock else ""
            raise LabelMaskError(f"{err}{among} Decoded response labels of the batch: {texts}") from None
        if stock and self._answer_words is not None:
            masked[stock] = self._answer_words.mask(labels[stock])[0]
        batch["labels"] = masked
        if self.iovqa_args.head_on:
            batch[MOS_KEY] = mos_from_labels(batch["labels"], self.tokenizer)
        if soft_choices is not None and any(p is not None for p in soft_choices):
            batch[CHOICE_KEY] = choice_targets(soft_choices, len(self.iovqa_args.choices.answers))
        if targets is not None:
            batch[MOS_KEY] = torch.tensor([mos for mos, _ in targets], dtype=torch.float32)
            batch[SIGMA_KEY] = row_sigmas([std for _, std in targets], self.iovqa_args.level_sigma)
        if not self._logged_first_batch:
            self._logged_first_batch = True
            extra = ""
            if targets is not None:
                extra = f"; MOS {[round(m, 4) for m in batch[MOS_KEY].tolist()]}"
                if self.iovqa_args.soft_targets:
                    extra += f", soft-target sigma {[round(s, 4) for s in batch[SIGMA_KEY].tolist()]}"
            if CHOICE_KEY in batch:
                extra += f"; soft choice targets P(A) {[None if p is None else round(p, 4) for p in soft_choices]}"
            if stock:
                extra += f"; rows {stock} are question/answer samples (stock labels" + (
                    ", a yes/no answer on its word only)" if self._answer_words is not None else ")")
            logger.info("label mask active (digits): first batch targets %s%s",
                        trained_texts(batch["labels"], self.tokenizer,
                                      self.iovqa_args.dimension_names if self.iovqa_args.joint else ()),
                        extra)
        return batch
