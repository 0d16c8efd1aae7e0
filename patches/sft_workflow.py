"""Targets in ``llamafactory.train.sft.workflow``: module globals that run_sft looks up at call time.

Each replacement is the original unless the active run turns the plugin on
(``support.stock_unless``); then it builds the plugin's object with the run
passed explicitly.
"""

from __future__ import annotations

import os
from typing import Any

from .support import patch_attribute, stock_unless

WORKFLOW = "llamafactory.train.sft.workflow"


def _masking_collator(original: Any, iovqa_args: Any, *args: Any, **kwargs: Any):
    from .collator import DigitMaskCollator

    return DigitMaskCollator(*args, iovqa_args=iovqa_args, **kwargs)


def apply_sft_collator() -> None:
    """Make run_sft build the digit-only label-mask collator when a recipe asks for it."""
    patch_attribute(WORKFLOW, "SFTDataCollatorWith4DAttentionMask", stock_unless(lambda iovqa_args: iovqa_args.mask_on,
                                                                                  _masking_collator))


def _tokenizer_with_label_token(original: Any, iovqa_args: Any, *args: Any, **kwargs: Any):
    from iovqa_plugin.train.head import add_label_token

    modules = original(*args, **kwargs)
    add_label_token(modules["tokenizer"])
    return modules


def apply_sft_load_tokenizer() -> None:
    """Add ``<LABEL_1>`` to the tokenizer run_sft loads when the softmax-regression head is on."""
    patch_attribute(WORKFLOW, "load_tokenizer", stock_unless(lambda iovqa_args: iovqa_args.head_on,
                                                                     _tokenizer_with_label_token))


def _checked_template(original: Any, iovqa_args: Any, tokenizer: Any, data_args: Any, *args: Any, **kwargs: Any):
    from .score_position import check_template_support

    template = original(tokenizer, data_args, *args, **kwargs)
    check_template_support(template, tokenizer, data_args.template, iovqa_args.label_format)
    return template


def apply_sft_template_check() -> None:
    """Make run_sft stop before loading data when the plugin cannot run the recipe's template and tokenizer."""
    patch_attribute(WORKFLOW, "get_template_and_fix_tokenizer", stock_unless(lambda iovqa_args: True, _checked_template))


def _plugin_trainer(original: Any, iovqa_args: Any, *args: Any, **kwargs: Any):
    from iovqa_plugin.recipe import save_run_config
    from iovqa_plugin.train.rank_loss import RankSettings

    training_args = kwargs["args"]
    if os.environ.get("LOCAL_RANK", "0") == "0":  # one writer per node
        save_run_config(iovqa_args, training_args.output_dir)
    if iovqa_args.integer_scores and not training_args.predict_with_generate:
        # evaluation reports SRCC / PLCC / final of the score instead of token accuracy
        from iovqa_plugin.data.grid import ScoreGrid
        from iovqa_plugin.train.score_metrics import ComputeScoreMetrics, ScoreLogits

        choice_ids = None if iovqa_args.head_on else _choice_ids(iovqa_args, kwargs)
        kwargs["compute_metrics"] = ComputeScoreMetrics(iovqa_args.dimension_names if iovqa_args.joint else (),
                                                        comparisons=choice_ids is not None)
        # the head trainer's evaluation step already returns (expected score, MOS)
        kwargs["preprocess_logits_for_metrics"] = None if iovqa_args.head_on else ScoreLogits(
            ScoreGrid.from_tokenizer(kwargs["tokenizer"]), iovqa_args.scores_per_answer, choice_ids)
    if iovqa_args.level_scores:
        from .score_position import level_tokens
        from .trainer import LevelTrainer

        if not training_args.predict_with_generate:  # the level trainer's evaluation step returns (expected, MOS)
            from iovqa_plugin.train.score_metrics import ComputeScoreMetrics

            kwargs["compute_metrics"], kwargs["preprocess_logits_for_metrics"] = ComputeScoreMetrics(), None
        levels = level_tokens(kwargs["data_collator"].template, kwargs["tokenizer"])
        if iovqa_args.rl_on:
            return _grpo_trainer(iovqa_args, args, kwargs)
        return LevelTrainer(*args, iovqa_args=iovqa_args, levels=levels, rank=RankSettings.of_run(iovqa_args), **kwargs)
    if iovqa_args.rl_on:
        return _grpo_trainer(iovqa_args, args, kwargs)
    if iovqa_args.head_on:
        from .trainer import HeadTrainer

        return HeadTrainer(*args, iovqa_args=iovqa_args, **kwargs)
    if iovqa_args.labelled_logits:
        from .trainer import LabelledLogitsTrainer

        rank = RankSettings.of_run(iovqa_args)
        if rank is not None:  # the rank loss reads each row's score distribution on the tokenizer's score grid
            from iovqa_plugin.data.grid import ScoreGrid

            kwargs.update(rank=rank, grid=ScoreGrid.from_tokenizer(kwargs["tokenizer"]),
                          scores=iovqa_args.scores_per_answer)
        if iovqa_args.pair_soft_targets:  # the choice words' tokens, where the soft choice targets go
            from .score_position import level_tokens

            kwargs["choices"] = level_tokens(kwargs["data_collator"].template, kwargs["tokenizer"],
                                             iovqa_args.choices.answers)
        return LabelledLogitsTrainer(*args, **kwargs)
    return original(*args, **kwargs)


