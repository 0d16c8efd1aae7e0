"""Target: ``llamafactory.train.tuner.read_args`` (bound at import, used by run_exp / train)."""

from .recipe import wrap_read_args
from .support import is_patched, target


def apply_tuner_read_args() -> None:
    """Let ``llamafactory-cli train`` accept ``iovqa_*`` recipe keys."""
    module, original = target("llamafactory.train.tuner", "read_args")
    if not is_patched(original):
        module.read_args = wrap_read_args(original)
