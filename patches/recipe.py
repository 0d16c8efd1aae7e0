"""The recipe wrapper shared by the two ``read_args`` patches, and the checks a recipe gets when it is read."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

from iovqa_plugin.config import IOVQAArguments, PluginConfigError
from iovqa_plugin.recipe import split_recipe

from .run import set_active_run


def wrap_read_args(original: Callable) -> Callable:
    """``read_args`` that takes the ``iovqa_*`` keys out, checks the recipe and records the run's plugin keys."""

    @functools.wraps(original)
    def read_args(args: Any = None) -> Any:
        recipe, iovqa_args = split_recipe(original(args))
        if isinstance(recipe, dict):
            check_recipe(recipe, iovqa_args)
        set_active_run(iovqa_args)
        return recipe

    return read_args


def check_recipe(recipe: dict, iovqa_args: Optional[IOVQAArguments]) -> None:
    """Problems that would otherwise surface late, or not at all: stop before anything is loaded."""
    if iovqa_args is None:
        iovqa = _iovqa_datasets(recipe)
        if iovqa:
            raise PluginConfigError(
                f"dataset(s) {iovqa} use formatting 'iovqa' but the recipe has no iovqa_* key, so the plugin is off "
                "(no digit-only label mask, no score metrics). Add `iovqa_label_mask: digits` (the paper's "
                "training), or `iovqa_label_mask: none` to train on the whole answer on purpose."
            )
        return
    stock_eval = _stock_eval_datasets(recipe)
    if stock_eval and iovqa_args.mask_on:
        raise PluginConfigError(
            f"eval_dataset {stock_eval} is not formatting 'iovqa' (nor a comparison layout): the evaluation's "
            "metrics (eval_srcc, eval_plcc; eval_pairwise_diff for comparisons) read a score or a choice from every "
            "evaluation row. Evaluate on iovqa datasets; question/answer datasets mixed into the run belong in "
            "`dataset`."
        )
    template = recipe.get("template")
    if not template:
        raise PluginConfigError("an IOVQA recipe needs a `template` with a video token (e.g. template: qwen2_vl)")
    from llamafactory.data.template import TEMPLATES

    from .score_position import check_video_token
    from .transformers_fixes import check_video_positions

    if template in TEMPLATES:  # the tokenizer-level checks run once it is loaded (sft_workflow.apply_sft_template_check)
        check_video_token(TEMPLATES[template], template)
        check_video_positions(TEMPLATES[template], template)


def _stock_eval_datasets(recipe: dict) -> list[str]:
    """The recipe's evaluation datasets of another formatting than the plugin's layouts (in its dataset_info.json)."""
    from iovqa_plugin.data.datasets import data_dirs, dataset_names, read_dataset_info
    from iovqa_plugin.data.layouts import LAYOUTS

    names = dataset_names({"eval_dataset": recipe.get("eval_dataset")})
    info = read_dataset_info(data_dirs(recipe)[0]) if names else {}
    return [name for name in names if isinstance(info.get(name), dict) and info[name].get("formatting") not in LAYOUTS]


def _iovqa_datasets(recipe: dict) -> list[str]:
    from iovqa_plugin.data.datasets import data_dirs, dataset_names, read_dataset_info
    from iovqa_plugin.data.layouts import LAYOUTS

    names = dataset_names(recipe)
    if not names:
        return []
    info = read_dataset_info(data_dirs(recipe)[0])
    return [name for name in names if isinstance(info.get(name), dict) and info[name].get("formatting") in LAYOUTS]
