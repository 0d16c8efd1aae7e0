"""Naming data the way LLaMA-Factory does: a dataset name in ``dataset_info.json``, or an annotation file.

Every command that reads annotations (``prepare``, ``score``, ``eval``,
``ensemble``) resolves its data here: a dataset name is looked up in the
recipe's ``dataset_dir/dataset_info.json`` and read with that entry's
``columns`` mapping, exactly as training reads it; a file path is read with
the column options (default: the plugin's ``iovqa_*_column`` keys).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Optional

from .annotations import STOCK_COLUMN_DEFAULTS, Columns, resolve_columns
from .layouts import LAYOUTS, POINTWISE, POINTWISE_COLUMNS as ENTRY_COLUMNS
from .pairs import PairColumns

if TYPE_CHECKING:  # the settings are handed in; config.py stands above data/
    from ..config import IOVQAArguments

DEFAULT_DATASET_DIR = "data"  # LLaMA-Factory's default dataset_dir


class DatasetInfoError(ValueError):
    """A dataset_info.json entry the plugin cannot read as asked."""


@dataclass(frozen=True)
class DataSource:
    """Where a command's annotations are and how to read them."""

    name: str  # the dataset name, or the file path as given
    path: str  # annotation file (or folder of files)
    media_dir: str  # folder video paths are relative to
    columns: Columns
    formatting: str = POINTWISE
    pairs: Optional[PairColumns] = None  # the columns of a pairs file (formatting iovqa_pairs)
    prompt_optional: bool = False  # image rows are asked without a text prompt: the column may be missing


def data_dirs(recipe: dict) -> tuple[str, str]:
    """The recipe's dataset_dir and media_dir, with LLaMA-Factory's defaults."""
    dataset_dir = recipe.get("dataset_dir", DEFAULT_DATASET_DIR)
    return dataset_dir, recipe.get("media_dir") or dataset_dir


def dataset_names(recipe: dict) -> list[str]:
    """The recipe's ``dataset`` and ``eval_dataset`` names, in order."""
    names = []
    for key in ("dataset", "eval_dataset"):
        value = recipe.get(key)
        if isinstance(value, str):
            names += [n.strip() for n in value.split(",") if n.strip()]
        elif isinstance(value, list):
            names += [str(n).strip() for n in value]
    return names


