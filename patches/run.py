"""The run in progress: the one place that holds the active recipe's plugin configuration (and where its
samples come from, for error messages).

LLaMA-Factory builds its objects (converter, collator, trainer, model) deep
inside ``run_sft`` and its loaders, with no way to hand them our settings.
So the patched ``read_args`` records the run here, and each patched factory
reads it once and passes it, as an argument, to what it builds. Nothing else
in the plugin reads it.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Optional, Sequence

from iovqa_plugin.config import IOVQAArguments

_ACTIVE: Optional[IOVQAArguments] = None
# first frame file of each sample of the run -> "file row N (video 'id')", for errors that name the row
_ORIGINS: dict[str, str] = {}


def set_active_run(run: Optional[IOVQAArguments]) -> None:
    """Called by the patched ``read_args`` for every recipe read (``None``: the plugin is off)."""
    global _ACTIVE
    _ACTIVE = run
    _ORIGINS.clear()


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


def remember_sample_origins(samples: Iterable) -> None:
    """The formatter records where each of the run's samples (``annotations.Sample`` with frames) comes from."""
    for sample in samples:
        if sample.frames:
            _ORIGINS[sample.frames[0]] = f"{sample.file} row {sample.row} (video {sample.video!r})"


def sample_origin(videos: Sequence) -> str:
    """The annotation row of a sample of the run, given its videos (lists of frame files)."""
    firsts = [v[0] if isinstance(v, (list, tuple)) and v else v for v in videos or ()]
    for first in firsts:
        if isinstance(first, str) and first in _ORIGINS:
            return _ORIGINS[first]
    return f"with frames {firsts}" if firsts else "without video"
