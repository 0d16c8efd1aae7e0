"""Comparison samples: two media and the question which one is better, answered with a choice word.

Two ways to get pairs (the layouts ``iovqa_pairs`` and ``iovqa_drawn_pairs`` of ``data.layouts``):

* a pairs file (CSV, JSON or JSONL), one row per pair: medium A, medium B and either a preference label
  (``A``, ``B`` or ``tie``, any case) or the two MOS (equal MOS: a tie), optionally the raters' stds of the two
  MOS and a text prompt; column names are :class:`PairColumns` (renamed by ``iovqa_pair_columns`` or the
  dataset's ``columns``);
* drawn from a pointwise annotation file (:func:`draw_pairs`): every pair of rows of the same group (the text
  prompt, or a scene column) whose MOS differ by more than a margin, each row in at most ``cap`` pairs, which
  one is shown first decided at random; deterministic at a seed, never a row with itself.

The answer is the choice word of the better medium (``iovqa_choice_words``, default ``A,B,tie``); a human tie is
left out (``iovqa_pair_ties: skip``, counted in the dataset summary) or answered with the third word
(``answer``). The mask keeps the choice word's tokens only (``train.mask.mask_level_labels`` with the choice
words' token paths).
"""

from __future__ import annotations

import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Sequence

from .annotations import Issue
from .images import IMAGE, VIDEO
from .labels import LabelError, parse_std
from .prompt import PromptTemplateError, neutralize_placeholders, template_fields

PREFERENCES = {"a": 1, "b": -1, "tie": 0}  # a preference label (any case) -> the sign of MOS_A - MOS_B it says
MEDIA_PLACEHOLDERS = {VIDEO: "<video>", IMAGE: "<image>"}  # one placeholder per medium, in prompt order


@dataclass(frozen=True)
class PairColumns:
    """Column names of a pairs file (``iovqa_pair_columns``, ``--pair-column ROLE=NAME``)."""

    video_a: str = "video_a"
    video_b: str = "video_b"
    preference: str = "preference"  # "A", "B" or "tie"; used when present
    mos_a: str = "mos_a"  # else the two MOS (equal MOS: a tie)
    mos_b: str = "mos_b"
    std_a: str = "std_a"  # optional: the raters' standard deviations of the two MOS
    std_b: str = "std_b"
    prompt: str = "prompt"  # optional: the text prompt both media were generated from
    dimension: str = "dimension"  # optional (evaluation): which dimension's score a row compares

    @classmethod
    def renamed(cls, names: Optional[dict]) -> "PairColumns":
        unknown = sorted(set(names or {}) - set(PAIR_ROLES))
        if unknown:
            raise ValueError(f"pair columns {unknown} are not roles of a pairs file; roles: {list(PAIR_ROLES)}")
        return cls(**{role: str(name).strip() for role, name in (names or {}).items()})


PAIR_ROLES = tuple(f.name for f in fields(PairColumns))


def pair_columns_problem(present: Sequence[str], columns: PairColumns) -> Optional[str]:
    """Why a table with columns ``present`` is not a pairs file (None when it is one)."""
    for column in (columns.video_a, columns.video_b):
        if column not in present:
            return f"no {column!r} column (columns: {list(present)})"
    if columns.preference not in present and not {columns.mos_a, columns.mos_b} <= set(present):
        return (f"neither a {columns.preference!r} column nor both {columns.mos_a!r} and {columns.mos_b!r} "
                f"(columns: {list(present)})")
    return None


@dataclass
class PairRow:
    """One checked row of a pairs file (``bad``: it has issues, listed apart)."""

    row: int
    video_a: str
    video_b: str
    human: Optional[int]  # 1: A better, -1: B better, 0: tie (None: unknown, the row is bad)
    prompt: Optional[str] = None
    mos: tuple[Optional[float], Optional[float]] = (None, None)
    stds: tuple[Optional[float], Optional[float]] = (None, None)
    dimension: Optional[str] = None
    bad: bool = False


