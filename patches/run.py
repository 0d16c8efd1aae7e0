"""The run in progress: the one place that holds the active recipe's plugin configuration (and where its
samples come from, for error messages).

LLaMA-Factory builds its objects (converter, collator, trainer, model) deep
inside ``run_sft`` and its loaders, with no way to hand them our settings.
So the patched ``read_args`` records the run here, and each patched factory
reads it once and passes it, as an argument, to what it builds. Nothing else
in the plugin reads it.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Optional, Sequence

from iovqa_plugin.config import IOVQAArguments

_ACTIVE: Optional[IOVQAArguments] = None
# first frame file (an image sample: its image file) of each sample of the run -> "file row N (video 'id')", for
# errors that name the row, and to tell the run's IOVQA samples from stock ones (question/answer) in a batch
_ORIGINS: dict[str, str] = {}
# first frame file of each sample of the run -> (MOS, std or None): level runs' per-row targets, which their
# labels (a level word) do not carry; the collator looks them up by the sample's frames
_TARGETS: dict[str, tuple[float, Optional[float]]] = {}
# first files of a comparison's two media (sample_media order) -> (P(A better) from the MOS and raters' stds, its
# row) (iovqa_pair_soft_targets), looked up by the collator as _TARGETS is
_PAIR_TARGETS: dict[tuple[str, ...], tuple[float, str]] = {}


def set_active_run(iovqa_args: Optional[IOVQAArguments]) -> None:
    """Called by the patched ``read_args`` for every recipe read (``None``: the plugin is off)."""
    global _ACTIVE
    _ACTIVE = iovqa_args
    _ORIGINS.clear()
    _TARGETS.clear()
    _PAIR_TARGETS.clear()


def active_run() -> Optional[IOVQAArguments]:
    """The plugin configuration of the recipe being run, or ``None`` for a stock recipe."""
    return _ACTIVE


@contextlib.contextmanager
def run_scope(iovqa_args: Optional[IOVQAArguments]) -> Iterator[None]:
    """Make ``run`` the active run for the duration of a load outside ``llamafactory-cli`` (the scorer)."""
    before = active_run()
    set_active_run(iovqa_args)
    try:
        yield
    finally:
        set_active_run(before)


def remember_sample_origins(samples: Iterable) -> None:
    """The formatter records where each of the run's samples (``annotations.Sample`` or a comparison's
    ``pairs.PairSample``, with frames) comes from."""
    for sample in samples:
        frames = sample.frames or []
        # a comparison's frames: one list per medium, each medium's first file recorded (a batch row of an image
        # and a video lists its video first, see sample_media)
        firsts = [f[0] for f in frames if f] if frames and isinstance(frames[0], list) else frames[:1]
        video = getattr(sample, "video", None)
        shown = f"video {video!r}" if video else "comparison " + " vs ".join(map(repr, sample.media))
        for first in firsts:
            _ORIGINS[first] = f"{sample.file} row {sample.row} ({shown})"


def sample_media(sample: dict) -> list:
    """A processed sample's media: its ``videos`` (lists of frame files), then its ``images`` (files)."""
    return list(sample.get("videos") or ()) + list(sample.get("images") or ())


def _firsts(media: Sequence) -> list:
    return [v[0] if isinstance(v, (list, tuple)) and v else v for v in media or ()]


def sample_origin(media: Sequence) -> str:
    """The annotation row of a sample of the run, given its media (:func:`sample_media`)."""
    firsts = _firsts(media)
    for first in firsts:
        if isinstance(first, str) and first in _ORIGINS:
            return _ORIGINS[first]
    return f"with frames {firsts}" if firsts else "without video"


