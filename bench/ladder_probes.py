"""What the tiny model can see of each degradation kind on the benchmark ladder, before any training.

    python bench/ladder_probes.py [--work work/bench_learning]

* dropped frames: the 2 segment frames the plugin samples from each dropped-frames video against those of the
  source's pristine video (mean absolute difference, grey levels; and the ratio of their frame-difference
  energy), next to blur level 1 for scale;
* a ridge probe on the untrained vision tower's output for those 2 frames (mean and sd over its tokens), fitted
  on the train split (ridge strength chosen on val), read on the held-out split: SRCC overall, and per kind on
  the videos degraded by that kind alone plus the pristine ones (within source / pooled), the ceiling of a
  linear readout of what the first stage carries; and the same for 2 adjacent frames;
* the same readout, and a small MLP (3 seeds), on hand-made block-DCT statistics of the same frames' pixels:
  what a reader of the frames, free of the tiny model, carries over to unseen scenes;
* the ceiling a model blind to dropped frames has: the held-out SRCC of each video's true level (a perfect
  reader of every other kind) when the dropped-frames videos are read as pristine, or as dropped at no
  particular level; and that of a reader told each level that orders a level's videos at random (no ties);
* the least training loss per label token a reader can reach: the label's entropy given each video's level,
  given it with the dropped-frames videos read as pristine or seen at no particular level, and given nothing;
* the training labels of what looks pristine in 2 segment frames (the pristine and the dropped-frames videos)
  against the level-1 videos': why such a reader puts level 1 above level 0; and the most a reader that sees
  dropped frames but not their level (an adjacent pair) reads of them within a source;
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

    from iovqa_plugin.demo.ladder import MIXED, video_degradation, video_name, video_source

    rows = []
    for name in table["video_name"]:
        kind, level = video_degradation(name)
        if kind in ("drop", "blur") and (kind == "drop" or level == 1):
            frames = sampled(root, name, spec)
            pristine_name = os.path.join(os.path.dirname(name), video_name(video_source(name), MIXED, 0))
            pristine = sampled(root, pristine_name, spec)
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
    # a reader that knows each level but gives every video its own score (no ties) orders a level's videos at
    # random against their raters' means: the ceiling of a model told the level (the learning bench's control arm)
    rng = np.random.default_rng(0)
    draws = [spearmanr(-levels + rng.uniform(-0.1, 0.1, len(levels)), mos).statistic for _ in range(200)]
    print(f"held-out SRCC of the true level, each level's videos in random order (200 draws): "
          f"{np.mean(draws):.3f} ± {np.std(draws):.3f}")
    # an adjacent pair shows that frames were dropped, not how many (bench/learning.py's iovqa_pairs arm): the most
    # its per-degradation line for them can read within a source
    seen = held_out_cells(table, -readings["dropped frames seen, their level not (read as level 2.5)"])
    print(f"dropped frames seen, their level not: {seen['drop within']:.3f} within source, {seen['drop pooled']:.3f} "
          "pooled (the ceiling of their per-degradation line)")


def pristine_looking(table) -> None:
    """The training labels of the videos that look pristine in 2 frames far apart: the pristine videos and the
    dropped-frames ones (their frames are the pristine video's), against the level-1 videos'."""
    from iovqa_plugin.demo.ladder import video_degradation

    kinds, levels = zip(*map(video_degradation, table["video_name"]))
    looks = [kind == "drop" or level == 0 for kind, level in zip(kinds, levels)]
    pristine = [level == 0 for level in levels]
    level1 = [level == 1 and kind != "drop" for kind, level in zip(kinds, levels)]
    mos = table["Overall_MOS"]
    print(f"training labels of the videos that look pristine in 2 segment frames ({sum(looks)}: pristine and dropped "
          f"frames) mean MOS {mos[looks].mean():.2f}, of the pristine ones alone {mos[pristine].mean():.2f}, of the "
          f"other level-1 videos ({sum(level1)}) {mos[level1].mean():.2f}: a reader of segment frames that fits the "
          "labels scores a source's pristine video below its level-1 videos")


def loss_floors(table) -> None:
    """The least training loss per label token a model can reach on the split (the entropy of the integer label,
    two digit tokens, given what the model is assumed to read), so a loss goal is set against it."""
    import numpy as np
    import pandas as pd

    from iovqa_plugin.data.labels import mos_to_integer
    from iovqa_plugin.demo.ladder import video_degradation

    kinds, levels = zip(*map(video_degradation, table["video_name"]))
    labels = pd.Series([mos_to_integer(m) for m in table["Overall_MOS"]])
    digits = len(str(labels.iloc[0]))

    def per_token(groups) -> float:
        frame = pd.DataFrame({"group": list(groups), "label": labels})
        counts = frame.groupby(["group", "label"]).size()
        p = counts / counts.groupby(level="group").transform("sum")
        return float(-(counts * np.log(p)).sum() / len(frame) / digits)

    readers = {
        "every level known": levels,
        "dropped frames read as pristine": [0 if k == "drop" else v for k, v in zip(kinds, levels)],
        "dropped frames seen, their level not": ["drop" if k == "drop" else v for k, v in zip(kinds, levels)],
        "nothing known": [0] * len(levels),
    }
    print(f"training loss floor per label token ({len(labels)} videos): "
          + "; ".join(f"{name} {per_token(groups):.3f}" for name, groups in readers.items()))


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


def tower_features(root: str, model_dir: str, spec):
    """name -> the untrained vision tower's output for the sampled frames (mean and sd over its tokens)."""
    import numpy as np
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    visual = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval().model.visual

    def features(name: str):
        inputs = processor.video_processor(videos=[[f.astype(np.uint8) for f in sampled(root, name, spec)]],
                                           return_tensors="pt")
        with torch.no_grad():
            out = visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"])
        out = out if torch.is_tensor(out) else out.pooler_output
        return torch.cat([out.mean(0), out.std(0)]).numpy()

    return features


def pixel_statistics(root: str, spec, bands: int = 13):
    """name -> hand-made quality statistics of the sampled frames' luma: for each radial band of a 14x14 block
    DCT, the log of its mean energy over the frame and the 10th / 50th / 90th percentiles over blocks of the log
    block energy (noise lifts the quietest blocks' high bands; blur and down-scaling take them from the busiest)."""
    import numpy as np

    from iovqa_plugin.demo.vision_init import PATCH, dct_basis

    basis = dct_basis().numpy().reshape(PATCH * PATCH, PATCH * PATCH)
    u, v = np.meshgrid(np.arange(PATCH), np.arange(PATCH), indexing="ij")
    band = np.minimum((np.hypot(u, v) / 1.5).astype(int), bands - 1).reshape(-1)

    def features(name: str):
        luma = np.mean([frame @ np.array([0.299, 0.587, 0.114]) for frame in sampled(root, name, spec)], axis=0)
        height, width = (side - side % PATCH for side in luma.shape)
        blocks = luma[:height, :width].reshape(height // PATCH, PATCH, width // PATCH, PATCH).swapaxes(1, 2)
        energy = (blocks.reshape(-1, PATCH * PATCH) @ basis.T) ** 2
        per_band = np.stack([energy[:, band == b].mean(1) for b in range(bands)], 1)  # (blocks, bands)
        logs = np.log(per_band + 1e-3)
        return np.concatenate([np.log(per_band.mean(0) + 1e-3), *np.percentile(logs, (10, 50, 90), axis=0)])

    return features


def ridge_readout(x_train, y_train, x_val, y_val, x_test):
    """Held-out predictions of a ridge regression on standardised features, its strength chosen on val."""
    import numpy as np
    from scipy.stats import spearmanr

    mean, scale = x_train.mean(0), x_train.std(0) + 1e-8
    z = (x_train - mean) / scale
    best = None
    for alpha in np.logspace(-3, 4, 15):
        weights = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y_train - y_train.mean()))
        fit = spearmanr(((x_val - mean) / scale) @ weights, y_val).statistic
        best = max(best or (fit, weights), (fit, weights), key=lambda pair: pair[0])
    return ((x_test - mean) / scale) @ best[1]


