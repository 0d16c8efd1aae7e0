"""Annotation files: one row per video or image (media path, text prompt, decimal MOS, and one MOS per further
quality dimension when the run lists several: see ``dimensions``). A row's medium is an image when its file's
content is one (``images``); a file may mix images and videos.

Reads CSV, JSON (array) and JSONL with pandas, checks every row, and turns
each good row into a training sample (prompt, label, sampled frames). Every
row is accounted for: it is either used or listed as an :class:`Issue` that
names the file, the row and the field. Rows are numbered from 1 in file
order, not counting a CSV header (CSV row N is on line N + 1).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator, Optional

from .dimensions import mos_columns, row_samples
from .frames import FrameCache, FrameSpec, extract_many
from .images import IMAGE, VIDEO, media_kind
from .label_formats import mos_to_label
from .labels import LabelError, parse_std
from .prompt import cut_prompt

if TYPE_CHECKING:  # the settings are handed in; config.py stands above data/
    from ..config import IOVQAArguments

EXTENSIONS = (".csv", ".json", ".jsonl")
_SHOWN_ISSUES = 20


@dataclass(frozen=True)
class Columns:
    video: str
    prompt: str
    mos: str
    std: Optional[str] = None  # the MOS's rater standard deviation (soft level targets), when the data has one


@dataclass
class Sample:
    """A usable row."""

    file: str
    row: int
    video: str  # as written in the file
    video_path: str  # resolved path
    mos: float
    label: str
    prompt: str  # the full evaluation prompt (with the video placeholder)
    frames: list[str] = field(default_factory=list)
    dimension: Optional[str] = None  # per_sample layout: the dimension asked about (else None)
    std: Optional[float] = None  # the MOS's standard deviation (Columns.std)
    media: str = VIDEO  # IMAGE: frames holds the image's one decoded copy, the prompt says image


@dataclass(frozen=True)
class Issue:
    """A row that cannot be used, and why."""

    file: str
    row: int
    field: str
    value: str
    reason: str
    video: str = ""  # the row's video id, as written (empty when missing)

    def __str__(self) -> str:
        return f"{self.file}: row {self.row}{_line_hint(self)}: field {self.field!r} = {self.value!r}: {self.reason}"


def _line_hint(issue: Issue) -> str:
    if issue.row > 0 and issue.file.lower().endswith(".csv"):
        return f" (line {issue.row + 1})"
    if issue.row > 0 and issue.file.lower().endswith(".jsonl"):
        return f" (line {issue.row})"
    return ""


class AnnotationError(ValueError):
    """Bad annotation rows; ``issues`` lists all of them."""

    def __init__(self, issues: list[Issue],
                 hint: str = "Fix the rows, or set `iovqa_on_bad_row: skip` to leave them out with a report."):
        self.issues = issues
        shown = "\n  ".join(str(i) for i in issues[:_SHOWN_ISSUES])
        more = f"\n  ... and {len(issues) - _SHOWN_ISSUES} more" if len(issues) > _SHOWN_ISSUES else ""
        super().__init__(f"{len(issues)} bad annotation row(s):\n  {shown}{more}\n{hint}")


class AnnotationFileError(ValueError):
    """An annotation file that cannot be read as one: its format, or a column it lacks."""


# LLaMA-Factory's DatasetAttr defaults: a dataset_info entry without `columns` has these.
STOCK_COLUMN_DEFAULTS = {"videos": None, "prompt": "instruction", "response": "output"}


def resolve_columns(dataset_attr: Any, iovqa_args: IOVQAArguments) -> Columns:
    """dataset_info.json `columns` (videos, prompt, response, std) where given, else the plugin's column keys.

    The std column is read by soft-target runs only (level words, or comparisons: the only ones with a use for
    it)."""

    def pick(attr: str, fallback: str) -> str:
        value = getattr(dataset_attr, attr, None)
        return fallback if value is None or value == STOCK_COLUMN_DEFAULTS[attr] else value

    return Columns(
        video=pick("videos", iovqa_args.video_column),
        prompt=pick("prompt", iovqa_args.prompt_column),
        mos=pick("response", iovqa_args.mos_column),
        std=((getattr(dataset_attr, "std", None) or iovqa_args.std_column)
             if iovqa_args.soft_targets or iovqa_args.pair_soft_targets else None),
    )


def annotation_files(path: str) -> list[str]:
    """The annotation file, or the annotation files in a folder (sorted)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no {'/'.join(EXTENSIONS)} annotation file")
        return files
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    return [path]


