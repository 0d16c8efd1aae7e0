"""What a training run checks before it loads the model, run without loading it (``iovqa prepare``).

The recipe is read by LLaMA-Factory's own ``get_train_args`` (the plugin's keys
and recipe checks included), then the tokenizer, the template and every
dataset of the recipe are built by the very functions ``run_sft`` calls (with
the plugin's patches): annotation rows, frames, the template's support and
samples longer than ``cutoff_len`` are checked exactly as training checks them.
Keys that only choose the device and precision of the model (which is never
loaded here) are left out, so the check runs on a machine without the
training's GPUs or launcher.
"""

from __future__ import annotations

from .run import run_scope

# Recipe keys that only concern the model's device, precision or launch: they change no sample.
_DEVICE_KEYS = {"deepspeed": None, "fp16": False, "bf16": False, "pure_bf16": False, "use_cpu": True}


def training_args(recipe: dict) -> tuple:
    """LLaMA-Factory's (model, data, training, finetuning, generating) arguments of a training recipe."""
    from llamafactory.hparams import get_train_args

    checked = {**recipe, **_DEVICE_KEYS}
    return get_train_args({k: v for k, v in checked.items() if v is not None})


def check_training_data(recipe: dict) -> dict[str, int]:
    """Build the recipe's datasets as training does, up to the model; {split: samples}."""
    from . import apply_all

    apply_all()
    from llamafactory.train.sft import workflow  # its patched tokenizer, template and dataset builders

    with run_scope(None):  # the recipe's run, for this check only
        model_args, data_args, train_args, _, _ = training_args(recipe)
        tokenizer_module = workflow.load_tokenizer(model_args)
        template = workflow.get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
        datasets = workflow.get_dataset(template, model_args, data_args, train_args, stage="sft", **tokenizer_module)
    counts = {}
    for split in ("train", "eval"):
        found = datasets.get(f"{split}_dataset")
        if found is not None:
            counts[split] = sum(len(d) for d in found.values()) if isinstance(found, dict) else len(found)
    return counts
