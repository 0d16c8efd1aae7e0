"""Which exceptions mean bad input (a recipe key, an annotation file or row, a sample too long for
``cutoff_len``) rather than a bug: the ``iovqa`` commands and a command-line training run show them as one
message, exit status 2, without a Python traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with a command's input (a missing file, a bad option): printed as one line, exit status 2."""


def input_errors() -> tuple[type, ...]:
    from .config import PluginConfigError
    from .data.annotations import AnnotationError, AnnotationFileError
    from .data.cutoff import PromptCutError
    from .data.datasets import DatasetInfoError
    from .data.labels import LabelError

    return (UserError, PluginConfigError, AnnotationError, AnnotationFileError, LabelError, PromptCutError,
            DatasetInfoError)