def text(value: Any) -> str:
    """A cell as stripped text ("" for a missing one)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _number(cell: str) -> Optional[float]:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_pair_rows(records: Sequence[dict], name: str, columns: PairColumns) -> tuple[list[PairRow], list[Issue]]:
    """Every row of a pairs table (rows numbered from 1), and the issues of its bad rows (file ``name``)."""
    by_preference = bool(records) and columns.preference in records[0]
    rows, issues = [], []
    for index, record in enumerate(records, start=1):
        a, b = text(record.get(columns.video_a)), text(record.get(columns.video_b))
        found = []
        if not a:
            found.append(Issue(name, index, columns.video_a, a, "missing first video"))
        if not b:
            found.append(Issue(name, index, columns.video_b, b, "missing second video"))
        elif a and a == b:
            found.append(Issue(name, index, columns.video_b, b, "the same video as video A: not a pair"))
        human, mos, stds = None, [None, None], [None, None]
        if by_preference:
            label = text(record.get(columns.preference))
            human = PREFERENCES.get(label.lower())
            if human is None:
                found.append(Issue(name, index, columns.preference, label, "not one of 'A', 'B', 'tie'"))
        for side, (mos_column, std_column) in enumerate(((columns.mos_a, columns.std_a),
                                                         (columns.mos_b, columns.std_b))):
            if not by_preference:
                cell = text(record.get(mos_column))
                mos[side] = _number(cell)
                if mos[side] is None:
                    found.append(Issue(name, index, mos_column, cell, "not a number" if cell else "missing MOS"))
            if text(record.get(std_column)):
                try:
                    stds[side] = parse_std(record.get(std_column))
                except LabelError as err:
                    found.append(Issue(name, index, std_column, text(record.get(std_column)), str(err)))
        if not by_preference and None not in mos:
            human = (mos[0] > mos[1]) - (mos[0] < mos[1])
        issues.extend(found)
        rows.append(PairRow(index, a, b, human, text(record.get(columns.prompt)) or None, tuple(mos), tuple(stds),
                            text(record.get(columns.dimension)) or None, bool(found)))
    return rows, issues


@dataclass(frozen=True)
class Rated:
    """A pointwise row pairs are drawn from: its identity, video, MOS and group."""

    key: Any  # (file, row)
    video: str
    mos: float
    group: str


def draw_pairs(rows: Sequence[Rated], margin: float, cap: int, seed: int) -> list[tuple[Rated, Rated]]:
    """Pairs of rows of the same group whose MOS differ by more than ``margin``, each row in at most ``cap``
    pairs, in a random order (which row comes first, too); the same rows, margin, cap and seed give the same
    pairs. Rows with the same video, or the same row twice, are never paired."""
    rng = random.Random(seed)
    by_group: dict[str, list[Rated]] = defaultdict(list)
    for row in rows:
        by_group[row.group].append(row)
    candidates = []
    for group in sorted(by_group):
        members = by_group[group]
        candidates += [(x, y) for i, x in enumerate(members) for y in members[i + 1:]
                       if x.key != y.key and x.video != y.video and abs(x.mos - y.mos) > margin]
    rng.shuffle(candidates)
    used: dict[Any, int] = defaultdict(int)
    drawn = []
    for x, y in candidates:
        if used[x.key] < cap and used[y.key] < cap:
            used[x.key] += 1
            used[y.key] += 1
            drawn.append((x, y) if rng.random() < 0.5 else (y, x))
    return drawn


# The comparison prompt. Fields: {first}, {second} (where each medium goes), {prompt} (the text prompt sentence,
# empty without one), {a}, {b} (the choice words), {choices} (what to answer), {media} ("videos", "images", ...).
DEFAULT_PAIR_TEMPLATE = (
    "{a}: {first}\n{b}: {second}\n"
    "You are an expert in assessing the quality of AI-generated {media}. {prompt}"
    "Which of the two, {a} or {b}, has the better overall quality, considering aesthetic quality, image quality, "
    "temporal quality and text-video alignment? Answer with {choices}. Output the answer only."
)
# Two images: the image prompt's dimensions (no temporal quality; text-image alignment). An image and a video keep
# the video wording: one of the two has a temporal quality.
DEFAULT_IMAGE_PAIR_TEMPLATE = DEFAULT_PAIR_TEMPLATE.replace(
    "image quality, temporal quality and text-video alignment", "image quality and text-image alignment")
PROMPT_SENTENCE = 'Both were generated from the text prompt: "{text}"\n'
_PAIR_FIELDS = {"first", "second", "prompt", "a", "b", "choices", "media"}


def check_pair_template(template: str) -> None:
    """{first} and {second} once each, only the known fields, no literal media placeholder."""
    names = template_fields(template, _PAIR_FIELDS, "pair template")
    for name in ("first", "second"):
        if names.count(name) != 1:
            raise PromptTemplateError(f"pair template must contain {{{name}}} exactly once")
    if any(p in template for p in MEDIA_PLACEHOLDERS.values()):
        raise PromptTemplateError("write {first} and {second} instead of literal media placeholders")


@dataclass(frozen=True)
class ChoiceWords:
    """The answer words: A better, B better, and a tie (used with ties answered)."""

    a: str = "A"
    b: str = "B"
    tie: str = "tie"
    ties: str = "skip"  # "skip": tied pairs are left out; "answer": answered with ``tie``

    @classmethod
    def parse(cls, words: str, ties: str) -> "ChoiceWords":
        parts = [w.strip() for w in words.split(",")]
        if len(parts) != 3 or not all(parts) or len(set(parts)) != 3:
            raise ValueError(f"three different words, A better, B better and a tie, comma-separated, got {words!r}")
        if any(any(c.isdigit() or c.isspace() for c in w) for w in parts):
            raise ValueError(f"choice words have no digits or spaces, got {words!r}")
        return cls(*parts, ties=ties)

    @property
    def answers(self) -> tuple[str, ...]:
        """The words a comparison is answered with, in order (P(A) is the first one's probability)."""
        return (self.a, self.b, self.tie) if self.ties == "answer" else (self.a, self.b)

    def answer(self, human: int) -> Optional[str]:
        """The answer of a pair with preference ``human`` (None: a tie that is left out)."""
        if human == 0:
            return self.tie if self.ties == "answer" else None
        return self.a if human > 0 else self.b

    def wording(self) -> str:
        words = self.answers
        return " or ".join(words) if len(words) == 2 else f"{words[0]}, {words[1]} or {words[2]}"


def build_pair_prompt(kinds: tuple[str, str], user_prompt: Optional[str], choices: ChoiceWords,
                      template: Optional[str] = None) -> str:
    """The comparison prompt with one media placeholder per medium (A's first): ``<image>`` for an image,
    ``<video>`` for a video (``kinds``: A's and B's, ``images.media_kind``)."""
    media = "videos" if set(kinds) == {VIDEO} else "images" if set(kinds) == {IMAGE} else "images and videos"
    sentence = PROMPT_SENTENCE.format(text=neutralize_placeholders(user_prompt)) if user_prompt else ""
    default = DEFAULT_IMAGE_PAIR_TEMPLATE if set(kinds) == {IMAGE} else DEFAULT_PAIR_TEMPLATE
    return (template or default).format(
        first=MEDIA_PLACEHOLDERS[kinds[0]], second=MEDIA_PLACEHOLDERS[kinds[1]], prompt=sentence,
        a=choices.a, b=choices.b, choices=choices.wording(), media=media)


@dataclass
class PairSample:
    """A usable comparison: its origin, the two media (as written and resolved), the prompt and the answer."""

    file: str
    row: int  # the pairs file's row; drawn pairs: medium A's row (``rows`` holds both)
    key: str  # the sample's identity in the dataset (``annotations.ROW_COLUMN``)
    media: tuple[str, str]
    paths: tuple[str, str]
    human: int
    prompt: str
    answer: Optional[str]
    rows: tuple[int, ...] = ()
    frames: list[list[str]] = field(default_factory=list)  # per medium: a video's frames, an image's one copy
    kinds: tuple[str, str] = (VIDEO, VIDEO)
    mos: tuple[Optional[float], Optional[float]] = (None, None)  # A's and B's MOS, when the data has them
    stds: tuple[Optional[float], Optional[float]] = (None, None)  # and their raters' standard deviations

    def media_lists(self) -> tuple[list[str], list[list[str]]]:
        """(images, videos) as LLaMA-Factory takes a sample's media: each kind in prompt order (an image: its one
        cached file). The prompt's placeholders say which of them is A."""
        images = [frames[0] for frames, kind in zip(self.frames, self.kinds) if kind == IMAGE]
        videos = [frames for frames, kind in zip(self.frames, self.kinds) if kind != IMAGE]
        return images, videos


def drawn_pair_key(first: str, second: str) -> str:
    """The identity of a drawn pair, from its two rows' identities."""
    return f"{first}|{second}"


def media_path(media_dir: str, medium: str) -> str:
    return os.path.join(media_dir, medium)
