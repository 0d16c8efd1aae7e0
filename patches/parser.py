"""Target: ``llamafactory.hparams.parser.read_args`` (used by every argument parser: export, chat, api)."""

from .recipe import wrap_read_args
from .support import patch_attribute


def apply_parser_read_args() -> None:
    """Let every LLaMA-Factory command accept ``iovqa_*`` recipe keys."""
    patch_attribute("llamafactory.hparams.parser", "read_args", wrap_read_args)
