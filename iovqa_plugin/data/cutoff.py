"""An IOVQA sample must fit in ``cutoff_len`` whole.

LLaMA-Factory cuts a sample longer than ``cutoff_len`` to fit, taking tokens
off the end of the prompt first: the rest of the instruction, the assistant
header, even visual tokens. Training would then run on inputs that no longer
match what the scorer sends, so a sample that does not fit is an error that
names the row, its length and the limit.

The adapter names the annotation row (see ``patches.run.sample_origin``).
"""

from __future__ import annotations

class PromptCutError(ValueError):
    """An IOVQA sample longer than ``cutoff_len``."""


def check_fits(name: str, total: int, prompt: int, visual: int, cutoff_len: int) -> None:
    """Raise :class:`PromptCutError` unless ``total`` tokens fit in ``cutoff_len``."""
    if total <= cutoff_len:
        return
    raise PromptCutError(
        f"IOVQA sample {name} is {total} tokens long (prompt {prompt} tokens, {visual} of them visual; "
        f"response {total - prompt}) but cutoff_len is {cutoff_len}: LLaMA-Factory would cut it, so training "
        f"would not see the prompt the scorer sends. Raise cutoff_len (this sample needs {total}), or make the "
        "visual part smaller (lower video_max_pixels, or iovqa_num_frames)."
    )
