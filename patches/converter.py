"""Target: LLaMA-Factory's dataset converter registry (``formatting: iovqa`` and the plugin's other layouts,
``iovqa_pairs`` and ``iovqa_drawn_pairs``: see ``iovqa_plugin.data.layouts``)."""

from typing import Any

from iovqa_plugin.data.layouts import LAYOUTS, POINTWISE

from .run import active_run
from .support import PatchTargetError, target

FORMATTING_NAME = POINTWISE
FORMATTING_NAMES = tuple(LAYOUTS)


def iovqa_converter(dataset_attr: Any, data_args: Any):
    """What the registry calls for a plugin formatting: the layout's formatter, built with the active run's
    settings."""
    from .formatter import converter_class  # imports LLaMA-Factory: only when a dataset is converted

    return converter_class(LAYOUTS[dataset_attr.formatting])(dataset_attr, data_args, iovqa_args=active_run())


def apply_dataset_converter() -> None:
    """Register the plugin's formattings through ``register_dataset_converter``."""
    _, register = target("llamafactory.data.converter", "register_dataset_converter")
    _, registry = target("llamafactory.data.converter", "DATASET_CONVERTERS")
    for name in FORMATTING_NAMES:
        present = registry.get(name)
        if present is iovqa_converter:
            continue
        if present is not None:
            raise PatchTargetError(f"another dataset converter is already registered as {name!r}: {present}")
        register(name, iovqa_converter)
