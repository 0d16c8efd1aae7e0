"""What the tiny model can see of each degradation kind on the benchmark ladder, before any training.

    python bench/ladder_probes.py [--work work/bench_learning]

* dropped frames: the 2 segment frames the plugin samples from each dropped-frames video against those of the
  source's pristine video (mean absolute difference, grey levels; and the ratio of their frame-difference
  energy), next to blur level 1 for scale;
* a ridge probe on the untrained vision tower's output for those 2 frames (mean and sd over its tokens), fitted
  on the train split (ridge strength chosen on val), read on the held-out split: SRCC overall, and per kind on
  the videos degraded by that kind alone plus the pristine ones (within source / pooled), the ceiling of a
  linear readout of what the first stage carries;
* the ceiling a model blind to dropped frames has: the held-out SRCC of each video's true level (a perfect
  reader of every other kind) when the dropped-frames videos are read as pristine, or as dropped at no
  particular level;
* with the frames sampled as one adjacent pair (`iovqa_frame_strategy: pairs`), how much the pair's two frames
  differ, per dropped-frames level and on the pristine videos.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def sampled(root: str, name: str, spec):
    import numpy as np

    from iovqa_plugin.data.frames import extract_frames

    return [np.asarray(frame, dtype=float) for frame in extract_frames(os.path.join(root, name), spec)]


def dropped_frames(root: str, table, spec) -> None:
    import numpy as np
    import pandas as pd

    from iovqa_plugin.demo.ladder import video_degradation

    rows = []
    for name in table["video_name"]:
        kind, level = video_degradation(name)
        if kind in ("drop", "blur") and (kind == "drop" or level == 1):
            frames = sampled(root, name, spec)
            pristine = sampled(root, name.rsplit("_L", 1)[0] + "_L0.mp4", spec)
            difference = max(np.abs(a - b).mean() for a, b in zip(frames, pristine))
            motion = np.abs(frames[0] - frames[-1]).mean() / max(np.abs(pristine[0] - pristine[-1]).mean(), 1e-9)
            rows.append((kind, level, difference, motion))
    result = pd.DataFrame(rows, columns=["kind", "level", "mean abs difference to the pristine video's frames",
                                         "frame-difference energy / pristine's"])
    print(result.groupby(["kind", "level"]).mean().round(3).to_string())


def blind_ceilings(table) -> None:
    import numpy as np
    from scipy.stats import spearmanr

    from iovqa_plugin.demo.ladder import video_degradation

    kinds, levels = zip(*map(video_degradation, table["video_name"]))
    levels, dropped = np.asarray(levels, dtype=float), (np.asarray(kinds) == "drop")
    mos = table["Overall_MOS"]
    readings = {
        "every level known": levels,
        "dropped frames read as pristine": np.where(dropped, 0.0, levels),
        "dropped frames seen, their level not (read as level 2.5)": np.where(dropped, 2.5, levels),
    }
    print("held-out SRCC of the true level: " + "; ".join(
        f"{name} {spearmanr(-reading, mos).statistic:.3f}" for name, reading in readings.items()))


def pair_differences(root: str, table) -> None:
    import numpy as np
    import pandas as pd

    from iovqa_plugin.data.frames import FrameSpec
    from iovqa_plugin.demo.ladder import video_degradation

    spec, rows = FrameSpec(num_frames=2, strategy="pairs"), []
    for name in table["video_name"]:
        kind, level = video_degradation(name)
        if kind == "drop" or level == 0:
            first, second = sampled(root, name, spec)
            rows.append((kind or "pristine", level, np.abs(first - second).mean()))
    result = pd.DataFrame(rows, columns=["kind", "level", "mean abs difference between the pair's frames"])
    print(result.groupby(["kind", "level"]).agg(["mean", "min", "max"]).round(3).to_string())


def ridge_probe(root: str, model_dir: str, spec) -> None:
    import numpy as np
    import pandas as pd
    import torch
    from scipy.stats import spearmanr
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from iovqa_plugin.demo.ladder import KINDS, video_degradation

    processor = AutoProcessor.from_pretrained(model_dir)
    visual = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval().model.visual

    def features(name: str):
        inputs = processor.video_processor(videos=[[f.astype(np.uint8) for f in sampled(root, name, spec)]],
                                           return_tensors="pt")
        with torch.no_grad():
            out = visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"])
        out = out if torch.is_tensor(out) else out.pooler_output
        return torch.cat([out.mean(0), out.std(0)]).numpy()

    splits = {}
    for split in ("train", "val", "test"):
        table = pd.read_csv(os.path.join(root, f"{split}.csv"))
        splits[split] = (table, np.stack([features(name) for name in table["video_name"]]))
    (train, x_train), (val, x_val), (test, x_test) = splits["train"], splits["val"], splits["test"]
    mean, scale = x_train.mean(0), x_train.std(0) + 1e-8
    z = (x_train - mean) / scale
    y = train["Overall_MOS"].to_numpy()
    best = None
    for alpha in np.logspace(-3, 4, 15):
        weights = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
        fit = spearmanr(((x_val - mean) / scale) @ weights, val["Overall_MOS"]).statistic
        best = max(best or (fit, weights), (fit, weights), key=lambda pair: pair[0])
    videos = test.assign(pred=((x_test - mean) / scale) @ best[1])
    videos["kind"], videos["level"] = zip(*map(video_degradation, videos["video_name"]))
    videos["source"] = [name.rsplit("_L", 1)[0] for name in videos["video_name"]]
    cells = [f"all {spearmanr(videos['pred'], videos['Overall_MOS']).statistic:.3f}"]
    for kind in KINDS:
        alone = pd.concat([videos[videos["level"] == 0], videos[videos["kind"] == kind]])
        within = np.nanmean([spearmanr(g["pred"], g["Overall_MOS"]).statistic for _, g in alone.groupby("source")])
        cells.append(f"{kind} {within:.2f} / {spearmanr(alone['pred'], alone['Overall_MOS']).statistic:.2f}")
    print("ridge probe on the untrained vision tower, held-out SRCC (per kind: within source / pooled): "
          + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default=os.path.join(REPO, "work", "bench_learning"))
    args = parser.parse_args()

    import pandas as pd
    from learning import bench_model, ladder

    from iovqa_plugin.data.frames import FrameSpec

    root, model_dir = ladder(args.work), bench_model(args.work)
    spec = FrameSpec(num_frames=2, strategy="segment")  # the benchmark recipes' frames
    test = pd.read_csv(os.path.join(root, "test.csv"))
    dropped_frames(root, test, spec)
    blind_ceilings(test)
    pair_differences(root, test)
    ridge_probe(root, model_dir, spec)


if __name__ == "__main__":
    main()
