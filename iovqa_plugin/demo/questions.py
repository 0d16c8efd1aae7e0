"""Quality questions and answers about the demo ladder's training videos (a stock LLaMA-Factory dataset).

What VQA² mixes into a scoring run, on the testbed: for every training
video, a yes/no question (VQ-Insight's kind: "Is the video free of visible
degradation?") and a free-text one whose answer names the video's
degradations and their strength, both read from the ladder's video name. An
alpaca file (``instruction``, ``output``, ``videos``) that
``examples/vqa2_mixed_cpu.yaml`` lists next to the scored samples.
"""

from __future__ import annotations

import json
import os

from .ladder import DEGRADATIONS, MIXED, MIXED_STRENGTHS, video_degradation

QUESTIONS_FILE = "questions.json"
YES_NO_QUESTION = "<video>Is the video free of visible degradation? Answer yes or no."
DESCRIBE_QUESTION = "<video>Describe the quality problems of the video, if any."
NEUTRAL = {"blur": (0, 0.0, None), "noise": (0, 0.0, None), "blocking": (None,), "downscale": (1, None),
           "drop": (1, None)}  # strengths that leave a frame as it is (see ladder.degrade_frame)
WORDS = {"blur": "blur", "noise": "noise", "blocking": "blocking artefacts", "downscale": "loss of detail",
         "drop": "dropped frames"}


def _degradations(kind: str | None, level: int) -> list[str]:
    """The degradation kinds a ladder video shows (``mixed``: those with an effect at its level)."""
    if level == 0 or kind is None:
        return []
    if kind != MIXED:
        return [kind]
    return [k for k in DEGRADATIONS if MIXED_STRENGTHS[k][level - 1] not in NEUTRAL[k]]


def answers(video: str) -> tuple[str, str]:
    """(yes/no answer, description) of a ladder video, from its name."""
    kind, level = video_degradation(video)
    found = _degradations(kind, level)
    if not found:
        return "Yes", "None: the video is sharp, clean and smooth."
    listed = ", ".join(WORDS[k] for k in found)
    return "No", f"{listed[0].upper()}{listed[1:]}, at strength {level} of 4."


def make_questions(demo_dir: str, media_root: str, split: str = "train") -> str:
    """Write ``questions.json`` (two questions per video of the split); its path."""
    import pandas as pd

    rows = []
    for video in pd.read_csv(os.path.join(demo_dir, f"{split}.csv"))["video_name"]:
        yes_no, description = answers(video)
        rows.append({"instruction": YES_NO_QUESTION, "output": yes_no, "videos": [video]})
        rows.append({"instruction": DESCRIBE_QUESTION, "output": description, "videos": [video]})
    path = os.path.join(demo_dir, QUESTIONS_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=1)
    return path
