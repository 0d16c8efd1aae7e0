"""Recipes: taking the plugin keys out of a LLaMA-Factory recipe, and the run's keys kept next to its adapter.

Standard library only: this module is imported while recipes are read.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from .config import PREFIX, IOVQAArguments, PluginConfigError, build_config

RUN_CONFIG_FILE = "iovqa_config.json"  # the run's plugin keys, saved next to its adapter for the scorer

# LLaMA-Factory options that contradict the score-only label mask.
_MASK_CONFLICTS = {
    "train_on_prompt": "the prompt's tokens (and any digits in it) would be trained on",
    "packing": "several samples would share one row, and the mask keeps one score per row",
    "neat_packing": "several samples would share one row, and the mask keeps one score per row",
}


def check_compatible(config: IOVQAArguments, recipe: dict[str, Any]) -> None:
    """Reject LLaMA-Factory options that would silently defeat the plugin."""
    if not config.mask_on:
        return
    for key, why in _MASK_CONFLICTS.items():
        if _truthy(recipe.get(key)):
            raise PluginConfigError(f"{key}: true cannot be combined with iovqa_label_mask: digits ({why})")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class PluginArgs(dict):
    """A recipe dict without its plugin keys, carrying the plugin configuration.

    LLaMA-Factory reads a recipe once and hands the dict on to its parsers;
    carrying the configuration on the dict keeps nested reads consistent.
    """

    iovqa: Optional[IOVQAArguments] = None


class PluginArgList(list):
    """The ``--key value`` form of :class:`PluginArgs`."""

    iovqa: Optional[IOVQAArguments] = None


def split_recipe(args: Any) -> tuple[Any, Optional[IOVQAArguments]]:
    """Take the plugin keys out of a recipe (a dict, or a ``--key value`` list).

    Returns the recipe for LLaMA-Factory and the plugin configuration, or
    ``None`` when the recipe has no plugin key. A recipe without plugin keys
    is returned as the very same object.
    """
    if isinstance(args, (PluginArgs, PluginArgList)):
        return args, args.iovqa
    if isinstance(args, dict):
        keys = {k: v for k, v in args.items() if isinstance(k, str) and k.startswith(PREFIX)}
        if not keys:
            return args, None
        rest = PluginArgs((k, v) for k, v in args.items() if k not in keys)
        rest.iovqa = build_config(keys, output_dir=rest.get("output_dir"))
        check_compatible(rest.iovqa, rest)
        return rest, rest.iovqa
    if isinstance(args, list):
        return _split_cli(args)
    return args, None


def _split_cli(argv: list[str]) -> tuple[list[str], Optional[IOVQAArguments]]:
    rest, keys, i = PluginArgList(), {}, 0
    while i < len(argv):
        token = argv[i]
        if isinstance(token, str) and token.startswith("--" + PREFIX):
            name, eq, value = token[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise PluginConfigError(f"{token} needs a value")
                value = argv[i + 1]
                i += 1
            keys[name] = value
        else:
            rest.append(token)
        i += 1
    if not keys:
        return argv, None
    flags = _cli_flags(rest)
    rest.iovqa = build_config(keys, output_dir=flags.get("output_dir"))
    check_compatible(rest.iovqa, flags)
    return rest, rest.iovqa


def _cli_flags(argv: list[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` / bare ``--flag`` as a dict."""
    flags, i = {}, 0
    while i < len(argv):
        token = argv[i]
        if isinstance(token, str) and token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            if eq:
                flags[name] = value
            elif i + 1 < len(argv) and not str(argv[i + 1]).startswith("--"):
                flags[name] = argv[i + 1]
                i += 1
            else:
                flags[name] = True
        i += 1
    return flags


def save_run_config(config: IOVQAArguments, output_dir: str) -> str:
    """Keep the run's plugin keys next to its adapter, so scoring can reuse them (atomic write)."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RUN_CONFIG_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(config.to_recipe(), handle, indent=2)
    os.replace(tmp, path)
    return path


def load_run_config(directory: Optional[str]) -> Optional[IOVQAArguments]:
    """The plugin keys saved next to an adapter (None when there are none)."""
    path = os.path.join(directory or "", RUN_CONFIG_FILE)
    if not directory or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return build_config(json.load(handle))
