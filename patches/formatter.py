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

from iovqa_plugin.config import IOVQAArguments, PluginConfigError
from iovqa_plugin.data.annotations import ROW_COLUMN, Sample, load_annotations, resolve_columns, row_id
from iovqa_plugin.data.layouts import LAYOUTS as LAYOUTS_BY_NAME, Layout
from iovqa_plugin.data.pair_samples import load_comparisons
from iovqa_plugin.data.pairs import PairColumns, PairSample
from iovqa_plugin.data.annotations import write_issue_report
from iovqa_plugin.data.dimensions import sample_dimensions
from iovqa_plugin.data.images import IMAGE
from iovqa_plugin.logs import get_logger

from .run import remember_pair_targets, remember_sample_origins, remember_sample_targets

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
        logger.info(message + self._cut_and_skipped(issues, stats))

    def _cut_and_skipped(self, issues: list, stats: dict) -> str:
        """The summary's end: prompts cut, and where the skipped rows are listed (the report is written here)."""
        message = ""
        if stats["prompts_cut"]:
            message += f", {stats['prompts_cut']} text prompts cut to {self.iovqa_args.max_prompt_chars} characters"
        if issues:
            report = self.iovqa_args.skip_report_path
            if os.environ.get("LOCAL_RANK", "0") == "0":  # every rank finds the same rows: one writer per node
                write_issue_report(issues, report, sorted({issue.file for issue in issues}))
            message += f"; skipped rows and reasons: {report}"
        return message

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


def _example(prompt: str, response: str | None, frames: list[str] | None, image: bool = False,
             media: tuple[list[str], list[list[str]]] | None = None) -> dict[str, Any]:
    """``frames``: a video's frame files, or (``image``) the one file of an image; ``media``: (images, videos)
    of a comparison, each kind in prompt order (``PairSample.media_lists``)."""
    images, videos = media if media is not None else (
        (frames, None) if image and frames is not None else (None, None if frames is None else [frames]))
    return {
        "_prompt": [{"role": "user", "content": prompt}],
        "_response": [] if response is None else [{"role": "assistant", "content": response}],
        "_system": "",
        "_tools": "",
        "_images": images or None,
        "_videos": videos or None,
        "_audios": None,
    }


def _to_example(sample: Sample) -> dict[str, Any]:
    return _example(sample.prompt, sample.label, sample.frames, image=sample.media == IMAGE)


def check_comparison_run(iovqa_args: IOVQAArguments, dataset: Any) -> None:
    """Comparison samples train next to integer or decimal scores (their mask keeps the choice word); what reads
    a score from every row of a batch (the head, level targets, the fidelity loss) cannot take them."""
    problems = [what for what, on in (("iovqa_head", iovqa_args.head_on),
                                      ("level-word labels", iovqa_args.format.words),
                                      ("iovqa_rank_loss", iovqa_args.rank_on),
                                      ("iovqa_dimensions other than overall", iovqa_args.multi_dimension)) if on]
    if problems:
        raise PluginConfigError(f"dataset {dataset}: comparison samples (formatting {dataset.formatting}) train "
                                f"with integer or decimal scoring runs of one dimension; this run sets "
                                f"{', '.join(problems)}")


@dataclass
class PairDatasetConverter(IOVQADatasetConverter):
    """Rows of a pairs file, or pairs drawn from a pointwise file -> comparison samples (two media: videos,
    images or one of each; the question which is better, the choice word as the answer)."""

    def __post_init__(self):
        iovqa_args = self.iovqa_args or IOVQAArguments()
        if self.iovqa_args is None:
            logger.warning("dataset %s uses formatting %r but the recipe has no iovqa_* key: plugin defaults are "
                           "used", self.dataset_attr, self.dataset_attr.formatting)
        check_comparison_run(iovqa_args, self.dataset_attr)
        self.iovqa_args = iovqa_args
        self.columns = resolve_columns(self.dataset_attr, iovqa_args)
        layout = LAYOUTS_BY_NAME[self.dataset_attr.formatting]
        pair_columns = None
        if layout.reads == "pairs":  # the roles the dataset's `columns` map (carried by the loader patch)
            pair_columns = PairColumns.renamed({**(iovqa_args.pair_columns or {}),
                                                **(getattr(self.dataset_attr, "pair_columns", None) or {})})
        path = os.path.join(self.data_args.dataset_dir, self.dataset_attr.dataset_name)
        samples, issues, stats = load_comparisons(layout.reads, path, iovqa_args, self.data_args.media_dir,
                                                  columns=self.columns, pair_columns=pair_columns)
        self.samples = {s.key: _pair_example(s) for s in samples}
        remember_sample_origins(samples)  # comparison rows are the run's own, next to stock question rows
        if iovqa_args.pair_soft_targets:  # the choice's soft target is not in the answer: the collator looks it up
            from iovqa_plugin.train.rank_loss import preference_probability

            remember_pair_targets(samples, preference_probability)
        # bad rows (in the skip report) and left-out ties (counted in the summary) become empty samples
        self.skipped = {row_id(i.file, i.row) for i in issues} | set(stats["tie_keys"])
        self._report(path, issues, stats)

    def _report(self, path: str, issues: list, stats: dict) -> None:
        drawn = self.dataset_attr.formatting != "iovqa_pairs"
        message = (f"dataset {self.dataset_attr} ({path}): {stats['rows']} rows, {stats['skipped_rows']} skipped, "
                   f"{stats['samples']} comparison samples" + (f" drawn from {stats['used']} rows" if drawn else ""))
        if stats["ties_left_out"]:
            message += f", {stats['ties_left_out']} tied pairs left out (iovqa_pair_ties: skip)"
        logger.info(message + self._cut_and_skipped(issues, stats))

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        key = example.get(ROW_COLUMN)
        if key in self.samples:
            return self.samples[key]
        if key in self.skipped:
            return _example(prompt="", response=None, frames=None)
        raise KeyError(f"dataset {self.dataset_attr}: pair {key!r} was not in the checked annotation file (was the "
                       "file changed while loading?)")


def _pair_example(sample: PairSample) -> dict[str, Any]:
    return _example(sample.prompt, sample.answer, None, media=sample.media_lists())


def converter_class(layout: Layout) -> type:
    """The formatter of a layout."""
    return PairDatasetConverter if layout.comparison else IOVQADatasetConverter