def read_table(path: str):
    """The file as a DataFrame of raw cells (CSV cells as text; a UTF-8 BOM is ignored)."""
    import pandas as pd

    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        elif ext == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False, convert_dates=False, encoding="utf-8-sig")
        elif ext == ".json":
            frame = pd.read_json(path, dtype=False, convert_dates=False, encoding="utf-8-sig")
        else:
            raise AnnotationFileError(f"{path}: unsupported annotation format {ext!r}; use one of {EXTENSIONS}")
    except AnnotationFileError:
        raise
    except (ValueError, UnicodeDecodeError) as err:
        raise AnnotationFileError(f"{path}: cannot be read as {ext[1:].upper()} ({err})") from None
    frame.columns = [str(c).lstrip("\ufeff").strip() for c in frame.columns]
    if ext != ".csv":  # JSON has no NaN: a NaN pandas reads is a null or a missing key; keep it None
        frame = frame.astype(object).where(frame.notna(), None)
    return frame


def annotation_tables(path: str) -> Iterator[tuple[str, list[str], list[dict[str, Any]]]]:
    """(file, its columns, its rows as records) of each annotation file at ``path``: the one reader of annotation
    files, for training (LLaMA-Factory's dataset and the converter), scoring, ``iovqa eval`` and ensembles."""
    for file in annotation_files(path):
        table = read_table(file)
        yield file, list(table.columns), table.to_dict(orient="records")


ROW_COLUMN = "_iovqa_row"  # the row's identity, carried through LLaMA-Factory's dataset to the converter


def row_id(file: str, row: int, dimension: Optional[str] = None) -> str:
    """A row's identity; with a dimension, the identity of that row's per_sample sample of the dimension."""
    key = f"{row}:{os.path.abspath(file)}"
    return key if dimension is None else f"{dimension}@{key}"


