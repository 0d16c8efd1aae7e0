"""Checks shared by the patches: supported version, target presence, idempotence."""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any, Callable

SUPPORTED_LLAMAFACTORY = ("0.9.5",)
MARK = "__iovqa_original__"  # attribute of a patched callable, holding the original


class UnsupportedVersionError(RuntimeError):
    pass


class PatchTargetError(RuntimeError):
    pass


def check_version() -> str:
    """The installed LLaMA-Factory version; raises unless it is supported."""
    try:
        installed = version("llamafactory")
    except PackageNotFoundError:
        raise UnsupportedVersionError("LLaMA-Factory (package llamafactory) is not installed") from None
    release = installed.split("+")[0]
    if not any(release == v or release.startswith(v + ".") for v in SUPPORTED_LLAMAFACTORY):
        raise UnsupportedVersionError(
            f"llamafactory {installed} is not supported by iovqa-plugin (supported: {', '.join(SUPPORTED_LLAMAFACTORY)})"
        )
    return installed


def target(module_name: str, attribute: str) -> tuple[ModuleType, Any]:
    """The module and its attribute to patch; raises if LLaMA-Factory moved it."""
    check_version()
    module = importlib.import_module(module_name)
    if not hasattr(module, attribute):
        raise PatchTargetError(f"{module_name}.{attribute} not found: LLaMA-Factory's layout changed")
    return module, getattr(module, attribute)


def is_patched(obj: Any) -> bool:
    return hasattr(obj, MARK)


def mark_patched(wrapper: Any, original: Any) -> Any:
    setattr(wrapper, MARK, original)
    return wrapper


def patch_attribute(module_name: str, attribute: str, make_replacement: Callable[[Any], Any]) -> None:
    """Replace ``module.attribute`` by ``make_replacement(original)``, once (idempotent)."""
    module, original = target(module_name, attribute)
    if not is_patched(original):
        setattr(module, attribute, mark_patched(make_replacement(original), original))


def stock_unless(applies: Callable[[Any], bool], build: Callable[..., Any]) -> Callable[[Any], Any]:
    """A replacement maker for :func:`patch_attribute`: the original, unless the active run turns the plugin on.

    ``applies(iovqa_args)`` decides from the run's plugin configuration; then
    ``build(original, run, *args, **kwargs)`` makes the plugin's object, the run passed explicitly.
    """
    from .run import active_run

    def make(original: Any) -> Any:
        @functools.wraps(original, updated=())  # originals may be classes: copy names, not their __dict__
        def replacement(*args: Any, **kwargs: Any) -> Any:
            iovqa_args = active_run()
            if iovqa_args is None or not applies(iovqa_args):
                return original(*args, **kwargs)
            return build(original, iovqa_args, *args, **kwargs)

        return replacement

    return make
