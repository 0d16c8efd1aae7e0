"""The demo ladder's stills: each video's middle frame as a PNG image with the video's prompt and MOS.

An image dataset on the testbed for the image warm-up recipes
(``examples/image_warmup_cpu.yaml``: images first, then videos, as Q-Align
and VQ-Insight do) and for the learning benchmark's warm-up arm. The frame
is the one ``iovqa_num_frames: 1`` samples (the middle frame), so a still
carries its video's spatial degradations and none of its temporal ones.
"""

from __future__ import annotations

import os

STILLS_FOLDER = "stills"


def still_name(video: str) -> str:
    return os.path.splitext(os.path.basename(video))[0] + ".png"


def make_stills(demo_dir: str, media_root: str, splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, str]:
    """Write ``stills/`` and ``stills_<split>.csv`` next to the ladder's ``<split>.csv``; {split: annotation path}."""
    import pandas as pd

    from ..data.frames import FrameSpec, extract_frames

    folder = os.path.join(demo_dir, STILLS_FOLDER)
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for split in splits:
        table = pd.read_csv(os.path.join(demo_dir, f"{split}.csv"))
        stills = []
        for video in table["video_name"]:
            target = os.path.join(folder, still_name(video))
            if not os.path.isfile(target):
                extract_frames(os.path.join(media_root, video), FrameSpec(1, "segment"))[0].save(target, format="PNG")
            stills.append(os.path.relpath(target, media_root))
        table["video_name"] = stills
        paths[split] = os.path.join(demo_dir, f"stills_{split}.csv")
        table.to_csv(paths[split], index=False)
    return paths
