"""Target: LLaMA-Factory's dataset converter registry (``formatting: iovqa``)."""

import sys

from .support import PatchTargetError, target

FORMATTING_NAME = "iovqa"


def apply_dataset_converter() -> None:
    """Register the ``iovqa`` formatting through ``register_dataset_converter``."""
    module, register = target("llamafactory.data.converter", "register_dataset_converter")
    _, registry = target("llamafactory.data.converter", "DATASET_CONVERTERS")
    formatter = sys.modules.get("iovqa_plugin.formatter")
    if formatter is not None and not hasattr(formatter, "IOVQADatasetConverter"):
        return  # the formatter module is being imported; it calls this again when complete
    from iovqa_plugin.formatter import IOVQADatasetConverter

    present = registry.get(FORMATTING_NAME)
    if present is IOVQADatasetConverter:
        return
    if present is not None:
        raise PatchTargetError(f"another dataset converter is already registered as {FORMATTING_NAME!r}: {present}")
    register(FORMATTING_NAME, IOVQADatasetConverter)
