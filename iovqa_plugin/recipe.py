"""Recipes: taking the plugin keys out of a LLaMA-Factory recipe, and the run's keys kept next to its adapter.

Standard library only: this module is imported while recipes are read.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from .config import PREFIX, IOVQAArguments, PluginConfigError
from .config_parser import build_config
from .errors import UserError

RUN_CONFIG_FILE = "iovqa_config.json"  # the run's plugin keys, saved next to its adapter for the scorer

# LLaMA-Factory keys of a recipe that shape what the model sees: saved with the run (iovqa_config.json) with
# the plugin keys, so that scoring can use and compare them.
INPUT_KEYS = ("template", "enable_thinking", "video_max_pixels", "video_min_pixels", "video_fps", "video_maxlen",
              "image_max_pixels", "image_min_pixels")

# How a scoring recipe may differ from the run saved with the model, key by key (see compare_with_run).
# Refused: the model would see other inputs (frames, pixels, prompt, template) or its answers would be read
# otherwise (label format, dimensions and their order, layout, head).
REFUSED_DIFFERENCES = tuple(PREFIX + k for k in (
    "label_format", "num_frames", "frame_strategy", "frame_format", "prompt_template", "max_prompt_chars",
    "dimensions", "dimension_layout", "dimension_prompts", "head", "head_inner_size")) + INPUT_KEYS
# Warned: keys of training alone (loss, targets, logits): the scores do not change, but another value suggests
# the recipe of another run. Keys in neither list (data columns, frame cache, bad rows) are the scoring run's own.
WARNED_DIFFERENCES = tuple(PREFIX + k for k in (
    "label_mask", "level_targets", "level_sigma", "std_column", "head_loss", "head_sigma", "labelled_logits"))

# LLaMA-Factory options that contradict the score-only label mask.
_MASK_CONFLICTS = {
    "train_on_prompt": "the prompt's tokens (and any digits in it) would be trained on",
    "packing": "several samples would share one row, and the mask keeps one score per row",
    "neat_packing": "several samples would share one row, and the mask keeps one score per row",
}


def check_compatible(iovqa_args: IOVQAArguments, recipe: dict[str, Any]) -> None:
    """Reject LLaMA-Factory options that would silently defeat the plugin."""
    if not iovqa_args.mask_on:
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

    iovqa_args: Optional[IOVQAArguments] = None


class PluginArgList(list):
    """The ``--key value`` form of :class:`PluginArgs`."""

    iovqa_args: Optional[IOVQAArguments] = None


def load_recipe_file(path: Optional[str]) -> dict:
    """A recipe YAML as a dict ({} for no path); UserError for a missing file or one that is no mapping."""
    import yaml

    if path is None:
        return {}
    if not os.path.isfile(path):
        raise UserError(f"recipe not found: {path}")
    with open(path, encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle)
    if not isinstance(recipe, dict):
        raise UserError(f"{path}: not a YAML mapping")
    return recipe


def recipe_settings(recipe: dict) -> IOVQAArguments:
    """The plugin settings of a recipe dict (the defaults when it has no iovqa_* key)."""
    return split_recipe(recipe)[1] or IOVQAArguments()


def split_recipe(args: Any) -> tuple[Any, Optional[IOVQAArguments]]:
    """Take the plugin keys out of a recipe (a dict, or a ``--key value`` list).

    Returns the recipe for LLaMA-Factory and the plugin configuration, or
    ``None`` when the recipe has no plugin key. A recipe without plugin keys
    is returned as the very same object.
    """
    if isinstance(args, (PluginArgs, PluginArgList)):
        return args, args.iovqa_args
    if isinstance(args, dict):
        keys = {k: v for k, v in args.items() if isinstance(k, str) and k.startswith(PREFIX)}
        if not keys:
            return args, None
        rest = PluginArgs((k, v) for k, v in args.items() if k not in keys)
        rest.iovqa_args = build_config(keys, output_dir=rest.get("output_dir"), model_inputs=_inputs(rest))
        check_compatible(rest.iovqa_args, rest)
        return rest, rest.iovqa_args
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
    rest.iovqa_args = build_config(keys, output_dir=flags.get("output_dir"), model_inputs=_inputs(flags))
    check_compatible(rest.iovqa_args, flags)
    return rest, rest.iovqa_args


def _inputs(recipe: dict[str, Any]) -> dict[str, Any]:
    return {key: recipe[key] for key in INPUT_KEYS if key in recipe}


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


def save_run_config(iovqa_args: IOVQAArguments, output_dir: str) -> str:
    """Keep the run's plugin keys and input keys next to its adapter, so scoring can reuse them (atomic write)."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RUN_CONFIG_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({**iovqa_args.to_recipe(), **(iovqa_args.model_inputs or {})}, handle, indent=2)
    os.replace(tmp, path)
    return path


