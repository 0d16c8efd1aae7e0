"""Reading the plugin's recipe keys into :class:`~.config.IOVQAArguments`: coercion of command-line text to each
field's type, unknown keys with a suggestion, and the help text of ``iovqa keys`` (the schema is ``config``).

Standard library only: this module is imported while recipes are read.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import fields
from typing import Any, Optional

from .config import NOT_RECIPE_FIELDS, PREFIX, RECIPE_FIELDS, IOVQAArguments, PluginConfigError

_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _coerce(name: str, value: Any) -> Any:
    """Convert a command-line string to the field's type (recipes give typed values)."""
    hint = typing.get_type_hints(IOVQAArguments)[name]
    base = hint
    if typing.get_origin(hint) is typing.Union:  # Optional[X]
        base = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
    if base is bool:
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        if not isinstance(value, bool):
            raise PluginConfigError(f"iovqa_{name} must be true or false, got {value!r}")
        return value
    if base in (int, float):
        kind = "an integer" if base is int else "a number"
        if isinstance(value, bool) or (base is int and isinstance(value, float) and not value.is_integer()):
            raise PluginConfigError(f"iovqa_{name} must be {kind}, got {value!r}")
        try:
            return base(value)
        except (TypeError, ValueError):
            raise PluginConfigError(f"iovqa_{name} must be {kind}, got {value!r}") from None
    if name == "dimensions" and isinstance(value, (list, tuple)):  # a YAML list of names
        value = ",".join(str(v) for v in value)
    if base is dict:  # a YAML mapping, or JSON text on the command line
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except ValueError:
                raise PluginConfigError(f"iovqa_{name} must be a mapping, got {value!r}") from None
        if not isinstance(value, dict):
            raise PluginConfigError(f"iovqa_{name} must be a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if value is not None and not isinstance(value, str):
        raise PluginConfigError(f"iovqa_{name} must be a string, got {value!r}")
    return value


def build_config(keys: dict[str, Any], output_dir: Optional[str] = None,
                 model_inputs: Optional[dict] = None) -> IOVQAArguments:
    """Validate ``{"iovqa_x": value}`` recipe keys into an :class:`IOVQAArguments`."""
    values = {}
    for key, value in keys.items():
        name = key[len(PREFIX) :]
        if name not in RECIPE_FIELDS:
            close = difflib.get_close_matches(name, RECIPE_FIELDS, n=1)
            hint = f"; did you mean iovqa_{close[0]}?" if close else ""
            raise PluginConfigError(
                f"unknown plugin key {key!r}{hint} Known keys: {', '.join(PREFIX + f for f in RECIPE_FIELDS)}"
            )
        values[name] = _coerce(name, value)
    return IOVQAArguments(output_dir=output_dir, model_inputs=model_inputs, **values)


def help_text() -> str:
    """All recipe keys with their defaults and help, for ``iovqa keys``."""
    lines = []
    for f in fields(IOVQAArguments):
        if f.name in NOT_RECIPE_FIELDS:
            continue
        lines.append(f"{PREFIX}{f.name} (default: {f.default!r})\n    {f.metadata['help']}")
    return "\n".join(lines)
