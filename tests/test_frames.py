import os
import shutil
import time

import numpy as np
import pytest

from iovqa_plugin.demo.ladder import write_video
from iovqa_plugin.data.frames import FrameCache, FrameSpec, VideoError, count_frames, extract_frames, extract_many, frame_indices


def test_frame_indices():
    assert frame_indices(100, 1, "segment") == [50]  # the middle frame, not the first
    assert frame_indices(100, 2, "segment") == [25, 75]
    assert frame_indices(101, 1, "segment") == [50]
    assert frame_indices(100, 1, "linspace") == [0]  # LLaMA-Factory's own rule
    assert frame_indices(100, 2, "linspace") == [0, 99]
    assert frame_indices(1, 2, "segment") == [0, 0]
    assert frame_indices(3, 4, "segment") == [0, 1, 1, 2]
    with pytest.raises(ValueError):
        frame_indices(0, 1)
    with pytest.raises(ValueError):
        frame_indices(10, 1, "random")


def test_pairs_are_adjacent_frames_around_each_segment_middle():
    assert frame_indices(16, 2, "pairs") == [8, 9]  # one temporal patch of two adjacent frames
    assert frame_indices(16, 4, "pairs") == [4, 5, 12, 13]
    assert frame_indices(10, 2, "pairs") == [5, 6]
    assert frame_indices(2, 2, "pairs") == [0, 1]  # the middle is the last frame: the pair ends there
    assert frame_indices(1, 2, "pairs") == [0, 0]  # a one-frame clip repeats it
    with pytest.raises(ValueError, match="num_frames must be even"):
        FrameSpec(3, "pairs")


def test_a_repeated_frame_is_visible_in_a_pair_and_not_in_segment_frames(tmp_path):
    """Frames held twice (every other frame dropped): the adjacent pair shows one frame twice, while the two
    segment frames are as far apart as in the source."""
    from PIL import Image

    frames = [Image.fromarray(np.full((64, 64, 3), 10 * (i - i % 2), dtype=np.uint8)) for i in range(16)]
    path = str(tmp_path / "held.mp4")
    write_video(frames, path, fps=8)
    pair = [_index_of(f) for f in extract_frames(path, FrameSpec(2, "pairs"))]
    apart = [_index_of(f) for f in extract_frames(path, FrameSpec(2, "segment"))]
    assert pair == [8, 8] and apart == [4, 12]


@pytest.fixture(scope="module")
def numbered_clip(tmp_path_factory):
    """A clip whose frame i has brightness 10 * i: the sampled index can be read back from the pixels."""
    from PIL import Image

    frames = [Image.fromarray(np.full((64, 64, 3), 10 * i, dtype=np.uint8)) for i in range(20)]
    path = str(tmp_path_factory.mktemp("clip") / "numbered clip é.mp4")  # space and non-ASCII name
    write_video(frames, path, fps=10)
    return path


def _index_of(image) -> int:
    return int(round(np.asarray(image, dtype=np.float32).mean() / 10))


def test_extract_the_right_frames(numbered_clip):
    assert count_frames(numbered_clip) == 20
    middle = extract_frames(numbered_clip, FrameSpec(1, "segment"))
    assert [_index_of(f) for f in middle] == [10]
    two = extract_frames(numbered_clip, FrameSpec(2, "segment"))
    assert [_index_of(f) for f in two] == [5, 15]
    ends = extract_frames(numbered_clip, FrameSpec(2, "linspace"))
    assert [_index_of(f) for f in ends] == [0, 19]
    assert two[0].mode == "RGB" and two[0].size == (64, 64)


def test_cache_hit_and_invalidation(numbered_clip, tmp_path):
    video = str(tmp_path / "v.mp4")
    shutil.copy(numbered_clip, video)
    cache = FrameCache(str(tmp_path / "cache"), FrameSpec(2, "segment", "png"))
    assert cache.lookup(video) is None
    paths = cache.get(video)
    assert len(paths) == 2 and all(os.path.isfile(p) for p in paths)
    assert cache.lookup(video) == paths
    stamp = os.path.getmtime(paths[0])
    assert cache.get(video) == paths and os.path.getmtime(paths[0]) == stamp  # not extracted again
    # other settings, other entries
    other = FrameCache(str(tmp_path / "cache"), FrameSpec(1, "segment", "png"))
    assert other.lookup(video) is None and len(other.get(video)) == 1
    # a changed video file is a new entry
    time.sleep(0.01)
    os.utime(video, None)
    assert cache.lookup(video) is None
    assert cache.get(video) != paths


def _bad_videos(tmp_path, clip):
    data = open(clip, "rb").read()
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "folder.mp4").mkdir()
    return {
        "zero.mp4": "empty",
        "text.mp4": "not a readable video",
        "folder.mp4": "directory",
        "missing.mp4": "not found",
    }


def test_bad_videos_give_clear_errors(numbered_clip, tmp_path):
    expected = _bad_videos(tmp_path, numbered_clip)
    spec = FrameSpec(2)
    for name, reason in expected.items():
        with pytest.raises(VideoError, match=reason) as info:
            extract_frames(str(tmp_path / name), spec)
        assert name in str(info.value)


def test_truncated_video_is_read_or_reported(numbered_clip, tmp_path):
    _bad_videos(tmp_path, numbered_clip)
    try:
        frames = extract_frames(str(tmp_path / "truncated.mp4"), FrameSpec(2))
    except VideoError as err:
        assert "truncated.mp4" in str(err)
    else:
        assert len(frames) == 2  # sampled from what decodes


def test_extract_many_reports_failures_and_uses_workers(numbered_clip, tmp_path):
    _bad_videos(tmp_path, numbered_clip)
    good = [str(tmp_path / f"good{i}.mp4") for i in range(3)]
    for path in good:
        shutil.copy(numbered_clip, path)
    bad = [str(tmp_path / n) for n in ("zero.mp4", "text.mp4", "missing.mp4", "folder.mp4")]
    cache = FrameCache(str(tmp_path / "cache"), FrameSpec(2))
    results = extract_many(good + bad, cache, workers=2, progress=False)
    assert set(results) == set(good + bad)
    assert all(results[p][1] is None and len(results[p][0]) == 2 for p in good)
    assert all(results[p][0] is None and results[p][1] for p in bad)
