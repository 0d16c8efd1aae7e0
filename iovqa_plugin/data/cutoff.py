"""An IOVQA sample must fit in ``cutoff_len`` whole.

LLaMA-Factory cuts a sample longer than ``cutoff_len`` to fit, taking tokens
off the end of the prompt first: the rest of the instruction, the assistant
header, even visual tokens. Training would then run on inputs that no longer
match what the scorer sends, so samples that do not fit are an error that
names every such row, its length and the limit, and the ``cutoff_len`` that
fits them all (one fix, not one run per row).

The adapter measures the samples and names their annotation rows (see
``patches.processor`` and ``patches.run.sample_origin``).
"""

from __future__ import annotations

from dataclasses import dataclass

_SHOWN = 20


class PromptCutError(ValueError):
    """IOVQA samples longer than ``cutoff_len``."""


@dataclass(frozen=True)
class SampleLength:
    """One encoded sample's length in tokens."""

    origin: str  # its annotation row, e.g. "train.csv row 3 (video 'a.mp4')"
    total: int
    prompt: int
    visual: int  # of the prompt's tokens

    def __str__(self) -> str:
        return (f"{self.origin}: {self.total} tokens (prompt {self.prompt} tokens, {self.visual} of them visual; "
                f"response {self.total - self.prompt})")


def check_fits(samples: list[SampleLength], cutoff_len: int) -> None:
    """Raise :class:`PromptCutError` naming every sample longer than ``cutoff_len``."""
    long = [s for s in samples if s.total > cutoff_len]
    if not long:
        return
    shown = "\n  ".join(str(s) for s in long[:_SHOWN])
    more = f"\n  ... and {len(long) - _SHOWN} more" if len(long) > _SHOWN else ""
    needed = max(s.total for s in long)
    raise PromptCutError(
        f"{len(long)} IOVQA sample(s) longer than cutoff_len {cutoff_len}: LLaMA-Factory would cut them, so "
        f"training would not see the prompt the scorer sends:\n  {shown}{more}\n"
        f"cutoff_len: {needed} fits them all (the longest sample); or make the visual part smaller (lower "
        "video_max_pixels, or iovqa_num_frames)."
    )
