"""The evaluation prompt the model is trained and scored with.

The user's text prompt is embedded in an instruction that names the four
dimensions judged in the challenge (aesthetic quality, image quality,
temporal quality, text-video alignment) and asks for one number only.

An image sample (see ``images``) is asked the same way, in words about an
image: its own default prompt (no temporal dimension), ``<image>`` where the
video placeholder goes, and the plugin's other built-in prompts (quality
dimensions) with "video" read as "image" (:func:`image_wording`). A prompt
template of the user's is used as written for both media, unless
``iovqa_image_prompt_template`` gives the images their own; that one may
leave out {prompt} (photographs, as in KonIQ, have no text prompt), and then
image rows need no text prompt.
"""

from __future__ import annotations

import re
import string

from .images import IMAGE
from .label_formats import get_label_format

VIDEO_PLACEHOLDER = "<video>"
IMAGE_PLACEHOLDER = "<image>"
# Media placeholders LLaMA-Factory counts in prompts; user text must not add any.
_MEDIA_PLACEHOLDERS = ("<video>", "<image>", "<audio>")

DEFAULT_TEMPLATE = (
    "{video}You are an expert in assessing the quality of AI-generated videos. "
    'The video was generated from the text prompt: "{prompt}"\n'
    "Rate the overall quality of the video, considering these four dimensions:\n"
    "1. Aesthetic quality: composition, colour harmony, lighting and visual appeal.\n"
    "2. Image quality: clarity, sharpness, noise, blur and compression artefacts in the frames.\n"
    "3. Temporal quality: smoothness and consistency of motion, no flicker, jitter or deformation.\n"
    "4. Text-video alignment: how faithfully the video shows what the text prompt asks for.\n"
    "Answer with {answer_format}. Output the number only, with no explanation."
)

DEFAULT_IMAGE_TEMPLATE = (
    "{video}You are an expert in assessing the quality of AI-generated images. "
    'The image was generated from the text prompt: "{prompt}"\n'
    "Rate the overall quality of the image, considering these three dimensions:\n"
    "1. Aesthetic quality: composition, colour harmony, lighting and visual appeal.\n"
    "2. Image quality: clarity, sharpness, noise, blur and compression artefacts.\n"
    "3. Text-image alignment: how faithfully the image shows what the text prompt asks for.\n"
    "Answer with {answer_format}. Output the number only, with no explanation."
)
_VIDEO_WORD = re.compile(r"(?<!\{)\b([Vv])ideo(s?)\b(?!\})")  # not the {video} field

_FIELDS = {"prompt", "answer_format", "video", "label_token"}
LABEL_TOKEN = "<LABEL_1>"


class PromptTemplateError(ValueError):
    pass


def template_fields(template: str, allowed: set, what: str) -> list[str]:
    """The fields a format-string template uses (each time it uses one), refusing a field not in ``allowed``."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise PromptTemplateError(f"{what} is not a valid format string: {err}") from None
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise PromptTemplateError(f"{what} has unknown fields {unknown}; allowed: {sorted(allowed)}")
    return names


def uses_prompt(template: str | None) -> bool:
    """Whether a template (None: a default one) asks for the row's text prompt."""
    return template is None or "prompt" in template_fields(template, _FIELDS, "prompt template")


def check_template(template: str, label_token: bool = False, prompt_optional: bool = False) -> None:
    """A template must use {prompt} once and only the known fields; {label_token} exactly when the head is on.

    ``prompt_optional``: {prompt} at most once (an image template for photographs, which have no text prompt)."""
    names = template_fields(template, _FIELDS, "prompt template")
    if names.count("prompt") > 1 or (names.count("prompt") == 0 and not prompt_optional):
        raise PromptTemplateError("prompt template must contain {prompt} " + ("at most" if prompt_optional else "exactly")
                                  + " once")
    if names.count("video") > 1:
        raise PromptTemplateError("prompt template may contain {video} at most once")
    if any(p in template for p in _MEDIA_PLACEHOLDERS):
        raise PromptTemplateError("write {video} instead of a literal media placeholder in the prompt template")
    if label_token and names.count("label_token") != 1:
        raise PromptTemplateError(
            "the softmax-regression head needs {label_token} exactly once in the template (where <LABEL_1> goes, "
            "usually at the very end)"
        )
    if not label_token and "label_token" in names:
        raise PromptTemplateError("{label_token} is only for iovqa_head: softmax_regression")


def cut_prompt(text: str, max_chars: int) -> str:
    """A row's text prompt as the model sees it: its first ``max_chars`` characters (iovqa_max_prompt_chars), in
    training and scoring alike."""
    return text[:max_chars]


def neutralize_placeholders(text: str) -> str:
    """Rewrite literal ``<video>``-style text so LLaMA-Factory does not count it as media."""
    for placeholder in _MEDIA_PLACEHOLDERS:
        text = text.replace(placeholder, "[" + placeholder[1:-1] + "]")
    return text


def image_wording(template: str) -> str:
    """A built-in prompt about a video, about an image instead ("video" -> "image"; the {video} field stays)."""
    return _VIDEO_WORD.sub(lambda m: ("I" if m.group(1) == "V" else "i") + "mage" + m.group(2), template)


def build_prompt(
    user_prompt: str, label_format: str = "integer", template: str | None = None, label_token: bool = False,
    answer_format: str | None = None, media: str = "video",
) -> str:
    """The full user turn, with exactly one media placeholder (and ``<LABEL_1>`` at its end for the head).

    ``answer_format`` replaces the label format's {answer_format} text (the joint answer of several dimensions).
    ``media``: ``"image"`` puts ``<image>`` where the video goes, and the default prompt is the image one.
    """
    answers = get_label_format(label_format)
    image = media == IMAGE
    # the default prompt's last sentence names what the answer is (a number, a word)
    default = (DEFAULT_IMAGE_TEMPLATE if image else DEFAULT_TEMPLATE).replace(
        "Output the number only", f"Output the {answers.answer_kind} only")
    template = template or (default + "{label_token}" if label_token else default)
    placeholder = IMAGE_PLACEHOLDER if image else VIDEO_PLACEHOLDER
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    text = template.format(
        prompt=neutralize_placeholders(user_prompt or "").replace(LABEL_TOKEN, "[LABEL_1]"),
        answer_format=answer_format or answers.answer_format,
        video=placeholder,
        label_token=LABEL_TOKEN,
    )
    if "video" not in names:
        text = placeholder + text
    return text
