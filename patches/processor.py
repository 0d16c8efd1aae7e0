"""Target: ``SupervisedDatasetProcessor._encode_data_example`` (training and evaluation samples).

LLaMA-Factory fits a sample into ``cutoff_len`` by cutting it (``infer_seqlen``),
the prompt first. For an IOVQA run that is an error instead (see
``iovqa_plugin.data.cutoff``): the sample is encoded uncut, then checked.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from .run import active_run, sample_origin
from .support import PatchTargetError, is_patched, mark_patched, target

PROCESSOR = "llamafactory.data.processor.supervised"
_UNLIMITED = sys.maxsize


def apply_supervised_cutoff_check() -> None:
    """Make IOVQA runs refuse a training or evaluation sample that ``cutoff_len`` would cut."""
    _, processor_class = target(PROCESSOR, "SupervisedDatasetProcessor")
    original = processor_class.__dict__.get("_encode_data_example")
    if original is None:
        raise PatchTargetError(f"{PROCESSOR}.SupervisedDatasetProcessor._encode_data_example not found")
    if not is_patched(original):
        processor_class._encode_data_example = mark_patched(_checked(original), original)


def _checked(original):
    def _encode_data_example(self: Any, prompt, response, system, tools, images, videos, audios):
        if active_run() is None:
            return original(self, prompt, response, system, tools, images, videos, audios)
        from iovqa_plugin.data.cutoff import check_fits

        # Encode with no limit (a shallow copy: the processor's own settings are untouched); a sample that fits
        # comes out exactly as LLaMA-Factory would encode it, one that does not is refused before any cut.
        uncut = copy.copy(self)
        uncut.data_args = copy.copy(self.data_args)
        uncut.data_args.cutoff_len = _UNLIMITED
        input_ids, labels = original(uncut, prompt, response, system, tools, images, videos, audios)
        limit = self.data_args.cutoff_len
        if len(input_ids) > limit:
            prompt_length, visual = _prompt_length(labels), _visual_tokens(self, input_ids)
            check_fits(sample_origin(videos), len(input_ids), prompt_length, visual, limit)
        return input_ids, labels

    return _encode_data_example


def _prompt_length(labels: list[int]) -> int:
    from llamafactory.extras.constants import IGNORE_INDEX

    masked = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    return masked or len(labels)  # train_on_prompt: the prompt is not masked, count the whole sample


def _visual_tokens(processor: Any, input_ids: list[int]) -> int:
    plugin = processor.template.mm_plugin
    ids = {processor.tokenizer.convert_tokens_to_ids(t) for t in (plugin.image_token, plugin.video_token) if t}
    return sum(1 for token in input_ids if token in ids)
