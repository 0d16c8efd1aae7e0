"""Every touch of LLaMA-Factory internals, one named function per target.

Installed as ``iovqa_plugin.patches``. Each ``apply_*`` function checks that
the installed LLaMA-Factory is a supported version and that its target still
exists, and is idempotent (applying twice changes nothing). The start-up hook
(``iovqa_plugin._autoload``) calls them as LLaMA-Factory's modules are
imported; ``apply_all()`` calls them all at once.

The patches only add: with no ``iovqa_*`` key in a recipe, every patched
target behaves exactly like the original. ``transformers_fixes`` (the pinned
transformers' fa2 crash and Qwen2-VL/2.5-VL video positions) is applied by the
patched ``init_adapter`` when a plugin run loads its model, not at import.

This package is the one LLaMA-Factory adapter: besides the patches it holds
the subclasses of LLaMA-Factory classes (``formatter``, ``collator``,
``trainer``), the run in progress (``run``: the only reader of the active
recipe's plugin keys, which it passes to what it builds) and the inference
loader the scorer uses (``inference``). It imports the domain modules of
``iovqa_plugin`` (data, train), never its applications (scoring, cli, demo).
"""

from __future__ import annotations

import sys

from .converter import apply_dataset_converter
from .launcher import apply_launcher_launch
from .loader import apply_annotation_loader, apply_dataset_entry_columns
from .mixing import apply_mixed_video_merge
from .parser import apply_parser_read_args
from .processor import apply_preprocessed_cutoff_report, apply_supervised_cutoff_check, apply_supervised_example_log
from .model_loader import apply_init_adapter
from .sft_workflow import apply_sft_collator, apply_sft_load_tokenizer, apply_sft_template_check, apply_sft_trainer
from .support import SUPPORTED_LLAMAFACTORY, PatchTargetError, UnsupportedVersionError, check_version
from .tuner import apply_tuner_read_args, apply_tuner_run_exp

# module imported -> the patch that targets it
PATCHES = {
    "llamafactory.hparams.parser": (apply_parser_read_args,),
    "llamafactory.launcher": (apply_launcher_launch,),
    "llamafactory.data.converter": (apply_dataset_converter,),
    "llamafactory.data.loader": (
        apply_annotation_loader, apply_dataset_entry_columns, apply_preprocessed_cutoff_report, apply_mixed_video_merge
    ),
    "llamafactory.data.processor.supervised": (apply_supervised_cutoff_check, apply_supervised_example_log),
    "llamafactory.model.loader": (apply_init_adapter,),
    "llamafactory.train.sft.workflow": (
        apply_sft_collator, apply_sft_load_tokenizer, apply_sft_template_check, apply_sft_trainer
    ),
    "llamafactory.train.tuner": (apply_tuner_read_args, apply_tuner_run_exp),
}

_WARNED = []


def apply_all() -> None:
    """Apply every patch now (imports the LLaMA-Factory modules concerned)."""
    for patches in PATCHES.values():
        for patch in patches:
            patch()


def on_module_imported(name: str, module) -> None:
    """Called by the start-up hook right after ``name`` was imported.

    A failing patch must not break stock LLaMA-Factory for recipes that do not
    use the plugin, so it is reported on stderr instead of raised.
    """
    for patch in PATCHES.get(name, ()):
        try:
            patch()
        except (UnsupportedVersionError, PatchTargetError) as err:
            if str(err) not in _WARNED:
                _WARNED.append(str(err))
                print(f"[iovqa] WARNING plugin not applied: {err}", file=sys.stderr)


__all__ = [
    "PATCHES",
    "SUPPORTED_LLAMAFACTORY",
    "PatchTargetError",
    "UnsupportedVersionError",
    "apply_all",
    "apply_annotation_loader",
    "apply_dataset_converter",
    "apply_dataset_entry_columns",
    "apply_init_adapter",
    "apply_launcher_launch",
    "apply_mixed_video_merge",
    "apply_parser_read_args",
    "apply_preprocessed_cutoff_report",
    "apply_sft_collator",
    "apply_sft_load_tokenizer",
    "apply_sft_template_check",
    "apply_sft_trainer",
    "apply_supervised_cutoff_check",
    "apply_supervised_example_log",
    "apply_tuner_read_args",
    "apply_tuner_run_exp",
    "check_version",
    "on_module_imported",
]
