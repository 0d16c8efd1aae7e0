"""Targets: ``SupervisedDatasetProcessor._encode_data_example`` (training and evaluation samples) and
``print_data_example`` (LLaMA-Factory's example sample, followed by what the label mask trains on), and
``llamafactory.data.loader._get_preprocessed_dataset`` (looked up at call time by ``get_dataset``).

LLaMA-Factory fits a sample into ``cutoff_len`` by cutting it (``infer_seqlen``),
the prompt first. For an IOVQA run that is an error instead (see
``iovqa_plugin.data.cutoff``): each sample is encoded uncut, and once the whole
dataset is encoded every sample that does not fit is reported at once. A
streamed or packed dataset is never held whole: there the first long sample
stops the run.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from .run import active_run, run_samples, sample_media, sample_origin
from .support import PatchTargetError, is_patched, mark_patched, patch_attribute, target

PROCESSOR = "llamafactory.data.processor.supervised"
LOADER = "llamafactory.data.loader"
_UNLIMITED = sys.maxsize


def apply_supervised_cutoff_check() -> None:
    """Make IOVQA runs keep a training or evaluation sample that ``cutoff_len`` would cut uncut (reported)."""
    _patch_processor_method("_encode_data_example", _checked)


def apply_preprocessed_cutoff_report() -> None:
    """Make IOVQA runs refuse, once the dataset is encoded, every sample longer than ``cutoff_len``."""
    patch_attribute(LOADER, "_get_preprocessed_dataset", _reporting_long_samples)


def apply_supervised_example_log() -> None:
    """Follow LLaMA-Factory's example sample (whose `labels:` are before the label mask) with what it trains on."""
    _patch_processor_method("print_data_example", _with_masked_labels)


def _patch_processor_method(name: str, make: Any) -> None:
    """Replace ``SupervisedDatasetProcessor.<name>`` (its own, not an inherited one) by ``make(original)``, once."""
    _, processor_class = target(PROCESSOR, "SupervisedDatasetProcessor")
    original = processor_class.__dict__.get(name)
    if original is None:
        raise PatchTargetError(f"{PROCESSOR}.SupervisedDatasetProcessor.{name} not found")
    if not is_patched(original):
        setattr(processor_class, name, mark_patched(make(original), original))


def _with_masked_labels(original):
    def print_data_example(self: Any, example: dict) -> None:
        original(self, example)
        iovqa_args = active_run()
        if iovqa_args is None or not iovqa_args.mask_on:
            return
        if not run_samples([sample_media(example)])[0]:
            print("iovqa label mask: this example is of a dataset mixed into the run (not formatting iovqa): it keeps "
                  "the `labels:` above" + (" (a yes/no answer: its word only)" if iovqa_args.yes_no_mask else ""))
            return
        import torch

        from iovqa_plugin.train.mask import LabelMaskError, trained_texts

        from .collator import RowMask, is_comparison

        try:
            masked = RowMask(iovqa_args, self.template, self.tokenizer)(torch.tensor([example["labels"]]),
                                                                         [is_comparison(example)])
        except LabelMaskError as err:  # the collator stops the run on it, naming the batch
            print(f"iovqa label mask: this example holds no complete score ({err})")
            return
        names = iovqa_args.dimension_names if iovqa_args.joint else ()
        print(f"iovqa label mask: trains on {trained_texts(masked, self.tokenizer, names)[0]!r} only (the `labels:` "
              "above are LLaMA-Factory's, before the mask: the template's end of turn and the rest are not trained)")

    return print_data_example


def _checked(original):
    def _encode_data_example(self: Any, prompt, response, system, tools, images, videos, audios):
        if active_run() is None:
            return original(self, prompt, response, system, tools, images, videos, audios)
        from iovqa_plugin.data.cutoff import check_fits

        # Encode with no limit (a shallow copy: the processor's own settings are untouched); a sample that fits
        # comes out exactly as LLaMA-Factory would encode it, one that does not is kept uncut for the report.
        uncut = copy.copy(self)
        uncut.data_args = copy.copy(self.data_args)
        uncut.data_args.cutoff_len = _UNLIMITED
        input_ids, labels = original(uncut, prompt, response, system, tools, images, videos, audios)
        if self.data_args.streaming or self.data_args.packing:  # no whole dataset to report on: stop here
            check_fits([_length(self.template, self.tokenizer, input_ids, labels, videos or images)],
                       self.data_args.cutoff_len)
        return input_ids, labels

    return _encode_data_example


def _reporting_long_samples(original):
    def _get_preprocessed_dataset(dataset, data_args, training_args, stage, template, tokenizer, processor=None,
                                  is_eval=False):
        encoded = original(dataset, data_args, training_args, stage, template, tokenizer, processor, is_eval)
        if (active_run() is None or encoded is None or data_args.streaming or data_args.packing
                or "input_ids" not in encoded.column_names):  # another stage's pairs, or nothing to check
            return encoded
        from iovqa_plugin.data.cutoff import check_fits

        limit = data_args.cutoff_len
        long = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) > limit]
        check_fits([_length(template, tokenizer, encoded[i]["input_ids"], encoded[i]["labels"], sample_media(encoded[i]))
                    for i in long], limit)
        return encoded

    return _get_preprocessed_dataset


def _length(template: Any, tokenizer: Any, input_ids: list[int], labels: list[int], media: Any):
    from iovqa_plugin.data.cutoff import SampleLength

    return SampleLength(sample_origin(media), len(input_ids), _prompt_length(labels),
                        _visual_tokens(template, tokenizer, input_ids))


def _prompt_length(labels: list[int]) -> int:
    from llamafactory.extras.constants import IGNORE_INDEX

    masked = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    return masked or len(labels)  # train_on_prompt: the prompt is not masked, count the whole sample


def _visual_tokens(template: Any, tokenizer: Any, input_ids: list[int]) -> int:
    plugin = template.mm_plugin
    ids = {tokenizer.convert_tokens_to_ids(t) for t in (plugin.image_token, plugin.video_token) if t}
    return sum(1 for token in input_ids if token in ids)
