"""Comparison samples from annotation files: a pairs file's rows, or pairs drawn from a pointwise file.

Every row is accounted for as in ``annotations``: used, or an :class:`~.annotations.Issue` naming the file,
the row and the field (a missing or identical second medium, a preference label outside A / B / tie, a MOS
that is not a number, a medium that does not decode; for drawn pairs, every check of the pointwise rows, a
missing MOS included, and a missing group value). Human ties are not issues: with ``iovqa_pair_ties: skip``
they are counted in the stats (``ties_left_out``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .annotations import (AnnotationError, AnnotationFileError, Columns, Issue, annotation_tables, load_annotations,
                          row_id)
from .frames import FrameCache, FrameSpec, extract_many
from .images import media_kind
from .pairs import (PairColumns, PairSample, Rated, build_pair_prompt, draw_pairs, drawn_pair_key, media_path,
                    pair_columns_problem, parse_pair_rows, text)

if TYPE_CHECKING:  # the settings are handed in; iovqa_args.py stands above data/
    from ..config import IOVQAArguments


def _stop_or_keep(samples: list[PairSample], issues: list[Issue], iovqa_args: IOVQAArguments, stats: dict):
    issues.sort(key=lambda i: (i.file, i.row))
    if issues and iovqa_args.on_bad_row == "error":
        raise AnnotationError(issues)
    stats["samples"] = len(samples)
    stats["skipped_rows"] = len({(i.file, i.row) for i in issues})
    return samples, issues, stats


def load_pair_file(path: str, columns: PairColumns, iovqa_args: IOVQAArguments, media_dir: str,
                   progress: bool = True) -> tuple[list[PairSample], list[Issue], dict]:
    """Check every row of the pairs file(s) at ``path`` and sample both media's frames: (samples, issues,
    stats). Raises :class:`AnnotationError` listing every bad row unless ``iovqa_args.on_bad_row == "skip"``."""
    choices = iovqa_args.choices
    samples, issues = [], []
    stats = {"rows": 0, "ties_left_out": 0, "tie_keys": [], "prompts_cut": 0}
    for file, present, records in annotation_tables(path):
        problem = pair_columns_problem(present, columns)
        if problem:
            raise AnnotationFileError(f"{file}: not a pairs file: {problem}. Name your columns with "
                                      "iovqa_pair_columns or the dataset's `columns` (roles video_a, video_b, "
                                      "preference, mos_a, mos_b, std_a, std_b, prompt)")
        rows, found = parse_pair_rows(records, file, columns)
        stats["rows"] += len(rows)
        issues += found
        for pair in rows:
            if pair.bad:
                continue
            answer = choices.answer(pair.human)
            if answer is None:
                stats["ties_left_out"] += 1
                stats["tie_keys"].append(row_id(file, pair.row))
                continue
            prompt = pair.prompt
            if prompt and len(prompt) > iovqa_args.max_prompt_chars:
                prompt, stats["prompts_cut"] = prompt[: iovqa_args.max_prompt_chars], stats["prompts_cut"] + 1
            paths = (media_path(media_dir, pair.video_a), media_path(media_dir, pair.video_b))
            kinds = (media_kind(paths[0]), media_kind(paths[1]))  # by content; neither kind: reported with the frames
            samples.append(PairSample(
                file=file, row=pair.row, key=row_id(file, pair.row), media=(pair.video_a, pair.video_b), paths=paths,
                human=pair.human, prompt=build_pair_prompt(kinds, prompt, choices, iovqa_args.pair_template),
                answer=answer, rows=(pair.row,), kinds=kinds, mos=pair.mos, stds=pair.stds))
    samples, frame_issues = attach_pair_frames(samples, (columns.video_a, columns.video_b), iovqa_args, progress)
    stats["used"] = len(samples)
    return _stop_or_keep(samples, issues + frame_issues, iovqa_args, stats)


def attach_pair_frames(samples: list[PairSample], fields: tuple[str, str], iovqa_args: IOVQAArguments,
                       progress: bool = True) -> tuple[list[PairSample], list[Issue]]:
    """Both media's cached frames of each sample; a medium that does not decode is an issue of its field."""
    cache = FrameCache(iovqa_args.cache_dir, FrameSpec(iovqa_args.num_frames, iovqa_args.frame_strategy, iovqa_args.frame_format))
    paths = list(dict.fromkeys(p for s in samples for p in s.paths))
    results = extract_many(paths, cache, workers=iovqa_args.frame_workers, progress=progress, desc="iovqa frames")
    kept, issues = [], []
    for sample in samples:
        found = [Issue(sample.file, sample.row, field, medium, f"{path}: {results[path][1]}", medium)
                 for field, medium, path in zip(fields, sample.media, sample.paths) if results[path][1] is not None]
        if found:
            issues += found
            continue
        sample.frames = [results[path][0] for path in sample.paths]
        kept.append(sample)
    return kept, issues


