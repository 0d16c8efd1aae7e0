"""Targets: ``llamafactory.train.tuner.read_args`` (bound at import, used by run_exp / train) and ``run_exp``
(which the launcher, and each torchrun rank, looks up at call time)."""

import functools

from .launcher import report_input_error
from .recipe import wrap_read_args
from .support import patch_attribute


def apply_tuner_read_args() -> None:
    """Let ``llamafactory-cli train`` accept ``iovqa_*`` recipe keys."""
    patch_attribute("llamafactory.train.tuner", "read_args", wrap_read_args)


def apply_tuner_run_exp() -> None:
    """Make a command-line training run stopped by bad input end with the plugin's message, exit status 2."""
    patch_attribute("llamafactory.train.tuner", "run_exp", _input_errors_reported)


def _input_errors_reported(original):
    @functools.wraps(original)
    def run_exp(args=None, callbacks=None):
        if args is not None:  # called from Python with a recipe: the caller handles the exception
            return original(args, callbacks)
        from iovqa_plugin.errors import input_errors

        try:
            return original(args, callbacks)
        except input_errors() as err:
            # LLaMA-Factory's log stays above; the plugin's message is the last thing, without a traceback
            report_input_error(err)
            raise SystemExit(2) from None

    return run_exp
