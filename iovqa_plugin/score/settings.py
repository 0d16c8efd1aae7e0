"""What the scorer needs from a training recipe, and what identifies a scoring run."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import IOVQAArguments
from .modes import Sampling
from ..recipe import RUN_CONFIG_FILE, INPUT_KEYS, compare_with_run, load_run_keys, split_recipe

# LLaMA-Factory keys of a recipe that change how a model is loaded or what its inputs are.
MODEL_KEYS = tuple(k for k in INPUT_KEYS if k != "template") + ("trust_remote_code", "infer_dtype", "cache_dir")
# Plugin keys that change nothing in a score (where frames are cached, how bad rows of training data are handled).
_SCORE_NEUTRAL_KEYS = ("iovqa_frame_cache_dir", "iovqa_frame_workers", "iovqa_on_bad_row", "iovqa_skip_report")


class SettingsError(ValueError):
    """A scoring request that cannot be served as asked."""


@dataclass
class ScorerSettings:
    """The model to load and how its inputs are built."""

    model: str
    adapter: Optional[str]
    template: str = "qwen2_vl"
    iovqa_args: IOVQAArguments = field(default_factory=IOVQAArguments)
    model_keys: dict = field(default_factory=dict)  # video pixels etc., passed to LLaMA-Factory
    note: str = ""  # how the model and adapter were chosen, for the user
    device: Optional[str] = None  # e.g. "cuda:1" for one rank of a data-parallel job; None: LLaMA-Factory's placement
    warnings: list = field(default_factory=list)  # what the user should know about this choice of model and keys
    sampling: Sampling = field(default_factory=Sampling)  # --mode sampled: how many answers, temperature, seed

    @classmethod
    def from_recipe(cls, recipe_path: str, model: Optional[str] = None, adapter: Optional[str] = None):
        """Settings of a training recipe.

        A LoRA recipe's adapter defaults to its ``output_dir``, except when ``model`` is given: a model passed
        explicitly (typically a merged export, which already holds the adapter's weights) is scored as it is,
        and an adapter is added on top of it only when ``adapter`` is given too. A full or freeze fine-tuning
        recipe saves a whole model: its ``output_dir`` is the model to score.
        """
        import yaml

        with open(recipe_path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
        recipe, iovqa_args = split_recipe(raw)
        whole_model = recipe.get("finetuning_type", "lora") in ("full", "freeze")
        if whole_model and model is None and adapter is None:
            model, adapter = recipe.get("output_dir"), ""
            note = f"the fine-tuned model in {model} (the recipe's output_dir, {recipe['finetuning_type']} tuning)"
            if not os.path.isfile(os.path.join(model or "", "config.json")):
                raise SettingsError(f"{model}: no fine-tuned model there (config.json missing); train first")
        elif model is not None and adapter is None:
            adapter = ""
            note = f"--model {model} is scored as it is (no adapter added; pass --adapter to add one)"
        elif adapter is None:
            adapter = recipe.get("output_dir") or ""
            note = f"adapter {adapter} (the recipe's output_dir)" if adapter else "no adapter"
        else:
            note = f"adapter {adapter}" if adapter else "no adapter"
        if adapter and not os.path.isfile(os.path.join(adapter, "adapter_config.json")):
            raise SettingsError(f"{adapter}: no trained adapter there (adapter_config.json missing); train first, "
                                "or pass --adapter ''")
        model = model or recipe["model_name_or_path"]
        warnings = _stacked_adapter(model, adapter) if adapter else []
        inputs = dict(recipe)
        for where in (adapter, model):  # the run's keys: next to its adapter, or in a fine-tuned model's folder
            saved = load_run_keys(where)
            if saved is not None:
                iovqa_args, inputs, differences = compare_with_run(raw, saved, os.path.join(where, RUN_CONFIG_FILE))
                inputs = {**recipe, **inputs}
                warnings += differences
                break
        return cls(
            model=model,
            adapter=adapter or None,
            template=inputs.get("template", "qwen2_vl"),
            iovqa_args=iovqa_args or IOVQAArguments(),
            model_keys={k: inputs[k] for k in MODEL_KEYS if k in inputs},
            note=note,
            warnings=warnings,
        )

    def identity(self) -> dict[str, Any]:
        """What makes two scoring runs give the same scores: model, adapter weights, template, inputs, plugin keys."""
        keys = {k: v for k, v in self.iovqa_args.to_recipe().items() if k not in _SCORE_NEUTRAL_KEYS}
        return {
            "model": _path_identity(self.model),
            "adapter": _path_identity(self.adapter) if self.adapter else None,
            "template": self.template,
            "model_keys": dict(sorted(self.model_keys.items())),
            "plugin": keys,
        }


def _stacked_adapter(model: str, adapter: str) -> list[str]:
    """A warning when the adapter was trained on another model than the one it is added to (a merged export
    already holds the adapter's weights: adding them again scores another model)."""
    import json

    try:
        with open(os.path.join(adapter, "adapter_config.json"), encoding="utf-8") as handle:
            base = json.load(handle).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return []
    if not base or _same_model(base, model):
        return []
    return [f"the adapter {adapter} was trained on {base}, and is added to {model}: if that is a merged export of "
            "this adapter, its weights are applied twice (score a merged export with --model alone, no --adapter)"]


def _same_model(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return a.rstrip("/") == b.rstrip("/")


def _path_identity(path: str) -> Any:
    """A local folder by absolute path and the size and modification time of its weights (a retrained
    adapter at the same path is another model); a hub name as it is."""
    if not os.path.isdir(path):
        return path
    weights = sorted(glob.glob(os.path.join(path, "*.safetensors")) + glob.glob(os.path.join(path, "*.bin")))
    stamps = {os.path.basename(w): [os.path.getsize(w), os.stat(w).st_mtime_ns] for w in weights}
    return {"path": os.path.abspath(path), "weights": stamps}