def load_drawn_pairs(path: str, columns: Columns, iovqa_args: IOVQAArguments, media_dir: str,
                     progress: bool = True) -> tuple[list[PairSample], list[Issue], dict]:
    """Pairs drawn from the pointwise annotation file(s) at ``path`` (see ``pairs.draw_pairs``): the rows are
    checked (and their frames sampled) as for scoring; a row without a MOS or without a group value is an issue
    (an error unless ``iovqa_args.on_bad_row == "skip"``), never paired."""
    points, issues, point_stats = load_annotations(path, columns, iovqa_args, media_dir, progress)
    group_column = iovqa_args.pair_group_column or columns.prompt
    groups, texts = {}, {}
    for file, present, records in annotation_tables(path):
        if group_column not in present:
            raise AnnotationFileError(f"{file}: no {group_column!r} column to group pairs by (columns: "
                                      f"{present}); set iovqa_pair_group_column")
        for row, record in enumerate(records, start=1):
            groups[(file, row)] = text(record.get(group_column))
            texts[(file, row)] = text(record.get(columns.prompt))[: iovqa_args.max_prompt_chars]
    rated = []
    for sample in points:
        group = groups[(sample.file, sample.row)]
        if not group:
            issues.append(Issue(sample.file, sample.row, group_column, "", "no group value to draw pairs within",
                                sample.video))
            continue
        rated.append(Rated((sample.file, sample.row), sample.video, sample.mos, group))
    points_by_key = {(s.file, s.row): s for s in points}
    choices = iovqa_args.choices
    samples = []
    for first, second in draw_pairs(rated, iovqa_args.pair_margin, iovqa_args.pairs_per_row, iovqa_args.pair_seed):
        human = 1 if first.mos > second.mos else -1
        same_text = texts[first.key] if texts[first.key] == texts[second.key] else None
        (file, row), (file_b, row_b) = first.key, second.key
        a, b = points_by_key[first.key], points_by_key[second.key]
        samples.append(PairSample(
            file=file, row=row, key=drawn_pair_key(row_id(file, row), row_id(file_b, row_b)),
            media=(first.video, second.video),
            paths=(media_path(media_dir, first.video), media_path(media_dir, second.video)), human=human,
            prompt=build_pair_prompt((a.media, b.media), same_text, choices, iovqa_args.pair_template),
            answer=choices.answer(human), rows=(row, row_b), frames=[a.frames, b.frames], kinds=(a.media, b.media),
            mos=(first.mos, second.mos), stds=(a.std, b.std)))
    stats = {"rows": point_stats["rows"], "used": len({k for s in samples for k in s.rows}),
             "ties_left_out": 0, "tie_keys": [], "prompts_cut": point_stats["prompts_cut"]}
    return _stop_or_keep(samples, issues, iovqa_args, stats)


def load_comparisons(reads: str, path: str, iovqa_args: IOVQAArguments, media_dir: str,
                     columns: Optional[Columns] = None, pair_columns: Optional[PairColumns] = None,
                     progress: bool = True) -> tuple[list[PairSample], list[Issue], dict]:
    """The comparison samples of a layout that reads ``reads`` ("pairs": a pairs file; "pointwise": drawn)."""
    if reads == "pairs":
        return load_pair_file(path, pair_columns or iovqa_args.pair_column_names, iovqa_args, media_dir, progress)
    return load_drawn_pairs(path, columns, iovqa_args, media_dir, progress)


def pair_rows_of(samples: list[PairSample]) -> list[dict]:
    """The rows LLaMA-Factory's dataset holds for drawn pairs: one per pair, named by its key."""
    from .annotations import ROW_COLUMN

    return [{ROW_COLUMN: s.key} for s in samples]
