"""Target: ``llamafactory.model.loader.init_adapter`` (looked up by load_model at call time)."""

from __future__ import annotations

import os
from typing import Any

from .run import active_run
from .support import patch_attribute
from .transformers_fixes import apply_transformers_fixes


def apply_init_adapter() -> None:
    """Attach the softmax-regression head before PEFT wraps the model; refuse to drop a trained head; fix the
    pinned transformers' GPU-path bugs (``transformers_fixes``) for plugin runs."""
    patch_attribute("llamafactory.model.loader", "init_adapter", _with_head)


def _with_head(original):
    def init_adapter(model_config: Any, model: Any, model_args: Any, finetuning_args: Any, is_trainable: bool):
        from iovqa_plugin.train.head import (
            EMBEDDING_MODULE,
            HEAD_MODULE,
            adapter_has_head,
            attach_head,
            checkpoint_head_keys,
            load_head_weights,
        )

        iovqa_args = active_run()
        if iovqa_args is not None:  # stock recipes keep stock transformers
            apply_transformers_fixes()
        head_on = iovqa_args is not None and iovqa_args.head_on
        adapters = list(model_args.adapter_name_or_path or [])
        with_head = [a for a in adapters if adapter_has_head(a)]
        merged_head = bool(checkpoint_head_keys(model_args.model_name_or_path)) if _is_local(model_args) else False
        if (with_head or merged_head) and not head_on:
            source = with_head[0] if with_head else model_args.model_name_or_path
            raise ValueError(
                f"{source} was trained with the softmax-regression head ({HEAD_MODULE}); loading it as a plain model "
                "would drop the head. Add `iovqa_head: softmax_regression` to the recipe (or score with a recipe "
                "that has it)."
            )
        if head_on:
            attach_head(model, iovqa_args.head_inner_size)
            if merged_head:
                load_head_weights(model, model_args.model_name_or_path)
            elif is_trainable and not adapters:
                head = (HEAD_MODULE, EMBEDDING_MODULE)
                # LoRA saves them as modules_to_save; freeze tuning must not freeze them
                targets = list(finetuning_args.additional_target or [])
                finetuning_args.additional_target = targets + [m for m in head if m not in targets]
                if finetuning_args.finetuning_type == "freeze":
                    extra = list(finetuning_args.freeze_extra_modules or [])
                    finetuning_args.freeze_extra_modules = extra + [m for m in head if m not in extra]
            elif not with_head and not is_trainable:
                raise ValueError(
                    f"iovqa_head is on but no trained head was found in {adapters or model_args.model_name_or_path}"
                )
        return original(model_config, model, model_args, finetuning_args, is_trainable)

    return init_adapter


def _is_local(model_args: Any) -> bool:
    return os.path.isdir(str(model_args.model_name_or_path))
