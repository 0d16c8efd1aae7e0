"""What the scorer needs from a training recipe, and what identifies a scoring run."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import IOVQAArguments
from ..recipe import load_run_config, split_recipe

# LLaMA-Factory keys of a recipe that change how a model is loaded or what its inputs are.
MODEL_KEYS = ("video_max_pixels", "video_min_pixels", "video_fps", "video_maxlen", "image_max_pixels",
              "image_min_pixels", "trust_remote_code", "infer_dtype", "cache_dir", "enable_thinking")
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
    plugin: IOVQAArguments = field(default_factory=IOVQAArguments)
    model_keys: dict = field(default_factory=dict)  # video pixels etc., passed to LLaMA-Factory
    note: str = ""  # how the model and adapter were chosen, for the user
    device: Optional[str] = None  # e.g. "cuda:1" for one rank of a data-parallel job; None: LLaMA-Factory's placement

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
            recipe, plugin = split_recipe(yaml.safe_load(handle))
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
        return cls(
            model=model or recipe["model_name_or_path"],
            adapter=adapter or None,
            template=recipe.get("template", "qwen2_vl"),
            plugin=plugin or load_run_config(adapter) or load_run_config(model) or IOVQAArguments(),
            model_keys={k: recipe[k] for k in MODEL_KEYS if k in recipe},
            note=note,
        )

    def identity(self) -> dict[str, Any]:
        """What makes two scoring runs give the same scores: model, adapter weights, template, inputs, plugin keys."""
        plugin = {k: v for k, v in self.plugin.to_recipe().items() if k not in _SCORE_NEUTRAL_KEYS}
        return {
            "model": _path_identity(self.model),
            "adapter": _path_identity(self.adapter) if self.adapter else None,
            "template": self.template,
            "model_keys": dict(sorted(self.model_keys.items())),
            "plugin": plugin,
        }


def _path_identity(path: str) -> Any:
    """A local folder by absolute path and the size and modification time of its weights (a retrained
    adapter at the same path is another model); a hub name as it is."""
    if not os.path.isdir(path):
        return path
    weights = sorted(glob.glob(os.path.join(path, "*.safetensors")) + glob.glob(os.path.join(path, "*.bin")))
    stamps = {os.path.basename(w): [os.path.getsize(w), os.stat(w).st_mtime_ns] for w in weights}
    return {"path": os.path.abspath(path), "weights": stamps}
