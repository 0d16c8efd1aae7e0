"""Target: LLaMA-Factory's dataset converter registry (``formatting: iovqa``)."""

from typing import Any

from .run import active_run
from .support import PatchTargetError, target

FORMATTING_NAME = "iovqa"


def iovqa_converter(dataset_attr: Any, data_args: Any):
    """What the registry calls for ``formatting: iovqa``: the formatter, built with the active run's settings."""
    from .formatter import IOVQADatasetConverter  # imports LLaMA-Factory: only when a dataset is converted

    return IOVQADatasetConverter(dataset_attr, data_args, iovqa_args=active_run())


def apply_dataset_converter() -> None:
    """Register the ``iovqa`` formatting through ``register_dataset_converter``."""
    _, register = target("llamafactory.data.converter", "register_dataset_converter")
    _, registry = target("llamafactory.data.converter", "DATASET_CONVERTERS")
    present = registry.get(FORMATTING_NAME)
    if present is iovqa_converter:
        return
    if present is not None:
        raise PatchTargetError(f"another dataset converter is already registered as {FORMATTING_NAME!r}: {present}")
    register(FORMATTING_NAME, iovqa_converter)
