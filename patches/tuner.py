"""Target: ``llamafactory.train.tuner.read_args`` (bound at import, used by run_exp / train)."""

from .recipe import wrap_read_args
from .support import patch_attribute


def apply_tuner_read_args() -> None:
    """Let ``llamafactory-cli train`` accept ``iovqa_*`` recipe keys."""
    patch_attribute("llamafactory.train.tuner", "read_args", wrap_read_args)
