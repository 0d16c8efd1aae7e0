"""Target: ``llamafactory.data.loader.merge_dataset`` (bound at import, looked up by ``_get_merged_dataset`` at
call time).

In an IOVQA run whose ``dataset`` list mixes ``iovqa`` datasets (videos as lists of cached frames) with stock
ones (videos as files), the stock videos are sampled into frame lists before the datasets are concatenated
(see ``iovqa_plugin.data.mixing``); any other merge is LLaMA-Factory's own.
"""

from __future__ import annotations

from typing import Any

from .support import patch_attribute

LOADER = "llamafactory.data.loader"


def apply_mixed_video_merge() -> None:
    """Make an IOVQA run merge stock datasets with video files into a run whose iovqa videos are frame lists."""
    patch_attribute(LOADER, "merge_dataset", _with_stock_videos_sampled)


def _video_feature(dataset: Any) -> str:
    """"frames" (a list of lists of files), "files" (a list of files), or "" (no videos)."""
    feature = (getattr(dataset, "features", None) or {}).get("_videos")
    inner = getattr(feature, "feature", None)
    if inner is None:
        return ""
    return "frames" if getattr(inner, "feature", None) is not None else "files"


def _with_stock_videos_sampled(original):
    def merge_dataset(all_datasets: list, data_args: Any, seed: int):
        from .run import active_run

        iovqa_args = active_run()
        kinds = [_video_feature(d) for d in all_datasets]
        if iovqa_args is None or "frames" not in kinds or "files" not in kinds:
            return original(all_datasets, data_args, seed)
        from iovqa_plugin.data.mixing import as_frame_lists, sample_video_files

        converted = []
        for dataset, kind in zip(all_datasets, kinds):
            if kind == "files":
                videos = sorted({v for row in dataset["_videos"] if row for v in row})
                frames_of = sample_video_files(videos, iovqa_args)
                dataset = dataset.map(lambda example: {"_videos": as_frame_lists(example["_videos"], frames_of)},
                                      desc="iovqa: videos of a mixed dataset as frames")
            converted.append(dataset)
        return original(converted, data_args, seed)

    return merge_dataset