def _choice_ids(iovqa_args: Any, kwargs: dict):
    """The choice words' tokens, for the pairwise accuracy of comparison rows in the evaluation (runs that may
    hold comparisons: one dimension, integer or decimal labels, the mask on); None for the others."""
    from iovqa_plugin.data.levels import LevelTokensError

    from .score_position import level_tokens

    if iovqa_args.multi_dimension or iovqa_args.format.words or not iovqa_args.mask_on:
        return None
    try:
        choices = level_tokens(kwargs["data_collator"].template, kwargs["tokenizer"], iovqa_args.choices.answers)
    except LevelTokensError:  # choice words this tokenizer cannot tell apart: the choice mask refuses comparisons
        return None
    return choices.ids if choices.prefix == 0 else None  # read at the answer's first token


def _grpo_trainer(iovqa_args: Any, args: tuple, kwargs: dict):
    """The GRPO trainer of an ``iovqa_rl: grpo`` run, with the answer set and template tokens it needs."""
    from .grpo_trainer import GRPOTrainer, LevelGRPOTrainer
    from .score_position import check_template_support, level_tokens

    tokenizer = kwargs["tokenizer"]
    template = kwargs["data_collator"].template
    stop_ids = tuple(template.get_stop_token_ids(tokenizer))
    kwargs["word_tokens"] = lambda words: level_tokens(template, tokenizer, words)  # choice rows' answer words
    if iovqa_args.level_scores:
        levels = level_tokens(template, tokenizer)
        return LevelGRPOTrainer(*args, iovqa_args=iovqa_args, levels=levels, lead=len(levels.lead), stop_ids=stop_ids,
                                **kwargs)
    from iovqa_plugin.data.grid import ScoreGrid

    grid = ScoreGrid.from_tokenizer(tokenizer)
    layout = check_template_support(template, tokenizer, template.__class__.__name__, iovqa_args.label_format)
    return GRPOTrainer(*args, iovqa_args=iovqa_args, grid=grid, lead=len(layout.prefix), stop_ids=stop_ids, **kwargs)


def apply_sft_trainer() -> None:
    """Make run_sft's trainer, for a recipe that turns the plugin on, evaluate scores and train the head or,
    without it, apply the output layer at labelled positions only."""
    patch_attribute(WORKFLOW, "CustomSeq2SeqTrainer", stock_unless(lambda iovqa_args: True, _plugin_trainer))
