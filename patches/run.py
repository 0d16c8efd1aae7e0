"""The run in progress: the one place that holds the active recipe's plugin configuration.

LLaMA-Factory builds its objects (converter, collator, trainer, model) deep
inside ``run_sft`` and its loaders, with no way to hand them our settings.
So the patched ``read_args`` records the run here, and each patched factory
reads it once and passes it, as an argument, to what it builds. Nothing else
in the plugin reads it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from iovqa_plugin.config import IOVQAArguments

_ACTIVE: Optional[IOVQAArguments] = None


def set_active_run(run: Optional[IOVQAArguments]) -> None:
    """Called by the patched ``read_args`` for every recipe read (``None``: the plugin is off)."""
    global _ACTIVE
    _ACTIVE = run


def active_run() -> Optional[IOVQAArguments]:
    """The plugin configuration of the recipe being run, or ``None`` for a stock recipe."""
    return _ACTIVE


@contextlib.contextmanager
def run_scope(run: Optional[IOVQAArguments]) -> Iterator[None]:
    """Make ``run`` the active run for the duration of a load outside ``llamafactory-cli`` (the scorer)."""
    before = active_run()
    set_active_run(run)
    try:
        yield
    finally:
        set_active_run(before)
