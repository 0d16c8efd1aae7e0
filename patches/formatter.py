"""The ``iovqa`` dataset formatter (a LLaMA-Factory dataset converter).

In ``dataset_info.json``::

    "my_train": {
      "file_name": "train.csv",
      "formatting": "iovqa",
      "columns": {"videos": "video_name", "prompt": "Prompt", "response": "Overall_MOS"}
    }

When the converter is built it reads the whole annotation file once, checks
every row (with file, row and field in every message) and samples the frames
of every video into the frame cache; converting a row is then a lookup. Each
row becomes one sample: the evaluation prompt with one ``<video>`` (the
cached frame list), and the label ("37") as the assistant's response; a row
whose medium is an image, the image prompt with one ``<image>`` (the image's
cached copy). With
several quality dimensions (``iovqa_dimensions``) the ``joint`` layout's
response holds every dimension's score; in the ``per_sample`` layout the
loader gives each row once per dimension, and each becomes that dimension's
sample (its prompt and score).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from llamafactory.data.converter import DatasetConverter

from iovqa_plugin.config import IOVQAArguments
from iovqa_plugin.data.annotations import ROW_COLUMN, Sample, load_annotations, resolve_columns, row_id
from iovqa_plugin.data.annotations import write_issue_report
from iovqa_plugin.data.dimensions import sample_dimensions
from iovqa_plugin.data.images import IMAGE
from iovqa_plugin.logs import get_logger

from .run import remember_sample_origins, remember_sample_targets

logger = get_logger()


def _row_key(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ("" if value is None else str(value))


@dataclass
class IOVQADatasetConverter(DatasetConverter):
    """Rows of (video, text prompt, MOS) -> IOVQA samples, with the run's plugin configuration."""

    iovqa_args: Optional[IOVQAArguments] = field(default=None)

    def __post_init__(self):
        iovqa_args = self.iovqa_args
        if iovqa_args is None:
            logger.warning(
                "dataset %s uses formatting 'iovqa' but the recipe has no iovqa_* key: plugin defaults are used "
                "for labels and frames, and the label mask is off. Add iovqa_* keys to turn the plugin on.",
                self.dataset_attr,
            )
            iovqa_args = IOVQAArguments()
        self.iovqa_args = iovqa_args
        self.columns = resolve_columns(self.dataset_attr, iovqa_args)
        if self.dataset_attr.load_from != "file":
            raise ValueError(
                f"dataset {self.dataset_attr}: formatting 'iovqa' needs a local annotation file (file_name), "
                f"got {self.dataset_attr.load_from}"
            )
        path = os.path.join(self.data_args.dataset_dir, self.dataset_attr.dataset_name)
        samples, issues, stats = load_annotations(path, self.columns, iovqa_args, media_dir=self.data_args.media_dir)
        # Rows are found by the row id the plugin's loader adds (duplicated video ids stay apart), else by video id.
        self.samples = {key: _to_example(s) for s in samples
                        for key in ((s.video,) if s.dimension is None else ()) + (row_id(s.file, s.row, s.dimension),)}
        dimensions = sample_dimensions(iovqa_args)
        self.skipped = {key for i in issues
                        for key in (_row_key(i.video), *(row_id(i.file, i.row, d) for d in dimensions or (None,)))}
        remember_sample_origins(samples)
        if iovqa_args.level_scores:  # a level label does not carry the MOS: the collator looks it up
            remember_sample_targets(samples)
        self._report(path, issues, stats)

    def _report(self, path: str, issues: list, stats: dict) -> None:
        message = (
            f"dataset {self.dataset_attr} ({path}): {stats['rows']} rows, {stats['used']} used, "
            f"{stats['skipped_rows']} skipped"
        )
        if stats["samples"] != stats["used"]:
            message += f" ({stats['samples']} samples: one per row and dimension)"
        if stats["prompts_cut"]:
            message += f", {stats['prompts_cut']} text prompts cut to {self.iovqa_args.max_prompt_chars} characters"
        if issues:
            report = self.iovqa_args.skip_report_path
            if os.environ.get("LOCAL_RANK", "0") == "0":  # every rank finds the same rows: one writer per node
                write_issue_report(issues, report, sorted({issue.file for issue in issues}))
            message += f"; skipped rows and reasons: {report}"
        logger.info(message)

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        example = {str(k).lstrip("\ufeff").strip(): v for k, v in example.items()}
        key = example.get(ROW_COLUMN) or _row_key(example.get(self.columns.video))
        if key in self.samples:
            return self.samples[key]
        if key in self.skipped:  # reported in the skip report; an empty response makes LLaMA-Factory drop it
            return _example(prompt="", response=None, frames=None)
        raise KeyError(
            f"dataset {self.dataset_attr}: row with {self.columns.video}={key!r} was not in the checked annotation "
            "file (was the file changed while loading?)"
        )


def _example(prompt: str, response: str | None, frames: list[str] | None, image: bool = False) -> dict[str, Any]:
    """``frames``: a video's frame files, or (``image``) the one file of an image."""
    return {
        "_prompt": [{"role": "user", "content": prompt}],
        "_response": [] if response is None else [{"role": "assistant", "content": response}],
        "_system": "",
        "_tools": "",
        "_images": frames if image and frames is not None else None,
        "_videos": None if frames is None or image else [frames],
        "_audios": None,
    }


def _to_example(sample: Sample) -> dict[str, Any]:
    return _example(sample.prompt, sample.label, sample.frames, image=sample.media == IMAGE)
