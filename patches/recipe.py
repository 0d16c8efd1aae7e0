"""The recipe wrapper shared by the two ``read_args`` patches."""

from __future__ import annotations

import functools
from typing import Any, Callable

from iovqa_plugin import config



def wrap_read_args(original: Callable) -> Callable:
    """``read_args`` that takes the ``iovqa_*`` keys out and activates the plugin for the run."""

    @functools.wraps(original)
    def read_args(args: Any = None) -> Any:
        recipe, plugin = config.split_recipe(original(args))
        config.activate(plugin)
        if plugin is not None:
            enable_score_metrics(recipe, plugin)
        return recipe

    return read_args


def enable_score_metrics(recipe: Any, plugin: config.IOVQAArguments) -> None:
    """Evaluation of an IOVQA run reports SRCC / PLCC: LLaMA-Factory computes metrics only with compute_accuracy."""
    if not isinstance(recipe, dict) or plugin.label_mask != "digits" or plugin.label_format != "integer":
        return
    evaluates = recipe.get("eval_dataset") or float(recipe.get("val_size") or 0) > 0
    if evaluates and not recipe.get("predict_with_generate") and "compute_accuracy" not in recipe:
        recipe["compute_accuracy"] = True

