"""The plugin's recipe keys: one dataclass with help strings and validation (the schema; reading recipe values
into it is ``config_parser``'s, as LLaMA-Factory's hparams keep the dataclasses apart from their parser).

Every plugin key in a LLaMA-Factory recipe is spelled ``iovqa_<field>``. The
keys are taken out of the recipe before LLaMA-Factory's own argument parser
sees it (``recipe.split_recipe``); an ``iovqa_*`` key that is not a field
below is an error. A recipe with no ``iovqa_*`` key leaves the plugin
inactive: LLaMA-Factory then behaves exactly as without the plugin.

Standard library only: this module is imported while recipes are read.
"""

from __future__ import annotations

import os
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Optional

from .data.frames import PAIRED_STRATEGIES, STRATEGIES
from .data.label_formats import LABEL_FORMATS, get_label_format, label_format_help
from .rl.settings import GRPO_CHOICES, GRPOArguments

PREFIX = "iovqa_"

TAOBAO_VIDEO_COLUMN = "video_name"
TAOBAO_PROMPT_COLUMN = "Prompt"
TAOBAO_MOS_COLUMN = "Overall_MOS"

class PluginConfigError(ValueError):
    """An ``iovqa_*`` recipe key is unknown or has an invalid value."""


@dataclass
class IOVQAArguments(GRPOArguments):
    """Arguments of the IOVQA plugin (recipe keys ``iovqa_<name>``; the GRPO keys are inherited). An instance is
    called ``iovqa_args`` wherever it is passed, beside LLaMA-Factory's ``model_args``, ``data_args`` and
    ``finetuning_args``."""

    label_format: str = field(
        default="integer",
        metadata={"help": label_format_help(), "choices": lambda: tuple(LABEL_FORMATS)},
    )
    label_mask: Literal["digits", "none"] = field(
        default="digits",
        metadata={
            "help": "`digits`: loss on the tokens of the score only; `<|im_end|>`, newline and any other response "
            "token are masked (the paper's integer-only mask; with level labels, the level word's tokens). "
            "`none`: standard SFT labels (ablation)."
        },
    )
    yes_no_mask: bool = field(
        default=False,
        metadata={
            "help": "Samples of a stock dataset mixed into the run (question/answer about a video or image, e.g. "
            "VQ-Insight's 'Is the motion pattern reasonable?') whose whole answer is yes or no (any case, an optional "
            "final period) train on the answer word only, as a score trains on its digits. Other stock samples "
            "always keep LLaMA-Factory's full-answer loss. Needs label_mask: digits."
        },
    )
    num_frames: int = field(
        default=2,
        metadata={"help": "Frames sampled per video (the paper uses 1-2; 2 frames are one Qwen2.5-VL temporal patch)."},
    )
    frame_strategy: str = field(
        default="segment",
        metadata={
            "help": "`segment`: the middle frame of each of num_frames equal segments (1 frame = the middle frame, "
            "2 frames = at 1/4 and 3/4 of the clip). `linspace`: evenly spaced from the first to the last frame "
            "(LLaMA-Factory's own rule; 1 frame = the first frame). `pairs`: the middle frame of each of "
            "num_frames / 2 segments and the frame right after it (an even num_frames): each temporal patch holds "
            "two adjacent frames, so repeated frames and stutter are visible (2 frames = the middle pair).",
            "choices": lambda: tuple(STRATEGIES),
        },
    )
    frame_format: Literal["png", "jpg"] = field(
        default="png",
        metadata={"help": "Format of cached frames. `png` is lossless (no extra artefacts in a quality task)."},
    )
    frame_cache_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "Folder of the frame cache. Default: $IOVQA_CACHE_DIR, else ~/.cache/iovqa_plugin/frames. "
            "Entries are keyed by video path, size, mtime and frame settings."
        },
    )
    frame_workers: int = field(
        default=1,
        metadata={"help": "Worker processes extracting frames that are not cached yet (see also `iovqa prepare`)."},
    )
    prompt_template: Optional[str] = field(
        default=None,
        metadata={
            "help": "Evaluation prompt. Fields: {prompt} (the row's text prompt, required), {answer_format} "
            "(what to answer, follows label_format), {video} (where the video goes; default: at the start). "
            "Default: the paper-style prompt naming aesthetic quality, image quality, temporal quality and "
            "text-video alignment. Set, it is used as written for image rows too (see image_prompt_template)."
        },
    )
    prompt_template_file: Optional[str] = field(
        default=None,
        metadata={"help": "Read prompt_template from this text file instead."},
    )
    image_prompt_template: Optional[str] = field(
        default=None,
        metadata={
            "help": "Evaluation prompt of image rows (a medium PIL reads as JPEG, PNG, WebP or BMP), with the fields "
            "of prompt_template; {video} is where the image goes. Without {prompt} (photographs: KonIQ has no text "
            "prompt), image rows need no text prompt and an annotation file of images may have no prompt column. "
            "Default: prompt_template when set, else the image version of the default prompt (aesthetic quality, "
            "image quality, text-image alignment)."
        },
    )
    max_prompt_chars: int = field(
        default=2000,
        metadata={"help": "Longer text prompts are cut to this many characters (counted in the dataset summary)."},
    )
    video_column: str = field(
        default=TAOBAO_VIDEO_COLUMN,
        metadata={"help": "Video path column, used when dataset_info.json maps no `videos` column."},
    )
    prompt_column: str = field(
        default=TAOBAO_PROMPT_COLUMN,
        metadata={"help": "Text prompt column, used when dataset_info.json maps no `prompt` column."},
    )
    mos_column: str = field(
        default=TAOBAO_MOS_COLUMN,
        metadata={"help": "Decimal MOS column (1..5), used when dataset_info.json maps no `response` column."},
    )
    dimensions: str = field(
        default="overall",
        metadata={
            "help": "Quality dimensions to train, comma-separated, e.g. `traditional,alignment,aesthetic,temporal,"
            "overall` (TaobaoVD-GC's five MOS). Default `overall`: the paper's single score, exactly as without "
            "this key. Names are lowercase letters and underscores; each is read from its MOS column "
            "(see dimension_columns) and checked like the overall MOS."
        },
    )
    dimension_columns: Optional[dict] = field(
        default=None,
        metadata={
            "help": "MOS column of each dimension, e.g. {temporal: Temporal_score}. Defaults: TaobaoVD-GC's "
            "Traditional_MOS, Alignment_MOS, Aesthetic_MOS, Temporal_MOS; `overall` is the MOS column "
            "(dataset_info.json `response`, else mos_column). A dimension with another name needs its column here."
        },
    )
    dimension_layout: Literal["per_sample", "joint"] = field(
        default="per_sample",
        metadata={
            "help": "With several dimensions. `per_sample`: one sample per (video, dimension), its prompt naming "
            "the dimension (dimension_prompts), the answer that dimension's integer. `joint`: one sample per video "
            "whose answer holds every dimension's integer in the listed order, as "
            "`traditional 37, alignment 41, ...` (the digit mask keeps every score's digits)."
        },
    )
    dimension_prompts: Optional[dict] = field(
        default=None,
        metadata={
            "help": "per_sample prompt template of each dimension, e.g. {temporal: '...{prompt}...'} (fields as "
            "prompt_template). Default: the paper's prompt for overall (or prompt_template), and a prompt that "
            "names and describes the dimension for the others. The joint prompt is prompt_template (default: one "
            "listing the dimensions and the answer's form)."
        },
    )
    level_targets: Literal["hard", "soft"] = field(
        default="hard",
        metadata={
            "help": "Level labels only. `hard`: cross-entropy on the level word (one-hot). `soft` (DeQA-Score): at "
            "the level token the target is a Gaussian around the MOS over the five level tokens (sigma from "
            "iovqa_std_column when set, else iovqa_level_sigma), so the position of the MOS inside its level is "
            "trained too."
        },
    )
    level_sigma: float = field(
        default=0.5,
        metadata={
            "help": "Soft targets: the Gaussian's standard deviation (MOS units) for rows without a std column. "
            "0.5 (half a level) keeps the target peaked yet lets its mean follow the MOS inside a level. Another "
            "value without iovqa_level_targets: soft is refused (it would be unused)."
        },
    )
    std_column: Optional[str] = field(
        default=None,
        metadata={
            "help": "Soft targets: column of each row's rater standard deviation of the MOS (0..4), the sigma of its "
            "target (DeQA-Score). Default: none, every row uses iovqa_level_sigma. With iovqa_pair_soft_targets: "
            "the stds of pairs drawn from a pointwise file."
        },
    )
    head: Literal["none", "softmax_regression"] = field(
        default="none",
        metadata={
            "help": "`softmax_regression`: the paper's second method: <LABEL_1> ends the prompt, its last hidden "
            "state -> MLP -> 5 grades (bad..excellent = 1..5) -> softmax -> expected score. Trains LoRA, the head "
            "and the <LABEL_1> embedding row. Needs integer labels with the digit mask (they carry the MOS)."
        },
    )
    head_loss: Literal["soft_ce", "mse"] = field(
        default="soft_ce",
        metadata={
            "help": "Head loss. `soft_ce`: cross-entropy against a Gaussian around the MOS discretised on the 5 "
            "grades (DeQA-Score style). `mse`: squared error of the expected score."
        },
    )
    head_sigma: float = field(
        default=0.5,
        metadata={"help": "Standard deviation (in MOS units) of the soft_ce target around the MOS."},
    )
    head_inner_size: int = field(
        default=0,
        metadata={"help": "Width of the head's hidden layer (0: the model's hidden size)."},
    )
    labelled_logits: bool = field(
        default=True,
        metadata={
            "help": "Apply the output layer only at the positions whose next label is trained (the score's "
            "tokens) instead of at every position: the same loss and gradients, far less compute and memory. "
            "`false`: LLaMA-Factory's all-position logits (for comparison). No effect with iovqa_head or level labels "
            "(their loss is always computed at the labelled positions)."
        },
    )
    rank_loss: Literal["none", "fidelity"] = field(
        default="none",
        metadata={
            "help": "`fidelity` (DeQA-Score): adds iovqa_rank_weight x the fidelity ranking loss over every pair of "
            "the micro-batch's rows (of the same dimension) to the SFT loss: p_hat = Phi((s_i - s_j) / "
            "sqrt(var_i + var_j)) from each row's expected score and variance over the candidate tokens (integer "
            "labels: the first digit's 1..5; level labels: the five level words), the target p from the MOS "
            "(with the raters' stds when iovqa_std_column is set, else 1 / 0 / 0.5), loss 1 - sqrt(p_hat p) - "
            "sqrt((1 - p_hat)(1 - p)). Needs integer labels (iovqa_labelled_logits on) or level labels, with the "
            "mask, one dimension or the joint layout, no head."
        },
    )
    rank_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the fidelity loss added to the SFT loss (0: computed and logged, not trained)."},
    )
    rank_sigma: Optional[float] = field(
        default=None,
        metadata={
            "help": "A fixed standard deviation (MOS units) of every predicted score in p_hat instead of the "
            "predicted variances (DeQA-Score's training script: 1.0). Default: the predicted variances."
        },
    )
    rank_gather: bool = field(
        default=False,
        metadata={
            "help": "Pair the rows of every rank's micro-batch (all_gather; each rank's gradient reaches its own "
            "rows), not only one device's. No effect on one process."
        },
    )
    pair_columns: Optional[dict] = field(
        default=None,
        metadata={
            "help": "Comparison datasets (formatting iovqa_pairs): column of each role of a pairs file, e.g. "
            "{video_a: left, preference: winner}. Roles and defaults: video_a, video_b, preference (A, B or tie), "
            "mos_a, mos_b (used without a preference column), std_a, std_b (optional), prompt (optional text "
            "prompt). A dataset's `columns` in dataset_info.json map the same roles."
        },
    )
    choice_words: str = field(
        default="A,B,tie",
        metadata={
            "help": "Comparison samples: the answer words for 'A is better', 'B is better' and a tie, "
            "comma-separated (no digits or spaces). The loss is on the chosen word's tokens only."
        },
    )
    pair_ties: Literal["skip", "answer"] = field(
        default="skip",
        metadata={
            "help": "Comparison samples of a human tie (preference `tie`, or equal MOS). `skip`: left out (counted "
            "in the dataset summary). `answer`: answered with the third choice word."
        },
    )
    pair_soft_targets: bool = field(
        default=False,
        metadata={
            "help": "Comparison samples whose data carries both MOS and both raters' stds (a pairs file's mos_a, "
            "mos_b, std_a, std_b; drawn pairs: the MOS and iovqa_std_column): the choice token's target is the "
            "Thurstone probability p = Phi((mos_a - mos_b) / sqrt(std_a^2 + std_b^2)) that A is better, "
            "cross-entropy to [p, 1 - p] over the choice words (DeQA-Score style), instead of the one-hot "
            "choice. Rows with a preference label, or without both stds, keep the hard choice. Needs "
            "iovqa_labelled_logits (on by default)."
        },
    )
    pair_template: Optional[str] = field(
        default=None,
        metadata={
            "help": "Comparison prompt. Fields: {first}, {second} (where medium A and medium B go; both required), "
            "{prompt} (the sentence naming the text prompt, empty without one), {a}, {b} (the choice words), "
            "{choices} (the allowed answers), {media} (videos / images). Default: a prompt showing A then B and "
            "asking which has the better overall quality."
        },
    )
    pair_group_column: Optional[str] = field(
        default=None,
        metadata={
            "help": "Drawn pairs (formatting iovqa_drawn_pairs): rows are paired only with rows of the same value "
            "in this column (e.g. a scene id). Default: the text prompt column."
        },
    )
    pair_margin: float = field(
        default=0.0,
        metadata={"help": "Drawn pairs: only rows whose MOS differ by more than this are paired (MOS units)."},
    )
    pairs_per_row: int = field(
        default=4,
        metadata={"help": "Drawn pairs: each row is in at most this many pairs."},
    )
    pair_seed: int = field(
        default=0,
        metadata={"help": "Drawn pairs: the seed of which pairs are drawn and which row is shown first."},
    )
    on_bad_row: Literal["error", "skip"] = field(
        default="error",
        metadata={
            "help": "`error`: any bad row (bad MOS, missing or corrupt video, ...) stops with a message naming "
            "file, row and field. `skip`: bad rows are left out and listed with their reason in skip_report."
        },
    )
    skip_report: Optional[str] = field(
        default=None,
        metadata={"help": "CSV listing skipped rows. Default: <output_dir>/iovqa_skipped_rows.csv."},
    )
    output_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Not a recipe key: copied from the recipe's output_dir."},
    )
    model_inputs: Optional[dict] = field(
        default=None,
        metadata={"help": "Not a recipe key: the recipe's LLaMA-Factory keys that shape what the model sees "
                  "(recipe.INPUT_KEYS: template, pixels...), saved with the run for the scorer to compare."},
    )

    def __post_init__(self):
        _check_choice(self, "label_format")
        _check_choice(self, "label_mask")
        _check_choice(self, "frame_strategy")
        _check_choice(self, "frame_format")
        _check_choice(self, "on_bad_row")
        _check_choice(self, "head")
        _check_choice(self, "head_loss")
        _check_choice(self, "dimension_layout")
        self._check_dimensions()
        if self.yes_no_mask and not self.mask_on:
            raise PluginConfigError("iovqa_yes_no_mask is read by the label mask: it needs iovqa_label_mask: digits")
        _check_choice(self, "level_targets")
        if self.soft_targets and not self.level_scores:
            raise PluginConfigError(
                "iovqa_level_targets: soft needs iovqa_label_format: level and iovqa_label_mask: digits"
            )
        if not self.level_sigma > 0:
            raise PluginConfigError(f"iovqa_level_sigma must be > 0, got {self.level_sigma}")
        if self.level_sigma != _default("level_sigma") and not self.soft_targets:
            raise PluginConfigError(f"iovqa_level_sigma ({self.level_sigma}) is read for iovqa_level_targets: soft only "
                                    "(with iovqa_label_format: level)")
        if self.std_column is not None and not (self.soft_targets or self.pair_soft_targets):
            raise PluginConfigError("iovqa_std_column is read for iovqa_level_targets: soft (level labels) and "
                                    "iovqa_pair_soft_targets (drawn pairs) only")
        if self.head_on and not self.integer_scores:
            raise PluginConfigError(
                "iovqa_head needs iovqa_label_format: integer and iovqa_label_mask: digits (the MOS is read from "
                "the integer label)"
            )
        self._check_rank()
        self._check_pairs()
        if not self.head_sigma > 0:
            raise PluginConfigError(f"iovqa_head_sigma must be > 0, got {self.head_sigma}")
        if self.head_inner_size < 0:
            raise PluginConfigError(f"iovqa_head_inner_size must be >= 0, got {self.head_inner_size}")
        if not 1 <= self.num_frames <= 64:
            raise PluginConfigError(f"iovqa_num_frames must be between 1 and 64, got {self.num_frames}")
        if self.frame_strategy in PAIRED_STRATEGIES and self.num_frames % 2:
            raise PluginConfigError(f"iovqa_frame_strategy: {self.frame_strategy} samples adjacent frames in pairs: "
                                    f"iovqa_num_frames must be even, got {self.num_frames}")
        if self.frame_workers < 1:
            raise PluginConfigError(f"iovqa_frame_workers must be >= 1, got {self.frame_workers}")
        if self.max_prompt_chars < 1:
            raise PluginConfigError(f"iovqa_max_prompt_chars must be >= 1, got {self.max_prompt_chars}")
        if self.prompt_template is not None and self.prompt_template_file is not None:
            raise PluginConfigError("set iovqa_prompt_template or iovqa_prompt_template_file, not both")
        if self.prompt_template_file is not None:
            if not os.path.isfile(self.prompt_template_file):
                raise PluginConfigError(f"iovqa_prompt_template_file: no such file {self.prompt_template_file!r}")
            with open(self.prompt_template_file, encoding="utf-8") as handle:
                self.prompt_template = handle.read()
            self.prompt_template_file = None
        from .data.prompt import PromptTemplateError, check_template

        for key in ("prompt_template", "image_prompt_template"):
            if getattr(self, key) is not None:
                try:
                    check_template(getattr(self, key), label_token=self.head_on,
                                   prompt_optional=key == "image_prompt_template")
                except PromptTemplateError as err:
                    raise PluginConfigError(f"iovqa_{key}: {err}") from None
        for name in GRPO_CHOICES:
            _check_choice(self, name)
        self._check_grpo()

    def _check_rank(self) -> None:
        _check_choice(self, "rank_loss")
        if not self.rank_on:
            if self.rank_sigma is not None or self.rank_gather:
                raise PluginConfigError("iovqa_rank_sigma and iovqa_rank_gather are read for iovqa_rank_loss: "
                                        "fidelity only")
            return
        if not (0 <= self.rank_weight < float("inf")):
            raise PluginConfigError(f"iovqa_rank_weight must be a number >= 0, got {self.rank_weight}")
        if self.rank_sigma is not None and not 0 < self.rank_sigma < float("inf"):
            raise PluginConfigError(f"iovqa_rank_sigma must be > 0, got {self.rank_sigma}")
        if self.head_on or not (self.level_scores or (self.integer_scores and self.labelled_logits)):
            raise PluginConfigError(
                "iovqa_rank_loss: fidelity reads each row's score distribution at the score position: it needs "
                "iovqa_label_format integer (with iovqa_labelled_logits: true) or level, iovqa_label_mask: digits "
                "and no iovqa_head"
            )
        if len(self.dimension_names) > 1 and not self.joint:
            raise PluginConfigError(
                "iovqa_rank_loss: fidelity pairs rows of the same dimension, which per_sample rows of several "
                "dimensions do not tell apart in a batch: use one dimension or iovqa_dimension_layout: joint"
            )

    def _check_pairs(self) -> None:
        from .data.pairs import ChoiceWords, PairColumns, check_pair_template
        from .data.prompt import PromptTemplateError

        _check_choice(self, "pair_ties")
        try:
            ChoiceWords.parse(self.choice_words, self.pair_ties)
        except ValueError as err:
            raise PluginConfigError(f"iovqa_choice_words: {err}") from None
        try:
            PairColumns.renamed(self.pair_columns)
        except (ValueError, TypeError, AttributeError) as err:
            raise PluginConfigError(f"iovqa_pair_columns: {err}") from None
        if self.pair_template is not None:
            try:
                check_pair_template(self.pair_template)
            except PromptTemplateError as err:
                raise PluginConfigError(f"iovqa_pair_template: {err}") from None
        if not 0 <= self.pair_margin < float("inf"):
            raise PluginConfigError(f"iovqa_pair_margin must be a number >= 0, got {self.pair_margin}")
        if self.pairs_per_row < 1:
            raise PluginConfigError(f"iovqa_pairs_per_row must be >= 1, got {self.pairs_per_row}")
        if self.pair_soft_targets and (not self.labelled_logits or not self.mask_on or self.rl_on):
            raise PluginConfigError("iovqa_pair_soft_targets replaces the choice token's loss of the SFT trainer on "
                                    "labelled-position logits: it needs iovqa_labelled_logits: true and "
                                    "iovqa_label_mask: digits, and no iovqa_rl")

    @property
    def choices(self):
        """The comparison answer words (``data.pairs.ChoiceWords``)."""
        from .data.pairs import ChoiceWords

        return ChoiceWords.parse(self.choice_words, self.pair_ties)

    @property
    def pair_column_names(self):
        """The pairs file's columns (``data.pairs.PairColumns``) from iovqa_pair_columns."""
        from .data.pairs import PairColumns

        return PairColumns.renamed(self.pair_columns)

    def _check_dimensions(self) -> None:
        from .data.dimensions import DimensionError, OVERALL, default_column, parse_dimensions

        try:
            names = parse_dimensions(self.dimensions)
        except DimensionError as err:
            raise PluginConfigError(f"iovqa_dimensions: {err}") from None
        self.dimensions = ",".join(names)
        for key in ("dimension_columns", "dimension_prompts"):
            value = getattr(self, key)
            if value is None:
                continue
            if not isinstance(value, dict) or not all(isinstance(v, str) and v.strip() for v in value.values()):
                raise PluginConfigError(f"iovqa_{key} must map dimension names to text, got {value!r}")
            unlisted = sorted(set(value) - set(names))
            if unlisted:
                raise PluginConfigError(f"iovqa_{key} names {unlisted}, which iovqa_dimensions does not list {list(names)}")
        columns = self.dimension_columns or {}
        if OVERALL in columns:
            raise PluginConfigError("iovqa_dimension_columns: the overall MOS column is set by dataset_info.json "
                                    "`response` or iovqa_mos_column")
        unknown = [n for n in names if n not in columns and default_column(n) is None]
        if unknown:
            raise PluginConfigError(f"iovqa_dimension_columns: give the MOS column of dimension(s) {unknown} "
                                    "(only TaobaoVD-GC's dimensions have default columns)")
        if self.dimension_prompts and OVERALL in self.dimension_prompts:
            raise PluginConfigError("iovqa_dimension_prompts: the overall prompt is iovqa_prompt_template")
        if self.dimension_prompts and self.dimension_layout == "joint":
            raise PluginConfigError("iovqa_dimension_prompts are per_sample prompts; the joint prompt is "
                                    "iovqa_prompt_template")
        if self.dimension_layout == "joint" and len(names) < 2:
            raise PluginConfigError("iovqa_dimension_layout: joint needs at least two dimensions (one dimension "
                                    "is the bare-integer answer of per_sample)")
        if self.multi_dimension and (not self.format.grid or self.head_on):
            raise PluginConfigError("iovqa_dimensions other than overall need iovqa_label_format: integer and no "
                                    "iovqa_head")
        if self.dimension_prompts:
            from .data.prompt import PromptTemplateError, check_template

            for name, template in self.dimension_prompts.items():
                try:
                    check_template(template)
                except PromptTemplateError as err:
                    raise PluginConfigError(f"iovqa_dimension_prompts[{name}]: {err}") from None

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """The trained dimensions, in the listed order (the joint answer's order)."""
        return tuple(n.strip() for n in self.dimensions.split(","))

    @property
    def multi_dimension(self) -> bool:
        """Anything but the default single overall score: per-dimension columns in scores and metrics."""
        from .data.dimensions import DEFAULT_DIMENSIONS

        return self.dimension_names != DEFAULT_DIMENSIONS

    @property
    def joint(self) -> bool:
        """One answer holds every dimension's score."""
        return self.dimension_layout == "joint" and len(self.dimension_names) > 1

    @property
    def scores_per_answer(self) -> int:
        return len(self.dimension_names) if self.joint else 1

    @property
    def format(self):
        """The label format's registry entry (``data.label_formats``)."""
        return get_label_format(self.label_format)

    @property
    def head_on(self) -> bool:
        """The softmax-regression head variant is trained / scored."""
        return self.head != "none"

    @property
    def image_prompt_free(self) -> bool:
        """Image rows are asked without a text prompt (an image_prompt_template without {prompt})."""
        from .data.prompt import uses_prompt

        return self.image_prompt_template is not None and not uses_prompt(self.image_prompt_template)

    @property
    def mask_on(self) -> bool:
        """The loss is on the score's tokens only."""
        return self.label_mask == "digits"

    @property
    def integer_scores(self) -> bool:
        """Integer labels under the digit mask: every labelled token is a score digit, so the score's
        distribution can be read off the logits (in-training SRCC/PLCC, the head's MOS target)."""
        return self.format.grid and self.mask_on

    @property
    def level_scores(self) -> bool:
        """Level-word labels under the mask: the level's distribution is read off the level tokens' logits
        (expected score, in-training SRCC/PLCC)."""
        return self.format.words and self.mask_on

    @property
    def soft_targets(self) -> bool:
        """The level token is trained against a Gaussian around the MOS (DeQA-Score)."""
        return self.level_targets == "soft"

    @property
    def rank_on(self) -> bool:
        """The fidelity ranking loss is added to the SFT loss."""
        return self.rank_loss != "none"

    @property
    def cache_dir(self) -> str:
        if self.frame_cache_dir:
            return os.path.abspath(os.path.expanduser(self.frame_cache_dir))
        env = os.environ.get("IOVQA_CACHE_DIR")
        if env:
            return os.path.abspath(os.path.expanduser(env))
        return os.path.join(os.path.expanduser("~"), ".cache", "iovqa_plugin", "frames")

    @property
    def skip_report_path(self) -> str:
        if self.skip_report:
            return self.skip_report
        return os.path.join(self.output_dir or ".", "iovqa_skipped_rows.csv")

    def to_recipe(self) -> dict[str, Any]:
        """The recipe keys that reproduce this configuration."""
        return {PREFIX + k: v for k, v in asdict(self).items() if k not in NOT_RECIPE_FIELDS}


NOT_RECIPE_FIELDS = ("output_dir", "model_inputs")  # filled from the rest of the recipe, not iovqa_* keys
RECIPE_FIELDS = tuple(f.name for f in fields(IOVQAArguments) if f.name not in NOT_RECIPE_FIELDS)


def _default(name: str) -> Any:
    return IOVQAArguments.__dataclass_fields__[name].default


def _check_choice(args: IOVQAArguments, name: str) -> None:
    registry = IOVQAArguments.__dataclass_fields__[name].metadata.get("choices")  # a registry's current names
    choices = registry() if registry else typing.get_args(typing.get_type_hints(IOVQAArguments)[name])
    value = getattr(args, name)
    if value not in choices:
        raise PluginConfigError(f"iovqa_{name} must be one of {list(choices)}, got {value!r}")