def read_dataset_info(dataset_dir: str) -> dict:
    path = os.path.join(dataset_dir, "dataset_info.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def iovqa_columns(name: str, entry: dict) -> dict:
    """The `columns` mapping of a dataset entry in one of the plugin's layouts (``formatting``); a key the
    plugin does not read is refused (LLaMA-Factory keeps the keys it knows and drops the others silently)."""
    columns = entry.get("columns")
    if columns is None:
        return {}
    if not isinstance(columns, dict):
        raise DatasetInfoError(f"dataset {name!r}: `columns` must map names to columns, got {columns!r}")
    layout = LAYOUTS[entry.get("formatting", POINTWISE)]
    unknown = sorted(set(columns) - set(layout.columns))
    if unknown:
        extra = "; the MOS columns of other dimensions are iovqa_dimension_columns" if layout.reads == "pointwise" else ""
        raise DatasetInfoError(
            f"dataset {name!r} (formatting {layout.formatting}): `columns` maps {unknown}, which the plugin does not "
            f"read; an {layout.formatting} dataset maps {list(layout.columns)} ({layout.describe}){extra}"
        )
    return columns


def pair_columns(name: str, entry: dict, iovqa_args: IOVQAArguments) -> PairColumns:
    """The pairs file's columns of an ``iovqa_pairs`` entry: its `columns`, else iovqa_pair_columns."""
    return PairColumns.renamed({**(iovqa_args.pair_columns or {}), **iovqa_columns(name, entry)})


def entry_columns(name: str, entry: dict, iovqa_args: IOVQAArguments) -> Columns:
    """The annotation columns of a dataset_info entry, resolved as the formatter resolves them."""
    if "columns" not in entry:  # without `columns`, LLaMA-Factory's own defaults apply
        return resolve_columns(SimpleNamespace(**STOCK_COLUMN_DEFAULTS), iovqa_args)
    columns = iovqa_columns(name, entry) if entry.get("formatting") in LAYOUTS else entry["columns"] or {}
    return resolve_columns(SimpleNamespace(**{key: columns.get(key) for key in ENTRY_COLUMNS}), iovqa_args)


def resolve_data(data: str, recipe: Optional[dict], iovqa_args: IOVQAArguments, media_dir: Optional[str] = None,
                 columns: Optional[dict[str, Optional[str]]] = None, layout: Optional[str] = None) -> DataSource:
    """A dataset name (through the recipe's dataset_info.json) or an annotation file.

    ``columns`` (video / prompt / mos, from command options) override the entry's or the plugin's columns.
    ``layout``: the formatting an annotation file is read in (default: pointwise ``iovqa``); a dataset's is its
    entry's.
    """
    recipe = recipe or {}
    dataset_dir, recipe_media_dir = data_dirs(recipe)
    overrides = {k: v for k, v in (columns or {}).items() if v}
    if os.path.exists(data):
        base = resolve_columns(SimpleNamespace(videos=None, prompt=None, response=None), iovqa_args)
        layout = layout or POINTWISE
        pairs = iovqa_args.pair_column_names if LAYOUTS[layout].reads == "pairs" else None
        return DataSource(data, data, media_dir or recipe_media_dir, _override(base, overrides), layout, pairs,
                          prompt_optional=iovqa_args.image_prompt_free)
    info = read_dataset_info(dataset_dir)
    entry = info.get(data)
    if entry is None:
        where = f"{dataset_dir}/dataset_info.json" + ("" if recipe else " (give --recipe to use its dataset_dir)")
        known = ", ".join(sorted(info)) or "none"
        raise FileNotFoundError(f"{data!r} is neither a file nor a dataset in {where}; datasets there: {known}")
    if "file_name" not in entry:
        raise ValueError(f"dataset {data!r} in {dataset_dir}/dataset_info.json has no file_name")
    formatting = entry.get("formatting", "alpaca")
    if formatting in LAYOUTS and LAYOUTS[formatting].reads == "pairs":
        return DataSource(data, os.path.join(dataset_dir, entry["file_name"]), media_dir or recipe_media_dir,
                          entry_columns(data, {}, iovqa_args), formatting, pair_columns(data, entry, iovqa_args))
    return DataSource(
        data,
        os.path.join(dataset_dir, entry["file_name"]),
        media_dir or recipe_media_dir,
        _override(entry_columns(data, entry, iovqa_args), overrides),
        formatting,
        prompt_optional=iovqa_args.image_prompt_free,
    )


def _override(columns: Columns, overrides: dict[str, Any]) -> Columns:
    return Columns(**{**vars(columns), **overrides}) if overrides else columns


def scoring_rows(source: DataSource) -> list[tuple[str, str, str]]:
    """(video id, video path, text prompt) of every row of a source, in file order (labels not needed). Under a
    prompt-free image template (``prompt_optional``) an image row needs no text prompt, nor its file the column."""
    from .annotations import AnnotationError, AnnotationFileError, annotation_tables, row_input
    from .images import IMAGE, media_kind

    rows, issues = [], []
    for file, present, records in annotation_tables(source.path):
        for option, column in (("--video-column", source.columns.video), ("--prompt-column", source.columns.prompt)):
            if column == source.columns.prompt and source.prompt_optional:
                continue
            if column not in present:
                raise AnnotationFileError(f"{file}: no {column!r} column (columns: {present}); name yours with "
                                 f"{option}, or use a dataset name whose dataset_info.json entry maps `columns`")
        for row, record in enumerate(records, start=1):
            video = record.get(source.columns.video)
            free = (source.prompt_optional and isinstance(video, str) and video.strip()
                    and media_kind(os.path.join(source.media_dir, video.strip())) == IMAGE)
            video, prompt, found = row_input(file, row, record, source.columns, bool(free))
            issues += found
            if not found:
                rows.append((video.strip(), os.path.join(source.media_dir, video.strip()), prompt))
    if issues:
        raise AnnotationError(issues, hint="Fix the rows: a scored row's video and text prompt are checked as "
                                           "training checks them.")
    return rows
