"""Frame sampling from videos, and the on-disk frame cache.

Each video is decoded once with PyAV; the 1-2 sampled frames are written to
a cache keyed by the video's absolute path, size, mtime and the frame
settings, and LLaMA-Factory gets the list of frame files (a "video" of
frames: it decodes nothing per step, and 2 frames are exactly one temporal
patch of Qwen2.5-VL). A still image (see ``images``) is cached the same way,
as one decoded copy: its list holds that one file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Optional

FORMATS = ("png", "jpg")


class VideoError(ValueError):
    """A video that cannot be read (missing, not a video, corrupt, ...)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class FrameSpec:
    num_frames: int = 2
    strategy: str = "segment"
    fmt: str = "png"

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"frame strategy must be one of {tuple(STRATEGIES)}, got {self.strategy!r}")
        if self.strategy in PAIRED_STRATEGIES and self.num_frames % 2:
            raise ValueError(f"frame strategy {self.strategy!r} samples frames in pairs: num_frames must be even, "
                             f"got {self.num_frames}")
        if self.fmt not in FORMATS:
            raise ValueError(f"frame format must be one of {FORMATS}, got {self.fmt!r}")


def _segment(total: int, num_frames: int) -> list[int]:
    """The middle frame of each of ``num_frames`` equal segments (1 -> the middle frame; 2 -> 1/4 and 3/4)."""
    return [min(total - 1, int((2 * i + 1) * total // (2 * num_frames))) for i in range(num_frames)]


def _linspace(total: int, num_frames: int) -> list[int]:
    """Evenly spaced from the first to the last frame, as LLaMA-Factory samples (1 -> the first frame)."""
    if num_frames == 1:
        return [0]
    return [round(i * (total - 1) / (num_frames - 1)) for i in range(num_frames)]


def _pairs(total: int, num_frames: int) -> list[int]:
    """The middle frame of each of ``num_frames / 2`` equal segments and the frame right after it: each pair is
    one Qwen2-VL / Qwen2.5-VL temporal patch of adjacent frames, so the patch sees frame-to-frame change
    (a repeated frame, a stutter) that frames far apart hide."""
    indices = []
    for middle in _segment(total, num_frames // 2):
        first = max(0, min(middle, total - 2))
        indices += [first, min(total - 1, first + 1)]
    return indices


# Frame sampling rules by name (the recipe's `iovqa_frame_strategy`): (total frames, frames wanted) -> indices.
STRATEGIES = {"segment": _segment, "linspace": _linspace, "pairs": _pairs}
PAIRED_STRATEGIES = ("pairs",)  # these need an even num_frames


def frame_indices(total: int, num_frames: int, strategy: str = "segment") -> list[int]:
    """Indices of the frames to keep from a clip of ``total`` frames, by the rule ``strategy`` (:data:`STRATEGIES`).
    Short clips repeat frames rather than return fewer than asked."""
    if total < 1:
        raise ValueError("a video needs at least one frame")
    if strategy not in STRATEGIES:
        raise ValueError(f"frame strategy must be one of {tuple(STRATEGIES)}, got {strategy!r}")
    return STRATEGIES[strategy](total, num_frames)


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoError(path, "file not found")
    if os.path.isdir(path):
        raise VideoError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "file is empty (0 bytes)")


def _open(path: str):
    import av

    try:
        container = av.open(path, "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoError(path, f"not a readable video, nor an image ({type(err).__name__}: {err})") from None
    streams = [s for s in container.streams if s.type == "video"]
    if not streams:
        container.close()
        raise VideoError(path, "contains no video stream, nor an image")
    return container, streams[0]


def count_frames(path: str) -> int:
    """Number of video frames, from the demuxed packets (no decoding)."""
    import av

    container, stream = _open(path)
    try:
        return sum(1 for packet in container.demux(stream) if packet.size > 0)
    except av.FFmpegError as err:
        raise VideoError(path, f"cannot demux ({err})") from None
    finally:
        container.close()


def _decode_at(path: str, wanted: list[int]):
    """Decode the clip once, keeping frames at ``wanted``; returns (frames by index, decoded count)."""
    import av

    container, stream = _open(path)
    keep, decoded, last = {}, 0, max(wanted)
    try:
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in wanted:
                keep[index] = frame.to_image()
            if index >= last:
                break
    except av.FFmpegError as err:
        if not keep:
            raise VideoError(path, f"cannot decode ({err})") from None
    finally:
        container.close()
    return keep, decoded


def extract_frames(path: str, spec: FrameSpec):
    """The sampled frames of ``path`` as RGB PIL images."""
    _check_file(path)
    total = count_frames(path)
    if total == 0:
        raise VideoError(path, "has no frames")
    wanted = frame_indices(total, spec.num_frames, spec.strategy)
    keep, decoded = _decode_at(path, sorted(set(wanted)))
    if len(keep) < len(set(wanted)):
        if decoded == 0:
            raise VideoError(path, "no frame could be decoded (truncated or corrupt file?)")
        # Fewer decodable frames than packets (truncated file): sample from what decodes.
        wanted = frame_indices(decoded, spec.num_frames, spec.strategy)
        keep, _ = _decode_at(path, sorted(set(wanted)))
        if len(keep) < len(set(wanted)):
            raise VideoError(path, "frames could not be decoded (corrupt file?)")
    return [keep[i].convert("RGB") for i in wanted]


class FrameCache:
    """Sampled frames on disk, one folder per (video file state, frame settings)."""

    def __init__(self, root: str, spec: FrameSpec):
        self.root = os.path.abspath(root)
        self.spec = spec

    def key(self, video_path: str) -> str:
        path = os.path.abspath(video_path)
        stat = os.stat(path)
        ident = json.dumps(
            [path, stat.st_size, stat.st_mtime_ns, self.spec.num_frames, self.spec.strategy, self.spec.fmt]
        )
        return hashlib.sha1(ident.encode("utf-8")).hexdigest()

    def frame_paths(self, video_path: str) -> list[str]:
        """The cached files of a medium: a video's frames, or an image's one decoded copy."""
        return self._entry(video_path)[1]

    def _entry(self, video_path: str) -> tuple[bool, list[str]]:
        """(whether the medium is an image, its cached files)."""
        from .images import IMAGE, IMAGE_FILE, media_kind

        key = self.key(video_path)
        folder = os.path.join(self.root, key[:2], key)
        if media_kind(video_path) == IMAGE:
            return True, [os.path.join(folder, f"{IMAGE_FILE}.{self.spec.fmt}")]
        return False, [os.path.join(folder, f"frame_{i}.{self.spec.fmt}") for i in range(self.spec.num_frames)]

    def lookup(self, video_path: str) -> Optional[list[str]]:
        """Cached frame files of the video, or None when not cached (or the video is unusable)."""
        try:
            _check_file(video_path)
            paths = self.frame_paths(video_path)
        except (VideoError, OSError):
            return None
        return paths if all(os.path.isfile(p) for p in paths) else None

    def get(self, video_path: str) -> list[str]:
        """Frame files of the video (an image: its decoded copy), extracting them on a cache miss."""
        from .images import decode_image, explain_unreadable

        _check_file(video_path)
        is_image, paths = self._entry(video_path)
        if all(os.path.isfile(p) for p in paths):
            return paths
        try:
            frames = [decode_image(video_path)] if is_image else extract_frames(video_path, self.spec)
        except VideoError as err:
            raise VideoError(video_path, explain_unreadable(video_path, err.reason)) from None
        folder = os.path.dirname(paths[0])
        os.makedirs(folder, exist_ok=True)
        for image, target in zip(frames, paths):
            _atomic_save(image, target, self.spec.fmt)
        return paths


def _atomic_save(image, target: str, fmt: str) -> None:
    # Ranks and workers may extract the same video at once: write, then rename.
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(target), suffix="." + fmt)
    os.close(handle)
    try:
        if fmt == "jpg":
            image.save(tmp, format="JPEG", quality=95)
        else:
            image.save(tmp, format="PNG")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _get_one(args: tuple[str, FrameCache]) -> tuple[str, Optional[list[str]], Optional[str]]:
    path, cache = args
    try:
        return path, cache.get(path), None
    except VideoError as err:
        return path, None, err.reason
    except Exception as err:  # a decoder crash on one file must not hide the others
        return path, None, f"{type(err).__name__}: {err}"


def extract_many(
    videos: Iterable[str], cache: FrameCache, workers: int = 1, progress: bool = True, desc: str = "frames"
) -> dict[str, tuple[Optional[list[str]], Optional[str]]]:
    """Frames for many videos: ``{video: (frame paths or None, error or None)}``."""
    from tqdm.auto import tqdm

    videos = list(dict.fromkeys(videos))
    results: dict[str, tuple[Optional[list[str]], Optional[str]]] = {}
    todo = []
    for video in videos:
        cached = cache.lookup(video)
        if cached is not None:
            results[video] = (cached, None)
        else:
            todo.append(video)
    if not todo:
        return results
    bar = tqdm(total=len(todo), desc=desc, unit="video", disable=not progress)
    jobs = [(video, cache) for video in todo]
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            for video, paths, error in pool.map(_get_one, jobs, chunksize=4):
                results[video] = (paths, error)
                bar.update()
    else:
        for job in jobs:
            video, paths, error = _get_one(job)
            results[video] = (paths, error)
            bar.update()
    bar.close()
    return results
