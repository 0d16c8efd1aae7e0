"""The recipe wrapper shared by the two ``read_args`` patches."""

from __future__ import annotations

import functools
from typing import Any, Callable

from iovqa_plugin import config

from .support import mark_patched


def wrap_read_args(original: Callable) -> Callable:
    """``read_args`` that takes the ``iovqa_*`` keys out and activates the plugin for the run."""

    @functools.wraps(original)
    def read_args(args: Any = None) -> Any:
        recipe, plugin = config.split_recipe(original(args))
        config.activate(plugin)
        return recipe

    return mark_patched(read_args, original)
