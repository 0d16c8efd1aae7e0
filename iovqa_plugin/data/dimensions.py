"""Quality dimensions: which MOS columns are trained, and how their scores are asked for and answered.

TaobaoVD-GC annotation files carry one MOS per dimension: ``Traditional_MOS``,
``Alignment_MOS``, ``Aesthetic_MOS``, ``Temporal_MOS`` and ``Overall_MOS``.
The default trains ``overall`` alone, as the paper does: one sample per video,
the paper's prompt, the bare integer as the answer.

Two layouts train several dimensions:

* ``per_sample``: one sample per (video, dimension); the prompt names the
  dimension it asks about (a template per dimension) and the answer is that
  dimension's bare integer ("37").
* ``joint``: one sample per video whose answer holds every listed dimension's
  integer, in the order the dimensions are listed, written as
  ``"<name> <integer>"`` joined by ``", "``::

      traditional 37, alignment 41, aesthetic 35, temporal 40, overall 38

  Dimension names are lowercase letters and underscores only, so the only
  digits of the answer are the scores' (the digit mask keeps exactly those).
"""

from __future__ import annotations

import re
from typing import Optional

from .label_formats import read_answer

OVERALL = "overall"
DEFAULT_DIMENSIONS = (OVERALL,)
LAYOUTS = ("per_sample", "joint")
# TaobaoVD-GC's column of each dimension (the default columns; `overall` follows the MOS column settings).
TAOBAO_DIMENSION_COLUMNS = {
    "traditional": "Traditional_MOS",
    "alignment": "Alignment_MOS",
    "aesthetic": "Aesthetic_MOS",
    "temporal": "Temporal_MOS",
    OVERALL: "Overall_MOS",
}
# What each dimension means, for the prompts (a dimension not listed here is named by its name).
DESCRIPTIONS = {
    "traditional": "traditional (technical) quality: clarity, sharpness, noise, blur and compression artefacts "
    "in the frames",
    "alignment": "text-video alignment: how faithfully the video shows what the text prompt asks for",
    "aesthetic": "aesthetic quality: composition, colour harmony, lighting and visual appeal",
    "temporal": "temporal quality: smoothness and consistency of motion, no flicker, jitter or deformation",
    OVERALL: "overall quality",
}
NAME = re.compile(r"^[a-z][a-z_]*$")  # no digits: the joint answer's only digits are its scores
SEPARATOR = ", "

# per_sample prompt of a dimension other than `overall` (overall keeps the paper's prompt).
DIMENSION_TEMPLATE = (
    "{{video}}You are an expert in assessing the quality of AI-generated videos. "
    'The video was generated from the text prompt: "{{prompt}}"\n'
    "Rate one dimension of the video only: {description}.\n"
    "Answer with {{answer_format}}. Output the number only, with no explanation."
)
JOINT_TEMPLATE = (
    "{{video}}You are an expert in assessing the quality of AI-generated videos. "
    'The video was generated from the text prompt: "{{prompt}}"\n'
    "Rate the video on each of these dimensions:\n{listing}\n"
    "Answer with {{answer_format}}. Output that line only, with no explanation."
)


class DimensionError(ValueError):
    """A bad dimension setting (the message says which)."""