def run_samples(media_of_rows: Sequence[Sequence]) -> list[bool]:
    """Which batch rows (given each one's :func:`sample_media`) are samples of the run's IOVQA datasets.

    A row whose media the formatter did not give is a stock sample (a question/answer dataset mixed into the
    run). When the run's formatter has recorded nothing (a dataset loaded from ``tokenized_path``), every row
    counts as an IOVQA sample, as before mixing: the mask then refuses a row without a score, never skips it.
    """
    if not _ORIGINS:
        return [True] * len(media_of_rows)
    return [any(isinstance(f, str) and f in _ORIGINS for f in _firsts(media)) for media in media_of_rows]


def remember_sample_targets(samples: Iterable) -> None:
    """The formatter records each sample's MOS and std (``annotations.Sample``), keyed by its frames.

    Two samples with the same frames and different targets (the same video in two datasets of the run
    with different MOS) cannot be told apart in a batch: refused, naming both rows.
    """
    for sample in samples:
        if not sample.frames:
            continue
        key, target = sample.frames[0], (float(sample.mos), sample.std)
        if _TARGETS.get(key, target) != target:
            raise ValueError(
                f"{sample.file} row {sample.row} (video {sample.video!r}, MOS {target[0]}, std {target[1]}) has the "
                f"same video as {_ORIGINS.get(key, 'another row')} with MOS {_TARGETS[key][0]}, std "
                f"{_TARGETS[key][1]}: level runs find each sample's MOS by its video, which must have one MOS"
            )
        _TARGETS[key] = target


def sample_targets(media_of_rows: Sequence) -> list[tuple[float, Optional[float]]]:
    """(MOS, std or None) of each batch row, given each row's media (:func:`sample_media`)."""
    found, missing = [], []
    for row, media in enumerate(media_of_rows):
        first = next(iter(_firsts(media)), None)
        if isinstance(first, str) and first in _TARGETS:
            found.append(_TARGETS[first])
        else:
            missing.append(row)
    if missing:
        raise ValueError(
            f"batch row(s) {missing}: no MOS recorded for their video. Level runs read each sample's MOS from the "
            "annotation file as the iovqa dataset is loaded; a dataset loaded from tokenized_path, or one not in "
            "`formatting: iovqa`, has none"
        )
    return found


def remember_pair_targets(samples: Iterable, probability) -> None:
    """The formatter records P(A better) of each comparison whose data has both MOS and both stds
    (``PairSample``), ``probability(mos_a, mos_b, std_a, std_b)``; keyed by its media's first files as a batch row
    lists them (:func:`sample_media`: videos, then images). Two pairs with the same key and different targets (the
    same two media rated twice, or an image and a video compared in both orders) cannot be told apart in a batch:
    refused, naming the rows."""
    for sample in samples:
        if sample.human == 0 or None in (*sample.mos, *sample.stds) or not sample.frames:
            continue
        images, videos = sample.media_lists()
        key = tuple(_firsts(videos)) + tuple(images)
        p = float(probability(*sample.mos, *sample.stds))
        if key in _PAIR_TARGETS and abs(_PAIR_TARGETS[key][0] - p) > 1e-9:
            raise ValueError(
                f"{sample.file} row {sample.row} (comparison {sample.media[0]!r} vs {sample.media[1]!r}, P(A) {p:.4f}) "
                f"shows the same two media as {_PAIR_TARGETS[key][1]} with another soft target "
                f"({_PAIR_TARGETS[key][0]:.4f}): the collator finds a pair's target by its media (an image and a video "
                "in either order alike), so each pair of media needs one rating. Keep one row per pair of media."
            )
        _PAIR_TARGETS.setdefault(key, (p, f"{sample.file} row {sample.row}"))


def pair_targets(media_of_rows: Sequence) -> list[Optional[float]]:
    """P(A better) of each batch row (given each row's media, :func:`sample_media`), None where the row's
    choice target is hard (no stds, a preference label, or not a comparison)."""
    found = [_PAIR_TARGETS.get(tuple(_firsts(media))) for media in media_of_rows]
    return [None if target is None else target[0] for target in found]
