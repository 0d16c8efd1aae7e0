import pytest

from iovqa_plugin.data.prompt import DEFAULT_TEMPLATE, PromptTemplateError, build_prompt, check_template


def test_default_prompt_names_the_four_dimensions_and_the_range():
    text = build_prompt("a cat on a red sofa")
    assert text.startswith("<video>") and text.count("<video>") == 1
    for dimension in ("Aesthetic quality", "Image quality", "Temporal quality", "Text-video alignment"):
        assert dimension in text
    assert '"a cat on a red sofa"' in text
    assert "integer from 10 (worst) to 50 (best)" in text
    assert "1.0 (worst) to 5.0 (best)" in build_prompt("x", "decimal")


def test_user_text_cannot_add_media_placeholders_or_format_fields():
    text = build_prompt("show <video> and <image> {prompt} 42")
    assert text.count("<video>") == 1 and "<image>" not in text
    assert "[video]" in text and "[image]" in text and "{prompt} 42" in text


def test_custom_templates():
    assert build_prompt("x", template="Q: {prompt}{video}") == "Q: x<video>"
    assert build_prompt("x", template="{prompt}") == "<video>x"
    check_template(DEFAULT_TEMPLATE)
    for bad in ("{prompt}{prompt}", "no prompt", "{prompt} <video>", "{prompt}{video}{video}", "{prompt"):
        with pytest.raises(PromptTemplateError):
            check_template(bad)
