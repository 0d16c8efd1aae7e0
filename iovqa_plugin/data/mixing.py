"""Stock datasets mixed into an IOVQA run (free-text questions and answers about a video or image, VQA²-style).

An ``iovqa`` dataset gives LLaMA-Factory each video as its list of cached
frames; a stock (alpaca / sharegpt) dataset gives a video file. The two
cannot be concatenated (``datasets`` refuses a column that is a list of
paths in one dataset and a list of lists in the other), so in a run that
mixes them the stock samples' video files are sampled by the plugin too:
the same frames (``iovqa_num_frames``, strategy, format) as the scored
samples, which is also what a question about a scored video should see.
They are cached under their own folder (:data:`STOCK_FOLDER` of the frame
cache), so a question's frames are never the files of an IOVQA sample and
the collator still tells the two kinds of rows apart (``patches.run``).
Images need nothing: both kinds give a list of image files.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .frames import FrameCache, FrameSpec, extract_many

STOCK_FOLDER = "mixed_datasets"


class MixedVideoError(ValueError):
    """Videos of a stock dataset mixed into the run that cannot be read (every one is listed)."""


def stock_frame_cache(iovqa_args: Any) -> FrameCache:
    """The frame cache of the stock datasets' videos (the run's frame settings, its own folder)."""
    spec = FrameSpec(iovqa_args.num_frames, iovqa_args.frame_strategy, iovqa_args.frame_format)
    return FrameCache(os.path.join(iovqa_args.cache_dir, STOCK_FOLDER), spec)


def sample_video_files(videos: list[str], iovqa_args: Any, progress: bool = True) -> dict[str, list[str]]:
    """{video file: its cached frames} for a stock dataset's videos; :class:`MixedVideoError` lists the bad ones."""
    results = extract_many(videos, stock_frame_cache(iovqa_args), workers=iovqa_args.frame_workers, progress=progress,
                           desc="iovqa frames (mixed datasets)")
    bad = {video: error for video, (_, error) in results.items() if error is not None}
    if bad:
        shown = "\n  ".join(f"{video}: {error}" for video, error in list(bad.items())[:20])
        raise MixedVideoError(f"{len(bad)} video(s) of a dataset mixed into the IOVQA run cannot be read:\n  {shown}")
    return {video: frames for video, (frames, _) in results.items()}


def as_frame_lists(videos: Optional[list], frames_of: dict[str, list[str]]) -> Optional[list[list[str]]]:
    """A stock sample's ``_videos`` (file paths) as frame lists; None stays None."""
    if not videos:
        return None
    return [frames_of[video] for video in videos]