def mlp_readout(x_train, y_train, x_val, y_val, x_test, seed: int = 0, epochs: int = 400):
    """Held-out predictions of a 2-hidden-layer MLP (64 wide) fitted by full-batch AdamW, the epoch chosen on val."""
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    torch.manual_seed(seed)
    mean, scale = x_train.mean(0), x_train.std(0) + 1e-8
    tensor = lambda x: torch.tensor((x - mean) / scale, dtype=torch.float32)  # noqa: E731
    net = torch.nn.Sequential(torch.nn.Linear(x_train.shape[1], 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                              torch.nn.GELU(), torch.nn.Linear(64, 1))
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    inputs, targets = tensor(x_train), torch.tensor(y_train, dtype=torch.float32)
    best = (-np.inf, None)
    for epoch in range(epochs):
        optimizer.zero_grad()
        ((net(inputs)[:, 0] - targets) ** 2).mean().backward()
        optimizer.step()
        if epoch % 20 == 19:
            with torch.no_grad():
                fit = spearmanr(net(tensor(x_val))[:, 0].numpy(), y_val).statistic
                if fit > best[0]:
                    best = (fit, net(tensor(x_test))[:, 0].numpy())
    return best[1]


def held_out_cells(test, predicted) -> dict[str, float]:
    """Held-out SRCC overall, and per kind (its videos and the pristine ones) within source and pooled, as the
    learning benchmark reports them (``learning.per_degradation``)."""
    from scipy.stats import spearmanr

    from learning import per_degradation

    cells = {"all": spearmanr(predicted, test["Overall_MOS"]).statistic}
    for kind, cell in per_degradation(test, dict(zip(test["video_name"], predicted)))["kinds"].items():
        cells[f"{kind} within"], cells[f"{kind} pooled"] = cell["within"], cell["pooled"]
    return cells


def probe(root: str, title: str, features, readouts: dict) -> None:
    """Fit each readout on the train split's features (val to choose), print its held-out SRCC (mean over its
    seeds)."""
    import numpy as np
    import pandas as pd

    from iovqa_plugin.demo.ladder import KINDS

    tables = {split: pd.read_csv(os.path.join(root, f"{split}.csv")) for split in ("train", "val", "test")}
    x = {split: np.stack([features(name) for name in table["video_name"]]) for split, table in tables.items()}
    y = {split: table["Overall_MOS"].to_numpy() for split, table in tables.items()}
    for name, (readout, seeds) in readouts.items():
        runs = [held_out_cells(tables["test"], readout(x["train"], y["train"], x["val"], y["val"], x["test"],
                                                       **({"seed": seed} if seed is not None else {})))
                for seed in seeds]
        cell = {key: np.mean([run[key] for run in runs]) for key in runs[0]}
        parts = [f"all {cell['all']:.3f}"] + [f"{kind} {cell[kind + ' within']:.2f} / {cell[kind + ' pooled']:.2f}"
                                               for kind in KINDS]
        print(f"{name} on {title}, held-out SRCC (per kind: within source / pooled; {len(seeds)} fit(s)): "
              + "; ".join(parts))


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
    train = pd.read_csv(os.path.join(root, "train.csv"))
    loss_floors(train)
    pristine_looking(train)
    pair_differences(root, test)
    probe(root, "the untrained vision tower", tower_features(root, model_dir, spec),
          {"ridge probe": (ridge_readout, [None])})
    probe(root, "the untrained vision tower, its 2 frames an adjacent pair",
          tower_features(root, model_dir, FrameSpec(num_frames=2, strategy="pairs")),
          {"ridge probe": (ridge_readout, [None])})
    probe(root, "pixel statistics", pixel_statistics(root, spec),
          {"ridge probe": (ridge_readout, [None]), "MLP probe": (mlp_readout, [0, 1, 2])})


if __name__ == "__main__":
    main()