def load_run_keys(directory: Optional[str]) -> Optional[dict[str, Any]]:
    """The keys saved next to an adapter or model (None when there are none)."""
    path = os.path.join(directory or "", RUN_CONFIG_FILE)
    if not directory or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _plugin_keys(keys: dict[str, Any]) -> tuple[dict[str, Any], IOVQAArguments]:
    plugin = {k: v for k, v in keys.items() if k.startswith(PREFIX)}
    return plugin, build_config(plugin)


class RunMismatch(PluginConfigError):
    """A scoring recipe that would show the model other inputs, or read its answers otherwise, than its run."""


def compare_with_run(recipe: dict[str, Any], saved: dict[str, Any], where: str) -> tuple[IOVQAArguments, dict, list]:
    """(plugin configuration, input keys, warnings) to score a model with, given the scoring recipe and the keys
    saved with the model (``where``: that file).

    What the recipe leaves out is the model's run; what it sets must agree with the run on every key of
    :data:`REFUSED_DIFFERENCES` (else :class:`RunMismatch`, naming each key and both values) and gives a warning
    on a key of :data:`WARNED_DIFFERENCES`. Files saved before the input keys were recorded compare plugin keys only.
    """
    saved_plugin, trained = _plugin_keys(saved)
    asked = {k: v for k, v in recipe.items() if isinstance(k, str) and k.startswith(PREFIX)}
    if "iovqa_prompt_template_file" in asked:  # the saved template is the file's text: the recipe's file replaces it
        saved_plugin.pop("iovqa_prompt_template", None)
    iovqa_args = build_config({**saved_plugin, **asked}, output_dir=recipe.get("output_dir"))
    saved_inputs = {k: v for k, v in saved.items() if k in INPUT_KEYS}
    inputs = {**saved_inputs, **_inputs(recipe)}
    now = {**iovqa_args.to_recipe(), **inputs}
    before = {**trained.to_recipe(), **(saved_inputs if "template" in saved else inputs)}
    refused, warned = [], []
    for key in (*REFUSED_DIFFERENCES, *WARNED_DIFFERENCES):
        if before.get(key) != now.get(key):
            line = f"{key}: trained with {_shown(before.get(key))}, this recipe has {_shown(now.get(key))}"
            (refused if key in REFUSED_DIFFERENCES else warned).append(line)
    if refused:
        raise RunMismatch(
            f"the model was trained with other settings ({where}); scoring it with this recipe would change what "
            "it sees or how its answers are read:\n  " + "\n  ".join(refused) + "\nSet these keys to the trained "
            "values in the recipe, or delete them from it (what a scoring recipe leaves out is taken from "
            f"{os.path.basename(where)})."
        )
    warnings = [f"{line} (training only: the scores do not change; is this the recipe of this model?)"
                for line in warned]
    return iovqa_args, inputs, warnings


def _shown(value: Any) -> str:
    if value is None:
        return "(not set)"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
