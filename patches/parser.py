"""Target: ``llamafactory.hparams.parser.read_args`` (used by every argument parser: export, chat, api)."""

from .recipe import wrap_read_args
from .support import is_patched, target


def apply_parser_read_args() -> None:
    """Let every LLaMA-Factory command accept ``iovqa_*`` recipe keys."""
    module, original = target("llamafactory.hparams.parser", "read_args")
    if not is_patched(original):
        module.read_args = wrap_read_args(original)