def parse_dimensions(value: str) -> tuple[str, ...]:
    """``"traditional, overall"`` -> ("traditional", "overall"); names checked, no repeats."""
    names = tuple(part.strip() for part in str(value).split(",") if part.strip())
    if not names:
        raise DimensionError("no dimension listed")
    bad = [n for n in names if not NAME.match(n)]
    if bad:
        raise DimensionError(f"dimension names must be lowercase letters and underscores (no digits), got {bad}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DimensionError(f"dimension(s) listed twice: {repeated}")
    return names


def default_column(dimension: str) -> Optional[str]:
    return TAOBAO_DIMENSION_COLUMNS.get(dimension)


def mos_columns(dimensions: tuple[str, ...], overrides: Optional[dict], overall_column: str) -> dict[str, str]:
    """{dimension: its MOS column}: ``overall`` reads ``overall_column`` (the run's MOS column), the others
    their ``overrides`` entry (the recipe's dimension_columns), else TaobaoVD-GC's column."""
    overrides = overrides or {}
    return {name: overall_column if name == OVERALL else overrides.get(name) or default_column(name)
            for name in dimensions}


def joint_answer(labels: dict[str, str], dimensions: tuple[str, ...]) -> str:
    """The joint layout's answer: ``"traditional 37, alignment 41"`` in the order of ``dimensions``."""
    return SEPARATOR.join(f"{name} {labels[name]}" for name in dimensions)


def joint_answer_format(dimensions: tuple[str, ...], answer_format: str) -> str:
    """What the joint prompt asks for (fills the template's {answer_format})."""
    example = SEPARATOR.join(f"{name} N" for name in dimensions)
    return f'one line of the form "{example}", where each N is {answer_format}'


def prompt_template(dimension: Optional[str], dimensions: tuple[str, ...], templates: Optional[dict] = None,
                    base: Optional[str] = None) -> Optional[str]:
    """The prompt template of one per_sample dimension, or of the joint answer (``dimension`` None).

    ``templates``: the recipe's per-dimension templates; ``base``: the recipe's prompt_template (the
    overall dimension's, and the joint prompt's). None means the paper's default prompt.
    """
    if dimension is None:
        if base:
            return base
        # a dimension of the user's own is named only ("- sharpness", not "- sharpness: sharpness")
        listing = "\n".join(f"- {name}: {DESCRIPTIONS[name]}" if name in DESCRIPTIONS else f"- {name}"
                             for name in dimensions)
        return JOINT_TEMPLATE.format(listing=listing)
    if templates and dimension in templates:
        return templates[dimension]
    if dimension == OVERALL:
        return base
    return DIMENSION_TEMPLATE.format(description=DESCRIPTIONS.get(dimension, dimension))


def _score_pattern(name: str) -> re.Pattern:
    return re.compile(rf"(?<![a-z_]){re.escape(name)}\s*:?\s*([^,\n]*)", re.IGNORECASE)


def read_joint_answer(text: str, dimensions: tuple[str, ...],
                      label_format: str = "integer") -> dict[str, tuple[Optional[float], Optional[str]]]:
    """{dimension: (MOS, None) or (None, reason)} from a joint answer; each score is read after its name."""
    found = {}
    for name in dimensions:
        match = _score_pattern(name).search(text or "")
        if match is None:
            found[name] = (None, f"no {name!r} score in answer {text!r}")
        else:
            found[name] = read_answer(match.group(1), label_format)
    return found


def joint_prefix(dimensions: tuple[str, ...], index: int, earlier: list[str]) -> str:
    """The answer text before dimension ``index``'s score: the earlier dimensions with ``earlier`` (their
    integers as text), then the dimension's name and a space."""
    parts = [f"{name} {value}" for name, value in zip(dimensions[:index], earlier)]
    return SEPARATOR.join(parts + [f"{dimensions[index]} "])


def sample_dimensions(iovqa_args) -> tuple[str, ...]:
    """The dimensions that each annotation row is one sample of (per_sample layout); () when a row is one sample."""
    if iovqa_args.multi_dimension and not iovqa_args.joint:
        return iovqa_args.dimension_names
    return ()


def row_samples(user_prompt: str, labels: dict[str, str], iovqa_args,
                media: str = "video") -> list[tuple[Optional[str], str, str]]:
    """(dimension, full prompt, answer) of each sample one annotation row gives under ``config``.

    ``labels``: each listed dimension's label. The default (overall only) is the paper's single sample,
    exactly as without dimensions (dimension None); ``joint`` is one sample (dimension None) whose answer
    holds every score; ``per_sample`` one sample per dimension. ``media``: the row's medium (``"image"``: the
    image prompts, see ``prompt``).
    """
    from .images import IMAGE
    from .prompt import build_prompt, image_wording

    names = iovqa_args.dimension_names
    base = iovqa_args.prompt_template
    own = {base, *(iovqa_args.dimension_prompts or {}).values()}  # the user's wording, used as written
    if media == IMAGE:
        base = iovqa_args.image_prompt_template or base
        own.add(base)

    def worded(template: Optional[str]) -> Optional[str]:
        return image_wording(template) if media == IMAGE and template is not None and template not in own else template

    if not iovqa_args.multi_dimension:
        return [(None, build_prompt(user_prompt, iovqa_args.label_format, base, iovqa_args.head_on, media=media),
                 labels[OVERALL])]
    if iovqa_args.joint:
        template = worded(prompt_template(None, names, base=base))
        answer_format = joint_answer_format(names, iovqa_args.format.answer_format)
        prompt = build_prompt(user_prompt, iovqa_args.label_format, template, answer_format=answer_format, media=media)
        return [(None, prompt, joint_answer(labels, names))]
    return [(name, build_prompt(user_prompt, iovqa_args.label_format,
                                worded(prompt_template(name, names, iovqa_args.dimension_prompts, base)), media=media),
             labels[name]) for name in names]