def annotation_rows(path: str, dimensions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every row of the annotation file(s) at ``path``, in order, each cell as text (None when missing).

    This is what LLaMA-Factory's dataset holds for an ``iovqa`` dataset: the
    ``datasets`` JSON loader infers one type per column and fails, without a
    row number, on a number written as text among numbers ("3.25" next to
    3.5). Reading cells as text leaves every check to :func:`load_annotations`,
    which accepts numeric text in any format. ``ROW_COLUMN`` names the row.
    ``dimensions`` (the per_sample layout): each row is repeated once per dimension, in that order, and
    ``ROW_COLUMN`` names the (row, dimension) sample.
    """
    rows = []
    for file, _, records in annotation_tables(path):
        for row, record in enumerate(records, start=1):
            cells = {str(k): None if _is_missing(v) and not isinstance(v, str) else str(v) for k, v in record.items()}
            for dimension in dimensions or (None,):
                rows.append({**cells, ROW_COLUMN: row_id(file, row, dimension)})
    return rows


def check_columns(path: str, present: list[str], columns: Columns, mos: tuple[str, ...] = ()) -> None:
    """``mos``: the MOS columns read (default: ``columns.mos``)."""
    wanted = (columns.video, columns.prompt, *(mos or (columns.mos,)), columns.std)
    missing = [c for c in wanted if c is not None and c not in present]
    if not missing:
        return
    hint = ""
    if len(present) == 1 and any(sep in present[0] for sep in (";", "\t", "|")):
        hint = " The header looks like one column: the file must be comma-separated."
    raise AnnotationFileError(
        f"{path}: missing column(s) {missing}; the file has {present}.{hint} "
        "Map your names in dataset_info.json `columns` (videos, prompt, response) "
        "or with iovqa_video_column / iovqa_prompt_column / iovqa_mos_column (iovqa_dimension_columns for the "
        "MOS of other dimensions, iovqa_std_column for the MOS's standard deviation)."
    )


def _shown(value: Any) -> str:
    """A cell as a report shows it (a JSON null or missing key: "null")."""
    return "null" if value is None else str(value)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and not value.strip()


def _video_issue(file: str, row: int, record: dict, column: str) -> Optional[Issue]:
    video = record.get(column)
    if _is_missing(video) or not isinstance(video, str):
        return Issue(file, row, column, _shown(video), "video path is empty or not text")
    return None


def _label(file: str, row: int, record: dict, column: str, label_format: str) -> tuple[Optional[str], Optional[Issue]]:
    """(the label of a row's MOS in ``column``, None) or (None, the issue that makes it no label)."""
    try:
        return mos_to_label(record.get(column), label_format), None
    except LabelError as err:
        return None, Issue(file, row, column, _shown(record.get(column)), str(err))


def check_labels(file: str, table: Any, video_column: str, mos_column: str) -> None:
    """Refuse labels (``iovqa eval``, ``iovqa ensemble --fit-labels``) that training would refuse: every row's
    video id and MOS are checked as training checks them (:class:`AnnotationError` listing file, row, field)."""
    issues = []
    for row, record in enumerate(table.to_dict(orient="records"), start=1):
        found = [_video_issue(file, row, record, video_column), _label(file, row, record, mos_column, "integer")[1]]
        issues += [issue for issue in found if issue]
    if issues:
        raise AnnotationError(issues, hint=f"Fix the rows: {mos_column} is checked as training checks a MOS.")


def row_input(file: str, row: int, record: dict, columns: Columns,
              prompt_free: bool = False) -> tuple[Any, Any, list[Issue]]:
    """(video, text prompt, issues) of one record: what scoring reads of a row, checked as training checks it.

    ``prompt_free``: the row is asked without its text prompt (an image row under a prompt-free image template)."""
    issues = [issue for issue in [_video_issue(file, row, record, columns.video)] if issue]
    prompt = record.get(columns.prompt)
    if prompt_free:
        prompt = "" if _is_missing(prompt) else str(prompt)
    elif _is_missing(prompt):
        reason = "text prompt is empty" if columns.prompt in record else (
            f"no text prompt: the file has no {columns.prompt!r} column, which only image rows (under an "
            "iovqa_image_prompt_template without {prompt}) may go without")
        issues.append(Issue(file, row, columns.prompt, _shown(prompt), reason))
    elif not isinstance(prompt, str):
        prompt = str(prompt)
    return record.get(columns.video), prompt, issues


def _row_issues(file: str, row: int, record: dict, columns: Columns, iovqa_args: IOVQAArguments,
                prompt_free: bool = False):
    """({dimension: label}, prompt text, std, issues) for one record; each dimension's MOS is checked alike."""
    _, prompt, issues = row_input(file, row, record, columns, prompt_free)
    labels = {}
    for dimension, column in mos_columns(iovqa_args.dimension_names, iovqa_args.dimension_columns, columns.mos).items():
        labels[dimension], issue = _label(file, row, record, column, iovqa_args.label_format)
        issues += [issue] if issue else []
    std = None
    if columns.std is not None:
        try:
            std = parse_std(record.get(columns.std))
        except LabelError as err:
            issues.append(Issue(file, row, columns.std, _shown(record.get(columns.std)), str(err)))
    return labels, prompt, std, issues


def load_annotations(
    path: str, columns: Columns, iovqa_args: IOVQAArguments, media_dir: str, progress: bool = True
) -> tuple[list[Sample], list[Issue], dict[str, int]]:
    """Check every row of the annotation file(s) at ``path`` and sample frames.

    Returns (samples, issues, stats). Raises :class:`AnnotationError` listing
    all bad rows unless ``iovqa_args.on_bad_row == "skip"``.
    """
    records = []
    mos_of = mos_columns(iovqa_args.dimension_names, iovqa_args.dimension_columns, columns.mos)
    # photographs under a prompt-free image template: a file of them may have no prompt column
    needed = replace(columns, prompt=None) if iovqa_args.image_prompt_free else columns
    for file, present, rows in annotation_tables(path):
        check_columns(file, present, needed, tuple(dict.fromkeys(mos_of.values())))
        records.extend((file, row, rec) for row, rec in enumerate(rows, start=1))

    # A video named by several rows is ambiguous. In error mode every one of those rows is reported; when bad
    # rows are skipped, the first row (in file order) is kept and the later ones are reported as its duplicates.
    rows_of = defaultdict(list)
    for file, row, record in records:
        video = record.get(columns.video)
        if isinstance(video, str) and video.strip():
            rows_of[video.strip()].append((file, row))

    samples: list[Sample] = []
    issues: list[Issue] = []
    stats = {"rows": len(records), "prompts_cut": 0}
    for file, row, record in records:
        video = record.get(columns.video)
        video = video.strip() if isinstance(video, str) else video
        path = os.path.join(media_dir, video) if isinstance(video, str) and video else ""
        kind = media_kind(path) if path else VIDEO  # a file neither image nor video is reported with the frames
        labels, prompt, std, row_issues = _row_issues(file, row, record, columns, iovqa_args,
                                                      kind == IMAGE and iovqa_args.image_prompt_free)
        if video in rows_of and len(rows_of[video]) > 1:
            (first_file, first_row), keep_first = rows_of[video][0], iovqa_args.on_bad_row == "skip"
            if not keep_first:
                others = ", ".join(f"{os.path.basename(f)} row {r}" for f, r in rows_of[video] if (f, r) != (file, row))
                row_issues.append(Issue(file, row, columns.video, video, f"duplicate video id (also {others})"))
            elif (first_file, first_row) != (file, row):
                reason = f"duplicate video id: only its first row ({os.path.basename(first_file)} row {first_row}) is used"
                row_issues.append(Issue(file, row, columns.video, video, reason))
        if row_issues:
            key = video if isinstance(video, str) else ""
            issues.extend(Issue(i.file, i.row, i.field, i.value, i.reason, key) for i in row_issues)
            continue
        cut = cut_prompt(prompt, iovqa_args.max_prompt_chars)
        stats["prompts_cut"] += cut != prompt
        prompt = cut
        for dimension, full_prompt, answer in row_samples(prompt, labels, iovqa_args, kind):
            column = mos_of[dimension or iovqa_args.dimension_names[0]]  # joint: the first dimension's MOS
            samples.append(
                Sample(
                    file=file,
                    row=row,
                    video=video,
                    video_path=path,
                    mos=float(record[column]),
                    label=answer,
                    prompt=full_prompt,
                    dimension=dimension,
                    std=std,
                    media=kind,
                )
            )

    samples, video_issues = _attach_frames(samples, columns, iovqa_args, progress)
    issues.extend(dict.fromkeys(video_issues))  # per_sample: a row's samples share its video (one issue)
    issues.sort(key=lambda i: (i.file, i.row))
    if issues and iovqa_args.on_bad_row == "error":
        raise AnnotationError(issues)
    stats["used"] = len({(s.file, s.row) for s in samples})
    stats["samples"] = len(samples)  # per_sample dimensions: several per row
    stats["skipped_rows"] = len({(i.file, i.row) for i in issues})
    return samples, issues, stats


def _attach_frames(samples: list[Sample], columns: Columns, iovqa_args: IOVQAArguments, progress: bool):
    spec = FrameSpec(iovqa_args.num_frames, iovqa_args.frame_strategy, iovqa_args.frame_format)
    cache = FrameCache(iovqa_args.cache_dir, spec)
    results = extract_many(
        [s.video_path for s in samples], cache, workers=iovqa_args.frame_workers, progress=progress, desc="iovqa frames"
    )
    kept, issues = [], []
    for sample in samples:
        frames, error = results[sample.video_path]
        if error is not None:
            issues.append(
                Issue(sample.file, sample.row, columns.video, sample.video, f"{sample.video_path}: {error}", sample.video)
            )
        else:
            sample.frames = frames
            kept.append(sample)
    return kept, issues


def write_issue_report(issues: list[Issue], path: str, files: list[str]) -> None:
    """Write (or update) the CSV of skipped rows of ``files``; rows of other files are kept."""
    import pandas as pd

    fresh = pd.DataFrame([vars(i) for i in issues], columns=["file", "row", "field", "value", "reason", "video"])
    if os.path.isfile(path):
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
        old = old[~old["file"].isin(files)]
        fresh = pd.concat([old, fresh], ignore_index=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fresh.to_csv(path, index=False)
