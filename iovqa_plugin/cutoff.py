"""An IOVQA sample must fit in ``cutoff_len`` whole.

LLaMA-Factory cuts a sample longer than ``cutoff_len`` to fit, taking tokens
off the end of the prompt first: the rest of the instruction, the assistant
header, even visual tokens. Training would then run on inputs that no longer
match what the scorer sends, so a sample that does not fit is an error that
names the row, its length and the limit.

The error names the annotation row through the sample's frame files, which
the formatter records when it builds the samples (:func:`remember_origins`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

# first frame file of a sample -> "file row N (video 'id')"; filled by the formatter, read in error messages
_ORIGINS: dict[str, str] = {}


class PromptCutError(ValueError):
    """An IOVQA sample longer than ``cutoff_len``."""


def remember_origins(samples: Iterable) -> None:
    """Record where each sample (an annotations.Sample with frames) comes from, for :func:`sample_name`."""
    for sample in samples:
        if sample.frames:
            _ORIGINS[sample.frames[0]] = f"{sample.file} row {sample.row} (video {sample.video!r})"


def sample_name(videos: Sequence) -> str:
    """The annotation row of a sample, given its videos (lists of frame files)."""
    firsts = [v[0] if isinstance(v, (list, tuple)) and v else v for v in videos or ()]
    for first in firsts:
        if isinstance(first, str) and first in _ORIGINS:
            return _ORIGINS[first]
    return f"with frames {firsts}" if firsts else "without video"


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
